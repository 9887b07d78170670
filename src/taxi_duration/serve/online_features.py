"""The trip features of `features.definitions`, computed in plain Python (one trip) and NumPy (a batch).

Every rule mirrors the Spark SQL expression it stands for, NULL handling included, so an exported model
sees the same feature vector the PipelineModel's SQLTransformer + VectorAssembler(handleInvalid='keep')
would build: a SQL NULL becomes NaN, a `CASE WHEN <null> ...` takes its ELSE branch, and arithmetic is done
in the same order with the same constants (imported, not copied) so values agree to the last bit or two.

The lookup tables (zone centroids, boroughs, airports, holidays, the coordinate grid) are the ones the SQL
embeds as literals. `FeatureTables.from_definitions()` builds them from this code version; an exported model
carries its own copy (`FeatureTables.from_json`), checked at export to equal the literals of its statement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from taxi_duration.features.definitions import (
    EARTH_RADIUS_KM,
    FEATURE_COLUMNS,
    GRID_COLS,
    GRID_LAT_MIN,
    GRID_LON_MIN,
    GRID_ROWS,
    GRID_STEP,
    KM_PER_MILE,
    MISSING_DISTANCE,
    ROAD_FACTOR,
)
from taxi_duration.features.travel_times import PAIR_KEY_FACTOR
from taxi_duration.serve.feature_tables import FeatureTables

NEW_YORK = ZoneInfo("America/New_York")
NAN = float("nan")
# 2 * R as the SQL computes it (`2 * R * ASIN(...)` evaluates left to right; doubling is exact)
_TWO_R = 2 * EARTH_RADIUS_KM


# Input keys: canonical trip columns, with the TLC file names accepted for the zone ids.
PICKUP_ZONE_KEYS = ("pickup_location_id", "PULocationID")
DROPOFF_ZONE_KEYS = ("dropoff_location_id", "DOLocationID")
COORDINATE_KEYS = ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude")


# ---------------------------------------------------------------------------------------------- one trip


def new_york_wall_clock(value: Any) -> datetime | None:
    """A pickup time as the naive New York wall-clock time the session time zone gives Spark.

    Naive datetimes (and ISO strings without an offset) already are New York time; aware ones (or strings with
    an offset or Z) are converted. None, NaT and empty strings are missing."""
    if value is None or (isinstance(value, float) and value != value):  # None or NaN: missing
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    elif isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if value is pd.NaT:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"pickup_datetime: expected a datetime or ISO 8601 text, got {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(NEW_YORK).replace(tzinfo=None)
    return value


def _number(value: Any) -> float | None:
    """A numeric input, None for missing (None or NaN: pandas has no other way to say NULL)."""
    if value is None:
        return None
    number = float(value)
    return None if number != number else number


def _zone(trip: Mapping[str, Any], keys: tuple[str, str]) -> int | None:
    value = trip.get(keys[0])
    if value is None:
        value = trip.get(keys[1])
    number = _number(value)
    return None if number is None else int(number)


def grid_zone(lat: float | None, lon: float | None, tables: FeatureTables) -> int | None:
    """The zone of the grid cell holding (lat, lon), None outside the grid (the SQL `_grid_zone`)."""
    if lat is None or lon is None or math.isinf(lat) or math.isinf(lon):
        return None
    row = math.floor((lat - GRID_LAT_MIN) / GRID_STEP)
    col = math.floor((lon - GRID_LON_MIN) / GRID_STEP)
    if 0 <= row <= GRID_ROWS - 1 and 0 <= col <= GRID_COLS - 1:
        return tables.grid[row * GRID_COLS + col]
    return None


def trip_features(trip: Mapping[str, Any], tables: FeatureTables) -> list[float]:
    """One canonical trip (a mapping; missing keys are NULL) -> its features in FEATURE_COLUMNS order, NaN for
    NULL, exactly as the pipeline's SQLTransformer and VectorAssembler(handleInvalid='keep') build them."""
    pickup = new_york_wall_clock(trip.get("pickup_datetime"))
    pu_lat_in = _number(trip.get("pickup_latitude"))
    pu_lon_in = _number(trip.get("pickup_longitude"))
    do_lat_in = _number(trip.get("dropoff_latitude"))
    do_lon_in = _number(trip.get("dropoff_longitude"))
    distance_in = _number(trip.get("trip_distance"))

    pu_zone = _zone(trip, PICKUP_ZONE_KEYS)
    if pu_zone is None:
        pu_zone = grid_zone(pu_lat_in, pu_lon_in, tables)
    do_zone = _zone(trip, DROPOFF_ZONE_KEYS)
    if do_zone is None:
        do_zone = grid_zone(do_lat_in, do_lon_in, tables)

    if pickup is None:
        hour = weekday = month = NAN
        weekend = holiday = 0.0
    else:
        hour = float(pickup.hour)
        iso_weekday = pickup.isoweekday()
        weekday = float(iso_weekday)
        weekend = 1.0 if iso_weekday >= 6 else 0.0
        holiday = 1.0 if pickup.date() in tables.holidays else 0.0
        month = float(pickup.month)

    pu_lat = pu_lat_in if pu_lat_in is not None else tables.zone_lat.get(pu_zone)  # type: ignore[arg-type]
    pu_lon = pu_lon_in if pu_lon_in is not None else tables.zone_lon.get(pu_zone)  # type: ignore[arg-type]
    do_lat = do_lat_in if do_lat_in is not None else tables.zone_lat.get(do_zone)  # type: ignore[arg-type]
    do_lon = do_lon_in if do_lon_in is not None else tables.zone_lon.get(do_zone)  # type: ignore[arg-type]

    if pu_lat is None or pu_lon is None or do_lat is None or do_lon is None:
        km = bearing = 0.0
    else:
        km, bearing = haversine_bearing(pu_lat, pu_lon, do_lat, do_lon)

    pu_borough = tables.zone_borough.get(pu_zone, 0)  # type: ignore[arg-type]
    do_borough = tables.zone_borough.get(do_zone, 0)  # type: ignore[arg-type]
    if tables.travel_times is None:
        pair, (pair_trips, pair_miles, pair_minutes) = None, (0.0, NAN, NAN)
    else:
        pair, (pair_trips, pair_miles, pair_minutes) = tables.travel_times.lookup(
            pu_zone, do_zone, pu_borough, do_borough
        )
    if distance_in is not None:
        distance = distance_in
    elif pair is not None and pair[1] == pair[1]:
        distance = pair[1]
    else:
        distance = km / KM_PER_MILE * ROAD_FACTOR

    return [
        hour,
        weekday,
        weekend,
        holiday,
        month,
        NAN if pu_lat is None else pu_lat,
        NAN if pu_lon is None else pu_lon,
        NAN if do_lat is None else do_lat,
        NAN if do_lon is None else do_lon,
        km,
        bearing,
        float(pu_borough),
        float(do_borough),
        float(tables.zone_airport.get(pu_zone, 0)),  # type: ignore[arg-type]
        float(tables.zone_airport.get(do_zone, 0)),  # type: ignore[arg-type]
        1.0 if pu_zone is not None and pu_zone == do_zone else 0.0,
        MISSING_DISTANCE if distance_in is None else distance_in,
        distance,
        pair_trips,
        pair_miles,
        pair_minutes,
    ]


