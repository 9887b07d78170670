"""The API as a product: hardened input handling (issue 16), shadow scoring, the request log, reload failures,
the OpenAPI contract, the page at / in a real browser, and one-line errors of `serve`/`predict`."""

from __future__ import annotations

import asyncio
import json
import marshal
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from conftest import free_port, uvicorn_thread
from taxi_duration.serve.app import create_app
from taxi_duration.serve.predictor import ExportedModel
from taxi_duration.serve.request_log import COLUMNS, NUMBERS, STRINGS, RequestLog, micros
from taxi_duration.serve.request_log_files import LogFiles

KEY = "k3y"
RIDE = {"PULocationID": 161, "DOLocationID": 236, "trip_distance": 2.4, "pickup_datetime": "2024-05-01T08:30:00"}
CLI = Path(sys.executable).parent / "taxi-duration"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # gitignored: screenshots of browser tests


def canonical(ride: dict[str, Any]) -> dict[str, Any]:
    return {
        "pickup_datetime": datetime.fromisoformat(ride["pickup_datetime"]),
        "pickup_location_id": ride["PULocationID"],
        "dropoff_location_id": ride["DOLocationID"],
        "trip_distance": ride.get("trip_distance"),
    }


@pytest.fixture(scope="module")
def champion(served_models: dict[str, Path]) -> ExportedModel:
    return ExportedModel.load(served_models["7"])


@pytest.fixture(scope="module")
def challenger(served_models: dict[str, Path]) -> ExportedModel:
    return ExportedModel.load(served_models["9"])


@pytest.fixture(scope="module")
def client(champion: ExportedModel) -> TestClient:
    return TestClient(create_app(lambda: champion, KEY, max_batch=5, max_body_bytes=4096))


@pytest.fixture
def live(champion: ExportedModel, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """The app under a real uvicorn on 127.0.0.1 (in a thread), with a request log and a short body deadline (3 s:
    long enough for 16 clients on a loaded 2-core machine, short enough to test a stall)."""
    # rows are written 50 at a time (a row group each) and files close at 8 KB: several files however fast the rides
    # come (a fast machine sends all 800 within one flush)
    request_log = RequestLog(
        tmp_path / "log", file_bytes=8 * 1024, max_bytes=10 * 1024 * 1024, batch_rows=50, flush_seconds=0.2
    )
    app = create_app(lambda: champion, KEY, request_log=request_log, max_body_bytes=64 * 1024, body_seconds=3)
    with uvicorn_thread(app, log_level="warning") as url:
        yield url, request_log


# ---------------------------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**RIDE, "pickup_datetime": "0001-01-01T00:00:00Z"}, "pickup_datetime"),
        ({**RIDE, "pickup_datetime": "9999-12-31T23:59:59-05:00"}, "pickup_datetime"),
        ({**RIDE, "PULocationID": True}, "PULocationID"),
        ({**RIDE, "DOLocationID": False}, "DOLocationID"),
        ({**RIDE, "passenger_count": True}, "passenger_count"),
    ],
)
def test_out_of_range_and_boolean_inputs_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == [field]
    assert response.json()["detail"].startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"PULocationID": 161, "DOLocationID": 236, "ride_id": "\\ud800"}', "ride_id"),
        (b'{"PULocationID": 161, "DOLocationID": 236, "service": "\\udfff"}', "service"),
        (b'{"PULocationID": 161, "DOLocationID": 236, "\\ud800": 1}', "body"),  # a key: the JSON parser refuses
    ],
)
def test_lone_surrogates_are_422_not_500(client: TestClient, raw: bytes, field: str) -> None:
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


@pytest.mark.server
def test_a_body_beyond_the_limit_is_413_before_it_is_sent(live: tuple[str, Any]) -> None:
    """Headers announce 10 MB and no byte of body is sent: the answer comes anyway, so nothing was read."""
    url, _ = live
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10485760\r\n\r\n"
        )
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert json.loads(answer.split("\r\n\r\n", 1)[1]) == {
        "detail": "body: larger than the 65,536-byte limit of this server"
    }
    assert httpx.get(f"{url}/health").status_code == 200


@pytest.mark.server
def test_a_stalled_body_is_408_and_the_connection_closed(live: tuple[str, Any]) -> None:
    url, _ = live
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"PULocationID": 1'
        )
        answer = b""
        while chunk := sock.recv(65536):  # the server closes the connection after answering
            answer += chunk
    text = answer.decode()
    assert text.startswith("HTTP/1.1 408"), text
    assert "body: not received within 3 s" in text


