"""The three regimes and the travel-time table's lookup rule, in plain Python (what the API runs)."""

from __future__ import annotations

import json
import math

import pytest

from taxi_duration.features.travel_times import TravelTimes, pair_key
from taxi_duration.regimes import REGIMES, regime_of

TABLE = TravelTimes(
    min_trips=3,
    pairs={pair_key(132, 230): (40.0, 17.2, 52.5), pair_key(161, 236): (12.0, float("nan"), 9.0)},
    boroughs={pair_key(3, 1): (900.0, 11.0, 38.0), pair_key(1, 1): (5000.0, 1.6, 10.5)},
    overall=(9000.0, 1.9, 11.2),
)


@pytest.mark.parametrize(
    ("trip", "regime"),
    [
        ({"trip_distance": 2.0, "pickup_location_id": 1, "dropoff_location_id": 2}, "recorded_distance"),
        ({"trip_distance": 0.0}, "recorded_distance"),  # a recorded zero is still recorded
        ({"trip_distance": float("nan"), "PULocationID": 132, "DOLocationID": 230}, "zones_only"),
        ({"pickup_location_id": 132, "dropoff_location_id": 230}, "zones_only"),
        (
            {"pickup_latitude": 40.6, "pickup_longitude": -73.8, "dropoff_latitude": 40.7, "dropoff_longitude": -74},
            "coordinates_only",
        ),
        ({"pickup_location_id": 1, "dropoff_latitude": 40.7, "dropoff_longitude": -74.0}, "coordinates_only"),
        ({}, "coordinates_only"),
    ],
)
def test_regime_of(trip: dict, regime: str) -> None:
    assert regime_of(trip) == regime
    assert regime in REGIMES


def test_lookup_falls_back_field_by_field() -> None:
    # the pair has a row: its own numbers
    assert TABLE.lookup(132, 230, 3, 1) == ((40.0, 17.2, 52.5), (40.0, 17.2, 52.5))
    # a row without a median distance takes the borough pair's distance, keeps its own count and minutes
    pair, merged = TABLE.lookup(161, 236, 1, 1)
    assert pair is not None and math.isnan(pair[1]) and merged == (12.0, 1.6, 9.0)
    # an unseen pair: 0 trips, the borough pair's medians
    assert TABLE.lookup(138, 230, 3, 1) == (None, (0.0, 11.0, 38.0))
    # unseen borough pair too, or no zones at all: the overall medians
    assert TABLE.lookup(5, 7, 5, 2) == (None, (0.0, 1.9, 11.2))
    assert TABLE.lookup(None, None, 0, 0) == (None, (0.0, 1.9, 11.2))


def test_json_round_trip_keeps_nan_as_null() -> None:
    data = TABLE.to_json()
    assert data["pairs"][str(pair_key(161, 236))] == [12.0, None, 9.0]
    again = TravelTimes.from_json(data)
    assert again.to_json() == data
    literal = TABLE.literal_json(266)
    assert '"min_trips":3' in literal and "NaN" not in literal
    assert TravelTimes.from_literal(json.loads(literal)).to_json() == TABLE.to_json()  # by position; NaN is NaN
    with pytest.raises(ValueError, match="not a travel-time table"):
        TravelTimes.from_json({"format": "other"})
