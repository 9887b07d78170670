"""A real Spark standalone cluster (1 master, 2 workers x 1 core x 1g) on loopback, driven by the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taxi_duration.cluster import ClusterInfo, cluster_status, start_cluster, stop_cluster
from taxi_duration.cluster.standalone import ClusterError, free_port, pid_alive

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "taxi-duration"
SAMPLE = REPO / "src" / "taxi_duration" / "data" / "taxis_sample_2019-03.csv"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluster-workspace")


@pytest.fixture(scope="module")
def cluster(workspace: Path) -> Iterator[ClusterInfo]:
    started = time.perf_counter()
    info = start_cluster(workspace, workers=2, cores=1, memory="1g", port=free_port(), webui_port=free_port())
    print(f"\ncluster started in {time.perf_counter() - started:.1f} s ({info.startup_seconds} s to all registered)")
    try:
        yield info
    finally:
        stop_cluster(workspace)


def cli(workspace: Path, master: str, *args: str) -> dict:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}  # PYSPARK_PYTHON: get_spark defaults it
    env.pop("TAXI_DURATION_SPARK_CONF", None)
    command = [str(CLI), "--workspace", str(workspace), "--master", master, "--driver-memory", "1g", *args, "--json"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def test_pipeline_runs_on_the_standalone_cluster(cluster: ClusterInfo, workspace: Path) -> None:
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

    # two applications from the CLI in client mode (training on this cluster is test_spark_submit's)
    ingested = cli(workspace, cluster.master_url, "ingest", str(SAMPLE))
    assert (ingested["rows_in"], ingested["rows_clean"], ingested["rows_quarantined"]) == (6500, 6352, 148)
    reported = cli(workspace, cluster.master_url, "report")
    assert sum(row["trips"] for row in reported["by_borough"]) == 6352

    # the work ran on the workers: each has application folders with executor logs
    for index in (1, 2):
        apps = sorted((base / "work" / f"worker-{index}").glob("app-*"))
        assert len(apps) >= 2, f"worker-{index} ran no applications"
        assert any(path.name == "stderr" for app in apps for path in app.rglob("stderr"))
    assert cluster_status(workspace)["completed_apps"] >= 2


def test_stop_removes_the_daemons(cluster: ClusterInfo, workspace: Path) -> None:
    pids = [cluster.master_pid, *cluster.worker_pids]
    stopped = stop_cluster(workspace)
    assert sorted(stopped) == sorted(pids)
    assert not any(pid_alive(pid) for pid in pids)
    assert not list((workspace.resolve() / "cluster").glob("*.pid"))
    assert cluster_status(workspace)["running"] is False
    assert stop_cluster(workspace) == []  # stopping twice is harmless (the fixture teardown does it)
