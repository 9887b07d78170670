"""MLflow wiring: tracking/registry URIs, the experiment (artifacts under the workspace), DFS temp dir."""

from __future__ import annotations

import os

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


def mlflow_ui_command(settings: Settings) -> str:
    """The command that opens the MLflow UI on this store."""
    return f"mlflow ui --backend-store-uri {settings.mlflow_tracking_uri} --host 127.0.0.1 --port 5000"
