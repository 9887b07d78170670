"""The travel-time table computed by Spark from training trips, and its out-of-fold form for those same trips.

A trip's own duration must not reach its own features: a pair seen a few times would hand the model the answer
(measured on the real 2018 months: a table joined in-sample made the zones-only RMSLE worse, 0.42 against 0.36
out of fold). So each training trip reads the medians of the other folds (`out_of_fold`), while the model keeps the
table of all training trips for scoring.

Medians are exact lower medians (the middle trip, the lower one of the two for an even count, as the baseline's
`percentile_approx` returns on small groups) of durations in tenths of a minute (6 s) and distances in hundredths
of a mile (the TLC files' resolution). They come from counts: one aggregation over the trips gives, per zone pair,
value and fold, how many trips have that value (within the quality bounds at most 3,600 durations and 20,000
distances per pair); a second one adds them up per borough pair and overall, and a running sum over the values
finds the middle one. Counts add up, so the other folds' medians of every fold, and the table of all the trips,
come out of that one pass, each trip counted once; and integer counts give the same medians whatever the
partitioning, on one core, a cluster or Spark Connect (sampling sketches do not: docs/benchmarks.md). The medians,
at most (263 x 263 + 100) x (folds + 1) rows, are collected; the out-of-fold ones join the trips as a broadcast
table.
"""

from __future__ import annotations

import math
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from taxi_duration.features.definitions import (
    OUT_OF_FOLD_BOROUGHS,
    OUT_OF_FOLD_PAIR,
    feature_stages,
)
from taxi_duration.features.travel_times import PAIR_KEY_FACTOR, Stats, TravelTimes

_KEYS = ("_pu_zone", "_do_zone", "pickup_borough", "dropoff_borough")
_PAIR, _BOROUGH, _OVERALL = 0, 1, 2  # levels of the table
_MINUTES, _MILES = 0, 1  # measures; a value is in tenths of a minute or hundredths of a mile
_GROUP = ("_level", "_key", "_measure")
OOF_SCHEMA = "_key INT, _fold INT, trips DOUBLE, miles DOUBLE, minutes DOUBLE"
# per level and key: the medians of each target (fold 0..folds-1: the other folds' trips; `folds`: every trip)
Targets = dict[tuple[int, int], dict[int, Stats]]


def _with_keys(trips: DataFrame) -> DataFrame:
    """Trips with the resolved zones (ids, else the coordinate grid) and borough codes the feature SQL looks up."""
    zones, base = feature_stages()[:2]
    boroughs = [item for item in base if item[0] in ("pickup_borough", "dropoff_borough")]
    return trips.selectExpr("*", *[f"{e} AS {n}" for n, e in zones]).selectExpr(
        "*", *[f"{e} AS {n}" for n, e in boroughs]
    )


def _key(pickup: str, dropoff: str) -> Column:
    return F.col(pickup).cast("int") * F.lit(PAIR_KEY_FACTOR) + F.col(dropoff).cast("int")


def _medians(keyed: DataFrame, folds: int) -> Targets:
    """Per level and key, per target t (fold 0..folds-1: every trip outside fold t; `folds`: every trip): the trips
    and the lower medians of their minutes and recorded miles (NaN when no trip there had that measure).
    `keyed` has `_fold` in 0..folds-1. The result, at most (263 x 263 + 100 + 1) x (folds + 1) rows, is collected."""
    tenths = F.round(F.col("duration_s") / F.lit(6.0)).cast("long")  # tenths of a minute
    hundredths = F.when(F.col("trip_distance") > 0, F.round(F.col("trip_distance").cast("double") * 100).cast("long"))
    values = [
        F.struct(F.lit(measure).alias("_measure"), value.alias("v"))
        for measure, value in ((_MINUTES, tenths), (_MILES, hundredths))
    ]
    per_fold = [F.count(F.when(F.col("_fold") == F.lit(k), 1)).alias(f"_c{k}") for k in range(folds)]
    # one pass over the trips: how many trips of each fold have the value, per zone pair (with its borough pair)
    counts = (
        keyed.filter(F.col("duration_s").isNotNull())
        .select(
            _key("_pu_zone", "_do_zone").alias("_pair"),
            _key("pickup_borough", "dropoff_borough").alias("_boroughs"),
            "_fold",
            F.explode(F.array(*values)).alias("r"),
        )
        .select("_pair", "_boroughs", "_fold", "r.*")
        .filter(F.col("v").isNotNull())
        .groupBy("_pair", "_boroughs", "_measure", "v")
        .agg(*per_fold)
    )
    # every level from those counts in one more aggregation (on far fewer rows than trips): each row counts for its
    # zone pair, its borough pair and the whole; a NULL key (no zone) is a group of its own, dropped on the driver
    level_keys = F.array(
        *[
            F.struct(F.lit(lv).alias("_level"), key.alias("_key"))
            for lv, key in ((_PAIR, F.col("_pair")), (_BOROUGH, F.col("_boroughs")), (_OVERALL, F.lit(0)))
        ]
    )
    levels = (
        counts.select(F.explode(level_keys).alias("l"), "_measure", "v", *[f"_c{k}" for k in range(folds)])
        .select("l.*", "_measure", "v", *[f"_c{k}" for k in range(folds)])
        .groupBy(*_GROUP, "v")
        .agg(*[F.sum(f"_c{k}").alias(f"_c{k}") for k in range(folds)])
    )
    # a target's count of a value is every fold's but its own
    every = sum((F.col(f"_c{k}") for k in range(folds)), F.lit(0))
    targets = [every - F.col(f"_c{k}") for k in range(folds)] + [every] if folds > 1 else [every]
    ordered = Window.partitionBy(*_GROUP).orderBy("v")  # values are distinct within a group: rows = range
    whole = Window.partitionBy(*_GROUP)
    running = levels.select(
        *_GROUP,
        "v",
        *[F.sum(n).over(ordered).alias(f"_below{t}") for t, n in enumerate(targets)],
        *[F.sum(n).over(whole).alias(f"_n{t}") for t, n in enumerate(targets)],
    )

    def middle(t: int) -> Column:  # the smallest value whose running count reaches half the trips
        n, below = F.col(f"_n{t}"), F.col(f"_below{t}")
        return F.min(F.when((n > 0) & (below * 2 >= n), F.col("v")))

    rows = (
        running.groupBy(*_GROUP)
        .agg(
            F.array(*[F.max(f"_n{t}") for t in range(len(targets))]).alias("n"),
            F.array(*[middle(t) for t in range(len(targets))]).alias("median"),
        )
        .collect()
    )
    first = 0 if folds > 1 else folds  # with one fold, the only target is every trip
    found: Targets = {}
    for r in rows:
        if r["_key"] is None:
            continue
        stats = found.setdefault((int(r["_level"]), int(r["_key"])), {})
        for t, (n, median) in enumerate(zip(r["n"], r["median"], strict=True)):
            trips, miles, minutes = stats.get(first + t, (0.0, float("nan"), float("nan")))
            if r["_measure"] == _MINUTES:
                trips, minutes = float(n), _nan(None if median is None else median / 10.0)
            else:
                miles = _nan(None if median is None else median / 100.0)
            stats[first + t] = (trips, miles, minutes)
    return found


