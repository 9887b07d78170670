"""Samples chosen by trip id: the same trips on every run, whatever the partitioning or the order rows reach a
step (`DataFrame.sample` is not reproducible after a shuffle). `train` fits and evaluates on them beyond
`train.max_fit_trips` / `train.max_eval_trips`; `monitor` computes its statistics on them beyond
`monitor.max_trips` per period, with the trip counts still exact."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

RESOLUTION = 1_000_000  # fractions are taken in millionths


def chosen_by_trip_id(fraction: float, salt: int) -> Column:
    """True for about `fraction` of the trips, chosen by a hash of trip_id and `salt` (another salt, other trips)."""
    return F.pmod(F.xxhash64(F.col("trip_id"), F.lit(salt)), F.lit(RESOLUTION)) < F.lit(int(fraction * RESOLUTION))


def fraction_for(rows: int, max_trips: int | None) -> float:
    """The share of `rows` trips a step uses when it takes at most `max_trips` of them (all if None or fewer)."""
    if max_trips is None or rows <= max_trips:
        return 1.0
    return max_trips / rows
