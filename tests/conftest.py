"""What the tests share: one session-scoped Spark per pytest process (local[2], UI off, 2 shuffle partitions, quick
JIT), the real sample ingested once and a champion trained on it once (copied by the tests that change them), small
served models, the wheel, and the helpers `cli_json`, `copy_workspace`, `free_port` and `wait_http`.

`make test` runs the modules in two pytest-xdist processes (`--dist loadfile`: a module's tests, and so its module
fixtures such as the standalone cluster, stay in one process). The session's files (ingested sample, champion, served
models, wheel) are built once for both processes: the first to need one builds it under a lock (`shared`), the other
waits and reuses it."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from taxi_duration.spark import SESSION_TIME_ZONE, use_session_time_zone_in_python

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
# Every JVM the tests start through spark-submit (this process's session, the CLI's sessions in subprocesses,
# scripts/submit.sh, the Spark Connect server) runs the suite's small jobs: quick JIT only (C1) and the serial
# collector halve their CPU (a `train` subprocess on the sample: 142 -> 77 CPU-seconds, 80 -> 64 s), so two of
# them fit on two cores. Results do not depend on either flag; production sessions keep the JVM's defaults.
JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
os.environ.setdefault("SPARK_SUBMIT_OPTS", JVM_OPTIONS)
use_session_time_zone_in_python()

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "src" / "taxi_duration" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLE = DATA / "taxis_sample_2019-03.csv"
# small models where the test is about the pipeline around the model, not its accuracy
SMALL_MODELS = "train:\n  gbt: {maxIter: 5, maxDepth: 4}\n  linear: {maxIter: 10}\n"


# Modules by their measured time in a CI run (setup included), longest first: `make test` hands modules to its two
# processes in this order (--dist loadfile --no-loadscope-reorder), so the last module to start is a short one and
# neither process waits long for the other at the end. Modules not named here follow, in collection order.
LONGEST_MODULES = (
    "test_cluster.py",  # ~170 s: a standalone cluster, spark-submit, a worker killed mid-train (was ~420 s)
    "test_monitor.py",  # ~410 s: five real months ingested, monitor, cycle over 2020
    "test_crash_safety.py",  # ~360 s: ingest and train killed with SIGKILL in subprocesses
    "test_stream.py",  # ~340 s: stream subprocesses, kill -9 and restart
    "test_connect.py",  # ~290 s: a Spark Connect server and an mlflow server
    "test_cli_end_to_end.py",
    "test_notebooks.py",  # ~100 s: four notebooks in Jupyter kernels, three with their own Spark
    "test_tune.py",
    "test_parity_10k.py",
    "test_bench_compare.py",
    "test_serving_install.py",
    "test_serve_live.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: tests keep their order in a module


def cli_json(workspace: Path, *args: str, config: Path | None = None, code: int = 0) -> dict[str, Any]:
    """`taxi-duration --workspace W [--config C] ARGS --json` in this process (on the session's Spark); asserts the
    exit code and returns the last line of output, the command's JSON."""
    from taxi_duration import cli

    options = ["--workspace", str(workspace), *(["--config", str(config)] if config else [])]
    result = CliRunner().invoke(cli.app, [*options, *args, "--json"])
    assert result.exit_code == code, result.output + (str(result.exception) if result.exception else "")
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def copy_workspace(source: Path, target: Path) -> Path:
    """A copy of a workspace to change; its MLflow store is pointed at the copy when a command opens it."""
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str, process: subprocess.Popen[Any] | None = None, seconds: float = 60, log: Path | None = None
) -> None:
    """Wait until GET `url` answers 200; fail early if `process` ends, with its log."""
    deadline = time.monotonic() + seconds
    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{url}: the server exited ({process.returncode})\n" + _tail(log))
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}: no answer within {seconds:g} s\n" + _tail(log))
        time.sleep(0.2)


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real `mlflow server` on a free loopback port (SQLite store, proxied artifacts under `root`), as
    docs/cluster.md starts it; yields its URL and stops it."""
    import sys

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(root / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log_path = root / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/health", process, 90, log_path)
            yield url
        finally:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)


@contextmanager
def uvicorn_thread(app: Callable[..., Any], log_level: str = "error") -> Iterator[str]:
    """The ASGI app under a real uvicorn on a free loopback port, in a thread of this process; yields its URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 20 s"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def shared(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]) -> Path:
    """A folder `name` built once per test run: `build(folder)` fills it. Under pytest-xdist the processes share it
    (the first one builds it under a file lock, the others wait for it); without xdist it is this session's."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's temporary folder, shared by the workers
    folder, built = root / f"shared-{name}", root / f"shared-{name}.built"
    with (root / f"shared-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            built.touch()
    return folder


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    warehouse = tmp_path_factory.mktemp("warehouse")
    # Python workers (XGBoost's Spark estimator runs in them) use this interpreter, as taxi_duration.spark sets
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("taxi-duration-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", SESSION_TIME_ZONE)
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.driver.memory", "2g")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.showConsoleProgress", "false")
        .config(
            # quick JIT (C1 only) with room for the code of a whole suite: a full cache disables the compiler and
            # the JVM runs interpreted (and prints its warning on stdout, into the CLI output tests parse)
            "spark.driver.extraJavaOptions",
            f"{JVM_OPTIONS} -XX:ReservedCodeCacheSize=512m",
        )
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def sample_ingested(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding the real 2019-03 sample as `taxi-duration ingest` leaves it (6,500 rows: 6,352 trips,
    148 quarantined), with `small.yaml` (SMALL_MODELS) beside it. Shared: copy it (`copy_workspace`) to change it."""

    def build(workspace: Path) -> None:
        (workspace / "small.yaml").write_text(SMALL_MODELS, encoding="utf-8")
        ingested = cli_json(workspace, "ingest", str(SAMPLE))
        assert (ingested["rows_in"], ingested["rows_clean"], ingested["rows_quarantined"]) == (6500, 6352, 148)

    return shared(tmp_path_factory, "sample-ingested", build)


