"""A real Spark standalone cluster (1 master, 2 workers x 1 core x 1g) on loopback, started once for this module.

Its secure defaults and status; `ingest` from the CLI as a client-mode driver; `train` and `score` through
scripts/submit.sh, which ships the package as a wheel with `--py-files`. The event logs say which executor ran every
task and the workers' work dirs say which worker ran which executor. One worker is killed while `train` runs: the
job still completes, registers its model and re-runs on the other worker what was lost; `score` runs on the worker
left. The model, trained through the loss, equals the one trained in local mode on the same trips, trip by trip.
Last, `cluster stop` removes the daemons.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from typer.testing import CliRunner

from taxi_duration import cli
from taxi_duration.cluster import ClusterInfo, cluster_status, start_cluster, stop_cluster
from taxi_duration.cluster.daemons import ClusterError, free_port, pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[1]
SUBMIT = REPO / "scripts" / "submit.sh"
CLI = Path(sys.executable).parent / "taxi-duration"
SAMPLE = REPO / "src" / "taxi_duration" / "data" / "taxis_sample_2019-03.csv"
# the point here is the cluster, not the model: linear (normal equations, no randomness) and a small GBT
FAST_CONFIG = "train:\n  linear: {maxIter: 10}\n  gbt: {maxIter: 8, maxDepth: 4, subsamplingRate: 1.0}\n"
METRICS = ("rmse_minutes", "mae_minutes", "rmsle", "r2")
# the executors run the same small tasks as the tests' drivers (see SPARK_SUBMIT_OPTS in conftest.py)
EXECUTOR_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cluster-workspace")
    (path / "eventlog").mkdir()
    (path / "fast.yaml").write_text(FAST_CONFIG)
    return path


@pytest.fixture(scope="module")
def wheel(built_wheel: Path) -> Path:
    return built_wheel


@pytest.fixture(scope="module")
def cluster(workspace: Path) -> Iterator[ClusterInfo]:
    # ports picked free so this never meets another test's (or a user's) cluster on 7077/8080
    started = time.perf_counter()
    info = start_cluster(workspace, workers=2, cores=1, memory="1g", port=free_port(), webui_port=free_port())
    print(f"\ncluster started in {time.perf_counter() - started:.1f} s ({info.startup_seconds} s to all registered)")
    try:
        yield info
    finally:
        stop_cluster(workspace)


def event_log_conf(workspace: Path) -> dict[str, str]:
    return {
        "spark.ui.enabled": "false",
        "spark.eventLog.enabled": "true",
        "spark.eventLog.compress": "false",
        "spark.eventLog.dir": (workspace / "eventlog").resolve().as_uri(),
        "spark.executor.extraJavaOptions": EXECUTOR_JVM,
    }


def cli_on_cluster(workspace: Path, master: str, *args: str) -> tuple[dict[str, Any], str]:
    """`taxi-duration --master spark://... ARGS` (the CLI is the driver, client mode); its JSON and app id."""
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}  # PYSPARK_PYTHON: get_spark defaults it
    env["TAXI_DURATION_SPARK_CONF"] = json.dumps(event_log_conf(workspace))
    command = [str(CLI), "--workspace", str(workspace), "--master", master, "--driver-memory", "1g", *args, "--json"]
    before = event_logs(workspace)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    (app_id,) = event_logs(workspace) - before
    return _last_json(result.stdout), app_id


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def test_the_cluster_listens_on_loopback_only_and_reports_its_state(cluster: ClusterInfo, workspace: Path) -> None:
    base = workspace.resolve() / "cluster"
    # secure defaults: loopback only, no REST submission server, private daemon conf
    assert cluster.master_url.startswith("spark://127.0.0.1:")
    assert not listening(6066)
    assert "spark.master.rest.enabled=false" in (base / "spark-daemons.conf").read_text()
    assert (base / "spark-daemons.conf").stat().st_mode & 0o077 == 0
    assert {p.name for p in base.glob("*.pid")} == {"master.pid", "worker-1.pid", "worker-2.pid"}
    assert json.loads((base / "cluster.json").read_text())["master_url"] == cluster.master_url

    status = cluster_status(workspace)
    assert (status["running"], status["workers"], status["cores"]) == (True, 2, 2)
    assert sorted(status["alive_pids"]) == sorted([cluster.master_pid, *cluster.worker_pids])

    # a second cluster from the same workspace is refused
    with pytest.raises(ClusterError, match="already running"):
        start_cluster(workspace, port=free_port(), webui_port=free_port())


def _env(wheel: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAXI_DURATION_")}
    env.update({"SPARK_LOCAL_IP": "127.0.0.1", "PYTHON": sys.executable, "WHEEL": str(wheel)})
    return env


def _submit_command(workspace: Path, master: str, *args: str) -> list[str]:
    return [
        str(SUBMIT),
        "--master",
        master,
        "--driver-memory",
        "1g",
        *[arg for key, value in event_log_conf(workspace).items() for arg in ("--conf", f"{key}={value}")],
        "--",
        "--workspace",
        str(workspace),
        "--config",
        str(workspace / "fast.yaml"),
        *args,
        "--json",
    ]


def _last_json(stdout: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def event_logs(workspace: Path) -> set[str]:
    """Application ids with an event log (Spark 4 writes a folder eventlog_v2_<app id> of rolled files)."""
    return {path.name.removeprefix("eventlog_v2_") for path in (workspace / "eventlog").iterdir()}


def submit(workspace: Path, wheel: Path, master: str, *args: str) -> tuple[dict[str, Any], str, str]:
    """Run one command via scripts/submit.sh; return its JSON, its output and the application id."""
    before = event_logs(workspace)
    result = subprocess.run(
        _submit_command(workspace, master, *args),
        env=_env(wheel),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (app_id,) = event_logs(workspace) - before
    return _last_json(result.stdout), result.stdout, app_id


def events(workspace: Path, app_id: str) -> list[dict[str, Any]]:
    folder = workspace / "eventlog" / f"eventlog_v2_{app_id}"
    if folder.is_dir():  # rolled files events_<n>_<app id>, in order
        files = sorted(folder.glob("events_*"), key=lambda path: int(path.name.split("_")[1]))
    else:
        files = [workspace / "eventlog" / app_id]
    lines = [line for path in files for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def executors_by_worker(workspace: Path, app_id: str) -> dict[str, set[str]]:
    """worker-N -> ids of the executors it ran for this application (from its work dir)."""
    work = workspace.resolve() / "cluster" / "work"
    return {
        worker.name: {path.name for path in (worker / app_id).iterdir() if (path / "stderr").exists()}
        for worker in sorted(work.iterdir())
        if (worker / app_id).is_dir()
    }


def tasks_by_executor(app_events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["Task Info"]["Executor ID"] for e in app_events if e["Event"] == "SparkListenerTaskEnd")


def assert_ran_on_workers(workspace: Path, app_id: str) -> dict[str, int]:
    """Every task of the application ran in an executor that a worker launched; return tasks per worker."""
    by_executor = tasks_by_executor(events(workspace, app_id))
    assert by_executor, f"{app_id} ran no tasks"
    assert "driver" not in by_executor
    owners = executors_by_worker(workspace, app_id)
    per_worker: Counter[str] = Counter()
    for executor, count in by_executor.items():
        (worker,) = [name for name, ids in owners.items() if executor in ids]
        per_worker[worker] += count
        log = workspace.resolve() / "cluster" / "work" / worker / app_id / executor / "stderr"
        assert "Running task" in log.read_text(errors="replace")
    return dict(per_worker)


def _running_tasks(stderr_files: list[Path]) -> int:
    return sum(path.read_text(errors="replace").count("Running task") for path in stderr_files)


@pytest.fixture(scope="module")
def pipeline_on_cluster(cluster: ClusterInfo, workspace: Path, wheel: Path) -> dict[str, Any]:
    """ingest (the CLI as a client-mode driver of the cluster), then train (linear) and score through spark-submit,
    whose driver runs the package from the shipped wheel: the sample's trips table and champion v1 in `workspace`.
    Worker-2 is killed (SIGKILL, with its executor) while `train` runs, once its executor has run tasks of it: a
    machine lost in the middle of the job; `score` then runs on worker-1 alone."""
    master = cluster.master_url
    ingested, ingest_app = cli_on_cluster(workspace, master, "ingest", str(SAMPLE))
    work = workspace.resolve() / "cluster" / "work"
    known_apps = {path.name for path in work.glob("worker-*/app-*")}
    victim_pid = cluster.worker_pids[1]  # worker-2
    before = event_logs(workspace)
    process = subprocess.Popen(
        _submit_command(workspace, master, "train", "--model", "linear"),
        env=_env(wheel),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        # wait until worker-2's executor for this application is running tasks, then kill the worker and its
        # executor (the worker's process group)
        deadline = time.monotonic() + 300
        while True:
            apps = [path for path in (work / "worker-2").glob("app-*") if path.name not in known_apps]
            stderr_files = [path for app in apps for path in app.glob("*/stderr")]
            if stderr_files and _running_tasks(stderr_files) >= 3:
                break
            assert process.poll() is None, "train ended before worker-2 ran a task"
            assert time.monotonic() < deadline, "worker-2 ran no task of the training job"
            time.sleep(0.1)
        os.killpg(victim_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        train_out, train_err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, train_out[-3000:] + train_err[-3000:]
    seconds_from_kill_to_end = round(time.monotonic() - killed_at, 1)
    (train_app,) = event_logs(workspace) - before
    scored, _, score_app = submit(workspace, wheel, master, "score")
    return {
        "ingested": ingested,
        "trained": _last_json(train_out),
        "train_out": train_out,
        "scored": scored,
        "apps": (ingest_app, train_app, score_app),
        "victim_pid": victim_pid,
        "lost_executor": {path.parent.name for path in stderr_files},
        "seconds_from_kill_to_end": seconds_from_kill_to_end,
    }


def test_ingest_train_score_via_spark_submit_match_local_mode(
    pipeline_on_cluster: dict[str, Any], cluster: ClusterInfo, workspace: Path, wheel: Path, tmp_path: Path,
    spark: SparkSession,
) -> None:  # fmt: skip
    ingested, trained, scored = (pipeline_on_cluster[k] for k in ("ingested", "trained", "scored"))
    ingest_app, train_app, score_app = pipeline_on_cluster["apps"]
    # the CLI as a client-mode driver of the cluster ...
    assert (ingested["rows_in"], ingested["rows_clean"], ingested["rows_quarantined"]) == (6500, 6352, 148)
    # ... and spark-submit, whose driver runs the package from the shipped wheel (zone tables loaded from inside it)
    assert f"from {wheel}/taxi_duration" in pipeline_on_cluster["train_out"]
    assert (trained["model_version"], trained["promotion"]["promote"]) == ("1", True)
    assert (scored["rows"], scored["model_version"]) == (6352, "1")

    per_worker: Counter[str] = Counter()
    work = workspace.resolve() / "cluster" / "work"
    for app_id in (ingest_app, train_app, score_app):
        per_worker.update(assert_ran_on_workers(workspace, app_id))
    for app_id in (train_app, score_app):  # spark-submit copied the wheel into the application's folder on the workers
        assert list(work.glob(f"worker-*/{app_id}/*/{wheel.name}"))
    assert set(per_worker) == {"worker-1", "worker-2"}, per_worker  # both workers did work
    assert cluster_status(workspace)["completed_apps"] >= 3
    print(f"\ntasks per worker over ingest, train, score: {dict(per_worker)}")

    # the same training in local mode (this process's local[2] session) on a copy of the same trips table
    local = tmp_path / "local"
    shutil.copytree(workspace / "lakehouse" / "trips", local / "lakehouse" / "trips")
    runner = CliRunner()
    base = ["--workspace", str(local), "--config", str(workspace / "fast.yaml")]
    result = runner.invoke(cli.app, [*base, "train", "--model", "linear", "--json"])
    assert result.exit_code == 0, result.output
    local_trained = _last_json(result.stdout)
    assert local_trained["data"]["train_rows"] == trained["data"]["train_rows"]
    assert local_trained["data"]["validation_rows"] == trained["data"]["validation_rows"] == trained["metrics"]["rows"]
    for name in METRICS:
        assert local_trained["metrics"][name] == pytest.approx(trained["metrics"][name], abs=1e-6), name
    result = runner.invoke(cli.app, [*base, "score", "--json"])
    assert result.exit_code == 0, result.output

    # per trip: the cluster's predictions (cluster-trained model) equal local mode's (local-trained model)
    pairs = (
        spark.read.parquet(str(workspace / "lakehouse" / "predictions"))
        .select("trip_id", F.col("predicted_duration_minutes").alias("cluster"))
        .join(
            spark.read.parquet(str(local / "lakehouse" / "predictions")).select(
                "trip_id", F.col("predicted_duration_minutes").alias("local")
            ),
            on="trip_id",
            how="full_outer",
        )
    )
    row = pairs.agg(
        F.count(F.lit(1)).alias("trips"),
        F.sum(F.when(F.col("cluster").isNull() | F.col("local").isNull(), 1).otherwise(0)).alias("unmatched"),
        F.max(F.abs(F.col("cluster") - F.col("local"))).alias("max_diff"),
    ).first()
    assert row is not None
    assert (row["trips"], row["unmatched"]) == (6352, 0)
    assert row["max_diff"] < 1e-6
    print(f"largest per-trip difference cluster vs local: {row['max_diff']:.3g} minutes")


def test_training_survives_the_loss_of_a_worker(pipeline_on_cluster: dict[str, Any], workspace: Path) -> None:
    # the train of the module's pipeline lost worker-2 while it ran, completed and registered its model
    assert pipeline_on_cluster["trained"]["model_version"] == "1"
    assert not pid_alive(pipeline_on_cluster["victim_pid"])
    status = cluster_status(workspace)
    assert (status["workers"], status["cores"]) == (1, 1)

    app_id = pipeline_on_cluster["apps"][1]
    app_events = events(workspace, app_id)
    lost_executor = pipeline_on_cluster["lost_executor"]
    removed = [e for e in app_events if e["Event"] == "SparkListenerExecutorRemoved"]
    assert {e["Executor ID"] for e in removed} >= lost_executor
    stage_names = {
        e["Stage Info"]["Stage ID"]: e["Stage Info"]["Stage Name"]
        for e in app_events
        if e["Event"] == "SparkListenerStageSubmitted"
    }
    task_ends = [e for e in app_events if e["Event"] == "SparkListenerTaskEnd"]
    lost_tasks = [e for e in task_ends if e["Task End Reason"]["Reason"] != "Success"]
    reruns = []

    def attempt(e: dict[str, Any]) -> tuple[int, int]:
        # a task is retried in its stage attempt, or, when the lost executor's shuffle output is missing too
        # (FetchFailed), in a resubmitted stage attempt whose task attempts count from 0 again
        return e["Stage Attempt ID"], e["Task Info"]["Attempt"]

    for lost in lost_tasks:
        # Spark re-ran the lost task: a later attempt of the same partition succeeded on a surviving executor
        later = [
            e
            for e in task_ends
            if e["Stage ID"] == lost["Stage ID"]
            and e["Task Info"]["Index"] == lost["Task Info"]["Index"]
            and attempt(e) > attempt(lost)
            and e["Task End Reason"]["Reason"] == "Success"
        ]
        assert later, f"stage {lost['Stage ID']} partition {lost['Task Info']['Index']}: lost and never re-run"
        rerun = later[0]
        assert rerun["Task Info"]["Executor ID"] not in lost_executor
        reruns.append(
            {
                "stage": f"{lost['Stage ID']}.{lost['Stage Attempt ID']} {stage_names[lost['Stage ID']]}",
                "partition": lost["Task Info"]["Index"],
                "lost_on_executor": lost["Task Info"]["Executor ID"],
                "reason": lost["Task End Reason"]["Reason"],
                "rerun_on_executor": rerun["Task Info"]["Executor ID"],
            }
        )
    retried_stages = [
        f"{e['Stage Info']['Stage ID']}.{e['Stage Info']['Stage Attempt ID']} {e['Stage Info']['Stage Name']}"
        for e in app_events
        if e["Event"] == "SparkListenerStageSubmitted" and e["Stage Info"]["Stage Attempt ID"] > 0
    ]
    failed_jobs = [
        e for e in app_events if e["Event"] == "SparkListenerJobEnd" and e["Job Result"]["Result"] != "JobSucceeded"
    ]
    assert failed_jobs == []
    summary = {
        "executor_removed": [(e["Executor ID"], e.get("Removed Reason", "")) for e in removed],
        "tasks_rerun": reruns,
        "stages_resubmitted": retried_stages,
        "stages": len(stage_names),
        "tasks": len(task_ends),
        "successful_tasks_by_executor": dict(
            Counter(e["Task Info"]["Executor ID"] for e in task_ends if e["Task End Reason"]["Reason"] == "Success")
        ),
        "seconds_from_kill_to_end": pipeline_on_cluster["seconds_from_kill_to_end"],
    }
    print("\nworker loss: " + json.dumps(summary, default=str))
    (workspace / "worker_loss.json").write_text(json.dumps(summary, indent=2, default=str))


def test_stop_removes_the_daemons(cluster: ClusterInfo, workspace: Path) -> None:
    pids = [cluster.master_pid, *cluster.worker_pids]
    alive = [pid for pid in pids if pid_alive(pid)]  # worker-2 is gone when the worker-loss test ran before
    assert cluster.master_pid in alive
    stopped = stop_cluster(workspace)
    assert sorted(stopped) == sorted(alive)
    assert not any(pid_alive(pid) for pid in pids)
    assert not list((workspace.resolve() / "cluster").glob("*.pid"))
    assert cluster_status(workspace)["running"] is False
    assert stop_cluster(workspace) == []  # stopping twice is harmless (the fixture teardown does it)
