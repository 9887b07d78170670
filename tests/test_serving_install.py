"""The serving install: the wheel without extras in a fresh virtualenv has no pyspark (nor Java, nor MLflow's
server side, nor pyarrow) and still serves an exported model over HTTP with the same predictions as in-process.

Dependencies come from PyPI through pip's cache (no --no-index: the serving set differs from the dev venv's).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from conftest import free_port, wait_http
from conftest import mlflow_server as start_mlflow_server
from taxi_duration.serve.predictor import ExportedModel

pytestmark = [pytest.mark.slow, pytest.mark.server]

RIDES = [
    {"PULocationID": 161, "DOLocationID": 236, "trip_distance": 2.4, "pickup_datetime": "2024-05-01T08:30:00"},
    {"PULocationID": 132, "DOLocationID": 48, "pickup_datetime": "2024-12-24T17:05:00"},
    {"PULocationID": 4, "DOLocationID": 4, "trip_distance": 0.3, "pickup_datetime": "2023-07-04T23:59:00"},
]


@pytest.fixture(scope="module")
def serving_venv(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("serving-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(built_wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


def test_the_serving_install_has_no_spark_and_no_mlflow_server_side(serving_venv: Path) -> None:
    probe = (
        "import importlib.util, json; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in "
        "['pyspark', 'py4j', 'matplotlib', 'sklearn', 'sqlalchemy', 'flask', 'pyarrow', 'mlflow', 'fastapi', "
        "'taxi_duration']}))"
    )
    found = json.loads(subprocess.check_output([str(serving_venv / "bin" / "python"), "-c", probe], timeout=60))
    assert found == {
        "pyspark": False,
        "py4j": False,
        "matplotlib": False,
        "sklearn": False,
        "sqlalchemy": False,
        "flask": False,
        "pyarrow": False,  # the `parquet` extra: the request log and Parquet files only
        "mlflow": True,  # the client, from mlflow-skinny
        "fastapi": True,
        "taxi_duration": True,
    }
    result = subprocess.run(
        [str(serving_venv / "bin" / "python"), "-c", "import pyspark"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "No module named 'pyspark'" in result.stderr


@pytest.fixture
def served(serving_venv: Path, served_models: dict[str, Path], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [
            str(serving_venv / "bin" / "taxi-duration"),
            "--workspace",
            str(tmp_path),
            "serve",
            "--port",
            str(port),
            "--model-dir",
            str(served_models["7"]),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_the_serving_install_serves_an_exported_model(served: str, served_models: dict[str, Path]) -> None:
    model = ExportedModel.load(served_models["7"])
    for ride in RIDES:
        answer = httpx.post(f"{served}/predict", json=ride, timeout=10).json()
        trip = {
            "pickup_datetime": datetime.fromisoformat(ride["pickup_datetime"]),
            "pickup_location_id": ride["PULocationID"],
            "dropoff_location_id": ride["DOLocationID"],
            "trip_distance": ride.get("trip_distance"),
        }
        assert answer["duration_minutes"] == pytest.approx(model.predict_minutes(trip), abs=1e-9)
        assert answer["model_version"] == "7"
    assert httpx.get(f"{served}/").text.startswith("<!doctype html>")


def test_the_serving_install_names_what_a_sqlite_registry_needs(serving_venv: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(serving_venv / "bin" / "taxi-duration"), "--workspace", str(tmp_path), "serve"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "a SQLite MLflow store needs the pipeline install" in result.stderr


@pytest.mark.parametrize("asks", ["request-log", "parquet-out"])
def test_the_serving_install_names_what_parquet_needs(
    asks: str, serving_venv: Path, served_models: dict[str, Path], tmp_path: Path
) -> None:
    """Without pyarrow, the request log and Parquet output are refused up front: one line naming the extra."""
    trips = tmp_path / "trips.csv"
    trips.write_text("pickup_datetime,pickup_location_id,dropoff_location_id\n2024-05-01 08:30:00,161,236\n")
    model = ["--model-dir", str(served_models["7"])]
    args = (
        ["serve", *model, "--port", str(free_port()), "--request-log", str(tmp_path / "log")]
        if asks == "request-log"
        else ["predict", str(trips), *model, "--out", str(tmp_path / "out.parquet")]
    )
    command = [str(serving_venv / "bin" / "taxi-duration"), "--workspace", str(tmp_path), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "Parquet needs pyarrow" in result.stderr
    assert "pip install 'taxi-duration-predictor[parquet]'" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trips.csv"]  # no log folder, no output file


@pytest.fixture(scope="module")
def registry(served_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (from the dev venv, SQLite store, proxied artifacts) holding `taxi-duration` v1 with
    alias champion, whose run has the exported model under `exported/` as `train` logs it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        try:
            mlflow.set_tracking_uri(url)
            mlflow.set_registry_uri(url)
            client = MlflowClient()
            experiment = client.create_experiment("serving-install")
            run = client.create_run(experiment)
            client.log_artifacts(run.info.run_id, str(served_models["7"]), "exported")
            client.set_terminated(run.info.run_id)
            client.create_registered_model("taxi-duration")
            source = f"runs:/{run.info.run_id}/exported"
            version = client.create_model_version("taxi-duration", source, run.info.run_id)
            client.set_registered_model_alias("taxi-duration", "champion", version.version)
            yield url
        finally:
            mlflow.set_tracking_uri(previous[0])
            mlflow.set_registry_uri(previous[1])


def test_the_serving_install_follows_an_alias_on_an_mlflow_server(
    serving_venv: Path, registry: str, served_models: dict[str, Path], tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    command = [str(serving_venv / "bin" / "taxi-duration"), "--workspace", str(tmp_path), "--tracking-uri", registry]
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen(
            [*command, "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/ready", process, 90, tmp_path / "serve.log")
            answer = httpx.post(f"{url}/predict", json=RIDES[0], timeout=10).json()
        finally:
            process.terminate()
            process.wait(30)
    model = ExportedModel.load(served_models["7"])
    trip = {
        "pickup_datetime": datetime.fromisoformat(RIDES[0]["pickup_datetime"]),
        "pickup_location_id": 161,
        "dropoff_location_id": 236,
        "trip_distance": 2.4,
    }
    assert answer["model_name"] == "taxi-duration" and answer["model_version"] == "7"  # the folder's own version
    assert answer["duration_minutes"] == pytest.approx(model.predict_minutes(trip), abs=1e-9)
    # `predict` in the serving install reads the same alias, writes CSV by default (no pyarrow) and leaves no
    # temporary folder behind
    trips = tmp_path / "trips.csv"
    (tmp_path / "tmp").mkdir()
    trips.write_text(
        "pickup_datetime,pickup_location_id,dropoff_location_id,trip_distance\n2024-05-01 08:30:00,161,236,2.4\n"
    )
    done = subprocess.run(
        [*command, "predict", str(trips), "--json"],
        capture_output=True, text=True, timeout=120, env={**env, "TMPDIR": str(tmp_path / "tmp")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["predicted"] == 1 and report["path"] == str(tmp_path / "trips.predictions.csv")
    with (tmp_path / "trips.predictions.csv").open() as written:
        row = next(csv.DictReader(written))
    assert float(row["predicted_duration_minutes"]) == pytest.approx(model.predict_minutes(trip), abs=1e-9)
    assert list((tmp_path / "tmp").iterdir()) == []
