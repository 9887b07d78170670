"""The prediction API as users run it: `taxi-duration serve` in its own process over real HTTP, nothing mocked.

A small model is trained on the real TLC sample through the CLI; the server follows the registry alias, so moving
`champion` to a newly trained version swaps the served model while requests keep succeeding.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import cli_json, copy_workspace, free_port, wait_http
from taxi_duration.serve.champion import alias_loader
from taxi_duration.serve.predictor import ExportedModel
from taxi_duration.settings import Settings
from taxi_duration.tracking import configure_mlflow

pytestmark = [pytest.mark.slow, pytest.mark.server]

MODEL = "taxi-duration"
KEY = "secret"
CLI = Path(sys.executable).parent / "taxi-duration"


def rides(data_dir: Path, count: int = 20) -> list[dict[str, Any]]:
    """Real trips from the sample as API bodies (zones 1..263, a recorded distance)."""
    frame = pd.read_csv(data_dir / "taxis_sample_2019-03.csv")
    frame = frame[
        frame["PULocationID"].between(1, 263) & frame["DOLocationID"].between(1, 263) & (frame["trip_distance"] > 0)
    ].head(count)
    return [
        {
            "PULocationID": int(row.PULocationID),
            "DOLocationID": int(row.DOLocationID),
            "trip_distance": float(row.trip_distance),
            "pickup_datetime": str(row.tpep_pickup_datetime).replace(" ", "T"),
        }
        for row in frame.itertuples()
    ]


def canonical(ride: dict[str, Any]) -> dict[str, Any]:
    """What the API hands the model for a ride body (as `Ride.trip()` builds it)."""
    return {
        "pickup_datetime": datetime.fromisoformat(ride["pickup_datetime"]),
        "pickup_location_id": ride["PULocationID"],
        "dropoff_location_id": ride["DOLocationID"],
        "trip_distance": ride["trip_distance"],
    }


def champion(workspace: Path) -> ExportedModel:
    configure_mlflow(Settings(workspace=workspace))
    model = alias_loader(MODEL, "champion")[0]()
    assert model is not None
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, sample_champion: Path) -> dict[str, Path]:
    """A copy of the shared workspace: the real sample ingested and a small GBT trained (version 1, champion)."""
    workspace = copy_workspace(sample_champion, tmp_path_factory.mktemp("live"))
    return {"workspace": workspace, "config": workspace / "small.yaml"}


@pytest.fixture(scope="module")
def server(trained: dict[str, Path]) -> Iterator[httpx.Client]:
    """`taxi-duration serve` in a subprocess, polling the alias every second; stopped at the end."""
    port = free_port()
    log = (trained["workspace"] / "serve.log").open("w")
    env = {**os.environ, "TAXI_DURATION_ADMIN_KEY": KEY, "SPARK_LOCAL_IP": "127.0.0.1"}
    command = [str(CLI), "--workspace", str(trained["workspace"]), "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--poll-seconds", "1"]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 60, trained["workspace"] / "serve.log")
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def test_ready_model_and_predictions_over_http(server: httpx.Client, trained: dict[str, Path], data_dir: Path) -> None:
    ready = server.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_name": MODEL, "model_version": "1"}
    info = server.get("/model").json()
    assert (info["model_name"], info["model_version"], info["kind"]) == (MODEL, "1", "gbt")

    model = champion(trained["workspace"])
    assert model.version == "1"
    for ride in rides(data_dir):
        response = server.post("/predict", json=ride)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "1"
        assert body["duration_minutes"] == pytest.approx(model.predict_minutes(canonical(ride)), rel=1e-12)

    invalid = server.post("/predict", json={"PULocationID": 999, "DOLocationID": 1})
    assert invalid.status_code == 422
    assert "PULocationID" in invalid.json()["detail"]


def test_admin_reload_needs_the_key(server: httpx.Client) -> None:
    assert server.post("/admin/reload").status_code == 401
    assert server.post("/admin/reload", headers={"X-API-Key": "not-the-key"}).status_code == 403
    reloaded = server.post("/admin/reload", headers={"X-API-Key": KEY})
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json() == {"model_name": MODEL, "model_version": "1", "previous_version": "1"}


def _served_version(server: httpx.Client) -> str:
    return str(server.get("/model").json()["model_version"])


def _wait_for_version(server: httpx.Client, version: str, seconds: float) -> float:
    start = time.monotonic()
    while _served_version(server) != version:
        assert time.monotonic() - start < seconds, f"still serving {_served_version(server)}, not {version}"
        time.sleep(0.1)
    return time.monotonic() - start


def test_moving_the_alias_swaps_the_model_without_failed_requests(
    server: httpx.Client, trained: dict[str, Path], data_dir: Path
) -> None:
    linear = cli_json(trained["workspace"], "train", "--model", "linear", config=trained["config"])
    assert linear["model_version"] == "2"
    client = MlflowClient()  # configured for this workspace by the CLI run
    # the linear model may have been promoted on its own: start again from version 1, served
    client.set_registered_model_alias(MODEL, "champion", "1")
    _wait_for_version(server, "1", 10)

    sample = rides(data_dir)
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=server.base_url, timeout=10.0) as own:
            i = 0
            while not stop.is_set():
                try:
                    response = own.post("/predict", json=sample[i % len(sample)])
                except httpx.HTTPError:
                    statuses[-1] += 1  # no answer at all: counted as a failure
                    continue
                finally:
                    i += 1
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    versions[response.json()["model_version"]] += 1

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        time.sleep(0.5)
        client.set_registered_model_alias(MODEL, "champion", "2")
        waited = _wait_for_version(server, "2", 10)
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(timeout=15)
    assert not worker.is_alive()
    assert waited < 10
    assert set(statuses) == {200}, statuses  # no 5xx (nor anything else) while the model was swapped
    assert versions["1"] > 0 and versions["2"] > 0, versions  # traffic ran through the swap

    fresh = champion(trained["workspace"])
    assert (fresh.version, fresh.kind) == ("2", "linear")
    ride = sample[0]
    body = server.post("/predict", json=ride).json()
    assert body["model_version"] == "2"
    assert body["duration_minutes"] == pytest.approx(fresh.predict_minutes(canonical(ride)), rel=1e-12)
    assert server.get("/ready").json()["model_version"] == "2"
