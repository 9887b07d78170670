"""One typed settings object: environment (TAXI_DURATION_*), `.env`, CLI flags on top."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where things live and how Spark and MLflow are reached."""

    model_config = SettingsConfigDict(env_prefix="TAXI_DURATION_", env_file=".env", extra="ignore")

    workspace: Path = Field(Path("workspace"), description="Folder for lakehouse tables, MLflow store, reports")
    master: str | None = Field(
        None,
        description="Spark master URL (local[*], spark://host:7077, yarn, k8s://...); default: spark-submit's "
        "--master when launched by spark-submit, else local[*]",
    )
    remote: str | None = Field(None, description="Spark Connect URL (sc://host:15002); overrides master")
    driver_memory: str = Field("4g", description="Driver heap for embedded/local Spark (set before the JVM starts)")
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default SQLite under the workspace")
    registry_uri: str | None = Field(None, description="MLflow registry URI; default: the tracking URI")
    experiment: str = Field("taxi-duration", description="MLflow experiment name")
    model_name: str = Field("taxi-duration", description="Registered model name")
    config: Path | None = Field(None, description="Pipeline parameters YAML (default: the packaged one)")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark conf (JSON in env)")
    log_level: str = Field("WARN", description="Spark log level")
    class_archive: bool = Field(
        True, description="Start local Spark with the JVM class archive `taxi-duration class-archive` built, if any"
    )
    class_archive_dir: Path | None = Field(
        None, description="Folder of JVM class archives (default: the user's cache, ~/.cache/taxi-duration/jvm)"
    )
    admin_key: SecretStr | None = Field(
        None, description="Key for the API's POST /admin/reload (X-API-Key); none: the endpoint is disabled"
    )

    @field_validator("workspace")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # a Spark Connect server or a cluster resolves relative paths against its own working directory
        return value.expanduser().resolve()

    @property
    def lakehouse(self) -> Path:
        return self.workspace / "lakehouse"

    @property
    def trips_path(self) -> Path:
        return self.lakehouse / "trips"

    @property
    def quarantine_path(self) -> Path:
        return self.lakehouse / "quarantine"

    @property
    def predictions_path(self) -> Path:
        return self.lakehouse / "predictions"

    @property
    def reports_path(self) -> Path:
        return self.workspace / "reports"

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.workspace / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_root(self) -> Path:
        return (self.workspace / "mlartifacts").resolve()


@lru_cache(maxsize=1)
def get_settings(**overrides: Any) -> Settings:
    """The settings for this process; CLI flags are passed as overrides (None means "not given")."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**given)
