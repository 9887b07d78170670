"""`python -m taxi_duration.bench.workloads ENGINE --parquet DIR --csv DIR --out DIR`: run one engine over one
dataset in this process and print one JSON line (results and per-step seconds); a memory failure exits EXIT_OOM."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taxi_duration.bench.workloads.common import (
    BOOST_ITERATIONS,
    ENGINES,
    EXIT_OOM,
    FOREST_TREES,
    TRAINING_ENGINES,
    Models,
    Steps,
    Workload,
)
from taxi_duration.bench.workloads.engine_duckdb import run_duckdb
from taxi_duration.bench.workloads.engine_pandas import run_pandas
from taxi_duration.bench.workloads.engine_polars import run_polars
from taxi_duration.bench.workloads.engine_spark import run_spark
from taxi_duration.bench.workloads.engine_spark_naive import NAIVE_FIXES, run_spark_naive

RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "pandas": run_pandas,
    "polars": run_polars,
    "duckdb": run_duckdb,
    "spark": run_spark,
    "spark-naive": run_spark_naive,
}


def _is_memory_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    markers = (
        "memoryerror",
        "out of memory",
        "outofmemory",
        "cannot allocate memory",
        "bad_alloc",
        "memory allocation",
    )
    return isinstance(exc, MemoryError) or any(marker in text for marker in markers)


def main(argv: list[str] | None = None) -> int:
    """Run one engine over one dataset and print its results as one JSON line."""
    parser = argparse.ArgumentParser(description="Run the comparison workload on one engine.")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--parquet", required=True)
    parser.add_argument("--csv")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--train-rows", type=int, default=0)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--memory-limit", type=int, default=0, help="bytes; DuckDB's memory_limit is set below it")
    parser.add_argument("--boost-iterations", type=int, default=BOOST_ITERATIONS)
    parser.add_argument("--forest-trees", type=int, default=FOREST_TREES)
    parser.add_argument(
        "--naive-fixes", default="", help=f"spark-naive only, comma-separated: {', '.join(NAIVE_FIXES)}"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = Steps()
    train_rows = args.train_rows if args.engine in TRAINING_ENGINES else 0
    kwargs: dict[str, Any] = {}
    if args.engine.startswith("spark"):
        kwargs["driver_memory"] = args.driver_memory
    if args.engine in TRAINING_ENGINES:
        kwargs["models"] = Models(args.boost_iterations, args.forest_trees)
    if args.engine == "spark-naive" and args.naive_fixes:
        kwargs["fixes"] = frozenset(f for f in args.naive_fixes.split(",") if f)
        unknown = kwargs["fixes"] - set(NAIVE_FIXES)
        if unknown:
            parser.error(f"--naive-fixes: unknown {sorted(unknown)}; known: {', '.join(NAIVE_FIXES)}")
    if args.engine == "duckdb":
        kwargs["memory_limit"] = args.memory_limit or None
    try:
        work = Workload(args.parquet, args.csv, args.out, train_rows)
        results = RUNNERS[args.engine](work, steps, **kwargs)
    except BaseException as exc:
        if _is_memory_error(exc):
            print(json.dumps({"status": "oom", "error": f"{type(exc).__name__}: {exc}"[:500], "steps": steps.seconds}))
            return EXIT_OOM
        raise
    print(json.dumps({"status": "ok", "results": results, "steps": steps.seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
