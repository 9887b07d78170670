"""Where a Spark application's time went, read from its event log (`spark.eventLog.enabled`): the time inside jobs
against the time the driver worked with no job running (planning, Python, listing files, MLflow), and the stages
by kind (scan, shuffle, write, other) with their executor time, CPU, GC, rows read and bytes.

Rows read count records from files and cached blocks alike. Bytes read are left out of the tables: Spark 4's
Parquet reader reports only a few kilobytes per scan (the footers), so they say nothing about a scan's size.

Pure Python over the JSON lines Spark writes (one file, or the folder of rolled files `eventlog_v2_<app id>`), so
a profile can be read anywhere, also for a run on a cluster or Databricks (download its event log).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("scan", "shuffle", "write", "other")
_METRICS = {
    "internal.metrics.executorRunTime": "run_ms",
    "internal.metrics.executorCpuTime": "cpu_ns",
    "internal.metrics.jvmGCTime": "gc_ms",
    "internal.metrics.input.bytesRead": "input_bytes",
    "internal.metrics.input.recordsRead": "input_records",
    "internal.metrics.output.bytesWritten": "output_bytes",
    "internal.metrics.shuffle.write.bytesWritten": "shuffle_write_bytes",
    "internal.metrics.shuffle.read.localBytesRead": "shuffle_read_bytes",
    "internal.metrics.shuffle.read.remoteBytesRead": "shuffle_read_bytes",
}


@dataclass
class Stage:
    stage_id: int
    attempt: int
    name: str
    tasks: int
    started_ms: int
    ended_ms: int
    metrics: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.ended_ms - self.started_ms) / 1000

    @property
    def kind(self) -> str:
        """write: it wrote output files; shuffle: it read shuffle output (aggregations, joins, sorts); scan: it read
        input files or tables; other: in-memory work (local relations, broadcasts, results sent to the driver)."""
        if self.metrics.get("output_bytes", 0) > 0:
            return "write"
        if self.metrics.get("shuffle_read_bytes", 0) > 0:
            return "shuffle"
        if self.metrics.get("input_records", 0) > 0 or self.metrics.get("input_bytes", 0) > 0:
            return "scan"
        return "other"


@dataclass
class Profile:
    app_name: str
    wall_s: float
    jobs: int
    stages: int
    in_jobs_s: float  # union of the jobs' intervals
    driver_only_s: float  # wall time with no job running
    by_kind: dict[str, dict[str, float]]
    longest_stages: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def event_files(path: Path) -> list[Path]:
    """The event log's files in order: a file itself, or a rolled log's `events_<n>_...` files by n."""
    if path.is_file():
        return [path]
    files = [p for p in path.iterdir() if p.name.startswith("events_")]
    return sorted(files, key=lambda p: int(p.name.split("_")[1]))


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    for file in event_files(path):
        with file.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)


def union_seconds(intervals: Iterable[tuple[int, int]]) -> float:
    """Total length of the union of [start, end) intervals in milliseconds, as seconds."""
    total, current_start, current_end = 0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total / 1000


def _stage(info: dict[str, Any]) -> Stage:
    metrics: dict[str, int] = {}
    for accumulable in info.get("Accumulables", []):
        name = _METRICS.get(accumulable.get("Name", ""))
        if name is not None:
            metrics[name] = metrics.get(name, 0) + int(accumulable.get("Value") or 0)
    return Stage(
        stage_id=int(info["Stage ID"]),
        attempt=int(info.get("Stage Attempt ID", 0)),
        name=str(info.get("Stage Name", "")),
        tasks=int(info.get("Number of Tasks", 0)),
        started_ms=int(info.get("Submission Time") or 0),
        ended_ms=int(info.get("Completion Time") or 0),
        metrics=metrics,
    )


def profile(events: Iterable[dict[str, Any]], longest: int = 8) -> Profile:
    """The profile of one application's events."""
    app_name, app_start, app_end = "", None, None
    job_start: dict[int, int] = {}
    job_intervals: list[tuple[int, int]] = []
    stages: list[Stage] = []
    last_time = 0
    for event in events:
        kind = event.get("Event")
        if kind == "SparkListenerApplicationStart":
            app_name, app_start = str(event.get("App Name", "")), int(event["Timestamp"])
        elif kind == "SparkListenerApplicationEnd":
            app_end = int(event["Timestamp"])
        elif kind == "SparkListenerJobStart":
            job_start[int(event["Job ID"])] = int(event["Submission Time"])
        elif kind == "SparkListenerJobEnd":
            started = job_start.pop(int(event["Job ID"]), None)
            if started is not None:
                job_intervals.append((started, int(event["Completion Time"])))
                last_time = max(last_time, int(event["Completion Time"]))
        elif kind == "SparkListenerStageCompleted":
            stage = _stage(event["Stage Info"])
            if stage.started_ms and stage.ended_ms:
                stages.append(stage)
    if app_start is None:
        raise ValueError("not a Spark event log: no SparkListenerApplicationStart event")
    end = app_end if app_end is not None else last_time  # a log cut short ends at its last job
    wall = max(end - app_start, 0) / 1000
    in_jobs = union_seconds(job_intervals)
    by_kind = {kind: _kind_totals([s for s in stages if s.kind == kind]) for kind in KINDS}
    ranked = sorted(stages, key=lambda s: s.seconds, reverse=True)[:longest]
    return Profile(
        app_name=app_name,
        wall_s=round(wall, 3),
        jobs=len(job_intervals),
        stages=len(stages),
        in_jobs_s=round(in_jobs, 3),
        driver_only_s=round(max(wall - in_jobs, 0.0), 3),
        by_kind=by_kind,
        longest_stages=[
            {
                "stage_id": s.stage_id,
                "name": s.name,
                "kind": s.kind,
                "tasks": s.tasks,
                "seconds": round(s.seconds, 3),
                "run_s": round(s.metrics.get("run_ms", 0) / 1000, 3),
                "rows_read_m": round(s.metrics.get("input_records", 0) / 1e6, 3),
                "shuffle_mb": round(s.metrics.get("shuffle_read_bytes", 0) / 1e6, 1),
                "output_mb": round(s.metrics.get("output_bytes", 0) / 1e6, 1),
            }
            for s in ranked
        ],
    )


def _kind_totals(stages: list[Stage]) -> dict[str, float]:
    def total(name: str) -> int:
        return sum(s.metrics.get(name, 0) for s in stages)

    return {
        "stages": len(stages),
        "tasks": sum(s.tasks for s in stages),
        "stage_s": round(union_seconds((s.started_ms, s.ended_ms) for s in stages), 3),
        "run_s": round(total("run_ms") / 1000, 3),
        "cpu_s": round(total("cpu_ns") / 1e9, 3),
        "gc_s": round(total("gc_ms") / 1000, 3),
        "rows_read_m": round(total("input_records") / 1e6, 3),
        "input_mb": round(total("input_bytes") / 1e6, 1),
        "shuffle_read_mb": round(total("shuffle_read_bytes") / 1e6, 1),
        "shuffle_write_mb": round(total("shuffle_write_bytes") / 1e6, 1),
        "output_mb": round(total("output_bytes") / 1e6, 1),
    }


def profile_path(path: Path, longest: int = 8) -> Profile:
    """The profile of the event log at `path` (a file or a rolled log's folder)."""
    return profile(read_events(path), longest)
