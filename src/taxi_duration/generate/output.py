"""Generated trips to files: one dataset per month (`<service>_tripdata_YYYY-MM`), CSV or Parquet, so the CLI and
the benchmarks write exactly the same input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from taxi_duration.errors import ConfigError
from taxi_duration.generate.profile import month_row_counts
from taxi_duration.generate.synthetic import synthetic_trips

FORMATS = ("csv", "parquet")
# CSV times as the TLC publishes them: New York wall-clock text, no zone
CSV_TIMESTAMP_FORMAT = "yyyy-MM-dd HH:mm:ss"


@dataclass(frozen=True)
class MonthOutput:
    """One month to generate: its rows, its seed (the run's seed + the month's index) and its folder."""

    year: int
    month: int
    rows: int
    seed: int
    target: Path


def plan_months(out: Path, rows: int, start: str, months: int, seed: int, service: str) -> list[MonthOutput]:
    """Rows split over the months from `start` ("YYYY-MM") in proportion to their days, each month its folder."""
    return [
        MonthOutput(year, month, count, seed + index, out / f"{service}_tripdata_{year:04d}-{month:02d}")
        for index, (year, month, count) in enumerate(month_row_counts(rows, start, months))
    ]


def write_trips(trips: DataFrame, target: Path, fmt: str) -> None:
    """Replace `target` with the trips as Parquet, or as CSV with a header and TLC-style times."""
    if fmt not in FORMATS:
        raise ConfigError(f"format: expected csv or parquet, found '{fmt}'")
    writer = trips.write.mode("overwrite")
    if fmt == "csv":
        writer.option("header", True).option("timestampFormat", CSV_TIMESTAMP_FORMAT).csv(str(target))
    else:
        writer.parquet(str(target))


def write_month(
    spark: SparkSession, month: MonthOutput, fmt: str, service: str = "yellow", partitions: int | None = None
) -> Path:
    """Generate one planned month and write it; returns its folder."""
    trips = synthetic_trips(
        spark, month.rows, month.year, month.month, seed=month.seed, service=service, partitions=partitions
    )
    write_trips(trips, month.target, fmt)
    return month.target


def write_synthetic(
    spark: SparkSession,
    out: Path,
    rows: int,
    fmt: str,
    *,
    seed: int,
    start: str,
    months: int = 1,
    service: str = "yellow",
    partitions: int | None = None,
) -> list[Path]:
    """`rows` trips over `months` months from `start`, one folder per month under `out`; returns the folders."""
    return [
        write_month(spark, month, fmt, service, partitions)
        for month in plan_months(out, rows, start, months, seed, service)
    ]