def _level(found: Targets, level: int, target: int, min_trips: int) -> dict[int, Stats]:
    """The rows of one level for one target: keys with at least `min_trips` trips there."""
    return {
        key: stats[target]
        for (lv, key), stats in found.items()
        if lv == level and target in stats and stats[target][0] >= max(min_trips, 1)
    }


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def build_travel_times(train: DataFrame, min_trips: int, source: dict[str, Any] | None = None) -> TravelTimes:
    """Medians per zone pair (pairs with at least `min_trips` trips), per borough pair and overall."""
    found = _medians(_with_keys(train).withColumn("_fold", F.lit(0)), 1)
    return _table(found, 1, min_trips, source)


def with_out_of_fold(train: DataFrame, min_trips: int, folds: int, seed: int) -> DataFrame:
    """Training trips with `_oof_pair` and `_oof_boroughs`: the table rows (trips, miles, minutes) computed from
    the other `folds - 1` folds. Pairs under `min_trips` there get NULL, as the embedded table has no row for them."""
    return travel_times_with_out_of_fold(train, min_trips, folds, seed)[1]


def travel_times_with_out_of_fold(
    train: DataFrame, min_trips: int, folds: int, seed: int, source: dict[str, Any] | None = None
) -> tuple[TravelTimes, DataFrame]:
    """`build_travel_times` and `with_out_of_fold` from one pass over the trips: the table of every trip is one
    more target of the same counts. The medians are computed (and collected) here; the out-of-fold ones join the
    trips as small broadcast tables, so the trips keep their partitions and their order."""
    fold = F.pmod(F.xxhash64(F.col("trip_id"), F.lit(seed)), F.lit(folds)).cast("int")
    keyed = _with_keys(train).withColumn("_fold", fold)
    found = _medians(keyed, folds)
    spark = train.sparkSession

    def level(lv: int, name: str, minimum: int) -> DataFrame:
        rows = [
            (key, t, *_nulls(stats))
            for t in range(folds)
            for key, stats in sorted(_level(found, lv, t, minimum).items())
        ]
        table = spark.createDataFrame(rows, OOF_SCHEMA)
        return F.broadcast(table.select("_key", "_fold", F.array("trips", "miles", "minutes").alias(name)))

    with_table = (
        keyed.withColumn("_key", _key("_pu_zone", "_do_zone"))
        .join(level(_PAIR, OUT_OF_FOLD_PAIR, min_trips), on=["_key", "_fold"], how="left")
        .withColumn("_key", _key("pickup_borough", "dropoff_borough"))
        .join(level(_BOROUGH, OUT_OF_FOLD_BOROUGHS, 1), on=["_key", "_fold"], how="left")
        .drop("_key", "_fold", *_KEYS)
    )
    return _table(found, folds, min_trips, source), with_table


def _table(found: Targets, every: int, min_trips: int, source: dict[str, Any] | None) -> TravelTimes:
    """The table of target `every` (all the trips)."""
    return TravelTimes(
        min_trips=min_trips,
        pairs=_level(found, _PAIR, every, min_trips),
        boroughs=_level(found, _BOROUGH, every, 1),
        overall=_level(found, _OVERALL, every, 1).get(0, (0.0, float("nan"), float("nan"))),
        source=source or {},
    )


def _nulls(stats: Stats) -> tuple[float | None, ...]:
    return tuple(None if math.isnan(v) else v for v in stats)
