"""Reading the workspace tables (trips, predictions) with their declared schemas."""

from __future__ import annotations

from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

from taxi_duration.errors import NoDataError
from taxi_duration.schema import TRIPS_TABLE_SCHEMA


def read_trips(spark: SparkSession, path: Path | str) -> DataFrame:
    """The clean trips table; a clear error if nothing has been ingested yet."""
    text = str(path)
    if "://" not in text and not Path(text).exists():
        raise NoDataError(f"{text}: no trips table yet; run `taxi-duration ingest PATH...` first")
    try:
        return spark.read.schema(TRIPS_TABLE_SCHEMA).parquet(text)
    except AnalysisException as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise NoDataError(f"{text}: cannot read the trips table ({first})") from None
