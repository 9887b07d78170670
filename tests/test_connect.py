"""The whole pipeline through a real Spark Connect server, logging to a real `mlflow server` over HTTP, and the
prediction API loading the champion from that server. All on 127.0.0.1, started and stopped here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow.artifacts import download_artifacts
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession

from conftest import mlflow_server as start_mlflow_server
from conftest import wait_http
from taxi_duration.analytics.report import build_report, register_views
from taxi_duration.cluster.connect import (
    ConnectServerInfo,
    connect_server_status,
    start_connect_server,
    stop_connect_server,
)
from taxi_duration.cluster.daemons import free_port, pid_alive
from taxi_duration.lakehouse import read_trips
from taxi_duration.params import load_params
from taxi_duration.registry.spark_model import spark_model_signature
from taxi_duration.serve.predictor import ExportedModel
from taxi_duration.train.job import fit_model, training_frame
from taxi_duration.train.split import time_split
from taxi_duration.train.travel_times import build_travel_times
from taxi_duration.zones import zones_frame

pytestmark = [pytest.mark.slow, pytest.mark.connect, pytest.mark.server]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SAMPLE = REPO / "src" / "taxi_duration" / "data" / "taxis_sample_2019-03.csv"
FAST = "train:\n  linear: {maxIter: 10}\n  rf: {numTrees: 5, maxDepth: 5}\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("connect-workspace")


@pytest.fixture(scope="module")
def connect(workspace: Path) -> Iterator[ConnectServerInfo]:
    info = start_connect_server(
        workspace,
        port=free_port(),
        master="local[2]",
        driver_memory="1g",
        extra_conf={"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"},
    )
    print(f"\nConnect server up in {info.startup_seconds} s")
    try:
        yield info
    finally:
        stop_connect_server(workspace)


@pytest.fixture(scope="module")
def mlflow_server(workspace: Path) -> Iterator[str]:
    """`mlflow server` with a SQLite store and proxied artifacts, as docs/cluster.md starts it."""
    with start_mlflow_server(workspace / "mlflow-server") as url:
        yield url


def cli(
    workspace: Path, *args: str, remote: str | None, tracking_uri: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("TAXI_DURATION_REMOTE", None)
    if remote:
        env["TAXI_DURATION_REMOTE"] = remote  # the token stays off the command line
    command = [str(BIN / "taxi-duration"), "--workspace", str(workspace), "--config", str(workspace / "fast.yaml")]
    if tracking_uri:
        command += ["--tracking-uri", tracking_uri]
    # run from another folder: relative paths must not depend on where client and server were started
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=900, cwd="/")


def ok(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_secure_defaults_and_clear_errors(connect: ConnectServerInfo, workspace: Path) -> None:
    base = workspace.resolve() / "connect"
    assert connect.public_url == f"sc://localhost:{connect.port}"
    url = Path(str(connect.url_file)).read_text().strip()
    assert url.startswith(f"sc://localhost:{connect.port}/;token=") and len(url.split("token=")[1]) >= 40
    for private in ("remote-url", "connect-server.conf"):
        assert (base / private).stat().st_mode & 0o077 == 0, private
    assert f"Spark Connect server started at: 127.0.0.1:{connect.port}" in Path(connect.log).read_text()
    (workspace / "fast.yaml").write_text(FAST)

    no_token = cli(workspace, "report", remote=connect.public_url)
    assert no_token.returncode == 2
    assert no_token.stderr.strip().splitlines() == [
        f"error: --remote {connect.public_url}: Spark Connect: UNAUTHENTICATED: No authentication token provided; "
        "a server started by `connect-server start` needs the URL in WORKSPACE/connect/remote-url"
    ]
    nobody = cli(workspace, "report", remote=f"sc://localhost:{free_port()}")
    assert nobody.returncode == 2
    assert "no Spark Connect server answers at localhost:" in nobody.stderr
    assert len(nobody.stderr.strip().splitlines()) == 1


def test_xgboost_is_refused_in_one_line_under_connect(connect: ConnectServerInfo, workspace: Path) -> None:
    (workspace / "fast.yaml").write_text(FAST)
    remote = Path(str(connect.url_file)).read_text().strip()
    refused = cli(workspace, "train", "--model", "xgboost", "--json", remote=remote)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: --model xgboost: XGBoost's Spark estimator needs a classic session (local, standalone or "
        "spark-submit); under Spark Connect use --model gbt"
    ]
    message = refused.stderr.strip().removeprefix("error: ")
    assert json.loads(refused.stdout.strip().splitlines()[-1]) == {"error": message, "code": 2}
    assert not (workspace / "mlflow.db").exists()  # refused before any work: no MLflow store opened


def test_pipeline_over_connect_logs_to_the_mlflow_server(
    connect: ConnectServerInfo, mlflow_server: str, workspace: Path, spark: SparkSession
) -> None:
    remote = Path(str(connect.url_file)).read_text().strip()
    ingested = ok(cli(workspace, "ingest", str(SAMPLE), "--json", remote=remote))
    assert (ingested["rows_in"], ingested["rows_clean"], ingested["rows_quarantined"]) == (6500, 6352, 148)

    linear = ok(cli(workspace, "train", "--model", "linear", "--json", remote=remote, tracking_uri=mlflow_server))
    assert (linear["model_version"], linear["promotion"]["promote"]) == ("1", True)
    # the second run scores the champion (loaded under Connect) on its own validation trips
    forest = ok(cli(workspace, "train", "--model", "rf", "--json", remote=remote, tracking_uri=mlflow_server))
    assert forest["model_version"] == "2"
    assert forest["promotion"]["champion_version"] == "1"
    assert forest["promotion"]["champion"] == pytest.approx(linear["metrics"]["rmsle"], rel=1e-9)
    champion = "2" if forest["promotion"]["promote"] else "1"

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    assert str(client.get_model_version_by_alias("taxi-duration", "champion").version) == champion
    assert not (workspace / "mlflow.db").exists()  # nothing went to the local store
    # the Connect-logged model is an ordinary MLflow Spark model; classic Spark loads it
    local = Path(download_artifacts(f"runs:/{linear['run_id']}/model", tracking_uri=mlflow_server))
    assert "spark:" in (local / "MLmodel").read_text()
    signature = Model.load(str(local / "MLmodel")).signature
    assert signature is not None and signature == spark_model_signature()
    connect_model = PipelineModel.load(str(local / "sparkml"))

    # the same code in classic mode fits the same model on the same trips
    trips = read_trips(spark, workspace / "lakehouse" / "trips")
    labeled = training_frame(trips, None, 42)
    cutoff = int(pd.Timestamp(linear["data"]["cutoff"]).tz_localize("America/New_York").value // 1000)
    train, _ = time_split(labeled, cutoff)
    assert train.count() == linear["data"]["train_rows"]
    params = load_params(workspace / "fast.yaml")
    travel_times = build_travel_times(train, params.train.travel_times.min_trips)
    classic, _ = fit_model(train, "linear", params, False, travel_times)
    np.testing.assert_allclose(
        classic.stages[-1].coefficients.toArray(),  # type: ignore[attr-defined]
        connect_model.stages[-1].coefficients.toArray(),  # type: ignore[attr-defined]
        rtol=1e-9,
        atol=1e-12,
    )

    scored = ok(cli(workspace, "score", "--json", remote=remote, tracking_uri=mlflow_server))
    assert (scored["rows"], scored["model_version"]) == (6352, champion)
    report = ok(cli(workspace, "report", "--json", remote=remote))
    # the same report in classic mode, from the same table
    register_views(trips, zones_frame(spark))
    expected = build_report(spark, limit=20)["by_borough"]
    got = pd.DataFrame(report["by_borough"])[list(expected.columns)]
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True), check_dtype=False, rtol=1e-9)
    assert got["trips"].sum() == 6352
    assert (workspace / "reports" / "report.html").exists()

    # the JVM-free export logged with the champion's run equals what Spark wrote through Connect
    predictions = spark.read.parquet(str(workspace / "lakehouse" / "predictions")).toPandas()
    run_id = client.get_model_version("taxi-duration", champion).run_id
    exported = ExportedModel.load(download_artifacts(f"runs:/{run_id}/exported", tracking_uri=mlflow_server))
    joined = trips.toPandas().merge(predictions[["trip_id", "predicted_duration_minutes"]], on="trip_id")
    assert len(joined) == 6352
    np.testing.assert_allclose(
        exported.predict_batch(joined), joined["predicted_duration_minutes"].to_numpy(), rtol=0, atol=1e-6
    )


def test_stream_over_connect_scores_like_batch(
    connect: ConnectServerInfo, mlflow_server: str, workspace: Path, spark: SparkSession
) -> None:
    """`stream --available-now` through Connect: the score function runs pickled in the server's Python worker,
    loads the champion from the MLflow server there, and writes what batch `score` wrote for the same file. The
    landing folder is the package's data folder: two TLC samples and three files that are not trip files."""
    remote = Path(str(connect.url_file)).read_text().strip()
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    champion = str(client.get_model_version_by_alias("taxi-duration", "champion").version)
    landing = SAMPLE.parent
    summary = ok(
        cli(
            workspace,
            "stream",
            "--landing",
            str(landing),
            "--available-now",
            "--json",
            remote=remote,
            tracking_uri=mlflow_server,
        )
    )
    other = landing / "yellow_tripdata_sample_2020-07.csv"
    assert (summary["batches"], summary["model_versions"], summary["stopped_by"]) == (1, [champion], "available_now")
    assert summary["skipped_files"] == 3  # SOURCES.md, taxi_zone_lookup.csv, taxi_zone_centroids.csv
    record = json.loads((workspace / "stream" / "commits" / "0.json").read_text())
    assert record["files"] == 2 and record["trips"] == summary["trips"]

    streamed = spark.read.parquet(str(workspace / "stream" / "predictions")).toPandas()
    assert sorted(streamed["source_file"].unique()) == sorted([str(SAMPLE), str(other)])
    assert len(streamed) == summary["trips"] and streamed["trip_id"].is_unique
    batch = spark.read.parquet(str(workspace / "lakehouse" / "predictions")).toPandas()
    joined = streamed[streamed["source_file"] == str(SAMPLE)].merge(batch, on="trip_id", suffixes=("", "_batch"))
    assert len(joined) == 6352 == int((streamed["source_file"] == str(SAMPLE)).sum())
    np.testing.assert_allclose(
        joined["predicted_duration_minutes"], joined["predicted_duration_minutes_batch"], rtol=0, atol=1e-6
    )
    assert set(joined["model_version"]) == {champion}
    quarantined = spark.read.parquet(str(workspace / "stream" / "quarantine")).toPandas()
    assert len(quarantined) == summary["quarantined"] == record["quarantined"]
    assert int((quarantined["source_file"] == str(SAMPLE)).sum()) == 148  # as batch ingest found
    windows = spark.read.parquet(str(workspace / "stream" / "borough_windows")).toPandas()
    latest = windows.sort_values("batch_id").groupby(["window_start", "pickup_borough"]).tail(1)
    assert int(latest["trips"].sum()) == len(streamed)


