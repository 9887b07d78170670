"""Batch scoring: trips -> predictions with the model version that made them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration.columns import PREDICTION
from taxi_duration.features.output import minutes_from_log_seconds


def with_predictions(
    model: PipelineModel, model_name: str, model_version: str, keep: Sequence[str] = ()
) -> Callable[[DataFrame], DataFrame]:
    """Canonical trips -> one prediction row per trip (minutes), stamped with the model version.

    `keep` names extra input columns carried through after the standard ones (e.g. the stream's batch columns)."""

    def step(trips: DataFrame) -> DataFrame:
        return model.transform(trips).select(
            "trip_id",
            "service",
            "pickup_datetime",
            "pickup_location_id",
            "dropoff_location_id",
            "trip_distance",
            minutes_from_log_seconds(F.col(PREDICTION)).alias("predicted_duration_minutes"),
            (F.col("duration_s") / F.lit(60.0)).alias("actual_duration_minutes"),
            F.lit(model_name).alias("model_name"),
            F.lit(model_version).alias("model_version"),
            *keep,
        )

    return step
