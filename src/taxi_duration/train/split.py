"""Time-based train/validation split: validate on the latest trips, as the model will be used."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration.errors import NoDataError

SPLIT_RELATIVE_ERROR = 0.001


def time_split(trips: DataFrame, cutoff_micros: int) -> tuple[DataFrame, DataFrame]:
    """(train, validation): pickups before the cutoff, and at or after it."""
    t = F.unix_micros("pickup_datetime")
    return trips.filter(t < F.lit(cutoff_micros)), trips.filter(t >= F.lit(cutoff_micros))


def cutoff_micros(trips: DataFrame, validation_fraction: float) -> int:
    """The split point as epoch microseconds (exact, no time-zone round trip)."""
    seconds = trips.select(F.unix_micros("pickup_datetime").alias("t"))
    quantiles = seconds.approxQuantile("t", [1.0 - validation_fraction], SPLIT_RELATIVE_ERROR)
    if not quantiles:
        raise NoDataError("no trips to split: ingest some trip files first (taxi-duration ingest PATH)")
    return int(quantiles[0])
