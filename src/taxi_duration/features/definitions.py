"""Trip features as Spark SQL expressions over canonical trips.

The same expressions are used three ways: `with_features` for DataFrames, `feature_sql` as the statement of a
SQLTransformer that makes the logged PipelineModel self-contained (canonical trips in, prediction out), and
as the reference the JVM-free scorer is tested against. Zone centroids, boroughs and holidays are embedded
as JSON literals (`from_json`, folded to constants), so no join or lookup table is needed at scoring time, on a
cluster or over Spark Connect.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import holidays
import numpy as np

from taxi_duration.features.travel_times import BOROUGH_SLOTS, TravelTimes
from taxi_duration.zones import load_zones

if TYPE_CHECKING:  # the online scorer shares these definitions and must not need pyspark
    from pyspark.sql import DataFrame

EARTH_RADIUS_KM = 6371.0088
KM_PER_MILE = 1.609344
# Streets are not straight lines: recorded meter distance over centroid distance is about 1.3 in TLC data.
ROAD_FACTOR = 1.3
MISSING_DISTANCE = -1.0  # trees split it off; recorded distance is absent in FHV and Kaggle files
HOLIDAY_YEARS = range(2009, 2031)

# Coordinates -> nearest zone, for sources that have coordinates instead of zone ids (Kaggle, TLC 2009-2015):
# a grid of GRID_STEP degrees over the zone centroids' extent, each cell holding its nearest centroid.
GRID_LAT_MIN, GRID_LAT_MAX = 40.49, 40.93
GRID_LON_MIN, GRID_LON_MAX = -74.27, -73.68
# 0.005 degrees (about 400 m of latitude): every zone's own centroid falls in a cell of that zone (at 0.01, 24 of
# the 263 did not, mostly small Manhattan zones, and coordinates-only requests then read another zone's pair row)
GRID_STEP = 0.005
GRID_COLS = round((GRID_LON_MAX - GRID_LON_MIN) / GRID_STEP)
GRID_ROWS = round((GRID_LAT_MAX - GRID_LAT_MIN) / GRID_STEP)

LABEL = "label"  # natural log of the duration in seconds: errors become relative, as RMSLE scores them

# The canonical trip columns the feature expressions read: all a model needs as input.
FEATURE_INPUT_COLUMNS: tuple[str, ...] = (
    "pickup_datetime",
    "pickup_location_id",
    "dropoff_location_id",
    "pickup_latitude",
    "pickup_longitude",
    "dropoff_latitude",
    "dropoff_longitude",
    "trip_distance",
)

FEATURE_COLUMNS: tuple[str, ...] = (
    "pickup_hour",
    "pickup_weekday",
    "is_weekend",
    "is_holiday",
    "pickup_month",
    "pickup_lat",
    "pickup_lon",
    "dropoff_lat",
    "dropoff_lon",
    "centroid_distance_km",
    "bearing_deg",
    "pickup_borough",
    "dropoff_borough",
    "pickup_is_airport",
    "dropoff_is_airport",
    "same_zone",
    "trip_distance_filled",
    "distance",
    "pair_trips",
    "pair_median_miles",
    "pair_median_minutes",
)
# The travel-time table's columns for the training trips, computed out of fold (`train.travel_times`): with them
# present, the feature SQL reads them instead of the embedded table, so no trip sees its own duration.
OUT_OF_FOLD_PAIR = "_oof_pair"
OUT_OF_FOLD_BOROUGHS = "_oof_boroughs"
TRAVEL_TIMES_TYPE = (
    "struct<pair_index:array<int>,pair_rows:array<array<double>>,boroughs:array<array<double>>,overall:array<double>>"
)
HELPER_COLUMNS = ("_pu_zone", "_do_zone", "_tt_pair", "_tt_boroughs")
# The classic course pipeline: VectorAssembler(['distance', 'hour', 'day_of_week']) + RandomForestRegressor.
CLASSIC_FEATURE_COLUMNS: tuple[str, ...] = ("distance", "pickup_hour", "pickup_weekday")


@lru_cache(maxsize=1)
def us_holidays() -> tuple[date, ...]:
    """US federal holidays (observed dates included) for the years TLC data covers."""
    return tuple(sorted(holidays.country_holidays("US", years=HOLIDAY_YEARS).keys()))


@lru_cache(maxsize=1)
def zone_grid() -> tuple[int, ...]:
    """Nearest zone id for each grid cell, row-major from (GRID_LAT_MIN, GRID_LON_MIN)."""
    centroids = [(z.location_id, z.centroid_lat, z.centroid_lon) for z in load_zones() if z.centroid_lat]
    ids = np.array([c[0] for c in centroids])
    lat = np.array([c[1] for c in centroids], dtype=np.float64)
    lon = np.array([c[2] for c in centroids], dtype=np.float64)
    cos_lat = math.cos(math.radians((GRID_LAT_MIN + GRID_LAT_MAX) / 2))
    cell_lon = GRID_LON_MIN + (np.arange(GRID_COLS) + 0.5) * GRID_STEP
    cells: list[int] = []
    for row in range(GRID_ROWS):
        cell_lat = GRID_LAT_MIN + (row + 0.5) * GRID_STEP
        squared = (lat[None, :] - cell_lat) ** 2 + ((lon[None, :] - cell_lon[:, None]) * cos_lat) ** 2
        cells.extend(int(zone) for zone in ids[squared.argmin(axis=1)])  # the first of equals, as min() did
    return tuple(cells)


def _json_literal(value: object, sql_type: str) -> str:
    """SQL: a lookup table as one JSON string literal read by `from_json`. The optimizer folds it into a single
    constant; thousands of literal expressions (`map(1, 40.69, ...)`) cost ~0.4 s of analysis every time a plan
    is built, which a stream does for every micro-batch. Doubles are written with `repr`, so they read back
    exactly."""
    text = json.dumps(value, separators=(",", ":"))
    return f"from_json('{text}', '{sql_type}')"


@lru_cache(maxsize=1)
def zone_slots() -> int:
    """The length of the zone arrays in the SQL: the largest zone id + 1 (an array is read by position; a Spark
    map is searched key by key)."""
    return max(z.location_id for z in load_zones()) + 1


@lru_cache(maxsize=1)
def _literals() -> dict[str, str]:
    zones = load_zones()
    slots = zone_slots()

    def by_zone(values: dict[int, Any]) -> list[Any]:
        return [values.get(zone) for zone in range(slots)]

    with_geometry = [z for z in zones if z.centroid_lat is not None]
    return {
        "lat": _json_literal(by_zone({z.location_id: z.centroid_lat for z in with_geometry}), "array<double>"),
        "lon": _json_literal(by_zone({z.location_id: z.centroid_lon for z in with_geometry}), "array<double>"),
        "borough": _json_literal(by_zone({z.location_id: int(z.borough_code) for z in zones}), "array<int>"),
        "airport": _json_literal(
            by_zone({z.location_id: int(z.is_airport) for z in zones if z.is_airport}), "array<int>"
        ),
        "holidays": _json_literal([day.isoformat() for day in us_holidays()], "array<date>"),
        "grid": _json_literal(list(zone_grid()), "array<int>"),
    }


def _lookup(table: str, zone: str) -> str:
    """SQL: the value a zone array holds for a zone id (NULL for an id outside it or a NULL zone). The id goes
    through INT so that a frame with ids as BIGINT or DOUBLE (161.0) reads the same position."""
    return f"get({table}, CAST({zone} AS INT))"


def zone_centroid_sql(zone: str) -> tuple[str, str]:
    """SQL: (latitude, longitude) of a zone's centroid, NULL for zones without geometry."""
    lit = _literals()
    return _lookup(lit["lat"], zone), _lookup(lit["lon"], zone)


