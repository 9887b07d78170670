"""Find the exported (JVM-free) form of a registered model version in MLflow and load it."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from taxi_duration.errors import ConfigError, ModelNotFoundError
from taxi_duration.serve.predictor import ExportedModel

EXPORTED_ARTIFACT = "exported"  # run artifact folder holding model.json, logged by the train job


def load_registered(model_name: str, version: str, dst: Path | None = None) -> ExportedModel:
    """The exported model logged with a registered version's run.

    Without `dst` the download goes to a temporary folder removed once loaded (the model lives in memory):
    nothing is left behind per load or reload."""
    client = MlflowClient()
    run_id = client.get_model_version(model_name, version).run_id
    uri = f"runs:/{run_id}/{EXPORTED_ARTIFACT}"
    if dst is not None:
        return ExportedModel.load(mlflow.artifacts.download_artifacts(uri, dst_path=str(dst)))
    with tempfile.TemporaryDirectory(prefix="taxi-duration-model-") as tmp:
        return ExportedModel.load(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))


# what MLflow answers when the model or the alias does not exist (any other failure: the registry is unreachable)
_ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class RegistryUnreachableError(ModelNotFoundError):
    """The MLflow registry could not be asked (server down, wrong URI, a store this install cannot open)."""


def connect_registry(tracking_uri: str, registry_uri: str | None = None) -> None:
    """Point the MLflow client at a registry, without creating anything there (serving only reads).

    A serving install has the MLflow client (mlflow-skinny): an MLflow server over HTTP(S) or Databricks works; a
    local SQLite store needs SQLAlchemy and Alembic, which come with the pipeline install."""
    uri = registry_uri or tracking_uri
    if uri.startswith("sqlite:"):
        try:
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"registry {uri}: a SQLite MLflow store needs the pipeline install "
                "(pip install 'taxi-duration-predictor[pipeline]'); a serving install reads an MLflow server "
                "(--tracking-uri http://HOST:5000) or an exported model folder (--model-dir DIR)"
            ) from None
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(uri)


def registered_version(model_name: str, alias: str) -> str | None:
    """The version models:/<name>@<alias> points to; None if the model or alias does not exist; raises
    RegistryUnreachableError if the registry cannot be asked."""
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        if exc.error_code in _ABSENT:
            return None
        raise RegistryUnreachableError(
            f"registry {mlflow.get_registry_uri()}: cannot ask it for models:/{model_name}@{alias} "
            f"({_first_line(exc.message)}); expected a running MLflow server or store"
        ) from None
    except OSError as exc:
        raise RegistryUnreachableError(
            f"registry {mlflow.get_registry_uri()}: cannot reach it ({exc.__class__.__name__}: {_first_line(str(exc))})"
        ) from None


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 200 else line[:197] + "..."


def alias_loader(model_name: str, alias: str) -> tuple[Callable[[], ExportedModel | None], Callable[[], str | None]]:
    """(loader, probe): load models:/<name>@<alias> (None if no such alias); probe the version it points to."""

    def probe() -> str | None:
        return registered_version(model_name, alias)

    def loader() -> ExportedModel | None:
        version = probe()
        return None if version is None else load_registered(model_name, version)

    return loader, probe
