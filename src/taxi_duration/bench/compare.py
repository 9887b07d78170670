"""Run the comparison workload (bench/workloads/) on each engine and size in its own child process, measure it,
and check that the engines computed the same results.

Each engine x size is one child process, so wall time and peak memory (the whole process tree, JVM included)
belong to that engine alone. pandas, Polars and DuckDB children get an address-space cap (`RLIMIT_AS`); a child
that runs out of it is recorded as "out of memory at N rows", not as a failure of the benchmark. Spark is bounded
by its driver heap instead (`spark.driver.memory`): a JVM reserves far more address space than it uses, so
RLIMIT_AS would stop it from starting at all.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxi_duration.bench.measure import machine, parse_size, run_measured
from taxi_duration.bench.workloads.common import ENGINES, EXIT_OOM, TRAINING_ENGINES
from taxi_duration.errors import BenchmarkError, ConfigError

RELATIVE_TOLERANCE = 1e-9
ENGINE_MODULES = {"pandas": ("sklearn",), "polars": ("polars",), "duckdb": ("duckdb",)}
JVM_ENGINES = ("spark", "spark-naive")
FORMATS = ("parquet", "csv")
# signals a child dies of when an allocation fails under RLIMIT_AS (Rust/C++ abort, or a kill)
OOM_SIGNALS = {signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS}
OOM_MARKERS = (
    "MemoryError",
    "memory allocation of",
    "bad_alloc",
    "Cannot allocate memory",
    "OutOfMemoryError",
    "Out of Memory",
    "failed to allocate",
    "can't start new thread",
    "failed to map segment",
)
# In capped children, allocators that reserve address space they never touch would make RLIMIT_AS count
# reservations instead of use: Arrow's jemalloc/mimalloc pool, and glibc's 64 MB malloc arena per thread.
CAPPED_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "2"}


@dataclass
class CompareConfig:
    """What to run: sizes, engines, formats, caps, where the data and the results go."""

    rows: list[int]
    engines: list[str]
    data_dir: Path
    out_dir: Path
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    memory_cap: str | None = "8g"
    driver_memory: str = "4g"
    train_rows: int = 1_000_000
    boost_iterations: int = 30
    forest_trees: int = 20
    seed: int = 42
    timeout_s: float | None = None

    def validate(self) -> None:
        unknown = [e for e in self.engines if e not in ENGINES]
        if unknown:
            raise ConfigError(f"--engines: unknown {unknown}; known: {', '.join(ENGINES)}")
        missing = sorted(
            {
                module
                for e in self.engines
                for module in ENGINE_MODULES.get(e, ())
                if importlib.util.find_spec(module) is None
            }
        )
        if missing:
            raise ConfigError(
                f"--engines {','.join(self.engines)} need {', '.join(missing)}: "
                "pip install 'taxi-duration-predictor[bench]'"
            )
        bad_formats = [f for f in self.formats if f not in FORMATS]
        if bad_formats or "parquet" not in self.formats:
            raise ConfigError(f"--formats: expected parquet and optionally csv, found {self.formats}")
        if "spark-naive" in self.engines and "csv" not in self.formats:
            raise ConfigError("engine spark-naive reads CSV: add csv to --formats")
        if not self.rows or any(r < 1 for r in self.rows):
            raise ConfigError(f"--rows: expected positive sizes, found {self.rows}")
        if self.memory_cap:
            try:
                parse_size(self.memory_cap)
            except ValueError as exc:
                raise ConfigError(f"--memory-cap: {exc}") from None


def parse_rows(text: str) -> list[int]:
    """Sizes like '1e6,1e7,5e7' or '10000'."""
    try:
        sizes = [int(float(part)) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--rows: expected comma-separated numbers like 1e6,1e7, found {text!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise ConfigError(f"--rows: expected positive sizes, found {text!r}")
    return sizes


def data_paths(data_dir: Path, rows: int, seed: int = 42) -> dict[str, Path]:
    """Where the generated input of a size lives (one folder per format)."""
    return {fmt: data_dir / f"trips-{rows}-seed{seed}" / fmt for fmt in FORMATS}


def _is_complete(folder: Path, suffix: str) -> bool:
    # Spark writes _SUCCESS last: a generation interrupted half-way is generated again, not reused
    return bool(glob.glob(str(folder / "**" / "_SUCCESS"), recursive=True)) and bool(
        glob.glob(str(folder / "**" / f"*{suffix}"), recursive=True)
    )


def ensure_data(
    rows: int, data_dir: Path, formats: list[str], seed: int, log: Callable[[str], None]
) -> tuple[dict[str, Path], dict[str, float]]:
    """Generate one month of yellow trips per format with the project's generator, unless already there."""
    paths = data_paths(data_dir, rows, seed)
    seconds: dict[str, float] = {}
    for fmt in formats:
        if _is_complete(paths[fmt], f".{fmt}"):
            continue
        log(f"generating {rows:,} trips as {fmt} -> {paths[fmt]}")
        start = time.perf_counter()
        # a child process: the generator's JVM and heap end with it, not beside the engines measured next
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
            try:
                child.submit(_generate, rows, paths[fmt], fmt, seed, data_dir / "workspace").result()
            except Exception as exc:
                raise ConfigError(f"generating {rows:,} trips ({fmt}) failed: {exc}") from None
        seconds[fmt] = round(time.perf_counter() - start, 1)
    return paths, seconds