def haversine_bearing(pu_lat: float, pu_lon: float, do_lat: float, do_lon: float) -> tuple[float, float]:
    """Great-circle km and initial bearing in degrees, in the SQL's order of operations."""
    dlat = math.radians(do_lat - pu_lat)
    dlon = math.radians(do_lon - pu_lon)
    r_pu = math.radians(pu_lat)
    r_do = math.radians(do_lat)
    cos_pu = math.cos(r_pu)
    cos_do = math.cos(r_do)
    s_lat = math.sin(dlat / 2)
    s_lon = math.sin(dlon / 2)
    # POWER(SIN(dlon / 2), 2) is one factor: (cos_pu * cos_do) * (s_lon * s_lon), as the SQL groups it
    km = _TWO_R * math.asin(math.sqrt(s_lat * s_lat + cos_pu * cos_do * (s_lon * s_lon)))
    # Spark's ATAN2 adds 0.0 to both arguments (turns -0.0 into 0.0)
    y = math.sin(dlon) * cos_do + 0.0
    x = cos_pu * math.sin(r_do) - math.sin(r_pu) * cos_do * math.cos(dlon) + 0.0
    return km, math.degrees(math.atan2(y, x))


# ---------------------------------------------------------------------------------------------- a batch


def _column(frame: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """The first of `names` present as float64 (NaN for missing, non-numeric values raise); all-NaN if none."""
    for name in names:
        if name in frame.columns:
            values = pd.to_numeric(frame[name], errors="raise")
            return np.asarray(values.astype("float64").to_numpy(na_value=np.nan), dtype=np.float64)
    return np.full(len(frame), np.nan)


def _pickup_times(frame: pd.DataFrame) -> pd.Series:
    """pickup_datetime as naive New York wall-clock datetime64 (NaT for missing)."""
    if "pickup_datetime" not in frame.columns:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    column = frame["pickup_datetime"]
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert(NEW_YORK).dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(column.dtype):
        return column
    return pd.to_datetime(pd.Series([new_york_wall_clock(v) for v in column], index=frame.index, dtype=object))


def _lookup(table: np.ndarray, zones: np.ndarray) -> np.ndarray:
    """table[zone] where zone is a known id, NaN elsewhere (element_at on a map: NULL for a missing key)."""
    out = np.full(zones.shape, np.nan)
    known = ~np.isnan(zones) & (zones >= 0) & (zones < len(table))
    out[known] = table[zones[known].astype(np.int64)]
    return out


def _table_rows(keys: np.ndarray, rows: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """(n, 3) rows of a travel-time level for the wanted keys, NaN where the key has no row (or is NaN)."""
    out = np.full((len(wanted), 3), np.nan)
    if len(keys) == 0:
        return out
    position = np.clip(np.searchsorted(keys, wanted), 0, len(keys) - 1)
    found = ~np.isnan(wanted) & (keys[position] == wanted)
    out[found] = rows[position[found]]
    return out


def _grid_zones(lat: np.ndarray, lon: np.ndarray, tables: FeatureTables) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        row = np.floor((lat - GRID_LAT_MIN) / GRID_STEP)
        col = np.floor((lon - GRID_LON_MIN) / GRID_STEP)
        inside = (row >= 0) & (row <= GRID_ROWS - 1) & (col >= 0) & (col <= GRID_COLS - 1)
    out = np.full(lat.shape, np.nan)
    out[inside] = tables.grid_array[(row[inside] * GRID_COLS + col[inside]).astype(np.int64)]
    return out


def batch_features(frame: pd.DataFrame, tables: FeatureTables) -> np.ndarray:
    """Canonical trips (a DataFrame; absent columns are NULL) -> an (n, len(FEATURE_COLUMNS)) float64 matrix."""
    n = len(frame)
    pickup = _pickup_times(frame)
    pu_lat_in = _column(frame, ["pickup_latitude"])
    pu_lon_in = _column(frame, ["pickup_longitude"])
    do_lat_in = _column(frame, ["dropoff_latitude"])
    do_lon_in = _column(frame, ["dropoff_longitude"])
    distance_in = _column(frame, ["trip_distance"])
    pu_zone = _column(frame, PICKUP_ZONE_KEYS)
    do_zone = _column(frame, DROPOFF_ZONE_KEYS)
    pu_zone = np.where(np.isnan(pu_zone), _grid_zones(pu_lat_in, pu_lon_in, tables), np.trunc(pu_zone))
    do_zone = np.where(np.isnan(do_zone), _grid_zones(do_lat_in, do_lon_in, tables), np.trunc(do_zone))

    missing_time = pickup.isna().to_numpy()
    hour = pickup.dt.hour.to_numpy(dtype=np.float64, na_value=np.nan)
    iso_weekday = (pickup.dt.dayofweek + 1).to_numpy(dtype=np.float64, na_value=np.nan)
    month = pickup.dt.month.to_numpy(dtype=np.float64, na_value=np.nan)
    weekend = np.where(~missing_time & (iso_weekday >= 6), 1.0, 0.0)
    days = pickup.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    holiday = np.where(~missing_time & np.isin(days, tables.holiday_array), 1.0, 0.0)

    pu_lat = np.where(np.isnan(pu_lat_in), _lookup(tables.lat_array, pu_zone), pu_lat_in)
    pu_lon = np.where(np.isnan(pu_lon_in), _lookup(tables.lon_array, pu_zone), pu_lon_in)
    do_lat = np.where(np.isnan(do_lat_in), _lookup(tables.lat_array, do_zone), do_lat_in)
    do_lon = np.where(np.isnan(do_lon_in), _lookup(tables.lon_array, do_zone), do_lon_in)

    with np.errstate(invalid="ignore"):
        dlat = np.radians(do_lat - pu_lat)
        dlon = np.radians(do_lon - pu_lon)
        r_pu = np.radians(pu_lat)
        r_do = np.radians(do_lat)
        cos_pu = np.cos(r_pu)
        cos_do = np.cos(r_do)
        s_lat = np.sin(dlat / 2)
        s_lon = np.sin(dlon / 2)
        km = _TWO_R * np.arcsin(np.sqrt(s_lat * s_lat + cos_pu * cos_do * (s_lon * s_lon)))
        y = np.sin(dlon) * cos_do + 0.0
        x = cos_pu * np.sin(r_do) - np.sin(r_pu) * cos_do * np.cos(dlon) + 0.0
        bearing = np.degrees(np.arctan2(y, x))
    km = np.where(np.isnan(km), 0.0, km)
    bearing = np.where(np.isnan(bearing), 0.0, bearing)

    def or_zero(values: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(values), 0.0, values)

    pu_borough = or_zero(_lookup(tables.borough_array, pu_zone))
    do_borough = or_zero(_lookup(tables.borough_array, do_zone))
    pair = _table_rows(tables.pair_keys, tables.pair_rows, pu_zone * PAIR_KEY_FACTOR + do_zone)
    borough = _table_rows(tables.borough_keys, tables.borough_rows, pu_borough * PAIR_KEY_FACTOR + do_borough)
    overall = tables.travel_times.overall if tables.travel_times else (0.0, NAN, NAN)

    def fallback(index: int) -> np.ndarray:
        return np.where(
            ~np.isnan(pair[:, index]),
            pair[:, index],
            np.where(~np.isnan(borough[:, index]), borough[:, index], overall[index]),
        )

    no_distance = np.isnan(distance_in)
    estimated = np.where(np.isnan(pair[:, 1]), km / KM_PER_MILE * ROAD_FACTOR, pair[:, 1])
    columns = {
        "pickup_hour": hour,
        "pickup_weekday": iso_weekday,
        "is_weekend": weekend,
        "is_holiday": holiday,
        "pickup_month": month,
        "pickup_lat": pu_lat,
        "pickup_lon": pu_lon,
        "dropoff_lat": do_lat,
        "dropoff_lon": do_lon,
        "centroid_distance_km": km,
        "bearing_deg": bearing,
        "pickup_borough": pu_borough,
        "dropoff_borough": do_borough,
        "pickup_is_airport": or_zero(_lookup(tables.airport_array, pu_zone)),
        "dropoff_is_airport": or_zero(_lookup(tables.airport_array, do_zone)),
        "same_zone": np.where(~np.isnan(pu_zone) & (pu_zone == do_zone), 1.0, 0.0),
        "trip_distance_filled": np.where(no_distance, MISSING_DISTANCE, distance_in),
        "distance": np.where(no_distance, estimated, distance_in),
        "pair_trips": np.where(np.isnan(pair[:, 0]), 0.0, pair[:, 0]),
        "pair_median_miles": fallback(1),
        "pair_median_minutes": fallback(2),
    }
    matrix = np.empty((n, len(FEATURE_COLUMNS)), dtype=np.float64)
    for index, name in enumerate(FEATURE_COLUMNS):
        matrix[:, index] = columns[name]
    return matrix
