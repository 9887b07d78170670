"""Each quality rule on a hand-built canonical frame, and the priority between rules."""

from __future__ import annotations

from datetime import datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from taxi_duration.ingest.normalize import EXPECTS_DROPOFF, IS_CORRUPT, NUMBER_PROBLEMS, TIMESTAMP_PROBLEMS
from taxi_duration.params import QualityParams
from taxi_duration.quality.rules import (
    REASONS,
    repeated_ids,
    with_duplicate_flag,
    with_quality_reason,
    with_row_number,
)

T0 = datetime(2024, 3, 5, 9, 0)
SCHEMA = (
    "case string, pickup_datetime timestamp, dropoff_datetime timestamp, pickup_location_id int, "
    "dropoff_location_id int, pickup_latitude double, pickup_longitude double, dropoff_latitude double, "
    "dropoff_longitude double, passenger_count int, trip_distance double, expects_dropoff boolean"
)


def trip(case: str, minutes: float | None = 15, zones: tuple | None = (161, 236), coords: tuple | None = None,
         passengers: int | None = 1, distance: float | None = 2.5, pickup: datetime | None = T0,
         expects_dropoff: bool = True) -> tuple:  # fmt: skip
    dropoff = pickup + timedelta(minutes=minutes) if (pickup and minutes is not None) else None
    pu, do = zones or (None, None)
    lat1, lon1, lat2, lon2 = coords or (None, None, None, None)
    return (case, pickup, dropoff, pu, do, lat1, lon1, lat2, lon2, passengers, distance, expects_dropoff)


CASES = [
    (trip("clean"), None),
    (trip("clean_null_passengers", passengers=None), None),
    (trip("clean_zero_passengers", passengers=0), None),
    (trip("clean_coordinates", zones=None, coords=(40.76, -73.98, 40.75, -73.99), distance=None), None),
    (trip("kaggle_test_no_dropoff", minutes=None, expects_dropoff=False), None),
    (trip("missing_pickup", pickup=None), "missing_pickup_time"),
    (trip("missing_dropoff", minutes=None), "missing_dropoff_time"),
    (trip("year_2002", pickup=datetime(2002, 1, 1, 0, 0)), "timestamp_out_of_range"),
    (trip("negative", minutes=-3), "dropoff_before_pickup"),
    (trip("zero_seconds", minutes=0), "duration_too_short"),
    (trip("day_long", minutes=23 * 60 + 59), "duration_too_long"),
    (trip("no_location", zones=None), "no_location"),
    (trip("zone_265", zones=(265, 161)), "unknown_zone"),
    (trip("zone_0", zones=(161, 0)), "unknown_zone"),
    (trip("null_island", zones=None, coords=(0.0, 0.0, 40.75, -73.99)), "coordinates_outside_nyc"),
    (trip("zero_distance", distance=0.0), "zero_distance"),
    (trip("distance_300", minutes=300, distance=300.0), "distance_too_long"),
    (trip("speed_120", minutes=10, distance=20.0), "implausible_speed"),
    (trip("nine_plus", passengers=10), "bad_passenger_count"),
    # priority: the first broken rule wins
    (trip("short_and_zero_distance", minutes=0, distance=0.0), "duration_too_short"),
    (trip("unknown_zone_and_zero_distance", zones=(264, 264), distance=0.0), "unknown_zone"),
]


def canonical(spark: SparkSession) -> DataFrame:
    return (
        spark.createDataFrame([case for case, _ in CASES], SCHEMA)
        .withColumn("duration_s", F.unix_timestamp("dropoff_datetime") - F.unix_timestamp("pickup_datetime"))
        .withColumn("trip_id", F.monotonically_increasing_id())
        .withColumns({TIMESTAMP_PROBLEMS: F.lit(""), NUMBER_PROBLEMS: F.lit("")})
        .withColumn(IS_CORRUPT, F.lit(False))
        .withColumn("_is_duplicate", F.lit(False))
        .withColumnRenamed("expects_dropoff", EXPECTS_DROPOFF)
    )


def test_each_rule_gives_its_reason(spark: SparkSession) -> None:
    result = canonical(spark).transform(with_quality_reason(QualityParams())).select("case", "reason")
    expected = spark.createDataFrame([(case[0], reason) for case, reason in CASES], "case string, reason string")
    assertDataFrameEqual(result, expected)


def test_every_reason_code_is_documented_and_tested() -> None:
    tested = {reason for _, reason in CASES if reason}
    needs_raw_input = {"malformed_row", "unparseable_timestamp", "unparseable_number", "duplicate_row"}
    assert tested | needs_raw_input == set(REASONS)  # the raw-input ones are covered in test_ingest


def test_bounds_come_from_the_parameters(spark: SparkSession) -> None:
    strict = QualityParams(min_duration_s=20 * 60)
    result = canonical(spark).filter("case = 'clean'").transform(with_quality_reason(strict))
    row = result.select("reason", "reason_detail").first()
    assert row is not None and tuple(row) == ("duration_too_short", "duration_s 900")


def test_duplicates_flag_every_copy_but_the_first_with_or_without_shared_ids(spark: SparkSession) -> None:
    rows = [(7, "a"), (8, "b"), (7, "c"), (9, "d"), (7, "e"), (8, "f")]
    frame = spark.createDataFrame(rows, "trip_id long, seen string").coalesce(1)
    expected = [("a", False), ("b", False), ("c", True), ("d", False), ("e", True), ("f", True)]

    in_one_job = with_duplicate_flag(frame).select("seen", "_is_duplicate")
    numbered = with_row_number(frame)
    ids = repeated_ids(numbered).persist()
    assert sorted(tuple(r) for r in ids.select("trip_id").collect()) == [(7,), (8,)]
    shared = with_duplicate_flag(numbered, ids).select("seen", "_is_duplicate")
    assert sorted(map(tuple, in_one_job.collect())) == expected
    assert sorted(map(tuple, shared.collect())) == expected
    ids.unpersist()
