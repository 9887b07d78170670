"""Find the exported (JVM-free) form of a registered model version in MLflow and load it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from taxi_duration.registry.promotion import alias_version
from taxi_duration.serve.predictor import ExportedModel

EXPORTED_ARTIFACT = "exported"  # run artifact folder holding model.json, logged by the train job


def load_registered(model_name: str, version: str, dst: Path | None = None) -> ExportedModel:
    """The exported model logged with a registered version's run."""
    client = MlflowClient()
    run_id = client.get_model_version(model_name, version).run_id
    local = mlflow.artifacts.download_artifacts(
        f"runs:/{run_id}/{EXPORTED_ARTIFACT}", dst_path=str(dst) if dst else None
    )
    return ExportedModel.load(local)


def alias_loader(model_name: str, alias: str) -> tuple[Callable[[], ExportedModel | None], Callable[[], str | None]]:
    """(loader, probe): load models:/<name>@<alias> (None if no such alias); probe the version it points to."""

    def probe() -> str | None:
        return alias_version(MlflowClient(), model_name, alias)

    def loader() -> ExportedModel | None:
        version = probe()
        return None if version is None else load_registered(model_name, version)

    return loader, probe