def _generate(rows: int, out: Path, fmt: str, seed: int, workspace: Path) -> None:
    """In the child: the session as the CLI builds it (settings of this workspace), then the generator's writer."""
    from taxi_duration.generate.output import write_synthetic
    from taxi_duration.settings import get_settings
    from taxi_duration.spark import configure_driver_process, get_spark

    os.environ.update(_child_env())
    settings = get_settings(workspace=workspace)
    configure_driver_process(settings)  # the child is its own entry point
    write_synthetic(get_spark(settings), out, rows, fmt, seed=seed, start="2024-01", months=1)


def _child_env() -> dict[str, str]:
    return {**os.environ, "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                return None
            return parsed if isinstance(parsed, dict) else None
    return None


def classify(returncode: int, payload: dict[str, Any] | None, stderr: str, capped: bool) -> str:
    """ok, oom (ran out of memory under the cap or heap) or error."""
    if returncode == 0 and payload is not None and payload.get("status") == "ok":
        return "ok"
    if returncode == EXIT_OOM or (payload is not None and payload.get("status") == "oom"):
        return "oom"
    if any(marker in stderr for marker in OOM_MARKERS):
        return "oom"
    if capped and returncode < 0 and -returncode in OOM_SIGNALS:
        return "oom"
    return "error"


def run_engine(config: CompareConfig, engine: str, rows: int, paths: dict[str, Path]) -> dict[str, Any]:
    """One engine on one size in a child process: measured, classified, its results parsed."""
    out = config.out_dir / "work" / f"{engine}-{rows}"
    command = [
        sys.executable,
        "-m",
        "taxi_duration.bench.workloads",
        engine,
        "--parquet",
        str(paths["parquet"]),
        "--out",
        str(out),
        "--train-rows",
        str(config.train_rows),
        "--driver-memory",
        config.driver_memory,
        "--boost-iterations",
        str(config.boost_iterations),
        "--forest-trees",
        str(config.forest_trees),
    ]
    if "csv" in config.formats:
        command += ["--csv", str(paths["csv"])]
    cap = parse_size(config.memory_cap) if config.memory_cap and engine not in JVM_ENGINES else None
    if cap:
        command += ["--memory-limit", str(cap)]
    env = {**_child_env(), **(CAPPED_ENV if cap else {})}
    measured = run_measured(command, env=env, memory_cap_bytes=cap, timeout=config.timeout_s)
    payload = _last_json(measured.stdout)
    status = classify(measured.returncode, payload, measured.stderr, capped=cap is not None)
    steps = (payload or {}).get("steps", {})
    pipeline_s = sum(steps.get(s, 0.0) for s in ("load", "borough_report", "features"))
    record: dict[str, Any] = {
        "engine": engine,
        "rows": rows,
        "status": status,
        "seconds": round(measured.seconds, 2),
        "pipeline_seconds": round(pipeline_s, 2),
        "rows_per_s": round(rows / pipeline_s) if status == "ok" and pipeline_s > 0 else None,
        "peak_rss_mb": round(measured.peak_rss_mb),
        "load_1min": round(measured.load_1min, 2),
        "memory_bound": f"RLIMIT_AS {config.memory_cap}" if cap else f"driver heap {config.driver_memory}",
        "steps": steps,
        "returncode": measured.returncode,
    }
    if status == "ok" and payload is not None:
        record["results"] = payload["results"]
    else:
        detail = (payload or {}).get("error") or " | ".join(measured.stderr.strip().splitlines()[-3:])
        record["error"] = detail[-800:]
    return record


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=0.0) or a == b