@pytest.fixture(scope="session")
def sample_champion(sample_ingested: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sample_ingested` plus a small GBT (SMALL_MODELS) trained by `taxi-duration train`: version 1, the champion.
    Shared: copy it (`copy_workspace`) to change it."""

    def build(workspace: Path) -> None:
        copy_workspace(sample_ingested, workspace)
        gbt = cli_json(workspace, "train", "--model", "gbt", config=workspace / "small.yaml")
        assert (gbt["model_version"], gbt["promotion"]["promote"]) == ("1", True)

    return shared(tmp_path_factory, "sample-champion", build)


SERVED_METRICS_BY_REGIME = {
    "recorded_distance": {"rmsle": 0.31, "rmse_minutes": 5.0, "baseline_rmsle": 0.45, "rows": 100},
    "zones_only": {"rmsle": 0.38, "rmse_minutes": 7.0, "baseline_rmsle": 0.45, "rows": 100},
}


@pytest.fixture(scope="session")
def served_models(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real models for serving tests, fitted once: GBT exported as versions 7 and 8 (the same trees) and a
    different GBT as version 9 (a challenger that disagrees)."""
    import random
    from datetime import datetime, timedelta

    from taxi_duration.columns import TRIP_COLUMNS
    from taxi_duration.features.definitions import with_label
    from taxi_duration.params import TrainParams
    from taxi_duration.schema import TRIP_SCHEMA
    from taxi_duration.serve.export import export_model
    from taxi_duration.train.pipeline import build_pipeline
    from taxi_duration.train.travel_times import build_travel_times

    def build(root: Path) -> None:
        rng = random.Random(11)
        rows = []
        for i in range(120):
            trip: dict[str, object] = dict.fromkeys(TRIP_COLUMNS)
            pickup = datetime(2024, 1, 1, 6) + timedelta(hours=rng.randrange(24 * 300))
            miles = round(rng.uniform(0.5, 15.0), 2)
            trip.update(
                trip_id=i,
                service="yellow",
                source_file="hand-built",
                pickup_datetime=pickup,
                pickup_location_id=rng.randint(1, 263),
                dropoff_location_id=rng.randint(1, 263),
                trip_distance=None if i % 4 == 0 else miles,
                duration_s=float(round((120 + 170 * miles) * rng.uniform(0.8, 1.2))),
            )
            rows.append(tuple(trip[c] for c in TRIP_COLUMNS))
        train = spark.createDataFrame(rows, TRIP_SCHEMA).transform(with_label)
        travel_times = build_travel_times(train, min_trips=1)  # the pair features as train embeds them
        for name, params in (("a", {"maxIter": 4, "maxDepth": 3}), ("b", {"maxIter": 2, "maxDepth": 2})):
            build_pipeline("gbt", TrainParams(gbt=params), travel_times).fit(train).write().save(str(root / name))
        for version, fitted in (("7", "a"), ("8", "a"), ("9", "b")):
            export_model(
                root / fitted, root / f"v{version}", "taxi-duration", version, {"rmsle": 0.31}, SERVED_METRICS_BY_REGIME
            )

    root = shared(tmp_path_factory, "served-models", build)
    return {version: root / f"v{version}" for version in ("7", "8", "9")}


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once per session (zip import, spark-submit --py-files, the serving install)."""
    import subprocess
    import sys

    def build(dist: Path) -> None:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check", "-w", dist, REPO],
            check=True,
            capture_output=True,
            timeout=300,
        )

    return next(shared(tmp_path_factory, "wheel", build).glob("taxi_duration_predictor-*.whl"))
