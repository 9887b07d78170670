"""The API's bounds are the pipeline's quality parameters of each app, not import-time defaults: two apps in one
process, one with the package defaults and one built from a pipeline config file with tighter bounds, accept and
refuse the same rides differently, name the field and the bound in their 422s, and state their own bounds in their
OpenAPI schemas."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from taxi_duration.params import QualityParams, load_params
from taxi_duration.serve.app import create_app
from taxi_duration.serve.models import Ride
from taxi_duration.serve.predictor import ExportedModel

WHEN = "2024-05-01T08:30:00"
ZONES = {"PULocationID": 161, "DOLocationID": 236, "pickup_datetime": WHEN}
# what `taxi-duration --config tight.yaml serve` reads: tighter than the defaults on every bound the API applies
TIGHT_YAML = """\
quality:
  max_distance_miles: 50
  max_passenger_count: 4
  min_year: 2015
  nyc_bbox: [40.55, -74.10, 40.95, -73.70]
"""


@pytest.fixture(scope="module")
def model(served_models: dict[str, Path]) -> ExportedModel:
    return ExportedModel.load(served_models["7"])


@pytest.fixture(scope="module")
def tight_quality(tmp_path_factory: pytest.TempPathFactory) -> QualityParams:
    config = tmp_path_factory.mktemp("config") / "tight.yaml"
    config.write_text(TIGHT_YAML)
    return load_params(config).quality


@pytest.fixture(scope="module")
def apps(model: ExportedModel, tight_quality: QualityParams) -> dict[str, TestClient]:
    """Both apps built in this one process: the tight one first, so a leak into the defaults would show."""
    tight = TestClient(create_app(lambda: model, None, max_batch=3, quality=tight_quality))
    default = TestClient(create_app(lambda: model, None, max_batch=5))
    return {"default": default, "tight": tight}


def canonical(ride: dict[str, Any]) -> dict[str, Any]:
    return {
        "pickup_datetime": datetime.fromisoformat(ride["pickup_datetime"]),
        "pickup_location_id": ride.get("PULocationID"),
        "dropoff_location_id": ride.get("DOLocationID"),
        **{k: v for k, v in ride.items() if k in ("trip_distance", "passenger_count") or k.endswith("itude")},
    }


def test_the_config_file_sets_the_bounds(tight_quality: QualityParams) -> None:
    assert tight_quality.max_distance_miles == 50 and tight_quality.max_passenger_count == 4
    assert tight_quality.nyc_bbox == (40.55, -74.10, 40.95, -73.70)
    assert QualityParams().max_distance_miles == 200  # the defaults the other app keeps


# (ride, the tight app's errors: field -> message); the default app predicts each of these rides
REFUSED_BY_TIGHT: list[tuple[dict[str, Any], dict[str, str]]] = [
    ({**ZONES, "trip_distance": 120}, {"trip_distance": "must be at most 50 miles, got 120.0"}),
    ({**ZONES, "trip_distance": 50.5}, {"trip_distance": "must be at most 50 miles, got 50.5"}),
    ({**ZONES, "passenger_count": 6}, {"passenger_count": "must be from 0 to 4, got 6"}),
    (
        {**ZONES, "pickup_datetime": "2012-06-01T09:00:00"},
        {"pickup_datetime": "must not be before 2015-01-01 (TLC data starts in 2015)"},
    ),
    (
        # Pelham Bay and the Bronx north: inside the default box, outside the tight one on both axes
        {"pickup_latitude": 41.0, "pickup_longitude": -73.6, "DOLocationID": 236, "pickup_datetime": WHEN},
        {
            "pickup_latitude": "must be within New York (40.55 to 40.95), got 41.0",
            "pickup_longitude": "must be within New York (-74.1 to -73.7), got -73.6",
        },
    ),
]


@pytest.mark.parametrize(("ride", "errors"), REFUSED_BY_TIGHT, ids=[next(iter(e)) for _, e in REFUSED_BY_TIGHT])
def test_each_app_applies_its_own_bounds(
    apps: dict[str, TestClient], model: ExportedModel, ride: dict[str, Any], errors: dict[str, str]
) -> None:
    accepted = apps["default"].post("/predict", json=ride)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["duration_minutes"] == model.predict_minutes(canonical(ride))

    refused = apps["tight"].post("/predict", json=ride)
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert {e["field"]: e["message"] for e in body["errors"]} == errors
    assert {e["type"] for e in body["errors"]} == {"value_error"}
    assert body["detail"] == "; ".join(f"{field}: {message}" for field, message in errors.items())


def test_the_tight_app_accepts_rides_at_its_bounds(apps: dict[str, TestClient], model: ExportedModel) -> None:
    ride = {
        "pickup_latitude": 40.95,
        "pickup_longitude": -73.7,
        "DOLocationID": 236,
        "trip_distance": 50,
        "passenger_count": 4,
        "pickup_datetime": "2015-01-01T00:00:00",
    }
    response = apps["tight"].post("/predict", json=ride)
    assert response.status_code == 200, response.text
    assert response.json()["duration_minutes"] == model.predict_minutes(canonical(ride))


def test_the_default_app_keeps_the_package_defaults(apps: dict[str, TestClient]) -> None:
    for ride, field, message in [
        ({**ZONES, "trip_distance": 250}, "trip_distance", "must be at most 200 miles, got 250.0"),
        ({**ZONES, "passenger_count": 12}, "passenger_count", "must be from 0 to 9, got 12"),
        ({**ZONES, "pickup_datetime": "2008-12-31T23:59:00"}, "pickup_datetime", "must not be before 2009-01-01"),
    ]:
        response = apps["default"].post("/predict", json=ride)
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["field"] == field and error["message"].startswith(message), error
    # the module's own Ride (what benchmarks validate with) keeps the defaults too
    assert Ride.quality == QualityParams()
    assert Ride.model_validate({**ZONES, "trip_distance": 120}).trip_distance == 120


def test_batches_apply_the_app_bounds_and_size(apps: dict[str, TestClient]) -> None:
    rides = [{**ZONES, "trip_distance": 3.0}, {**ZONES, "trip_distance": 60.0}]
    assert apps["default"].post("/predict/batch", json={"rides": rides}).status_code == 200
    refused = apps["tight"].post("/predict/batch", json={"rides": rides}).json()
    assert refused["errors"] == [
        {"field": "rides.1.trip_distance", "message": "must be at most 50 miles, got 60.0", "type": "value_error"}
    ]
    too_many = apps["tight"].post("/predict/batch", json={"rides": [ZONES] * 4}).json()
    assert too_many["errors"][0]["message"] == "must hold at most 3 rides per request, got 4"


def test_each_openapi_schema_states_its_own_bounds(apps: dict[str, TestClient]) -> None:
    stated = {}
    for name, client in apps.items():
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        ride = schemas["Ride"]["properties"]
        stated[name] = {
            "trip_distance": (ride["trip_distance"]["minimum"], ride["trip_distance"]["maximum"]),
            "passenger_count": (ride["passenger_count"]["minimum"], ride["passenger_count"]["maximum"]),
            "passenger_description": ride["passenger_count"]["description"],
            "pickup_latitude": (ride["pickup_latitude"]["minimum"], ride["pickup_latitude"]["maximum"]),
            "dropoff_longitude": (ride["dropoff_longitude"]["minimum"], ride["dropoff_longitude"]["maximum"]),
            "first_pickup": ride["pickup_datetime"]["description"].split("From ")[1].split(" ")[0],
            "zone": (ride["PULocationID"]["minimum"], ride["PULocationID"]["maximum"]),
            "batch": schemas["BatchRequest"]["properties"]["rides"]["maxItems"],
        }
    assert stated["default"] == {
        "trip_distance": (0, 200),
        "passenger_count": (0, 9),
        "passenger_description": "0..9",
        "pickup_latitude": (40.4, 41.1),
        "dropoff_longitude": (-74.4, -73.5),
        "first_pickup": "2009-01-01",
        "zone": (1, 263),
        "batch": 5,
    }
    assert stated["tight"] == {
        "trip_distance": (0, 50),
        "passenger_count": (0, 4),
        "passenger_description": "0..4",
        "pickup_latitude": (40.55, 40.95),
        "dropoff_longitude": (-74.1, -73.7),
        "first_pickup": "2015-01-01",
        "zone": (1, 263),
        "batch": 3,
    }
