"""The live counts: committed predictions (a file stream) -> trips and mean minutes per pickup borough and
event-time window, each micro-batch's changed windows written under `borough_windows/batch_id=N`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from taxi_duration.schema import struct_type
from taxi_duration.stream.commit import publish
from taxi_duration.stream.paths import BATCH_ID, StreamPaths

# One row per pickup borough and event-time window, as the windows query computes it.
WINDOWS_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("window_start", "timestamp", False),
    ("window_end", "timestamp", False),
    ("pickup_borough", "string", False),  # "Unknown" for zones without a borough
    ("trips", "bigint", False),
    ("mean_predicted_minutes", "double", True),
    ("trips_with_actual", "bigint", False),  # trips whose actual duration is known
    ("mean_actual_minutes", "double", True),  # null when none is
)
WINDOWS_SCHEMA = struct_type(WINDOWS_FIELDS)


def borough_window_counts(zones: DataFrame, watermark: str, window: str) -> Callable[[DataFrame], DataFrame]:
    """Predictions (stream) -> trips, mean predicted and mean actual minutes per pickup borough and event-time
    window; trips older than the watermark (max pickup time seen minus `watermark`) are left out."""
    boroughs = zones.select(F.col("location_id").alias("pickup_location_id"), F.col("borough").alias("pickup_borough"))

    def step(predictions: DataFrame) -> DataFrame:
        return (
            predictions.withWatermark("pickup_datetime", watermark)
            .join(F.broadcast(boroughs), on="pickup_location_id", how="left")
            .groupBy(
                F.window("pickup_datetime", window).alias("window"),
                F.coalesce(F.col("pickup_borough"), F.lit("Unknown")).alias("pickup_borough"),
            )
            .agg(
                F.count(F.lit(1)).alias("trips"),
                F.avg("predicted_duration_minutes").alias("mean_predicted_minutes"),
                F.count("actual_duration_minutes").alias("trips_with_actual"),
                F.avg("actual_duration_minutes").alias("mean_actual_minutes"),
            )
            .select(
                F.col("window.start").alias("window_start"),
                F.col("window.end").alias("window_end"),
                "pickup_borough",
                "trips",
                "mean_predicted_minutes",
                "trips_with_actual",
                "mean_actual_minutes",
            )
        )

    return step


class WindowsBatch:
    """The `foreachBatch` function of the windows query: the windows this batch changed, per batch id."""

    def __init__(self, paths: StreamPaths) -> None:
        self.paths = paths

    def __call__(self, changed: DataFrame, batch_id: int) -> None:
        staged = self.paths.staging / "borough_windows" / f"{BATCH_ID}={batch_id}"
        changed.write.mode("overwrite").parquet(str(staged))
        # a replayed batch recomputes the same rows from the same state version: replacing is safe
        publish(staged, self.paths.borough_windows / f"{BATCH_ID}={batch_id}")


def read_borough_windows(spark: SparkSession, path: Path | str) -> DataFrame:
    """The current value of every window: its row from the latest batch that changed it."""
    rows = spark.read.schema(struct_type([*WINDOWS_FIELDS, (BATCH_ID, "bigint", True)])).parquet(str(path))
    latest = Window.partitionBy("window_start", "pickup_borough").orderBy(F.col(BATCH_ID).desc())
    return (
        rows.withColumn("_rank", F.row_number().over(latest))
        .filter(F.col("_rank") == 1)
        .drop("_rank", BATCH_ID)
        .orderBy("window_start", "pickup_borough")
    )
