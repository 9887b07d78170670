"""The literal tables of the feature SQL (zone centroids, boroughs, airports, holidays, the coordinate grid, the
model's travel-time table) and the constants of its formulas, as the JVM-free features read them: dicts for one
trip, arrays indexed by zone id for a batch. `from_definitions()` builds them from this code version; an exported
model carries its own copy (`to_json` / `from_json`), checked at export to equal the literals of its statement."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from taxi_duration.features import definitions
from taxi_duration.features.definitions import GRID_COLS, GRID_ROWS, us_holidays, zone_grid
from taxi_duration.features.travel_times import TravelTimes

NAN = float("nan")

# The constants the formulas use (features.definitions): stored with an exported model and compared when it is
# loaded.
CONSTANTS: dict[str, float] = {
    name: getattr(definitions, name)
    for name in (
        "EARTH_RADIUS_KM",
        "KM_PER_MILE",
        "ROAD_FACTOR",
        "MISSING_DISTANCE",
        "GRID_LAT_MIN",
        "GRID_LAT_MAX",
        "GRID_LON_MIN",
        "GRID_LON_MAX",
        "GRID_STEP",
        "GRID_ROWS",
        "GRID_COLS",
    )
}


def _lookup_array(values: Mapping[int, float], size: int, missing: float) -> np.ndarray:
    out = np.full(size, missing, dtype=np.float64)
    for key, value in values.items():
        out[key] = value
    return out


@dataclass(frozen=True)
class FeatureTables:
    """The literal tables of the feature SQL, as dicts (one trip) and arrays indexed by zone id (a batch)."""

    zone_lat: dict[int, float]  # zones with geometry only (the SQL map has no 264/265)
    zone_lon: dict[int, float]
    zone_borough: dict[int, int]  # every zone
    zone_airport: dict[int, int]  # airports only
    holidays: frozenset[date]
    grid: tuple[int, ...]  # nearest zone per grid cell, row-major
    travel_times: TravelTimes | None = None  # the model's own table (None: pair features NULL, as the SQL)
    lat_array: np.ndarray = field(init=False, repr=False, compare=False)
    lon_array: np.ndarray = field(init=False, repr=False, compare=False)
    borough_array: np.ndarray = field(init=False, repr=False, compare=False)
    airport_array: np.ndarray = field(init=False, repr=False, compare=False)
    grid_array: np.ndarray = field(init=False, repr=False, compare=False)
    holiday_array: np.ndarray = field(init=False, repr=False, compare=False)
    pair_keys: np.ndarray = field(init=False, repr=False, compare=False)  # sorted, with rows in pair_rows
    pair_rows: np.ndarray = field(init=False, repr=False, compare=False)
    borough_keys: np.ndarray = field(init=False, repr=False, compare=False)
    borough_rows: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.grid) != GRID_ROWS * GRID_COLS:
            raise ValueError(f"coordinate grid has {len(self.grid)} cells, expected {GRID_ROWS * GRID_COLS}")
        ids = [*self.zone_lat, *self.zone_lon, *self.zone_borough, *self.zone_airport, *self.grid]
        if min(ids, default=0) < 0:
            raise ValueError("zone ids must not be negative")
        size = max(ids, default=0) + 1
        # NaN marks "not in the map" (NULL); COALESCE(..., 0) is applied by the feature code
        object.__setattr__(self, "lat_array", _lookup_array(self.zone_lat, size, NAN))
        object.__setattr__(self, "lon_array", _lookup_array(self.zone_lon, size, NAN))
        object.__setattr__(self, "borough_array", _lookup_array(self.zone_borough, size, NAN))
        object.__setattr__(self, "airport_array", _lookup_array(self.zone_airport, size, NAN))
        object.__setattr__(self, "grid_array", np.asarray(self.grid, dtype=np.float64))
        object.__setattr__(self, "holiday_array", np.array(sorted(self.holidays), dtype="datetime64[D]"))
        for name, table in (
            ("pair", self.travel_times.pairs if self.travel_times else {}),
            ("borough", self.travel_times.boroughs if self.travel_times else {}),
        ):
            keys = sorted(table)
            object.__setattr__(self, f"{name}_keys", np.asarray(keys, dtype=np.float64))
            rows = np.asarray([table[k] for k in keys], dtype=np.float64).reshape(len(keys), 3)
            object.__setattr__(self, f"{name}_rows", rows)

    @classmethod
    def from_definitions(cls, travel_times: TravelTimes | None = None) -> FeatureTables:
        """The tables this code version's `feature_sql(travel_times)` embeds."""
        from taxi_duration.zones import load_zones

        zones = load_zones()
        return cls(
            zone_lat={z.location_id: z.centroid_lat for z in zones if z.centroid_lat is not None},
            zone_lon={z.location_id: z.centroid_lon for z in zones if z.centroid_lon is not None},
            zone_borough={z.location_id: z.borough_code for z in zones},
            zone_airport={z.location_id: z.is_airport for z in zones if z.is_airport},
            holidays=frozenset(us_holidays()),
            grid=zone_grid(),
            travel_times=travel_times,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (keys as strings, dates as ISO text)."""
        return {
            "zone_lat": {str(k): v for k, v in sorted(self.zone_lat.items())},
            "zone_lon": {str(k): v for k, v in sorted(self.zone_lon.items())},
            "zone_borough": {str(k): v for k, v in sorted(self.zone_borough.items())},
            "zone_airport": {str(k): v for k, v in sorted(self.zone_airport.items())},
            "holidays": [day.isoformat() for day in sorted(self.holidays)],
            "grid": list(self.grid),
            "constants": dict(CONSTANTS),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], travel_times: TravelTimes | None = None) -> FeatureTables:
        """Tables stored with an exported model (the travel-time table is stored beside them); the formulas'
        constants must equal this code's."""
        stored = data.get("constants", {})
        differing = sorted(name for name, value in CONSTANTS.items() if stored.get(name) != value)
        if differing:
            raise ValueError(
                "the exported model was built with other feature constants than this code version "
                f"({', '.join(differing)}); re-export it with this version"
            )
        return cls(
            zone_lat={int(k): float(v) for k, v in data["zone_lat"].items()},
            zone_lon={int(k): float(v) for k, v in data["zone_lon"].items()},
            zone_borough={int(k): int(v) for k, v in data["zone_borough"].items()},
            zone_airport={int(k): int(v) for k, v in data["zone_airport"].items()},
            holidays=frozenset(date.fromisoformat(day) for day in data["holidays"]),
            grid=tuple(int(zone) for zone in data["grid"]),
            travel_times=travel_times,
        )
