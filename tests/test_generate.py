"""Synthetic TLC trips: exact schema, determinism, month bounds, dirt rates, realism, row splits."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType, TimestampType
from pyspark.testing import assertDataFrameEqual

from taxi_duration.errors import ConfigError
from taxi_duration.generate import GREEN_COLUMNS, YELLOW_COLUMNS, DirtRates, month_row_counts, synthetic_trips
from taxi_duration.generate.lookups import zone_pairs, zone_table
from taxi_duration.generate.profile import alias_table, miles_matrix
from taxi_duration.generate.synthetic import DAY_LONG_MIN_S, DAY_LONG_SPAN_S, MAX_DURATION_S, MIN_DURATION_S

ROWS = 20_000
NO_DIRT = DirtRates(
    zero_duration=0.0,
    day_long=0.0,
    zero_distance=0.0,
    unknown_zone=0.0,
    null_passenger_count=0.0,
    dropoff_before_pickup=0.0,
    duplicate=0.0,
)
HIGH_DIRT = DirtRates(
    zero_duration=0.03,
    day_long=0.02,
    zero_distance=0.05,
    unknown_zone=0.04,
    null_passenger_count=0.05,
    dropoff_before_pickup=0.02,
    duplicate=0.03,
)
RELATIVE_TOLERANCE = 0.25  # > 4 standard deviations of each measured rate at these rates and ROWS

YELLOW_TYPES = [
    ("VendorID", IntegerType()),
    ("tpep_pickup_datetime", TimestampType()),
    ("tpep_dropoff_datetime", TimestampType()),
    ("passenger_count", LongType()),
    ("trip_distance", DoubleType()),
    ("RatecodeID", LongType()),
    ("store_and_fwd_flag", StringType()),
    ("PULocationID", IntegerType()),
    ("DOLocationID", IntegerType()),
    ("payment_type", LongType()),
    ("fare_amount", DoubleType()),
    ("extra", DoubleType()),
    ("mta_tax", DoubleType()),
    ("tip_amount", DoubleType()),
    ("tolls_amount", DoubleType()),
    ("improvement_surcharge", DoubleType()),
    ("total_amount", DoubleType()),
    ("congestion_surcharge", DoubleType()),
    ("Airport_fee", DoubleType()),
]
GREEN_TYPES = [
    ("VendorID", IntegerType()),
    ("lpep_pickup_datetime", TimestampType()),
    ("lpep_dropoff_datetime", TimestampType()),
    ("store_and_fwd_flag", StringType()),
    ("RatecodeID", LongType()),
    ("PULocationID", IntegerType()),
    ("DOLocationID", IntegerType()),
    ("passenger_count", LongType()),
    ("trip_distance", DoubleType()),
    ("fare_amount", DoubleType()),
    ("extra", DoubleType()),
    ("mta_tax", DoubleType()),
    ("tip_amount", DoubleType()),
    ("tolls_amount", DoubleType()),
    ("ehail_fee", DoubleType()),
    ("improvement_surcharge", DoubleType()),
    ("total_amount", DoubleType()),
    ("payment_type", LongType()),
    ("trip_type", LongType()),
    ("congestion_surcharge", DoubleType()),
]


def _with_duration(trips: DataFrame, prefix: str = "tpep") -> DataFrame:
    pickup, dropoff = f"{prefix}_pickup_datetime", f"{prefix}_dropoff_datetime"
    return trips.withColumn("duration_s", F.unix_seconds(dropoff) - F.unix_seconds(pickup))


@pytest.fixture(scope="module")
def dirty(spark: SparkSession) -> Iterator[DataFrame]:
    trips = _with_duration(synthetic_trips(spark, ROWS, 2024, 3, seed=11, dirt=HIGH_DIRT)).cache()
    yield trips
    trips.unpersist()


@pytest.fixture(scope="module")
def clean(spark: SparkSession) -> Iterator[DataFrame]:
    trips = _with_duration(synthetic_trips(spark, ROWS, 2019, 3, seed=5, dirt=NO_DIRT)).cache()
    yield trips
    trips.unpersist()


def test_yellow_schema_is_tlc_2024(dirty: DataFrame) -> None:
    assert [(field.name, field.dataType) for field in dirty.drop("duration_s").schema.fields] == YELLOW_TYPES
    assert [name for name, _ in YELLOW_TYPES] == YELLOW_COLUMNS


def test_green_schema_and_values(spark: SparkSession) -> None:
    trips = synthetic_trips(spark, 2_000, 2019, 3, seed=1, service="green")
    assert [(field.name, field.dataType) for field in trips.schema.fields] == GREEN_TYPES
    assert [name for name, _ in GREEN_TYPES] == GREEN_COLUMNS
    row = trips.select(
        F.count("*").alias("rows"),
        F.count("ehail_fee").alias("ehail_fees"),
        F.sum(F.col("trip_type").isin(1, 2).cast("int")).alias("valid_trip_types"),
        F.avg((F.col("PULocationID").isin(42, 41, 74, 75, 7, 129, 166, 82, 97)).cast("int")).alias("top_share"),
        F.max("congestion_surcharge").alias("congestion"),
    ).first()
    assert row is not None
    assert (row["rows"], row["ehail_fees"], row["valid_trip_types"]) == (2_000, 0, 2_000)
    assert row["top_share"] > 0.3  # green pickups concentrate in Harlem, Astoria, Jackson Heights...
    assert row["congestion"] == 2.75


def test_same_seed_same_rows_whatever_the_partitioning(spark: SparkSession, dirty: DataFrame) -> None:
    rows = dirty.drop("duration_s").collect()  # seed 11, two partitions
    again = synthetic_trips(spark, ROWS, 2024, 3, seed=11, dirt=HIGH_DIRT, partitions=3)
    assertDataFrameEqual(again.collect(), rows)
    other = synthetic_trips(spark, 2_000, 2024, 3, seed=12, dirt=HIGH_DIRT).collect()
    assert len(other) == 2_000 and not set(other) & set(rows)


def test_pickups_inside_the_month_including_dst_day(dirty: DataFrame) -> None:
    row = dirty.select(
        F.min(F.date_format("tpep_pickup_datetime", "yyyy-MM-dd HH:mm:ss")).alias("first"),
        F.max(F.date_format("tpep_pickup_datetime", "yyyy-MM-dd HH:mm:ss")).alias("last"),
        F.sum((F.to_date("tpep_pickup_datetime") == F.lit("2024-03-10").cast("date")).cast("int")).alias("dst_day"),
        F.count_distinct(F.dayofmonth("tpep_pickup_datetime")).alias("days"),
        F.count_distinct(F.hour("tpep_pickup_datetime")).alias("hours"),
    ).first()
    assert row is not None
    assert "2024-03-01 00:00:00" <= row["first"] < "2024-03-01 01:00:00"
    assert "2024-03-31 23:00:00" <= row["last"] <= "2024-03-31 23:59:59"
    assert row["dst_day"] > 0 and row["days"] == 31 and row["hours"] == 24


def test_dirt_appears_at_the_configured_rates(dirty: DataFrame) -> None:
    duration = F.col("duration_s")
    unknown = F.col("PULocationID").isin(264, 265) | F.col("DOLocationID").isin(264, 265)
    row = dirty.select(
        F.count("*").alias("rows"),
        F.avg((duration == 0).cast("double")).alias("zero_duration"),
        F.avg(duration.between(DAY_LONG_MIN_S, DAY_LONG_MIN_S + DAY_LONG_SPAN_S - 1).cast("double")).alias("day_long"),
        F.avg((duration < 0).cast("double")).alias("dropoff_before_pickup"),
        F.avg((F.col("trip_distance") == 0).cast("double")).alias("zero_distance"),
        F.avg(unknown.cast("double")).alias("unknown_zone"),
        F.avg(F.col("passenger_count").isNull().cast("double")).alias("null_passenger_count"),
        F.sum(
            ((duration.between(1, MIN_DURATION_S - 1) | (duration > MAX_DURATION_S)) & (duration < 86_000)).cast("int")
        )
        .cast("long")
        .alias("other_odd_durations"),
    ).first()
    assert row is not None
    assert row["rows"] == ROWS  # duplicates replace a neighbour: the row count stays exact
    assert row["other_odd_durations"] == 0
    for name in (
        "zero_duration",
        "day_long",
        "dropoff_before_pickup",
        "zero_distance",
        "unknown_zone",
        "null_passenger_count",
    ):
        expected = getattr(HIGH_DIRT, name)
        assert abs(row[name] - expected) < RELATIVE_TOLERANCE * expected, (name, row[name])
    copies = ROWS - dirty.drop("duration_s").distinct().count()
    assert abs(copies / ROWS - HIGH_DIRT.duplicate) < RELATIVE_TOLERANCE * HIGH_DIRT.duplicate


def test_no_dirt_when_rates_are_zero(clean: DataFrame) -> None:
    row = clean.select(
        F.count("*").alias("rows"),
        F.min("duration_s").alias("shortest"),
        F.max("duration_s").alias("longest"),
        F.min("trip_distance").alias("nearest"),
        F.min("PULocationID").alias("min_pickup"),
        F.max(F.greatest("PULocationID", "DOLocationID")).alias("max_zone"),
        F.count("passenger_count").alias("passenger_counts"),
        # count_distinct skips rows with a null: Airport_fee is null before 2022
        F.count_distinct(*(name for name in YELLOW_COLUMNS if name != "Airport_fee")).alias("distinct_rows"),
    ).first()
    assert row is not None
    assert row["rows"] == row["distinct_rows"] == row["passenger_counts"] == ROWS
    assert row["shortest"] >= MIN_DURATION_S and row["longest"] <= MAX_DURATION_S
    assert row["nearest"] > 0 and row["min_pickup"] >= 1 and row["max_zone"] <= 263


def test_clean_trips_look_like_the_real_sample(clean: DataFrame) -> None:
    # real 2019-03 yellow sample: median 660 s and 1.62 miles, 92 % of pickups in Manhattan, 5 % at airports
    row = clean.select(
        F.percentile("duration_s", 0.5).alias("median_duration"),
        F.percentile("trip_distance", 0.5).alias("median_distance"),
        F.avg((F.col("PULocationID").isin(132, 138)).cast("double")).alias("airport_pickups"),
        F.avg(F.when(F.hour("tpep_pickup_datetime") == 4, 1.0).otherwise(0.0)).alias("share_4am"),
        F.avg(F.when(F.hour("tpep_pickup_datetime") == 19, 1.0).otherwise(0.0)).alias("share_7pm"),
        F.avg(
            F.when(
                F.col("PULocationID").isin(132, 138),
                F.col("trip_distance") / (F.col("duration_s") / 3600),
            )
        ).alias("airport_mph"),
        F.avg(
            F.when(
                (F.col("PULocationID") == F.col("DOLocationID")) & (F.hour("tpep_pickup_datetime") == 13),
                F.col("trip_distance") / (F.col("duration_s") / 3600),
            )
        ).alias("midday_local_mph"),
    ).first()
    assert row is not None
    assert 600 <= row["median_duration"] <= 720
    assert 1.45 <= row["median_distance"] <= 1.8
    assert 0.03 <= row["airport_pickups"] <= 0.08
    assert row["share_7pm"] > 4 * row["share_4am"]
    assert row["airport_mph"] > 2 * row["midday_local_mph"]


def test_fares_follow_the_tariff(clean: DataFrame, dirty: DataFrame) -> None:
    parts = ["fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge"]
    total = sum((F.col(name) for name in parts[1:]), F.col(parts[0])) + F.col("congestion_surcharge")
    row = clean.select(
        F.max(F.abs(F.col("total_amount") - total)).alias("total_error"),
        F.min("fare_amount").alias("min_fare"),
        F.count("Airport_fee").alias("airport_fees_2019"),
        F.collect_set(F.when(F.col("RatecodeID") == 2, F.col("fare_amount"))).alias("jfk_fares"),
        F.sum(F.when(F.col("payment_type") == 2, F.col("tip_amount"))).alias("cash_tips"),
    ).first()
    assert row is not None
    assert row["total_error"] < 0.011 and row["min_fare"] >= 3.0  # 2.50 initial + at least one 0.50 unit
    assert row["airport_fees_2019"] == 0 and row["jfk_fares"] == [52.0] and row["cash_tips"] == 0.0
    # 2024: the airport fee is charged on JFK and LGA pickups (a few carry a dirty 264/265 pickup zone instead)
    pickup = F.when(F.col("PULocationID").isin(132, 138), "airport").when(F.col("PULocationID") <= 263, "other")
    fees = (
        dirty.groupBy(F.coalesce(pickup, F.lit("unknown")).alias("pickup"))
        .agg(F.array_sort(F.collect_set("Airport_fee")).alias("fees"), F.min("fare_amount").alias("min_fare"))
        .collect()
    )
    assert {r["pickup"]: r["fees"] for r in fees} == {"airport": [1.75], "other": [0.0], "unknown": [0.0, 1.75]}
    assert min(r["min_fare"] for r in fees) >= 3.7  # 2023+ tariff: 3.00 initial + 0.70 per unit


def test_gravity_miles_agree_between_spark_and_numpy(spark: SparkSession) -> None:
    pairs = zone_pairs(zone_table(spark, "yellow")).where(F.col("pickup").isin(1, 132, 161)).collect()
    expected = miles_matrix()
    assert len(pairs) == 3 * 263
    for pair in pairs:
        assert pair["base_miles"] == pytest.approx(expected[pair["pickup"] - 1, pair["dropoff"] - 1], rel=1e-9)


def test_alias_table_reproduces_the_weights() -> None:
    weights = [5.0, 1.0, 0.0, 2.0, 0.5]
    probs, aliases = alias_table(weights)
    drawn = np.zeros(len(weights))
    for slot, (prob, alias) in enumerate(zip(probs, aliases, strict=True)):
        drawn[slot] += prob / len(weights)
        drawn[alias] += (1 - prob) / len(weights)
    assert drawn == pytest.approx(np.array(weights) / sum(weights), abs=1e-12)


def test_month_row_counts_split_by_days() -> None:
    assert month_row_counts(100, "2024-01", 2) == [(2024, 1, 52), (2024, 2, 48)]  # 31 and 29 days
    # 31, 31, 29 days: 3.41, 3.41, 3.19 -> floors 3, 3, 3; the one left over goes to the first largest rest
    assert month_row_counts(10, "2023-12", 3) == [(2023, 12, 4), (2024, 1, 3), (2024, 2, 3)]
    assert month_row_counts(365, "2023-01", 12) == [
        (2023, month, days) for month, days in enumerate([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], 1)
    ]
    assert month_row_counts(0, "2024-05", 1) == [(2024, 5, 0)]


@pytest.mark.parametrize("start", ["2024-13", "2024/01", "24-01", "2024-1", "", "2024-00"])
def test_month_row_counts_rejects_bad_start(start: str) -> None:
    with pytest.raises(ConfigError):
        month_row_counts(10, start, 1)


def test_bad_arguments_are_config_errors(spark: SparkSession) -> None:
    with pytest.raises(ConfigError):
        DirtRates(duplicate=0.6)
    with pytest.raises(ConfigError):
        DirtRates(zero_distance=-0.1)
    with pytest.raises(ConfigError):
        synthetic_trips(spark, 10, 2024, 1, seed=1, service="fhv")
    with pytest.raises(ConfigError):
        synthetic_trips(spark, 10, 2024, 13, seed=1)
