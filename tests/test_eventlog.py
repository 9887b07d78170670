"""The event-log profile on a hand-built log: job time as a union of intervals, the driver's time between jobs,
stages classified by what they read and wrote, rolled logs read in order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from taxi_duration.bench.eventlog import profile, profile_path, union_seconds


def stage(stage_id: int, start: int, end: int, **metrics: int) -> dict[str, Any]:
    names = {
        "run_ms": "internal.metrics.executorRunTime",
        "cpu_ns": "internal.metrics.executorCpuTime",
        "gc_ms": "internal.metrics.jvmGCTime",
        "input": "internal.metrics.input.bytesRead",
        "records": "internal.metrics.input.recordsRead",
        "local": "internal.metrics.shuffle.read.localBytesRead",
        "remote": "internal.metrics.shuffle.read.remoteBytesRead",
        "written": "internal.metrics.shuffle.write.bytesWritten",
        "output": "internal.metrics.output.bytesWritten",
    }
    accumulables = [{"ID": i, "Name": names[k], "Value": v} for i, (k, v) in enumerate(metrics.items())]
    info = {"Stage ID": stage_id, "Stage Attempt ID": 0, "Stage Name": f"stage {stage_id}", "Number of Tasks": 2}
    info.update({"Submission Time": start, "Completion Time": end, "Accumulables": accumulables})
    return {"Event": "SparkListenerStageCompleted", "Stage Info": info}


EVENTS = [
    {"Event": "SparkListenerApplicationStart", "App Name": "taxi-duration", "Timestamp": 1000},
    {"Event": "SparkListenerJobStart", "Job ID": 0, "Submission Time": 2000},
    stage(0, 2000, 3000, input=1_000_000, records=250_000, run_ms=1500, cpu_ns=1_000_000_000, gc_ms=100),
    {"Event": "SparkListenerJobStart", "Job ID": 1, "Submission Time": 4000},  # overlaps job 0
    stage(1, 3000, 5000, local=2_000_000, remote=1_000_000, run_ms=3000),
    {"Event": "SparkListenerJobEnd", "Job ID": 0, "Completion Time": 5000},
    stage(2, 4500, 6000, input=500_000, written=700_000, output=5_000_000, run_ms=2500),
    {"Event": "SparkListenerJobEnd", "Job ID": 1, "Completion Time": 6000},
    {"Event": "SparkListenerJobStart", "Job ID": 2, "Submission Time": 8000},
    stage(3, 8000, 9000, run_ms=400),
    stage(4, 9000, 9500, records=1000, input=0),  # a Parquet scan: rows, but (almost) no bytes counted
    {"Event": "SparkListenerJobEnd", "Job ID": 2, "Completion Time": 9000},
    {"Event": "SparkListenerApplicationEnd", "Timestamp": 11000},
]


def test_union_of_intervals() -> None:
    assert union_seconds([]) == 0
    assert union_seconds([(0, 1000), (500, 1500), (3000, 3500), (3500, 4000)]) == 2.5
    assert union_seconds([(5000, 6000), (0, 10_000)]) == 10


def test_profile_of_a_hand_built_log() -> None:
    found = profile(EVENTS, longest=2)
    # 10 s from start to end; jobs cover [2, 6) and [8, 9): 5 s; the driver alone the other 5 s
    assert (found.app_name, found.wall_s, found.jobs, found.stages) == ("taxi-duration", 10.0, 3, 5)
    assert (found.in_jobs_s, found.driver_only_s) == (5.0, 5.0)
    assert found.by_kind["scan"] == {  # stage 0, and stage 4 by its rows alone
        "stages": 2,
        "tasks": 4,
        "stage_s": 1.5,
        "run_s": 1.5,
        "cpu_s": 1.0,
        "gc_s": 0.1,
        "rows_read_m": 0.251,
        "input_mb": 1.0,
        "shuffle_read_mb": 0.0,
        "shuffle_write_mb": 0.0,
        "output_mb": 0.0,
    }
    assert (found.by_kind["shuffle"]["stage_s"], found.by_kind["shuffle"]["shuffle_read_mb"]) == (2.0, 3.0)
    # a stage that writes files is a write, whatever it also read
    assert (found.by_kind["write"]["stage_s"], found.by_kind["write"]["output_mb"]) == (1.5, 5.0)
    assert found.by_kind["write"]["shuffle_write_mb"] == 0.7
    assert (found.by_kind["other"]["stages"], found.by_kind["other"]["run_s"]) == (1, 0.4)
    assert [(s["stage_id"], s["kind"], s["seconds"]) for s in found.longest_stages] == [
        (1, "shuffle", 2.0),
        (2, "write", 1.5),
    ]


def test_a_rolled_log_is_read_in_order_and_a_log_cut_short_ends_at_its_last_job(tmp_path: Path) -> None:
    folder = tmp_path / "eventlog_v2_local-1"
    folder.mkdir()
    (folder / "appstatus_local-1.inprogress").write_text("")
    lines = [json.dumps(event) for event in EVENTS[:-1]]  # no ApplicationEnd: the driver was killed
    (folder / "events_10_local-1").write_text("\n".join(lines[6:]) + "\n")
    (folder / "events_2_local-1").write_text("\n".join(lines[:6]) + "\n")
    found = profile_path(folder)
    assert (found.wall_s, found.jobs, found.in_jobs_s, found.driver_only_s) == (8.0, 3, 5.0, 3.0)


def test_what_is_not_an_event_log_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a Spark event log"):
        profile([{"Event": "SparkListenerJobStart", "Job ID": 0, "Submission Time": 1}])
