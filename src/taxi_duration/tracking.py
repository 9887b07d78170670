"""MLflow wiring: tracking/registry URIs, the experiment (artifacts under the workspace), DFS temp dir."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from taxi_duration.settings import Settings


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the settings' store and return the experiment id (created if missing)."""
    settings.workspace.mkdir(parents=True, exist_ok=True)
    dfs_tmp = (settings.workspace / "tmp" / "mlflow-dfs").resolve()
    dfs_tmp.mkdir(parents=True, exist_ok=True)
    # mlflow.spark copies models through this folder; keep it inside the workspace, not /tmp
    os.environ.setdefault("MLFLOW_DFS_TMP", str(dfs_tmp))
    if settings.tracking_uri is None:
        relocate_artifacts(settings.workspace / "mlflow.db", settings.mlflow_artifact_root)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri or settings.mlflow_tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_location = None
    if settings.tracking_uri is None:
        # a local SQLite store would otherwise put artifacts in ./mlruns of whatever folder the CLI ran in
        artifact_location = settings.mlflow_artifact_root.as_uri()
    return str(client.create_experiment(settings.experiment, artifact_location=artifact_location))


# every column of MLflow's SQL store that holds an artifact location (tables of older schemas may be missing)
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)


def relocate_artifacts(database: Path, artifact_root: Path) -> int:
    """Point a workspace's MLflow store at the workspace's own `mlartifacts/` after the folder was copied or moved.

    MLflow stores absolute artifact URIs (`file:///old/place/mlartifacts/...`): a copied workspace would log into
    and load from the original's folder, a moved one would find nothing. Each command first rewrites the prefix of
    every stored location to this workspace's folder (a no-op once they agree). Returns the rows changed."""
    if not database.is_file():
        return 0
    new_root = artifact_root.resolve().as_uri()
    changed = 0
    with sqlite3.connect(database, timeout=30) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return 0
        roots = {
            location
            for (location,) in db.execute("SELECT artifact_location FROM experiments")
            if location and location.startswith("file:") and location.rstrip("/").endswith("/mlartifacts")
        }
        for old_root in sorted(roots - {new_root}):
            old_root = old_root.rstrip("/")
            for table, column in ARTIFACT_COLUMNS:
                if table not in tables:
                    continue
                cursor = db.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                    f"WHERE substr({column}, 1, ?) = ? AND "
                    f"(length({column}) = ? OR substr({column}, ? + 1, 1) = '/')",
                    (new_root, len(old_root) + 1, len(old_root), old_root, len(old_root), len(old_root)),
                )
                changed += cursor.rowcount
    return changed


def mlflow_ui_command(settings: Settings) -> str:
    """The command that opens the MLflow UI on this store."""
    return f"mlflow ui --backend-store-uri {settings.mlflow_tracking_uri} --host 127.0.0.1 --port 5000"