def test_openapi_states_bounds_error_bodies_and_admin_codes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    ride = schema["components"]["schemas"]["Ride"]["properties"]
    assert (ride["PULocationID"]["minimum"], ride["PULocationID"]["maximum"]) == (1, 263)
    assert (ride["trip_distance"]["minimum"], ride["passenger_count"]["maximum"]) == (0, 9)
    assert ride["service"]["enum"] == ["yellow", "green", "fhv", "hvfhv", "kaggle"]
    predict = schema["paths"]["/predict"]["post"]["responses"]
    assert predict["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationErrorBody"
    }
    assert {"408", "413", "503"} <= set(predict)
    assert {"401", "403", "503"} <= set(schema["paths"]["/admin/reload"]["post"]["responses"])
    # what a 422 really is matches what the schema says it is
    body = client.post("/predict", json={"PULocationID": 0, "DOLocationID": 1}).json()
    assert set(body) == {"detail", "errors"}
    assert body["errors"] == [
        {"field": "PULocationID", "message": "must be a TLC zone id from 1 to 263, got 0", "type": "value_error"}
    ]


# ---------------------------------------------------------------------------------------------- shadow, reload


def test_shadow_scores_every_ride_and_reports_agreement(champion: ExportedModel, challenger: ExportedModel) -> None:
    app = create_app(lambda: champion, KEY, shadow_loader=lambda: challenger)
    rides = [{**RIDE, "PULocationID": zone, "trip_distance": None if zone % 2 else 3.1} for zone in (4, 48, 132, 161)]
    with TestClient(app) as client:
        answers = [client.post("/predict", json=ride).json() for ride in rides]
        batch = client.post("/predict/batch", json={"rides": rides[:2]}).json()
        model = client.get("/model").json()
        metrics = client.get("/metrics").text
    trips = [canonical(ride) for ride in rides] + [canonical(ride) for ride in rides[:2]]
    assert [a["duration_minutes"] for a in answers] == [champion.predict_minutes(t) for t in trips[:4]]
    assert {a["model_version"] for a in answers} == {"7"}
    assert [p["duration_minutes"] for p in batch["predictions"]] == [a["duration_minutes"] for a in answers[:2]]
    differences = [abs(champion.predict_minutes(t) - challenger.predict_minutes(t)) for t in trips]
    assert min(differences) > 0  # the two models really disagree
    assert model["shadow"]["model_version"] == "9"
    assert model["shadow"]["rides"] == 6
    assert model["shadow"]["mean_abs_diff_minutes"] == pytest.approx(sum(differences) / 6, rel=1e-12)
    assert "taxi_duration_shadow_rides_total 6.0" in metrics
    (line,) = [x for x in metrics.splitlines() if x.startswith("taxi_duration_shadow_mean_abs_diff_minutes ")]
    assert float(line.split()[-1]) == pytest.approx(sum(differences) / 6, rel=1e-12)


def test_the_shadow_scores_each_ride_after_its_answer_is_written(
    champion: ExportedModel, served_models: dict[str, Path]
) -> None:
    """The app called as an ASGI server calls it: the answer's last body message goes out before the shadow model
    scores the ride (a callback on the event loop, after the request's task), so a shadow never delays an answer."""
    shadow = ExportedModel.load(served_models["9"])
    events: list[str] = []
    scored = shadow.predict_minutes

    def predict_minutes(trip: Mapping[str, Any]) -> float:
        events.append("shadow scored")
        return scored(trip)

    shadow.predict_minutes = predict_minutes  # type: ignore[method-assign]  # the real model, its calls recorded
    app = create_app(lambda: champion, KEY, shadow_loader=lambda: shadow)
    answers: list[dict[str, Any]] = []

    async def call(method: str, path: str, body: bytes = b"") -> None:
        incoming: list[MutableMapping[str, Any]] = [{"type": "http.request", "body": body, "more_body": False}]
        answer: dict[str, Any] = {}

        async def receive() -> MutableMapping[str, Any]:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answer["body"] = json.loads(message["body"])
                events.append(f"{path} answered")

        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)
        answers.append(answer)

    async def session() -> None:
        for zone in (4, 48):
            await call("POST", "/predict", json.dumps({**RIDE, "PULocationID": zone}).encode())
            await asyncio.sleep(0)  # one round of the event loop, as a server's next read would take
        await call("POST", "/predict", json.dumps({**RIDE, "PULocationID": 132}).encode())
        await call("GET", "/model")  # before the loop's next round: reading the agreement scores what waits

    asyncio.run(session())
    assert events == [
        *["/predict answered", "shadow scored"] * 2,
        "/predict answered",
        "shadow scored",
        "/model answered",
    ]
    assert [a["status"] for a in answers] == [200] * 4
    assert answers[0]["body"]["duration_minutes"] == champion.predict_minutes(canonical(RIDE | {"PULocationID": 4}))
    assert answers[0]["body"]["model_version"] == "7" and "ride_id" not in answers[0]["body"]  # None fields left out
    assert answers[-1]["body"]["shadow"]["rides"] == 3


