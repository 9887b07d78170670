"""`bench compare`: the same workload on pandas, Polars, DuckDB and Spark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from taxi_duration.cli.common import JsonOption, _console, _emit_json
from taxi_duration.settings import Settings

bench_app = typer.Typer(
    help="Benchmarks: the same workload on pandas, Polars, DuckDB and Spark (docs/benchmarks.md).",
    no_args_is_help=True,
)


@bench_app.command("compare")
def bench_compare(
    ctx: typer.Context,
    rows: Annotated[str, typer.Option(help="Comma-separated sizes, e.g. 1e6,1e7,5e7.")] = "1e6,1e7",
    engines: Annotated[
        str, typer.Option(help="Comma-separated: pandas, polars, duckdb, spark, spark-naive (lecture-style Spark).")
    ] = "pandas,polars,duckdb,spark",
    formats: Annotated[str, typer.Option(help="parquet, or parquet,csv (CSV load step; spark-naive needs it).")] = (
        "parquet,csv"
    ),
    memory_cap: Annotated[
        str, typer.Option(help="Address-space cap of pandas/Polars/DuckDB children (RLIMIT_AS), e.g. 8g; 'none'.")
    ] = "8g",
    train_rows: Annotated[int, typer.Option(min=0, help="Most training trips (0: no training).")] = 1_000_000,
    boost_iterations: Annotated[int, typer.Option(min=1, help="Trees of HistGradientBoosting / MLlib GBT.")] = 30,
    forest_trees: Annotated[int, typer.Option(min=1, help="Trees of both random forests.")] = 20,
    data_dir: Annotated[
        Path | None, typer.Option(help="Generated input, reused across runs (default WORKSPACE/bench/data).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="JSON, Markdown and PNGs (default WORKSPACE/bench).")] = None,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 42,
    as_json: JsonOption = False,
) -> None:
    """Run the same workload on each engine and size (one child process each), check the results agree, and
    write JSON, a Markdown table and PNG charts. Spark's memory bound is --driver-memory (default 4g)."""
    from taxi_duration.bench.compare import CompareConfig, parse_rows, raise_on_failure, run_compare
    from taxi_duration.bench.report import markdown_table, write_outputs

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    config = CompareConfig(
        rows=parse_rows(rows),
        engines=[e.strip() for e in engines.split(",") if e.strip()],
        formats=[f.strip() for f in formats.split(",") if f.strip()],
        data_dir=data_dir or settings.workspace / "bench" / "data",
        out_dir=out or settings.workspace / "bench",
        memory_cap=None if memory_cap.lower() in ("none", "0", "") else memory_cap,
        driver_memory=settings.driver_memory,
        train_rows=train_rows,
        boost_iterations=boost_iterations,
        forest_trees=forest_trees,
        seed=seed,
    )
    summary = run_compare(config, log=lambda line: console.print(line, markup=False, highlight=False))
    outputs = write_outputs(summary, config.out_dir)
    console.print(markdown_table(summary), markup=False, highlight=False)
    console.print(f"results: {summary['json']}, {outputs['markdown']}, charts in {config.out_dir}")
    if as_json:
        _emit_json(
            {
                "json": summary["json"],
                "markdown": str(outputs["markdown"]),
                "charts": [str(outputs["time"]), str(outputs["memory"])],
                "mismatches": summary["mismatches"],
                "runs": [
                    {key: run.get(key) for key in ("engine", "rows", "status", "seconds", "peak_rss_mb")}
                    for run in summary["runs"]
                ],
            }
        )
    raise_on_failure(summary)
