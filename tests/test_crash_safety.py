"""Tests that kill: `ingest` and `train` killed with SIGKILL right after chosen steps (TAXI_DURATION_CRASH_AT),
then what the next command sees is checked: the state before or after, never a mix; the re-run loses no row and
leaves no staging; `serve` and `predict` keep working. Also: a copied or moved workspace uses only its own files.

Kept fast: the real 2019-03 and 2020-07 samples, a linear model, one ingested and one trained workspace shared by
all cases (each killed command runs on its own copy), the killed processes of each command run at the same time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from conftest import cli_json, copy_workspace
from taxi_duration import lakehouse
from taxi_duration.faults import CRASH_AT_ENV
from taxi_duration.ingest.job import run_ingest
from taxi_duration.params import QualityParams
from taxi_duration.registry.promotion import recover_interrupted_runs
from taxi_duration.serve.app import create_app
from taxi_duration.serve.champion import alias_loader
from taxi_duration.settings import Settings
from taxi_duration.tracking import configure_mlflow

pytestmark = pytest.mark.slow

MODEL = "taxi-duration"
INGEST_KILLS = ("ingest:staged_quarantine", "ingest:moved", "ingest:committed")
# killed before the alias moves (undone by the next train, which the test after runs) and after it (finished);
# the steps between (logged_exported, challenger) take the same recovery paths and are left out to keep this fast
TRAIN_KILLS = ("train:registered", "train:champion")
# the champion is a deliberately weak linear model, so the killed retrain (default linear) wins and would promote
WEAK = "train:\n  linear: {regParam: 50.0, maxIter: 5}\n"
GOOD = "train:\n  linear: {regParam: 0.01, maxIter: 20}\n"


def killed_runs(jobs: dict[str, list[str]], workspaces: dict[str, Path]) -> None:
    """Run `taxi-duration --workspace W ARGS` for each crash point, all at once (their JVMs run C1-only with the
    serial collector, see conftest.py: three fit on two cores); each must die by SIGKILL."""
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    pending = list(jobs)
    while pending:
        batch, pending = pending[:3], pending[3:]
        running = {
            point: subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from taxi_duration.cli import main; main()",
                    "--workspace",
                    str(workspaces[point]),
                    "--driver-memory",
                    "1g",
                    *jobs[point],
                ],
                env={**env, CRASH_AT_ENV: point},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for point in batch
        }
        for point, process in running.items():
            _, err = process.communicate(timeout=900)
            assert process.returncode == -9, f"{point}: exit {process.returncode}, expected SIGKILL\n{err[-2000:]}"


# ------------------------------------------------------------------------------------------------- ingest


def table_state(spark: SparkSession, workspace: Path) -> dict[str, Any]:
    """What every reader sees: committed trips, quarantine and quality report."""
    root = workspace / "lakehouse"
    trips = lakehouse.read_trips(spark, root / "trips")
    report = lakehouse.committed_quality_report(root)
    assert report is not None
    return {
        "trips": trips.count(),
        "distinct_trips": trips.select("trip_id").distinct().count(),
        "quarantined": lakehouse.read_quarantine(spark, root / "quarantine").count(),
        "report": (report["rows_in"], report["rows_clean"], report["rows_quarantined"]),
        "sources": sorted(r["source"] for r in trips.select("source").distinct().collect()),
    }


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, sample_ingested: Path) -> Path:
    """This module's copy of the shared workspace holding the real 2019-03 sample."""
    return copy_workspace(sample_ingested, tmp_path_factory.mktemp("ingested"))