def test_a_failed_reload_keeps_the_model_and_says_why(champion: ExportedModel, tmp_path: Path) -> None:
    calls = iter([champion])

    def loader() -> ExportedModel:
        try:
            return next(calls)
        except StopIteration:
            return ExportedModel.load(tmp_path)  # not an exported model

    with TestClient(create_app(loader, KEY)) as client:
        response = client.post("/admin/reload", headers={"X-API-Key": KEY})
        assert response.status_code == 503
        assert "model.json: cannot read it" in response.json()["detail"]
        assert "still serving version 7" in response.json()["detail"]
        ready = client.get("/ready").json()
        assert ready["status"] == "ready" and ready["model_version"] == "7"
        assert "reload failed" in ready["detail"] and "model.json" in ready["detail"]
        assert client.post("/predict", json=RIDE).json()["model_version"] == "7"


# ---------------------------------------------------------------------------------------------- request log


@pytest.mark.server
def test_request_log_keeps_every_ride_of_16_concurrent_clients(live: tuple[str, Any], champion: ExportedModel) -> None:
    url, request_log = live
    rides = [{**RIDE, "PULocationID": 1 + i % 263, "ride_id": f"r{i}"} for i in range(800)]
    with httpx.Client(base_url=url, timeout=30) as http:

        def send(ride: dict[str, Any]) -> dict[str, Any]:
            response = http.post("/predict", json=ride)
            assert response.status_code == 200, response.text
            return dict(response.json())

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, rides))
    request_log.close()
    files = request_log.files()
    assert len(files) >= 2  # rotated by size (8 KB files)
    assert not list(request_log.folder.glob(".*"))  # no part file left after close
    logged = (
        pd.concat([pq.read_table(f).to_pandas() for f in files]).set_index("ride_id").loc[[r["ride_id"] for r in rides]]
    )
    assert list(logged.columns) == list(COLUMNS[:1]) + list(COLUMNS[2:])
    assert logged["duration_minutes"].tolist() == [a["duration_minutes"] for a in answers]
    assert logged["pickup_location_id"].tolist() == [r["PULocationID"] for r in rides]
    assert set(logged["regime"]) == {"recorded_distance"}
    assert set(logged["model_version"]) == {"7"}
    assert logged["shadow_model_version"].isna().all()


def test_request_log_rows_carry_the_shadow_minutes_and_none_waits_past_shutdown(
    champion: ExportedModel, challenger: ExportedModel, tmp_path: Path
) -> None:
    request_log = RequestLog(tmp_path / "log", flush_seconds=0.2)
    app = create_app(lambda: champion, KEY, shadow_loader=lambda: challenger, request_log=request_log)
    rides = [{**RIDE, "PULocationID": 1 + 17 * i, "ride_id": f"r{i}"} for i in range(10)]
    with TestClient(app) as client:
        answers = [client.post("/predict", json=ride).json() for ride in rides[:7]]
        batch = client.post("/predict/batch", json={"rides": rides[7:]}).json()
    # 7 single rides, each scored by the shadow after its answer, and a batch of 3 scored after its answer
    answers += batch["predictions"]
    files = request_log.files()
    logged = (
        pd.concat([pq.read_table(f).to_pandas() for f in files]).set_index("ride_id").loc[[r["ride_id"] for r in rides]]
    )
    trips = [canonical(ride) for ride in rides]
    assert logged["duration_minutes"].tolist() == [a["duration_minutes"] for a in answers]
    assert set(logged["model_version"]) == {"7"} and set(logged["shadow_model_version"]) == {"9"}
    np.testing.assert_allclose(
        logged["shadow_duration_minutes"], [challenger.predict_minutes(t) for t in trips], rtol=0, atol=1e-9
    )
    assert logged["logged_at"].is_monotonic_increasing  # the time each ride was answered