def test_api_serves_the_champion_from_the_mlflow_server(mlflow_server: str, workspace: Path) -> None:
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    champion = str(client.get_model_version_by_alias("taxi-duration", "champion").version)
    port = free_port()
    empty = workspace / "api-workspace"  # no local store: the model can only come from the server
    command = [str(BIN / "taxi-duration"), "--workspace", str(empty), "--tracking-uri", mlflow_server, "serve"]
    proc = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", proc, 60)
        info = httpx.get(f"http://127.0.0.1:{port}/model").json()
        assert (info["model_name"], info["model_version"]) == ("taxi-duration", champion)
        ride = {"PULocationID": 161, "DOLocationID": 236, "trip_distance": 2.1, "pickup_datetime": "2019-03-05T08:30"}
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=ride).json()
        run_id = client.get_model_version("taxi-duration", champion).run_id
        exported = ExportedModel.load(download_artifacts(f"runs:/{run_id}/exported", tracking_uri=mlflow_server))
        expected = exported.predict_minutes(
            {
                "pickup_location_id": 161,
                "dropoff_location_id": 236,
                "trip_distance": 2.1,
                "pickup_datetime": pd.Timestamp("2019-03-05T08:30").to_pydatetime(),
            }
        )
        assert answer["duration_minutes"] == pytest.approx(expected, abs=1e-9)
        assert answer["model_version"] == champion
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert not list(empty.glob("*.db"))


def test_connect_server_status_and_stop(connect: ConnectServerInfo, workspace: Path) -> None:
    status = connect_server_status(workspace)
    assert (status["running"], status["accepting_connections"], status["pid"]) == (True, True, connect.pid)
    assert stop_connect_server(workspace) == [connect.pid]
    assert not pid_alive(connect.pid)
    assert connect_server_status(workspace)["running"] is False
    assert not Path(str(connect.url_file)).exists()  # the token goes with the server
    assert stop_connect_server(workspace) == []
