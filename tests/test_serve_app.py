"""The prediction API over a real exported model: values, batch order, every validation rule, 503 without a
model, admin reload, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from taxi_duration.serve.app import create_app, now_new_york
from taxi_duration.serve.predictor import ExportedModel

KEY = "s3cret"
WHEN = "2024-05-01T08:30:00"


@pytest.fixture(scope="module")
def exported(served_models: dict[str, Path]) -> dict[str, Path]:
    """One small GBT pipeline, fitted and saved once (conftest), exported as versions 7 and 8."""
    return {version: served_models[version] for version in ("7", "8")}


@pytest.fixture(scope="module")
def model(exported: dict[str, Path]) -> ExportedModel:
    return ExportedModel.load(exported["7"])


@pytest.fixture(scope="module")
def client(model: ExportedModel) -> TestClient:
    return TestClient(create_app(lambda: model, KEY, max_batch=5))


def _canonical(ride: dict[str, Any]) -> dict[str, Any]:
    return {
        "pickup_datetime": datetime.fromisoformat(ride.get("pickup_datetime", WHEN)),
        "pickup_location_id": ride.get("PULocationID"),
        "dropoff_location_id": ride.get("DOLocationID"),
        "trip_distance": ride.get("trip_distance"),
        **{k: v for k, v in ride.items() if k.endswith(("_latitude", "_longitude"))},
    }


RIDES = [
    {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66, "pickup_datetime": WHEN},
    {"PULocationID": 132, "DOLocationID": 161, "pickup_datetime": "2024-07-04T17:30:00"},  # holiday, no distance
    {"PULocationID": 79, "DOLocationID": 79, "trip_distance": 0.4, "pickup_datetime": "2024-01-07T02:15:00"},
    {
        "pickup_latitude": 40.767937,
        "pickup_longitude": -73.982155,
        "dropoff_latitude": 40.765602,
        "dropoff_longitude": -73.96463,
        "pickup_datetime": "2016-03-14T17:24:55",
    },
    {"PULocationID": 1, "dropoff_latitude": 40.75, "dropoff_longitude": -73.99, "pickup_datetime": WHEN},
]


REGIMES = ["recorded_distance", "zones_only", "recorded_distance", "coordinates_only", "coordinates_only"]


@pytest.mark.parametrize(("ride", "regime"), list(zip(RIDES, REGIMES, strict=True)))
def test_predict_equals_the_exported_model(
    client: TestClient, model: ExportedModel, ride: dict[str, Any], regime: str
) -> None:
    response = client.post("/predict", json=ride)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "duration_minutes": model.predict_minutes(_canonical(ride)),
        "model_name": "taxi-duration",
        "model_version": "7",
        "regime": regime,
    }


def test_predict_echoes_ride_id_converts_offsets_and_defaults_to_now(client: TestClient, model: ExportedModel) -> None:
    ride = {"PULocationID": 161, "DOLocationID": 236, "trip_distance": 2.0, "ride_id": "r-42", "passenger_count": 2}
    with_offset = client.post("/predict", json={**ride, "pickup_datetime": "2024-05-01T12:30:00Z"}).json()
    assert with_offset["ride_id"] == "r-42"
    assert with_offset["duration_minutes"] == model.predict_minutes(_canonical({**ride, "pickup_datetime": WHEN}))
    before = now_new_york()
    now = client.post("/predict", json={**ride, "service": "green"}).json()
    candidates = {model.predict_minutes({**_canonical(ride), "pickup_datetime": t}) for t in (before, now_new_york())}
    assert now["duration_minutes"] in candidates
    canonical_names = {"pickup_location_id": 161, "dropoff_location_id": 236, "pickup_datetime": WHEN}
    assert client.post("/predict", json=canonical_names).status_code == 200


def test_batch_keeps_request_order(client: TestClient) -> None:
    rides = [{**ride, "ride_id": i} for i, ride in enumerate(RIDES)]
    rides[2].pop("ride_id")
    response = client.post("/predict/batch", json={"rides": rides})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"]) == ("taxi-duration", "7")
    singles = [client.post("/predict", json=ride).json()["duration_minutes"] for ride in rides]
    assert [p["duration_minutes"] for p in body["predictions"]] == singles
    assert [p["regime"] for p in body["predictions"]] == REGIMES
    assert [p.get("ride_id") for p in body["predictions"]] == [0, 1, None, 3, 4]
    assert "ride_id" not in body["predictions"][2]


def _in_days(days: float) -> str:
    return (now_new_york() + timedelta(days=days)).isoformat(timespec="seconds")


OK = {"PULocationID": 130, "DOLocationID": 205}
INVALID: list[tuple[str, Callable[[], dict[str, Any]], str, str]] = [
    ("/predict", lambda: {**OK, "PULocationID": 0}, "PULocationID", "1 to 263"),
    ("/predict", lambda: {**OK, "PULocationID": 264}, "PULocationID", "1 to 263"),
    ("/predict", lambda: {**OK, "DOLocationID": 999}, "DOLocationID", "1 to 263"),
    ("/predict", lambda: {**OK, "PULocationID": "midtown"}, "PULocationID", "integer"),
    ("/predict", lambda: {**OK, "trip_distance": -0.5}, "trip_distance", "negative"),
    ("/predict", lambda: {**OK, "trip_distance": 250}, "trip_distance", "at most 200 miles"),
    ("/predict", lambda: {**OK, "pickup_datetime": _in_days(2)}, "pickup_datetime", "future"),
    ("/predict", lambda: {**OK, "pickup_datetime": "2008-12-31T23:59:00"}, "pickup_datetime", "2009"),
    ("/predict", lambda: {**OK, "pickup_datetime": "soon"}, "pickup_datetime", "datetime"),
    ("/predict", lambda: {"trip_distance": 2.0}, "PULocationID", "required"),
    ("/predict", lambda: {"PULocationID": 4}, "DOLocationID", "required"),
    (
        "/predict",
        lambda: {"DOLocationID": 4, "pickup_latitude": 40.75},
        "pickup_longitude",
        "required with pickup_latitude",
    ),
    (
        "/predict",
        lambda: {"DOLocationID": 4, "pickup_latitude": 48.85, "pickup_longitude": 2.35},
        "pickup_latitude",
        "New York",
    ),
    ("/predict", lambda: {**OK, "passenger_count": 12}, "passenger_count", "0 to 9"),
    ("/predict", lambda: {**OK, "service": "bus"}, "service", "one of"),
    ("/predict", lambda: {**OK, "PULocationld": 3}, "PULocationld", "unknown field"),
    ("/predict/batch", lambda: {"rides": [OK] * 6}, "rides", "at most 5 rides"),
    ("/predict/batch", lambda: {"rides": []}, "rides", "at least one"),
    ("/predict/batch", lambda: {"rides": [OK, {**OK, "trip_distance": 900}]}, "rides.1.trip_distance", "200 miles"),
    ("/predict/batch", lambda: {"rides": [OK, {}]}, "rides.1.PULocationID", "required"),
    ("/predict/batch", lambda: {"ride": [OK]}, "rides", "required"),
]


@pytest.mark.parametrize(("path", "body", "field", "rule"), INVALID, ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in INVALID])
def test_invalid_requests_name_the_field_and_rule(
    client: TestClient, path: str, body: Callable[[], dict[str, Any]], field: str, rule: str
) -> None:
    response = client.post(path, json=body())
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any(e["field"] == field and rule in e["message"] for e in errors), errors
    assert f"{field}: " in response.json()["detail"]


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"PULocationID": 1,', {"content-type": "application/json"}),
        (b"PULocationID=1", {"content-type": "application/x-www-form-urlencoded"}),
        (b"[1, 2]", {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
        (b'{"PULocationID": 1, "DOLocationID": 2, "trip_distance": NaN}', {"content-type": "application/json"}),
    ],
)
def test_bodies_that_are_not_a_ride_are_4xx(client: TestClient, content: bytes, headers: dict[str, str]) -> None:
    response = client.post("/predict", content=content, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["errors"][0]["field"] in ("body", "trip_distance")


def test_no_model_is_503_but_the_process_is_healthy() -> None:
    def broken() -> ExportedModel | None:
        raise RuntimeError("registry unreachable")

    for loader in (lambda: None, broken):
        client = TestClient(create_app(loader, KEY))
        for response in (
            client.post("/predict", json=OK),
            client.post("/predict/batch", json={"rides": [OK]}),
            client.get("/model"),
            client.get("/ready"),
        ):
            assert response.status_code == 503, response.text
            assert "no model loaded" in response.json()["detail"]
        assert client.get("/health").json() == {"status": "ok"}
        assert "taxi_duration_model_version 0.0" in client.get("/metrics").text


def test_model_endpoint(client: TestClient, model: ExportedModel) -> None:
    body = client.get("/model").json()
    assert body["model_name"] == "taxi-duration" and body["model_version"] == "7" and body["kind"] == "gbt"
    assert body["metrics"] == {"rmsle": 0.31}
    assert body["metrics_by_regime"]["zones_only"] == {
        "rmsle": 0.38,
        "rmse_minutes": 7.0,
        "baseline_rmsle": 0.45,
        "rows": 100,
    }
    assert body["features"] == list(model.feature_columns)
    assert client.get("/ready").json() == {"status": "ready", "model_name": "taxi-duration", "model_version": "7"}


def test_admin_reload(exported: dict[str, Path]) -> None:
    versions = iter(["7", "8", "boom"])

    def loader() -> ExportedModel | None:
        version = next(versions)
        if version == "boom":
            raise OSError("model store unreachable")
        return ExportedModel.load(exported[version])

    client = TestClient(create_app(loader, KEY))
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"X-API-Key": "guess"}).status_code == 403
    assert client.post("/predict", json=OK).json()["model_version"] == "7"
    response = client.post("/admin/reload", headers={"X-API-Key": KEY})
    assert response.status_code == 200, response.text
    assert response.json() == {"model_name": "taxi-duration", "model_version": "8", "previous_version": "7"}
    assert client.post("/predict", json=OK).json()["model_version"] == "8"
    failed = client.post("/admin/reload", headers={"X-API-Key": KEY})
    assert failed.status_code == 503 and "still serving version 8" in failed.json()["detail"]
    assert client.post("/predict", json=OK).json()["model_version"] == "8"
    metrics = client.get("/metrics").text
    assert 'taxi_duration_model_info{kind="gbt",model_name="taxi-duration",model_version="8"} 1.0' in metrics
    assert 'model_version="7"' not in metrics.split("taxi_duration_model_info")[1].split("# HELP")[0]

    disabled = TestClient(create_app(lambda: ExportedModel.load(exported["7"]), None))
    response = disabled.post("/admin/reload", headers={"X-API-Key": KEY})
    assert response.status_code == 403 and "disabled" in response.json()["detail"]


def test_metrics(model: ExportedModel) -> None:
    client = TestClient(create_app(lambda: model, KEY))
    client.post("/predict", json=OK)
    client.post("/predict", json=OK)
    client.post("/predict", json={"PULocationID": 0})
    client.post("/predict/batch", json={"rides": [OK, OK, OK]})
    text = client.get("/metrics").text
    assert 'taxi_duration_http_requests_total{method="POST",route="/predict",status="200"} 2.0' in text
    assert 'taxi_duration_http_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert 'taxi_duration_http_request_duration_seconds_count{route="/predict"} 3.0' in text
    assert 'taxi_duration_http_request_duration_seconds_bucket{le="0.005",route="/predict"}' in text
    assert 'taxi_duration_predicted_rides_total{model_version="7"} 5.0' in text
    assert "taxi_duration_model_version 7.0" in text


def test_the_fast_route_answers_as_fastapis_own_route(client: TestClient, model: ExportedModel) -> None:
    """`serve` answers /predict with FastJsonRoute (serve/fast_route.py): byte for byte what FastAPI's own route
    answers on the same app, for valid rides, batches and every kind of invalid body."""
    standard = TestClient(create_app(lambda: model, KEY, max_batch=5, fast_route=False))
    requests: list[tuple[str, Any]] = [("/predict", ride) for ride in RIDES]
    requests += [("/predict/batch", {"rides": RIDES}), ("/predict", {**OK, "ride_id": "r-1", "passenger_count": 1})]
    requests += [(path, body()) for path, body, _, _ in INVALID]
    for path, body in requests:
        expected, got = standard.post(path, json=body), client.post(path, json=body)
        assert (got.status_code, got.content) == (expected.status_code, expected.content), (path, body)
    assert client.get("/openapi.json").json() == standard.get("/openapi.json").json()
