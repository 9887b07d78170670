"""Feature expressions on hand-built trips: time, holidays, zones, airports, distances, coordinates."""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from pyspark.ml.feature import SQLTransformer
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from taxi_duration.features.definitions import (
    FEATURE_COLUMNS,
    KM_PER_MILE,
    ROAD_FACTOR,
    feature_sql,
    us_holidays,
    with_features,
)
from taxi_duration.zones import load_zones

TRIPS_SCHEMA = (
    "id int, pickup_datetime timestamp, pickup_location_id int, dropoff_location_id int, "
    "pickup_latitude double, pickup_longitude double, dropoff_latitude double, dropoff_longitude double, "
    "trip_distance double"
)
ZONES = {z.location_id: z for z in load_zones()}


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


@pytest.fixture(scope="module")
def trips(spark: SparkSession) -> DataFrame:
    rows = [
        # Thursday 4 July 2024 (holiday), JFK (132) -> Midtown Center (161), recorded distance
        (1, datetime(2024, 7, 4, 17, 30), 132, 161, None, None, None, None, 17.2),
        # Sunday 7 January 2024 at 02:15, same zone, no recorded distance (FHV)
        (2, datetime(2024, 1, 7, 2, 15), 79, 79, None, None, None, None, None),
        # Kaggle-style: coordinates only, Monday 14 March 2016
        (3, datetime(2016, 3, 14, 17, 24, 55), None, None, 40.767937, -73.982155, 40.765602, -73.96463, None),
    ]
    return spark.createDataFrame(rows, TRIPS_SCHEMA)


def test_time_and_calendar_features(trips: DataFrame) -> None:
    result = trips.transform(with_features).select(
        "id", "pickup_hour", "pickup_weekday", "is_weekend", "is_holiday", "pickup_month"
    )
    expected = trips.sparkSession.createDataFrame(
        [(1, 17, 4, 0, 1, 7), (2, 2, 7, 1, 0, 1), (3, 17, 1, 0, 0, 3)],
        "id int, pickup_hour int, pickup_weekday int, is_weekend int, is_holiday int, pickup_month int",
    )
    assertDataFrameEqual(result, expected)


def test_zone_features_and_airports(trips: DataFrame) -> None:
    result = trips.transform(with_features).select(
        "id", "pickup_borough", "dropoff_borough", "pickup_is_airport", "dropoff_is_airport", "same_zone"
    )
    # 132 JFK is Queens (3); 161 Midtown Center and 79 East Village are Manhattan (1); 3's coordinates are
    # in Manhattan too (nearest centroids, found through the grid)
    expected = trips.sparkSession.createDataFrame(
        [(1, 3, 1, 1, 0, 0), (2, 1, 1, 0, 0, 1), (3, 1, 1, 0, 0, 0)],
        "id int, pickup_borough int, dropoff_borough int, pickup_is_airport int, dropoff_is_airport int, same_zone int",
    )
    assertDataFrameEqual(result, expected)


def test_distance_features(trips: DataFrame) -> None:
    rows = {r["id"]: r for r in trips.transform(with_features).collect()}
    jfk, midtown = ZONES[132], ZONES[161]
    expected_km = haversine_km(jfk.centroid_lat, jfk.centroid_lon, midtown.centroid_lat, midtown.centroid_lon)
    assert rows[1]["centroid_distance_km"] == pytest.approx(expected_km, rel=1e-12)
    assert rows[1]["distance"] == 17.2 and rows[1]["trip_distance_filled"] == 17.2
    # JFK lies south-east of Midtown: heading from JFK to Midtown is north-west (between -90 and 0 degrees)
    assert -90 < rows[1]["bearing_deg"] < 0
    assert (rows[2]["centroid_distance_km"], rows[2]["distance"], rows[2]["trip_distance_filled"]) == (
        0.0,
        0.0,
        -1.0,
    )
    kaggle_km = haversine_km(40.767937, -73.982155, 40.765602, -73.96463)
    assert rows[3]["centroid_distance_km"] == pytest.approx(kaggle_km, rel=1e-12)
    assert rows[3]["distance"] == pytest.approx(kaggle_km / KM_PER_MILE * ROAD_FACTOR, rel=1e-12)
    assert rows[3]["pickup_lat"] == 40.767937


def test_sql_transformer_statement_gives_the_same_features(trips: DataFrame) -> None:
    via_pipeline = SQLTransformer(statement=feature_sql()).transform(trips).select("id", *FEATURE_COLUMNS)
    via_step = trips.transform(with_features).select("id", *FEATURE_COLUMNS)
    assertDataFrameEqual(via_pipeline, via_step)


@pytest.mark.parametrize("id_type", ["bigint", "double"])
def test_zone_ids_of_other_numeric_types_give_the_same_features(trips: DataFrame, id_type: str) -> None:
    cast = trips.withColumns({c: trips[c].cast(id_type) for c in ("pickup_location_id", "dropoff_location_id")})
    features = ["id", *FEATURE_COLUMNS]
    assertDataFrameEqual(
        cast.transform(with_features).select(*features), trips.transform(with_features).select(*features)
    )


def test_holiday_calendar_has_observed_federal_holidays() -> None:
    days = set(us_holidays())
    assert datetime(2024, 7, 4).date() in days
    assert datetime(2019, 11, 28).date() in days  # Thanksgiving
    assert datetime(2021, 12, 24).date() in days  # Christmas observed (25th was a Saturday)
    assert datetime(2024, 7, 5).date() not in days
