"""Metrics, the zone-pair median baseline, the time split and the promotion rule, on hand-built frames."""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from taxi_duration.features.definitions import with_label
from taxi_duration.features.travel_times import pair_key
from taxi_duration.params import PipelineParams, TrainParams
from taxi_duration.registry.promotion import decide_promotion, regime_regressions
from taxi_duration.sampling import chosen_by_trip_id, fraction_for
from taxi_duration.schema import TRIP_SCHEMA
from taxi_duration.train.evaluate import as_regime, regression_metrics, with_baseline_prediction, zone_pair_medians
from taxi_duration.train.job import (
    mask_distance,
    one_partition_per_core,
    training_features,
)
from taxi_duration.train.pipeline import build_pipeline, feature_columns, param_grid
from taxi_duration.train.split import time_split
from taxi_duration.train.travel_times import build_travel_times, travel_times_with_out_of_fold, with_out_of_fold
from taxi_duration.zones import load_zones


def test_regression_metrics_match_hand_computation(spark: SparkSession) -> None:
    pairs = [(10.0, 12.0), (20.0, 15.0), (5.0, 5.0), (30.0, 40.0)]
    df = spark.createDataFrame(pairs, "predicted_minutes double, actual_minutes double")
    m = regression_metrics(df)
    errors = [p - a for p, a in pairs]
    actual = [a for _, a in pairs]
    mean_actual = sum(actual) / 4
    assert m["rows"] == 4
    assert m["rmse_minutes"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 4), rel=1e-12)
    assert m["mae_minutes"] == pytest.approx(sum(abs(e) for e in errors) / 4, rel=1e-12)
    msle = sum((math.log1p(p) - math.log1p(a)) ** 2 for p, a in pairs) / 4
    assert m["rmsle"] == pytest.approx(math.sqrt(msle), rel=1e-12)
    # Kaggle's NYC Taxi Trip Duration RMSLE is on seconds
    msle_s = sum((math.log1p(60 * p) - math.log1p(60 * a)) ** 2 for p, a in pairs) / 4
    assert m["rmsle_seconds"] == pytest.approx(math.sqrt(msle_s), rel=1e-12)
    sst = sum((a - mean_actual) ** 2 for a in actual) / 4
    assert m["r2"] == pytest.approx(1 - (sum(e * e for e in errors) / 4) / sst, rel=1e-12)


def test_baseline_uses_pair_then_zone_then_overall_median(spark: SparkSession) -> None:
    train = spark.createDataFrame(
        [(1, 2, 600.0), (1, 2, 900.0), (1, 2, 1200.0), (1, 3, 300.0), (4, 5, 3000.0)],
        "pickup_location_id int, dropoff_location_id int, duration_s double",
    )
    valid = spark.createDataFrame(
        [(10, 1, 2), (11, 1, 9), (12, 7, 7)], "trip int, pickup_location_id int, dropoff_location_id int"
    )
    result = valid.transform(with_baseline_prediction(zone_pair_medians(train))).select("trip", "baseline_minutes")
    # pair (1,2): median 900 s = 15 min; zone 1 (any dropoff): 300, 600, 900, 1200 -> the lower middle, 600 s
    # = 10 min (percentile_approx returns an element); overall: median of all five = 900 s = 15 min
    expected = spark.createDataFrame([(10, 15.0), (11, 10.0), (12, 15.0)], "trip int, baseline_minutes double")
    assertDataFrameEqual(result, expected)


def test_time_split_puts_later_trips_in_validation(spark: SparkSession) -> None:
    trips = spark.createDataFrame(
        [(i, datetime(2024, 1, 1 + i, 12, 0)) for i in range(10)], "id int, pickup_datetime timestamp"
    )
    cutoff = int(datetime(2024, 1, 9, 12, 0).timestamp() * 1_000_000)
    train, valid = time_split(trips, cutoff)
    assert sorted(r["id"] for r in train.collect()) == list(range(8))
    assert sorted(r["id"] for r in valid.collect()) == [8, 9]


@pytest.mark.parametrize(
    ("challenger", "champion", "promote"),
    [
        (0.30, None, True),
        (0.29, 0.30, True),
        (0.30, 0.30, False),
        (0.31, 0.30, False),
        (float("nan"), 0.3, False),
    ],
)
def test_promotion_rule(challenger: float, champion: float | None, promote: bool) -> None:
    decision = decide_promotion("rmsle", challenger, champion, "3" if champion is not None else None)
    assert decision.promote is promote
    assert (decision.metric == "rmsle" and decision.challenger == challenger) or math.isnan(challenger)


