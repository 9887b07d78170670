"""Time-based train/validation split: validate on the latest trips, as the model will be used."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration.errors import NoDataError

SPLIT_RELATIVE_ERROR = 0.001


def time_split(trips: DataFrame, cutoff_micros: int) -> tuple[DataFrame, DataFrame]:
    """(train, validation): pickups before the cutoff, and at or after it. The bound is a timestamp literal (the
    same instant to the microsecond), so a scan of cached rows skips the batches wholly on the other side."""
    pickup, bound = F.col("pickup_datetime"), F.timestamp_micros(F.lit(cutoff_micros))
    return trips.filter(pickup < bound), trips.filter(pickup >= bound)


def cutoff_micros(trips: DataFrame, validation_fraction: float) -> int:
    """The split point as epoch microseconds (exact, no time-zone round trip).

    A SQL aggregate (`percentile_approx`) rather than `DataFrame.approxQuantile`: the same quantile summary and
    relative error, planned like any query; on the 10M benchmark trips the same cutoff in 2.2-3.2 s against
    3.2-6.5 s (three runs each, alternating, one session)."""
    found = trips.agg(
        F.percentile_approx(
            F.unix_micros("pickup_datetime"), 1.0 - validation_fraction, round(1 / SPLIT_RELATIVE_ERROR)
        ).alias("t")
    ).first()
    if found is None or found["t"] is None:
        raise NoDataError("no trips to split: ingest some trip files first (taxi-duration ingest PATH)")
    return int(found["t"])