def test_request_log_is_bounded_on_disk(tmp_path: Path) -> None:
    request_log = RequestLog(tmp_path, file_bytes=8 * 1024, max_bytes=40 * 1024, batch_rows=200, flush_seconds=0.05)
    row = (
        None,
        "x" * 40,
        micros(datetime(2024, 5, 1)),
        1,
        2,
        1.5,
        None,
        None,
        None,
        None,
        1,
        "yellow",
        "recorded",
        7.5,
    )
    for i in range(20_000):
        request_log.append((micros(datetime(2024, 5, 1, tzinfo=UTC)), f"{i:08d}", *row[2:], "m", "7", None, None))
    request_log.close()
    files = request_log.files()
    assert sum(f.stat().st_size for f in files) <= 40 * 1024
    assert request_log.files_deleted > 0 and request_log.rows_written == 20_000
    newest = pq.read_table(files[-1])
    assert newest.column("ride_id").to_pylist()[-1] == "00019999"  # the newest rows are the ones kept
    # timestamps travel as microseconds and come back as the same instants and wall-clock times
    assert newest.column("logged_at").to_pylist()[0] == datetime(2024, 5, 1, tzinfo=UTC)
    assert newest.column("pickup_datetime").to_pylist()[0] == datetime(2024, 5, 1)


