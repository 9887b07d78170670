"""Analytics report: exact statistics on a hand-written handful of trips, HTML and terminal rendering."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType, StructField, StructType
from pyspark.testing import assertDataFrameEqual
from rich.console import Console

from taxi_duration import analytics
from taxi_duration.errors import ConfigError
from taxi_duration.schema import TRIPS_TABLE_SCHEMA
from taxi_duration.zones import zones_frame

NY = ZoneInfo("America/New_York")

# (pickup New York wall clock, pickup zone, dropoff zone, duration in seconds)
# Zones: 161 Midtown Center / 237 Upper East Side South (Manhattan), 132 JFK Airport (Queens),
# 61 Crown Heights North (Brooklyn); 264, 265, null and 999 are unknown pickups.
TRIPS = [
    (datetime(2024, 3, 4, 8, 5), 161, 237, 600.0),  # Monday 8h
    (datetime(2024, 3, 4, 8, 20), 161, 237, 1200.0),  # Monday 8h
    (datetime(2024, 3, 4, 8, 50), 161, 237, 1500.0),  # Monday 8h
    (datetime(2024, 3, 5, 17, 30), 237, 161, 900.0),  # Tuesday 17h
    (datetime(2024, 3, 3, 23, 45), 237, 132, 2400.0),  # Sunday 23h NY (Monday 04:45 UTC)
    (datetime(2024, 3, 8, 6, 0), 132, 161, 3000.0),  # Friday 6h
    (datetime(2024, 3, 8, 7, 30), 132, 161, 3600.0),  # Friday 7h
    (datetime(2024, 3, 9, 14, 0), 132, 161, 1800.0),  # Saturday 14h
    (datetime(2024, 3, 6, 12, 0), 61, 61, 300.0),  # Wednesday 12h
    (datetime(2024, 3, 7, 0, 15), 264, 161, 720.0),  # Thursday 0h, unknown pickup
    (datetime(2024, 3, 7, 9, 0), 265, 264, 480.0),  # Thursday 9h, unknown pickup and dropoff
    (datetime(2024, 3, 7, 10, 0), None, 161, 840.0),  # Thursday 10h, no pickup zone
    (datetime(2024, 3, 6, 12, 40), 999, 61, None),  # Wednesday 12h, zone not in the lookup, no duration
]

BOROUGH_SCHEMA = StructType(
    [
        StructField("pickup_borough", StringType()),
        StructField("trips", LongType()),
        StructField("mean_duration_min", DoubleType()),
        StructField("median_duration_min", DoubleType()),
        StructField("share_of_trips", DoubleType()),
    ]
)
HOUR_WEEKDAY_SCHEMA = StructType(
    [
        StructField("pickup_weekday", IntegerType()),
        StructField("weekday_name", StringType()),
        StructField("pickup_hour", IntegerType()),
        StructField("trips", LongType()),
        StructField("mean_duration_min", DoubleType()),
        StructField("median_duration_min", DoubleType()),
    ]
)
PAIRS_SCHEMA = StructType(
    [
        StructField("pickup_location_id", IntegerType()),
        StructField("pickup_zone", StringType()),
        StructField("pickup_borough", StringType()),
        StructField("dropoff_location_id", IntegerType()),
        StructField("dropoff_zone", StringType()),
        StructField("dropoff_borough", StringType()),
        StructField("trips", LongType()),
        StructField("mean_duration_min", DoubleType()),
        StructField("median_duration_min", DoubleType()),
    ]
)
EXPECTED_PAIRS = [
    (132, "JFK Airport", "Queens", 161, "Midtown Center", "Manhattan", 3, 140 / 3, 50.0),
    (161, "Midtown Center", "Manhattan", 237, "Upper East Side South", "Manhattan", 3, 55 / 3, 20.0),
    (61, "Crown Heights North", "Brooklyn", 61, "Crown Heights North", "Brooklyn", 1, 5.0, 5.0),
    (237, "Upper East Side South", "Manhattan", 132, "JFK Airport", "Queens", 1, 40.0, 40.0),
    (237, "Upper East Side South", "Manhattan", 161, "Midtown Center", "Manhattan", 1, 15.0, 15.0),
]


def _trip_row(trip_id: int, pickup: datetime, pu: int | None, do: int | None, duration_s: float | None) -> tuple:
    values = {
        "trip_id": trip_id,
        "service": "yellow",
        "pickup_datetime": pickup.replace(tzinfo=NY),
        "dropoff_datetime": None if duration_s is None else pickup.replace(tzinfo=NY) + timedelta(seconds=duration_s),
        "pickup_location_id": pu,
        "dropoff_location_id": do,
        "duration_s": duration_s,
        "source_file": "test.csv",
        "year": pickup.year,
        "month": pickup.month,
        "source": "test",
    }
    return tuple(values.get(field.name) for field in TRIPS_TABLE_SCHEMA.fields)


@pytest.fixture(scope="module")
def frames(spark: SparkSession) -> tuple[DataFrame, DataFrame]:
    rows = [_trip_row(i, *trip) for i, trip in enumerate(TRIPS, start=1)]
    return spark.createDataFrame(rows, schema=TRIPS_TABLE_SCHEMA), zones_frame(spark)


@pytest.fixture
def views(spark: SparkSession, frames: tuple[DataFrame, DataFrame]) -> SparkSession:
    analytics.register_views(*frames)
    return spark


@pytest.fixture(scope="module")
def tables(spark: SparkSession, frames: tuple[DataFrame, DataFrame]) -> dict[str, pd.DataFrame]:
    analytics.register_views(*frames)
    return analytics.build_report(spark)


def test_trips_by_borough(views: SparkSession) -> None:
    expected = views.createDataFrame(
        [
            ("Manhattan", 5, 22.0, 20.0, 5 / 13),
            ("Unknown", 4, 34 / 3, 12.0, 4 / 13),  # 264, 265, null and 999; the null duration only counts
            ("Queens", 3, 140 / 3, 50.0, 3 / 13),
            ("Brooklyn", 1, 5.0, 5.0, 1 / 13),
        ],
        schema=BOROUGH_SCHEMA,
    )
    assertDataFrameEqual(analytics.trips_by_borough(views), expected, checkRowOrder=True)


def test_trips_by_hour_weekday(views: SparkSession) -> None:
    expected = views.createDataFrame(
        [
            (1, "Monday", 8, 3, 55 / 3, 20.0),
            (2, "Tuesday", 17, 1, 15.0, 15.0),
            (3, "Wednesday", 12, 2, 5.0, 5.0),
            (4, "Thursday", 0, 1, 12.0, 12.0),
            (4, "Thursday", 9, 1, 8.0, 8.0),
            (4, "Thursday", 10, 1, 14.0, 14.0),
            (5, "Friday", 6, 1, 50.0, 50.0),
            (5, "Friday", 7, 1, 60.0, 60.0),
            (6, "Saturday", 14, 1, 30.0, 30.0),
            (7, "Sunday", 23, 1, 40.0, 40.0),
        ],
        schema=HOUR_WEEKDAY_SCHEMA,
    )
    assertDataFrameEqual(analytics.trips_by_hour_weekday(views), expected, checkRowOrder=True)


def test_busiest_zone_pairs_skip_unknown_zones_and_break_ties_by_ids(views: SparkSession) -> None:
    expected = views.createDataFrame(EXPECTED_PAIRS, schema=PAIRS_SCHEMA)
    assertDataFrameEqual(analytics.busiest_zone_pairs(views), expected, checkRowOrder=True)


def test_busiest_zone_pairs_limit(views: SparkSession) -> None:
    expected = views.createDataFrame(EXPECTED_PAIRS[:2], schema=PAIRS_SCHEMA)
    assertDataFrameEqual(analytics.busiest_zone_pairs(views, limit=2), expected, checkRowOrder=True)
    with pytest.raises(ConfigError):
        analytics.busiest_zone_pairs(views, limit=0)


def test_no_trips_gives_empty_tables(spark: SparkSession, frames: tuple[DataFrame, DataFrame]) -> None:
    trips, zones = frames
    analytics.register_views(trips.limit(0), zones)
    assert analytics.trips_by_borough(spark).collect() == []
    assert analytics.trips_by_hour_weekday(spark).collect() == []


def test_build_report(tables: dict[str, pd.DataFrame]) -> None:
    assert list(tables) == ["by_borough", "by_hour_weekday", "zone_pairs"]
    assert tables["by_borough"]["pickup_borough"].tolist() == ["Manhattan", "Unknown", "Queens", "Brooklyn"]
    assert tables["by_borough"]["share_of_trips"].sum() == pytest.approx(1.0)
    assert len(tables["by_hour_weekday"]) == 10
    assert tables["zone_pairs"]["trips"].tolist() == [3, 3, 1, 1, 1]


def test_render_html(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    path = analytics.render_html(tables, tmp_path / "out" / "report.html", title="Taxi <report>", subtitle="March 2024")
    assert path == tmp_path / "out" / "report.html"
    text = path.read_text(encoding="utf-8")
    assert "Taxi &lt;report&gt;" in text and "March 2024" in text
    assert text.count('<img src="data:image/png;base64,') == 3
    for value in (
        "Manhattan",
        "Queens",
        "Brooklyn",
        "Unknown",
        "JFK Airport",
        "22.0",
        "46.7",
        "38.5%",
        "Sunday",
    ):
        assert value in text
    assert 'src="http' not in text and "<link" not in text and "<script" not in text  # self-contained


def test_render_html_without_trips(tmp_path: Path) -> None:
    empty = {
        "by_borough": pd.DataFrame(columns=[f.name for f in BOROUGH_SCHEMA.fields]),
        "by_hour_weekday": pd.DataFrame(columns=[f.name for f in HOUR_WEEKDAY_SCHEMA.fields]),
        "zone_pairs": pd.DataFrame(columns=[f.name for f in PAIRS_SCHEMA.fields]),
    }
    text = analytics.render_html(empty, tmp_path / "empty.html", title="Empty").read_text(encoding="utf-8")
    assert "<img" not in text
    assert text.count("No trips.") == 3


def test_print_tables(tables: dict[str, pd.DataFrame]) -> None:
    console = Console(record=True, width=160)
    analytics.print_tables(tables, console)
    text = console.export_text()
    for value in ("Manhattan", "Queens", "Brooklyn", "Unknown", "Busiest zone pairs", "46.7", "38.5%"):
        assert value in text
    assert "46.666" not in text  # rounded for people
