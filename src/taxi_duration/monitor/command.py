"""What `taxi-duration monitor` does between parsing options and printing: read the tables, resolve MLflow,
compute, publish. Shared by `monitor` and `cycle`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from taxi_duration.lakehouse import read_quarantine, read_trips
from taxi_duration.monitor.job import run_monitor
from taxi_duration.monitor.publish import publish
from taxi_duration.monitor.result import MonitorRequest, MonitorResult
from taxi_duration.params import PipelineParams
from taxi_duration.settings import Settings
from taxi_duration.tracking import configure_mlflow

MONITORING_EXPERIMENT_SUFFIX = "-monitoring"


def monitoring_path(settings: Settings) -> Path:
    return settings.lakehouse / "monitoring"


def read_optional_parquet(spark: SparkSession, path: Path, schema: object | None = None) -> DataFrame | None:
    """A table that may not exist yet (no predictions written, nothing quarantined): None then.

    Trips and quarantine go through the lakehouse's committed-state readers; predictions are written by `score`
    and the stream, outside the ingest commit."""
    if not path.exists() or not any(p.suffix == ".parquet" for p in path.rglob("*.parquet")):
        return None
    reader = spark.read if schema is None else spark.read.schema(schema)  # type: ignore[arg-type]
    return reader.parquet(str(path))


def monitor_command(
    settings: Settings,
    params: PipelineParams,
    *,
    start: datetime,
    end: datetime,
    reference_from: datetime | None,
    reference_to: datetime | None,
    alias: str,
    window: str,
    source: str,
    spark: SparkSession,
) -> MonitorResult:
    """Monitor [start, end) against the reference; write the tables, the MLflow run and the report."""
    from taxi_duration.errors import ConfigError

    if source not in ("trips", "stream"):
        raise ConfigError(f"--source: expected trips or stream, found '{source}'")
    configure_mlflow(settings)  # the registry the champion lives in
    trips = read_trips(spark, settings.trips_path)
    stream_predictions = None
    if source == "stream":
        from taxi_duration.stream.paths import PREDICTIONS_TABLE_SCHEMA, StreamPaths

        stream_predictions = read_optional_parquet(
            spark, StreamPaths.under(settings.workspace).predictions, PREDICTIONS_TABLE_SCHEMA
        )
    result, tables = run_monitor(
        trips,
        MonitorRequest(
            current=(start, end),
            reference_from=reference_from,
            reference_to=reference_to,
            window=window,
            source=source,
        ),
        params.monitor,
        model_name=settings.model_name,
        alias=alias,
        trips_label=str(settings.trips_path),
        predictions=read_optional_parquet(spark, settings.predictions_path),
        quarantine=read_quarantine(spark, settings.quarantine_path),  # the committed rows, as trips
        stream_predictions=stream_predictions,
    )
    experiment_id = configure_mlflow(
        settings.model_copy(update={"experiment": settings.experiment + MONITORING_EXPERIMENT_SUFFIX})
    )
    published = publish(
        result,
        tables,
        monitoring_path=monitoring_path(settings),
        reports_path=settings.reports_path,
        experiment_id=experiment_id,
        psi_threshold=params.monitor.psi_threshold,
    )
    set_job_task_values(published)
    return published


def set_job_task_values(result: MonitorResult) -> bool:
    """On Databricks, publish `alert` (and the headline figures) as task values, so a condition task can branch
    on `{{tasks.<task>.values.alert}}` as MLOps Stacks does. Elsewhere (no `databricks.sdk.runtime`) a no-op.
    Not exercised here: there is no Databricks workspace to run it in."""
    import os

    if "DATABRICKS_RUNTIME_VERSION" not in os.environ:
        return False
    try:
        from databricks.sdk.runtime import dbutils
    except ImportError:
        return False
    values = {
        "alert": str(result.alert).lower(),
        "prediction_psi": result.prediction_psi,
        "realized_ratio": result.realized.get("ratio"),
        "monitor_run_id": result.run_id,
    }
    for key, value in values.items():
        dbutils.jobs.taskValues.set(key=key, value=value)
    return True