KILLED_SERVER = """
import os, signal, sys, time
from taxi_duration.serve.request_log import RequestLog
log = RequestLog(sys.argv[1], flush_seconds=0.1)
for i in range(500):
    log.append((0, f"r{i:03d}", 0, 1, 2, 1.5, None, None, None, None, 1, "yellow", "recorded_distance", 7.5, "m", "7",
                None, None))
deadline = time.monotonic() + 60
while log.rows_written < 500 and time.monotonic() < deadline:
    time.sleep(0.05)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_server_leaves_the_rows_it_sent_in_a_complete_file(tmp_path: Path) -> None:
    """The writer process outlives a server killed with SIGKILL just long enough to close its file under the final
    name: every row sent is readable, no part file is left."""
    folder = tmp_path / "log"
    done = subprocess.run([sys.executable, "-c", KILLED_SERVER, str(folder)], timeout=120, check=False)
    assert done.returncode == -9
    deadline = time.monotonic() + 30
    while not list(folder.glob("requests-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.1)
    files = list(folder.glob("requests-*.parquet"))
    assert len(files) == 1 and not list(folder.glob(".*"))
    assert pq.read_table(files[0]).column("ride_id").to_pylist() == [f"r{i:03d}" for i in range(500)]


def test_a_dead_writer_process_loses_rows_counted_and_named_never_an_exception(tmp_path: Path) -> None:
    request_log = RequestLog(tmp_path / "log", flush_seconds=0.05)
    row = (0, "r", 0, 1, 2, 1.5, None, None, None, None, 1, "yellow", "recorded_distance", 7.5, "m", "7", None, None)
    for _ in range(10):
        request_log.append(row)
    time.sleep(0.3)
    os.kill(request_log._process.pid, 9)
    for _ in range(10):
        request_log.append(row)  # the request path never raises
    request_log.close()
    assert request_log.rows_written + request_log.rows_dropped == 20
    assert request_log.rows_dropped >= 10
    assert request_log.error is not None and "writer process ended (-9)" in request_log.error


def test_a_row_of_the_wrong_types_is_dropped_counted_and_named_and_the_others_are_written(tmp_path: Path) -> None:
    request_log = RequestLog(tmp_path / "log", flush_seconds=0.05)
    good = (0, "r", 0, 1, 2, 1.5, None, None, None, None, 1, "yellow", "recorded_distance", 7.5, "m", "7", None, None)
    request_log.append((datetime(2024, 5, 1, tzinfo=UTC), *good[1:]))  # a datetime where microseconds go
    request_log.append((*good[:11], 7, *good[12:]))  # a number where a string goes
    request_log.append(good[:-1])  # a value short
    request_log.append(good)
    request_log.close()
    assert (request_log.rows_written, request_log.rows_dropped) == (1, 3)
    assert request_log.error is not None and "could not be encoded" in request_log.error
    (written,) = pq.read_table(request_log.files()[0]).to_pylist()
    assert written == {
        **dict(zip(COLUMNS, good, strict=True)),
        "logged_at": datetime(1970, 1, 1, tzinfo=UTC),
        "pickup_datetime": datetime(1970, 1, 1),
    }


def test_a_whole_number_column_never_wraps_or_truncates_its_row_is_dropped_counted_and_named(tmp_path: Path) -> None:
    request_log = RequestLog(tmp_path / "log", flush_seconds=0.05)
    good = (0, "r", 0, 1, 2, 1.5, None, None, None, None, 1, "yellow", "recorded_distance", 7.5, "m", "7", None, None)
    request_log.append((*good[:3], 2**40, *good[4:]))  # beyond int32: it would wrap
    request_log.append((*good[:10], 1.5, *good[11:]))  # a passenger and a half: it would truncate to 1
    request_log.append((2.0**64, *good[1:]))  # microseconds beyond int64
    request_log.append((*good[:3], -(2**31), *good[4:10], 2**31 - 1, *good[11:]))  # int32's own ends fit
    request_log.close()
    assert (request_log.rows_written, request_log.rows_dropped) == (1, 3)
    assert request_log.error == (
        "3 rows not written: not a whole number in the column's range: "
        "logged_at (1), pickup_location_id (1), passenger_count (1)"
    )
    (written,) = pq.read_table(request_log.files()[0]).to_pylist()
    assert (written["pickup_location_id"], written["passenger_count"]) == (-(2**31), 2**31 - 1)


def test_a_frame_that_cannot_be_decoded_loses_its_rows_only_counted_and_named(tmp_path: Path) -> None:
    files = LogFiles(tmp_path, file_bytes=1 << 20, max_bytes=1 << 30, file_seconds=60.0, batch_rows=100)
    good = (0, "r", 0, 1, 2, 1.5, None, None, None, None, 1, "yellow", "recorded_distance", 7.5, "m", "7", None, None)
    numbers = array("d", [math.nan if good[i] is None else good[i] for i in NUMBERS])
    files.hold(3, b"not a frame")
    files.hold(1, marshal.dumps((1, numbers.tobytes(), [good[i] for i in STRINGS])))
    files.rotate()
    assert (files.rows_written, files.rows_dropped) == (1, 3)
    assert files.error is not None and files.error.startswith("a frame could not be decoded: ")
    (written,) = pq.read_table(sorted(tmp_path.glob("requests-*.parquet"))[0]).to_pylist()
    assert written["ride_id"] == "r" and written["duration_minutes"] == 7.5


def test_nothing_is_logged_when_the_log_is_off(champion: ExportedModel, tmp_path: Path) -> None:
    before = set(threading.enumerate())
    with TestClient(create_app(lambda: champion, KEY)) as client:
        assert client.post("/predict", json=RIDE).status_code == 200
        assert "request-log" not in {t.name for t in set(threading.enumerate()) - before}
        assert client.get("/stats").json().get("request_log_rows") is None


# ---------------------------------------------------------------------------------------------- the CLI


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_serve_and_predict_refuse_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    trips = tmp_path / "trips.csv"
    trips.write_text("PULocationID,DOLocationID\n1,2\n")
    for args in (["serve", "--model-dir", str(tmp_path)], ["predict", str(trips), "--model-dir", str(tmp_path)]):
        result = cli("--workspace", str(tmp_path / "ws"), *args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith(f"error: {tmp_path / 'model.json'}: cannot read it")
        assert "expected an exported model" in result.stderr


def test_serve_refuses_an_unreachable_registry(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = cli("--workspace", str(tmp_path), "--tracking-uri", f"http://127.0.0.1:{port}", "serve", "--port", "1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: registry http://127.0.0.1:{port}: cannot ask it for models:/")


# ---------------------------------------------------------------------------------------------- the page


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed")
@pytest.mark.server
def test_the_page_estimates_a_ride_like_the_api(live: tuple[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    url, _ = live
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(url) else outside.append(r.url))
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready=true]")
        # the zone pickers are labelled, searchable lists of "Zone, Borough (#id)"
        options = page.eval_on_selector_all("#zone-list option", "os => os.map(o => o.value)")
        assert len(options) == 263 and "JFK Airport, Queens (#132)" in options
        page.get_by_label("Pickup zone").fill("Midtown Center, Manhattan (#161)")
        page.get_by_label("Dropoff zone").fill("JFK Airport, Queens (#132)")
        page.get_by_label("Pickup date and time (New York)").fill("2024-05-01T08:30")
        page.get_by_role("button", name="Estimate").click()
        page.wait_for_selector("#answer:not([hidden])")
        shown = float(page.get_attribute("#answer", "data-minutes") or "nan")
        detail = page.inner_text("#answer-detail")
        page.wait_for_function("document.querySelector('#counters').innerText.includes('Rides predicted')")
        card = page.inner_text("#model-card")
        page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
        browser.close()
    api = httpx.post(
        f"{url}/predict", json={"PULocationID": 161, "DOLocationID": 132, "pickup_datetime": "2024-05-01T08:30:00"}
    ).json()
    assert shown == api["duration_minutes"]
    assert "regime zones_only" in detail and "v7" in detail
    assert "taxi-duration" in card and "rmsle" in card
    assert outside == []  # nothing loads from outside the server


def test_a_body_that_is_not_utf8_is_400_naming_the_body(client: TestClient) -> None:
    response = client.post("/predict", content=b'"\xff\xfe"', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "body: cannot be read as JSON text (there was an error parsing the body)"}