@pytest.fixture(scope="module")
def ingest_kills(ingested: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """Each crash point on its own copy: re-ingest the 2019-03 file (replacing its rows) plus the 2020-07 one."""
    copies = {}
    for point in INGEST_KILLS:
        copies[point] = tmp_path_factory.mktemp(point.replace(":", "_"))
        shutil.copytree(ingested, copies[point], dirs_exist_ok=True)
    files = [str(data_dir / "taxis_sample_2019-03.csv"), str(data_dir / "yellow_tripdata_sample_2020-07.csv")]
    killed_runs({point: ["ingest", *files] for point in INGEST_KILLS}, copies)
    return copies


@pytest.mark.parametrize("point", INGEST_KILLS)
def test_a_killed_ingest_shows_before_or_after_and_its_rerun_loses_nothing(
    point: str, ingest_kills: dict[str, Path], ingested: Path, spark: SparkSession, data_dir: Path
) -> None:
    workspace = ingest_kills[point]
    before = table_state(spark, ingested)
    assert before["report"] == (6500, 6352, 148)
    seen = table_state(spark, workspace)
    root = workspace / "lakehouse"
    # the kill left work for the next run: staging, and at `moved` data files in the tables no commit names
    assert (root / "_staging").is_dir()
    if point == "ingest:moved":
        committed = lakehouse.latest_snapshot(root)
        assert committed is not None
        assert len(list((root / "trips").rglob("*.parquet"))) > len(committed.files("trips"))
        # the `report` command, like every reader, sees the committed trips only
        reported = cli_json(workspace, "report")
        assert sum(row["trips"] for row in reported["by_borough"]) == before["trips"]

    files = [str(data_dir / "taxis_sample_2019-03.csv"), str(data_dir / "yellow_tripdata_sample_2020-07.csv")]
    rerun = run_ingest(spark, files, root / "trips", root / "quarantine", QualityParams())
    after = table_state(spark, workspace)
    assert seen in (before, after), f"{point}: a mix: {seen}"
    assert seen == (after if point == "ingest:committed" else before)
    # 0 rows lost, none doubled: every input row is in exactly one table, once
    assert rerun.rows_in == 6500 + 266 == after["trips"] + after["quarantined"]
    assert after["report"] == (rerun.rows_in, after["trips"], after["quarantined"])
    assert after["trips"] == after["distinct_trips"] and len(after["sources"]) == 2
    # no staging and no data file outside the commit after the next successful run
    assert not (root / "_staging").exists()
    committed = lakehouse.latest_snapshot(root)
    assert committed is not None
    for table in ("trips", "quarantine"):
        on_disk = sorted(str(p.relative_to(root)) for p in (root / table).rglob("*.parquet"))
        assert on_disk == committed.files(table)


# -------------------------------------------------------------------------------------------------- train


@pytest.fixture(scope="module")
def trained(ingested: Path, tmp_path_factory: pytest.TempPathFactory, spark: SparkSession) -> Path:
    workspace = tmp_path_factory.mktemp("trained")
    shutil.copytree(ingested, workspace, dirs_exist_ok=True)
    (workspace / "weak.yaml").write_text(WEAK, encoding="utf-8")
    (workspace / "good.yaml").write_text(GOOD, encoding="utf-8")
    first = cli_json(workspace, "--config", str(workspace / "weak.yaml"), "train", "--model", "linear")
    assert (first["model_version"], first["promotion"]["promote"]) == ("1", True)
    return workspace


@pytest.fixture(scope="module")
def train_kills(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    copies = {}
    for point in TRAIN_KILLS:
        copies[point] = tmp_path_factory.mktemp(point.replace(":", "_"))
        shutil.copytree(trained, copies[point], dirs_exist_ok=True)
    jobs = {
        point: ["--config", str(copies[point] / "good.yaml"), "train", "--model", "linear"] for point in TRAIN_KILLS
    }
    killed_runs(jobs, copies)
    return copies


def registry(workspace: Path) -> dict[str, Any]:
    configure_mlflow(Settings(workspace=workspace))
    client = MlflowClient()
    aliases = {}
    for alias in ("champion", "challenger"):
        try:
            aliases[alias] = str(client.get_model_version_by_alias(MODEL, alias).version)
        except Exception:
            aliases[alias] = None
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    return {"versions": versions, **aliases}


def serves(workspace: Path, data_dir: Path, version: str) -> None:
    """`predict` and the API (the app `serve` runs, with its registry loader) answer with `version`."""
    predicted = cli_json(
        workspace, "predict", str(data_dir / "taxis_sample_2019-03.csv"), "--out", str(workspace / "p.parquet")
    )
    assert (predicted["rows"], predicted["model_version"]) == (6500, version)
    configure_mlflow(Settings(workspace=workspace))
    with TestClient(create_app(alias_loader(MODEL, "champion")[0], None)) as client:
        assert client.get("/ready").status_code == 200
        answer = client.post(
            "/predict",
            json={
                "PULocationID": 161,
                "DOLocationID": 236,
                "trip_distance": 2.4,
                "pickup_datetime": "2019-03-05T08:30:00",
            },
        )
        assert answer.status_code == 200 and answer.json()["model_version"] == version


@pytest.mark.parametrize("point", TRAIN_KILLS)
def test_a_killed_train_leaves_the_registry_before_or_after(
    point: str, train_kills: dict[str, Path], trained: Path, data_dir: Path
) -> None:
    workspace = train_kills[point]
    before = {"versions": ["1"], "champion": "1", "challenger": "1"}
    after = {"versions": ["1", "2"], "champion": "2", "challenger": "2"}
    # what serve and predict see right after the kill: the champion before, or after at the last step
    serves(workspace, data_dir, "2" if point == "train:champion" else "1")
    if point == "train:registered":
        return  # the next test lets `train` itself recover this one
    # the next train first finishes or undoes the killed one (as run_train does before fitting)
    configure_mlflow(Settings(workspace=workspace))
    client = MlflowClient()
    experiment = client.get_experiment_by_name(MODEL)
    assert experiment is not None
    recovered = recover_interrupted_runs(client, experiment.experiment_id, MODEL, "challenger", "champion")
    assert len(recovered) == 1
    assert recovered[0]["status"] == ("FINISHED" if point == "train:champion" else "FAILED")
    assert client.get_run(recovered[0]["run_id"]).info.status == recovered[0]["status"]
    assert registry(workspace) == (after if point == "train:champion" else before)
    serves(workspace, data_dir, "2" if point == "train:champion" else "1")


def test_the_train_after_a_kill_commits_and_a_copied_workspace_writes_only_into_itself(
    train_kills: dict[str, Path], trained: Path, data_dir: Path
) -> None:
    workspace = train_kills["train:registered"]  # holds a version 2 nobody points to until this train
    original = sorted(str(p.relative_to(trained)) for p in (trained / "mlartifacts").rglob("*"))
    result = cli_json(workspace, "--config", str(workspace / "good.yaml"), "train", "--model", "linear")
    assert [run["status"] for run in result["recovered_runs"]] == ["FAILED"]
    # version 2 was undone; MLflow never reuses a number, and the exported model knows its own
    assert (result["model_version"], result["promotion"]["promote"]) == ("3", True)
    assert registry(workspace) == {"versions": ["1", "3"], "champion": "3", "challenger": "3"}
    serves(workspace, data_dir, "3")
    # everything went into the copy: the original's artifact folder is as it was
    assert sorted(str(p.relative_to(trained)) for p in (trained / "mlartifacts").rglob("*")) == original
    run = MlflowClient().get_run(result["run_id"])
    assert run.info.artifact_uri.startswith((workspace / "mlartifacts").resolve().as_uri() + "/")


def test_a_moved_workspace_serves_its_own_files(trained: Path, tmp_path: Path, data_dir: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    moved = tmp_path / "moved"
    copy.rename(moved)
    serves(moved, data_dir, "1")
    artifact_uri = MlflowClient().get_run(MlflowClient().get_model_version(MODEL, "1").run_id).info.artifact_uri
    assert artifact_uri.startswith((moved / "mlartifacts").resolve().as_uri() + "/")