def mismatches(reference: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """Differences between two engines' results (exact counts and integer sums; floats to 1e-9 relative)."""
    found: list[str] = []
    for key in ("rows_read", "valid_trips"):
        if reference.get(key) != other.get(key):
            found.append(f"{key}: {reference.get(key)} vs {other.get(key)}")
    ref_report, report = reference.get("borough_report", {}), other.get("borough_report", {})
    if set(ref_report) != set(report):
        found.append(f"boroughs: {sorted(ref_report)} vs {sorted(report)}")
    for borough in sorted(set(ref_report) & set(report)):
        a, b = ref_report[borough], report[borough]
        if a["trips"] != b["trips"]:
            found.append(f"{borough} trips: {a['trips']} vs {b['trips']}")
        if not _close(a["mean_duration_s"], b["mean_duration_s"]):
            found.append(f"{borough} mean_duration_s: {a['mean_duration_s']!r} vs {b['mean_duration_s']!r}")
    for section in ("features", "csv"):
        ref_part, part = reference.get(section), other.get(section)
        if ref_part is None or part is None:
            continue
        for key in sorted(set(ref_part) | set(part)):
            a, b = ref_part.get(key), part.get(key)
            if isinstance(a, float) or isinstance(b, float):
                if a is None or b is None or not _close(float(a), float(b)):
                    found.append(f"{section}.{key}: {a!r} vs {b!r}")
            elif a != b:
                found.append(f"{section}.{key}: {a!r} vs {b!r}")
    ref_train, train = reference.get("training"), other.get("training")
    if ref_train and train:
        for key in ("train_rows", "valid_rows"):
            if ref_train[key] != train[key]:
                found.append(f"training.{key}: {ref_train[key]} vs {train[key]}")
    return found


def check_agreement(records: list[dict[str, Any]]) -> list[str]:
    """Compare every completed engine of one size with the first completed one; messages name both engines."""
    done = [r for r in records if r["status"] == "ok"]
    problems: list[str] = []
    if not done:
        return problems
    reference = done[0]
    for record in done[1:]:
        for problem in mismatches(reference["results"], record["results"]):
            problems.append(f"{record['rows']:,} rows, {reference['engine']} vs {record['engine']}: {problem}")
    # the training split and cap must also agree between the two engines that train
    trained = [r for r in done if r["engine"] in TRAINING_ENGINES and "training" in r["results"]]
    if len(trained) == 2 and reference not in trained:
        for problem in mismatches(
            {"training": trained[0]["results"]["training"]}, {"training": trained[1]["results"]["training"]}
        ):
            problems.append(f"{trained[0]['rows']:,} rows, {trained[0]['engine']} vs {trained[1]['engine']}: {problem}")
    return problems


def run_compare(config: CompareConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every size x engine; the summary JSON is rewritten after each child so a long run keeps what it measured.

    Raises BenchmarkError (after writing the outputs) when engines disagree."""
    config.validate()
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = config.out_dir / f"compare-{stamp}.json"
    summary: dict[str, Any] = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "config": {
            "rows": config.rows,
            "engines": config.engines,
            "formats": config.formats,
            "memory_cap": config.memory_cap,
            "driver_memory": config.driver_memory,
            "train_rows": config.train_rows,
            "boost_iterations": config.boost_iterations,
            "forest_trees": config.forest_trees,
            "seed": config.seed,
        },
        "generate_seconds": {},
        "runs": [],
        "mismatches": [],
        "json": str(json_path),
    }
    out_of_memory_at: dict[str, int] = {}
    for rows in config.rows:
        paths, generated = ensure_data(rows, config.data_dir, config.formats, config.seed, log)
        if generated:
            summary["generate_seconds"][str(rows)] = generated
        size_records = []
        for engine in config.engines:
            if engine in out_of_memory_at:
                record = {
                    "engine": engine,
                    "rows": rows,
                    "status": "skipped",
                    "error": f"out of memory at {out_of_memory_at[engine]:,} rows already",
                }
            else:
                log(f"{engine} on {rows:,} trips ...")
                record = run_engine(config, engine, rows, paths)
                if record["status"] == "oom":
                    out_of_memory_at[engine] = rows
            log(_one_line(record))
            size_records.append(record)
            summary["runs"].append(record)
            json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        summary["mismatches"] += check_agreement(size_records)
        json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def raise_on_failure(summary: dict[str, Any]) -> None:
    """A clear one-line error when an engine failed for a reason other than memory, or engines disagree."""
    failed = [r for r in summary["runs"] if r["status"] == "error"]
    if failed:
        first = failed[0]
        raise BenchmarkError(
            f"{first['engine']} failed on {first['rows']:,} trips (exit {first.get('returncode')}): "
            f"{first.get('error', '')[-300:]}"
        )
    if summary["mismatches"]:
        first = summary["mismatches"][0]
        more = len(summary["mismatches"]) - 1
        raise BenchmarkError(
            f"engines disagree: {first}" + (f" (and {more} more, see {summary['json']})" if more else "")
        )


def _one_line(record: dict[str, Any]) -> str:
    if record["status"] == "ok":
        return (
            f"  {record['engine']} {record['rows']:,}: ok in {record['seconds']} s "
            f"(report+features {record['pipeline_seconds']} s), peak {record['peak_rss_mb']:,} MB, "
            f"load {record['load_1min']}"
        )
    if record["status"] == "oom":
        bound = record["memory_bound"]
        return f"  {record['engine']} {record['rows']:,}: out of memory at {record['rows']:,} rows ({bound})"
    return f"  {record['engine']} {record['rows']:,}: {record['status']}: {record.get('error', '')[-300:]}"