def test_pipelines_and_grid() -> None:
    params = TrainParams(gbt={"maxIter": 5}, tune={"grid": {"gbt": {"maxDepth": [3, 5], "stepSize": [0.1]}}})
    gbt = build_pipeline("gbt", params)
    assert [type(s).__name__ for s in gbt.getStages()] == [
        "SQLTransformer",
        "VectorAssembler",
        "GBTRegressor",
    ]
    assert gbt.getStages()[-1].getMaxIter() == 5
    assert len(param_grid(gbt, "gbt", params)) == 2
    rf = build_pipeline("rf", params)
    assert rf.getStages()[1].getInputCols() == ["distance", "pickup_hour", "pickup_weekday"]
    assert feature_columns("linear") == feature_columns("gbt")


def _lower_median(values: list[float]) -> float:
    """What percentile_approx(x, 0.5) returns on a few values: the smallest with half the values at or below it."""
    ordered = sorted(values)
    return ordered[math.ceil(len(ordered) * 0.5) - 1]


def _trips(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """Canonical trips from (trip_id, pickup zone, dropoff zone, miles, seconds)."""
    full = []
    for trip_id, pu, do, miles, seconds in rows:
        row = dict.fromkeys(TRIP_SCHEMA.fieldNames())
        row.update(
            trip_id=trip_id,
            service="yellow",
            source_file="hand-built",
            pickup_datetime=datetime(2018, 3, 1, 8, 0),
            pickup_location_id=pu,
            dropoff_location_id=do,
            trip_distance=miles,
            duration_s=seconds,
        )
        full.append(tuple(row[c] for c in TRIP_SCHEMA.fieldNames()))
    return spark.createDataFrame(full, TRIP_SCHEMA)


# zone 132 (JFK) and 138 (LGA) are Queens (3), 230 and 161 Manhattan (1)
TRIPS = [
    (1, 132, 230, 17.0, 3000.0),
    (2, 132, 230, 18.0, 3600.0),
    (3, 132, 230, 16.5, 2700.0),
    (4, 132, 230, 17.5, 4200.0),
    (5, 132, 230, None, 3300.0),
    (6, 161, 230, 0.9, 420.0),
    (7, 161, 230, 1.1, 540.0),
    (8, 138, 161, 9.0, 1800.0),
]


def test_travel_times_from_training_trips(spark: SparkSession) -> None:
    table = build_travel_times(_trips(spark, TRIPS), min_trips=2, source={"trips": 8})
    jfk = [t for t in TRIPS if t[1] == 132]
    assert table.pairs[pair_key(132, 230)] == (
        5.0,
        _lower_median([t[3] for t in jfk if t[3] is not None]),  # the median of the recorded distances
        _lower_median([t[4] / 60 for t in jfk]),
    )
    assert table.pairs[pair_key(161, 230)] == (2.0, 0.9, 7.0)
    assert pair_key(138, 161) not in table.pairs  # one trip: under min_trips, falls back to its borough pair
    queens_manhattan = [t for t in TRIPS if t[1] in (132, 138)]
    assert table.boroughs[pair_key(3, 1)] == (
        6.0,
        _lower_median([t[3] for t in queens_manhattan if t[3] is not None]),
        _lower_median([t[4] / 60 for t in queens_manhattan]),
    )
    recorded = [t[3] for t in TRIPS if t[3] is not None]
    assert table.overall == (8.0, _lower_median(recorded), _lower_median([t[4] / 60 for t in TRIPS]))
    assert table.source == {"trips": 8}
    # counts add up whatever the partitioning: the same medians from the trips in 5 partitions, and from the pass
    # that also gives the out-of-fold columns
    assert build_travel_times(_trips(spark, TRIPS).repartition(5), 2, {"trips": 8}).to_json() == table.to_json()
    together, _ = travel_times_with_out_of_fold(_trips(spark, TRIPS), 2, 3, 42, source={"trips": 8})
    assert together.to_json() == table.to_json()


def test_out_of_fold_rows_leave_the_trip_out(spark: SparkSession) -> None:
    trips = _trips(spark, TRIPS)
    folds, seed = 3, 42
    rows = {r["trip_id"]: r for r in with_out_of_fold(trips, 1, folds, seed).collect()}
    assert sorted(rows) == [t[0] for t in TRIPS]
    fold_of = {
        r["trip_id"]: r["f"]
        for r in trips.selectExpr("trip_id", f"CAST(pmod(xxhash64(trip_id, {seed}), {folds}) AS INT) AS f").collect()
    }
    for trip_id, pu, do, _, _ in TRIPS:
        others = [t for t in TRIPS if (t[1], t[2]) == (pu, do) and fold_of[t[0]] != fold_of[trip_id]]
        got = rows[trip_id]["_oof_pair"]
        if not others:
            assert got is None
            continue
        miles = [t[3] for t in others if t[3] is not None]
        assert got == [
            float(len(others)),
            _lower_median(miles) if miles else None,
            _lower_median([t[4] / 60 for t in others]),
        ]
    assert len(set(fold_of.values())) > 1  # the test means something: trips sit in different folds


def test_the_estimator_fits_on_a_sample_whose_out_of_fold_columns_come_from_every_trip(spark: SparkSession) -> None:
    assert (fraction_for(800, None), fraction_for(800, 800), fraction_for(8_000_000, 1_000_000)) == (1.0, 1.0, 0.125)
    # 400 trips: the hand-built ones again and again under new ids, so every pair has trips in every fold
    many = [(trip_id + 8 * copy, *rest) for copy in range(50) for trip_id, *rest in TRIPS]
    trips = _trips(spark, many).transform(with_label)
    table = build_travel_times(trips, min_trips=3)
    params = PipelineParams()
    every = training_features(trips, table, params)
    sample = training_features(trips, table, params, fraction=0.25)
    assert every.count() == 400 and 60 < sample.count() < 140
    # a sampled row is the row the trip has when every trip is featured: the out-of-fold columns and the masked
    # distance were computed before sampling, from all 400 trips
    chosen = sample.select("trip_id")
    assertDataFrameEqual(sample, every.join(chosen, on="trip_id", how="left_semi"))
    assert training_features(trips, table, params, fraction=0.25).select("trip_id").collect() == chosen.collect()


def test_the_estimator_input_has_one_partition_per_core_and_samples_are_chosen_by_trip_id(spark: SparkSession) -> None:
    cores = spark.sparkContext.defaultParallelism  # local[2]
    many = spark.range(1_000).repartition(8)
    assert (many.rdd.getNumPartitions(), one_partition_per_core(many).rdd.getNumPartitions()) == (8, cores)
    one = spark.range(0, 10, 1, numPartitions=1)
    assert one_partition_per_core(one).rdd.getNumPartitions() == 1  # never more partitions than given
    assert sorted(r["id"] for r in one_partition_per_core(many).collect()) == list(range(1_000))
    # the same trips whatever the partitioning, about the asked share of them
    trips = spark.range(20_000).withColumnRenamed("id", "trip_id")
    chosen = {r["trip_id"] for r in trips.filter(chosen_by_trip_id(0.25, 45)).collect()}
    again = {r["trip_id"] for r in trips.repartition(7).filter(chosen_by_trip_id(0.25, 45)).collect()}
    assert chosen == again and 4_700 < len(chosen) < 5_300
    assert chosen != {r["trip_id"] for r in trips.filter(chosen_by_trip_id(0.25, 46)).collect()}


def test_as_regime_and_masking(spark: SparkSession) -> None:
    trips = _trips(spark, TRIPS)
    assert as_regime(trips, "recorded_distance").count() == 7
    zones = as_regime(trips, "zones_only").collect()
    assert len(zones) == 8 and all(r["trip_distance"] is None and r["pickup_location_id"] for r in zones)
    centroid = {z.location_id: (z.centroid_lat, z.centroid_lon) for z in load_zones()}
    coordinates = {r["trip_id"]: r for r in as_regime(trips, "coordinates_only").collect()}
    assert len(coordinates) == 8
    jfk = coordinates[1]
    assert (jfk["pickup_latitude"], jfk["pickup_longitude"]) == centroid[132]
    assert (jfk["dropoff_latitude"], jfk["dropoff_longitude"]) == centroid[230]
    assert jfk["pickup_location_id"] is None and jfk["dropoff_location_id"] is None and jfk["trip_distance"] is None
    masked = [r["trip_distance"] for r in mask_distance(trips, 0.5, 42).orderBy("trip_id").collect()]
    again = [r["trip_distance"] for r in mask_distance(trips, 0.5, 42).orderBy("trip_id").collect()]
    assert masked == again and 0 < sum(d is None for d in masked) < 8
    assert mask_distance(trips, 0.0, 42) is trips


def test_regime_gate() -> None:
    champion = {"recorded_distance": {"rmsle": 0.30}, "zones_only": {"rmsle": 0.40}}
    better = {"recorded_distance": {"rmsle": 0.29}, "zones_only": {"rmsle": 0.405}}  # within 2% on zones
    assert regime_regressions(better, champion, 0.02) == []
    worse = {"recorded_distance": {"rmsle": 0.28}, "zones_only": {"rmsle": 0.50}}
    reasons = regime_regressions(worse, champion, 0.02)
    assert len(reasons) == 1 and reasons[0].startswith("zones_only rmsle 0.50000 > champion 0.40000")
    decision = decide_promotion("rmsle", 0.28, 0.30, "3", regressions=reasons)
    assert decision.promote is False and "zones_only" in decision.reason