def _grid_zone(lat: str, lon: str) -> str:
    """SQL: the zone id of the grid cell holding (lat, lon), or NULL outside the grid."""
    row = f"CAST(FLOOR(({lat} - {GRID_LAT_MIN}) / {GRID_STEP}) AS INT)"
    col = f"CAST(FLOOR(({lon} - ({GRID_LON_MIN})) / {GRID_STEP}) AS INT)"
    inside = f"{row} BETWEEN 0 AND {GRID_ROWS - 1} AND {col} BETWEEN 0 AND {GRID_COLS - 1}"
    return f"CASE WHEN {inside} THEN element_at(__GRID__, {row} * {GRID_COLS} + {col} + 1) END"


def _pair_position(pickup: str, dropoff: str, slots: int) -> str:
    """SQL: the position of a (pickup, dropoff) pair in a travel-time array of slots x slots (NULL outside it)."""
    first, second = f"CAST({pickup} AS INT)", f"CAST({dropoff} AS INT)"
    inside = f"{first} BETWEEN 0 AND {slots - 1} AND {second} BETWEEN 0 AND {slots - 1}"
    return f"CASE WHEN {inside} THEN {first} * {slots} + {second} END"


def feature_stages(
    travel_times: TravelTimes | None = None, *, out_of_fold: bool = False
) -> list[list[tuple[str, str]]]:
    """Feature expressions in dependency order: each stage may use the columns of the ones before.

    `travel_times` is embedded as one JSON literal; without one the pair features are NULL (0 trips) and a missing
    distance is estimated from the centroids. `out_of_fold` reads the pair and borough rows from the columns
    `_oof_pair` / `_oof_boroughs` instead (training trips; the overall row still comes from the table)."""
    lit = _literals()
    zone_pu = "_pu_zone"
    zone_do = "_do_zone"
    stage_zones = [
        (
            zone_pu,
            f"COALESCE(pickup_location_id, {_grid_zone('pickup_latitude', 'pickup_longitude')})",
        ),
        (
            zone_do,
            f"COALESCE(dropoff_location_id, {_grid_zone('dropoff_latitude', 'dropoff_longitude')})",
        ),
    ]
    stage_base = [
        ("pickup_hour", "HOUR(pickup_datetime)"),
        # Spark's dayofweek is 1 = Sunday; ISO weekday (1 = Monday) reads better and matches Python
        ("pickup_weekday", "(DAYOFWEEK(pickup_datetime) + 5) % 7 + 1"),
        ("is_weekend", "CASE WHEN DAYOFWEEK(pickup_datetime) IN (1, 7) THEN 1 ELSE 0 END"),
        (
            "is_holiday",
            f"CASE WHEN array_contains({lit['holidays']}, TO_DATE(pickup_datetime)) THEN 1 ELSE 0 END",
        ),
        ("pickup_month", "MONTH(pickup_datetime)"),
        ("pickup_lat", f"COALESCE(pickup_latitude, {_lookup(lit['lat'], zone_pu)})"),
        ("pickup_lon", f"COALESCE(pickup_longitude, {_lookup(lit['lon'], zone_pu)})"),
        ("dropoff_lat", f"COALESCE(dropoff_latitude, {_lookup(lit['lat'], zone_do)})"),
        ("dropoff_lon", f"COALESCE(dropoff_longitude, {_lookup(lit['lon'], zone_do)})"),
        ("pickup_borough", f"COALESCE({_lookup(lit['borough'], zone_pu)}, 0)"),
        ("dropoff_borough", f"COALESCE({_lookup(lit['borough'], zone_do)}, 0)"),
        ("pickup_is_airport", f"COALESCE({_lookup(lit['airport'], zone_pu)}, 0)"),
        ("dropoff_is_airport", f"COALESCE({_lookup(lit['airport'], zone_do)}, 0)"),
        ("same_zone", f"CASE WHEN {zone_pu} = {zone_do} THEN 1 ELSE 0 END"),
        ("trip_distance_filled", f"COALESCE(CAST(trip_distance AS DOUBLE), {MISSING_DISTANCE})"),
    ]
    table = f"from_json('{travel_times.literal_json(zone_slots())}', '{TRAVEL_TIMES_TYPE}')" if travel_times else None
    if out_of_fold:
        pair_row, borough_row = OUT_OF_FOLD_PAIR, OUT_OF_FOLD_BOROUGHS
    elif table:
        pair_index = f"get({table}.pair_index, {_pair_position(zone_pu, zone_do, zone_slots())})"
        pair_row = f"get({table}.pair_rows, {pair_index})"  # -1 (no row): NULL
        borough_row = f"get({table}.boroughs, {_pair_position('pickup_borough', 'dropoff_borough', BOROUGH_SLOTS)})"
    else:
        pair_row = borough_row = "CAST(NULL AS ARRAY<DOUBLE>)"
    stage_table = [("_tt_pair", pair_row), ("_tt_boroughs", borough_row)]
    dlat = "RADIANS(dropoff_lat - pickup_lat)"
    dlon = "RADIANS(dropoff_lon - pickup_lon)"
    haversine = (
        f"2 * {EARTH_RADIUS_KM} * ASIN(SQRT(POWER(SIN({dlat} / 2), 2) + "
        f"COS(RADIANS(pickup_lat)) * COS(RADIANS(dropoff_lat)) * POWER(SIN({dlon} / 2), 2)))"
    )
    bearing = (
        f"DEGREES(ATAN2(SIN({dlon}) * COS(RADIANS(dropoff_lat)), "
        f"COS(RADIANS(pickup_lat)) * SIN(RADIANS(dropoff_lat)) - "
        f"SIN(RADIANS(pickup_lat)) * COS(RADIANS(dropoff_lat)) * COS({dlon})))"
    )

    def fallback(index: int) -> str:
        overall = f"{table}.overall[{index}]" if table else "CAST(NULL AS DOUBLE)"
        return f"COALESCE(_tt_pair[{index}], _tt_boroughs[{index}], {overall})"

    stage_geo = [
        ("centroid_distance_km", f"COALESCE({haversine}, 0.0)"),
        ("bearing_deg", f"COALESCE({bearing}, 0.0)"),
        ("pair_trips", "COALESCE(_tt_pair[0], 0.0)"),
        ("pair_median_miles", fallback(1)),
        ("pair_median_minutes", fallback(2)),
    ]
    stage_distance = [
        (
            "distance",
            # recorded miles where the meter has them, else the pair's median recorded miles (pairs with enough
            # training trips), else the centroid distance stretched to road miles
            f"COALESCE(CAST(trip_distance AS DOUBLE), _tt_pair[1], "
            f"centroid_distance_km / {KM_PER_MILE} * {ROAD_FACTOR})",
        )
    ]
    grid = lit["grid"]
    return [
        [(name, expr.replace("__GRID__", grid)) for name, expr in stage_zones],
        stage_base,
        stage_table,
        stage_geo,
        stage_distance,
    ]


