"""What a request knows about a trip, named in one place: the three prediction regimes.

- `recorded_distance`: the meter's distance is given (a finished or metered trip; what TLC files hold).
- `zones_only`: pickup and dropoff zones, no distance (a booking before the trip).
- `coordinates_only`: pickup and dropoff coordinates, no zones and no distance (Kaggle style; the zones come from
  the coordinate grid).

Every model the project trains serves all three: training masks the recorded distance of a share of the trips
(`train.masked_distance_fraction`), the features carry a travel-time table learned from the training trips, and
`train` reports `metrics_by_regime`. Pure Python: the API and the Spark code share these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Regime = Literal["recorded_distance", "zones_only", "coordinates_only"]
REGIMES: tuple[Regime, ...] = ("recorded_distance", "zones_only", "coordinates_only")


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and value != value)


def regime_of(trip: Mapping[str, Any]) -> Regime:
    """The regime of one canonical trip (missing keys, None and NaN are absent): the distance decides first, then
    whether both zones are given."""
    if _present(trip.get("trip_distance")):
        return "recorded_distance"
    pickup = trip.get("pickup_location_id", trip.get("PULocationID"))
    dropoff = trip.get("dropoff_location_id", trip.get("DOLocationID"))
    if _present(pickup) and _present(dropoff):
        return "zones_only"
    return "coordinates_only"


# The same rule as SQL over canonical trip columns (for batch and stream outputs).
REGIME_SQL = (
    "CASE WHEN trip_distance IS NOT NULL THEN 'recorded_distance' "
    "WHEN pickup_location_id IS NOT NULL AND dropoff_location_id IS NOT NULL THEN 'zones_only' "
    "ELSE 'coordinates_only' END"
)