def feature_sql(travel_times: TravelTimes | None = None) -> str:
    """One SQLTransformer statement adding every feature to `__THIS__` (nested selects, one per stage)."""
    statement = "__THIS__"
    for stage in feature_stages(travel_times):
        columns = ", ".join(f"{expr} AS {name}" for name, expr in stage)
        statement = (
            f"SELECT *, {columns} FROM {statement}"
            if statement == "__THIS__"
            else (f"SELECT *, {columns} FROM ({statement}) AS s")
        )
    return statement


def travel_times_in(statement: str) -> TravelTimes | None:
    """The travel-time table a feature SQL statement embeds (None if it embeds none): how the exporter reads it."""
    match = re.search(r"from_json\('(\{\"pair_index\":[^']*)', '" + re.escape(TRAVEL_TIMES_TYPE) + r"'\)", statement)
    if match is None:
        return None
    return TravelTimes.from_literal(json.loads(match.group(1)))


def with_features(df: DataFrame, travel_times: TravelTimes | None = None, *, out_of_fold: bool = False) -> DataFrame:
    """Canonical trips -> the same rows with every feature column added."""
    for stage in feature_stages(travel_times, out_of_fold=out_of_fold):
        df = df.selectExpr("*", *[f"{expr} AS {name}" for name, expr in stage])
    return df.drop(*HELPER_COLUMNS, OUT_OF_FOLD_PAIR, OUT_OF_FOLD_BOROUGHS)


def with_label(df: DataFrame) -> DataFrame:
    """The training label: ln(duration in seconds)."""
    return df.selectExpr("*", f"LN(duration_s) AS {LABEL}")
