"""Streaming: stream (score trip files as they land, Structured Streaming) and replay (stored trips at a rate).

The commands are plain functions; `cli/__init__.py` registers them on the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from taxi_duration.cli.common import JsonOption, _alias, _console, _emit_json, _params, _spark
from taxi_duration.settings import Settings


def _trigger_seconds(text: str, option: str = "--trigger") -> float:
    from taxi_duration.errors import ConfigError

    value = text.strip().lower().removesuffix("seconds").removesuffix("s").strip()
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{option}: expected an interval like 2s, found '{text}'") from None
    if seconds <= 0:
        raise ConfigError(f"{option}: expected a positive interval, found '{text}'")
    return seconds


def _clean_source(mode: str, archive_dir: Path | None) -> str:
    from taxi_duration.errors import ConfigError
    from taxi_duration.stream.sources import CLEAN_SOURCE

    if mode not in CLEAN_SOURCE:
        raise ConfigError(f"--clean-source: expected one of {', '.join(CLEAN_SOURCE)}, found '{mode}'")
    if archive_dir is not None and mode != "archive":
        raise ConfigError(f"--archive-dir: only used with --clean-source archive, found --clean-source {mode}")
    return mode


def stream(
    ctx: typer.Context,
    landing: Annotated[
        Path | None, typer.Option(help="Folder to watch for trip files (default WORKSPACE/stream/landing).")
    ] = None,
    trigger: Annotated[str, typer.Option(help="Micro-batch interval, e.g. 2s.")] = "2s",
    windows_trigger: Annotated[
        str, typer.Option(help="How often the borough x window counts are refreshed, e.g. 10s.")
    ] = "10s",
    available_now: Annotated[
        bool, typer.Option("--available-now", help="Process what has landed, then stop (Databricks serverless).")
    ] = False,
    max_files_per_trigger: Annotated[int | None, typer.Option(min=1, help="Most files per micro-batch.")] = None,
    clean_source: Annotated[
        str,
        typer.Option(
            help="Landed files once processed: off, archive (moved to --archive-dir) or delete. Spark does it when "
            "the next batch starts."
        ),
    ] = "off",
    archive_dir: Annotated[
        Path | None, typer.Option(help="Where --clean-source archive moves files (default WORKSPACE/stream/archive).")
    ] = None,
    watermark: Annotated[str, typer.Option(help="How late a trip may be and still be counted in its window.")] = (
        "10 minutes"
    ),
    alias: Annotated[
        str | None,
        typer.Option(help="Registry alias to score with, followed at batch boundaries (default: the champion alias)."),
    ] = None,
    timeout: Annotated[float | None, typer.Option(min=0, help="Stop after this many seconds.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Score trip files as they land (Structured Streaming, exactly once across restarts), with live counts per
    pickup borough and 5-minute window. Ctrl-C or SIGTERM stops it cleanly; restart resumes from the checkpoint."""
    from taxi_duration.stream.job import StreamOptions, run_stream
    from taxi_duration.stream.paths import StreamPaths
    from taxi_duration.tracking import configure_mlflow

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    options = StreamOptions(
        trigger_seconds=_trigger_seconds(trigger),
        windows_trigger_seconds=_trigger_seconds(windows_trigger, "--windows-trigger"),
        available_now=available_now,
        max_files_per_trigger=max_files_per_trigger,
        clean_source=_clean_source(clean_source, archive_dir),
        archive_dir=archive_dir.resolve() if archive_dir else None,
        watermark=watermark,
        timeout_seconds=timeout,
        alias=_alias(settings, alias),
    )
    paths = StreamPaths.under(settings.workspace, landing)
    spark = _spark(settings)
    # micro-batches are small: one shuffle partition per core keeps per-batch task and state-store overhead low
    # (a restarted query keeps the partition count its checkpoint was created with)
    if settings.remote is None:
        spark.conf.set("spark.sql.shuffle.partitions", str(spark.sparkContext.defaultParallelism))
    configure_mlflow(settings)
    console.print(f"watching {paths.landing} -> {paths.root} ({'available now' if available_now else trigger})")
    summary = run_stream(
        spark,
        paths,
        options,
        _params(settings).quality,
        settings.model_name,
        lambda text: console.print(text, markup=False),
    )
    console.print(
        f"{summary.batches} batch(es): {summary.trips:,} trips scored, {summary.quarantined:,} quarantined, "
        f"{summary.skipped_files} file(s) skipped; stopped by {summary.stopped_by}"
    )
    if as_json:
        _emit_json(summary.to_dict())


def replay(
    ctx: typer.Context,
    from_: Annotated[
        list[str], typer.Option("--from", help="Stored trips: TLC CSV or Parquet files or folders (one layout).")
    ],
    rate: Annotated[float, typer.Option(min=0.001, help="Trips per second.")] = 5000.0,
    files_per_second: Annotated[float, typer.Option(min=0.001, help="Files landed per second.")] = 2.0,
    landing: Annotated[
        Path | None, typer.Option(help="Folder to write into (default WORKSPACE/stream/landing).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv (TLC layout) or json (JSON lines).")] = "csv",
    limit: Annotated[int | None, typer.Option(min=1, help="Replay only the first N trips (event-time order).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Replay stored trips into the landing folder in event-time order at a given rate (atomic files)."""
    from taxi_duration.stream.paths import StreamPaths
    from taxi_duration.stream.replay import load_trips
    from taxi_duration.stream.replay import replay as run_replay

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    target = StreamPaths.under(settings.workspace, landing).landing
    trips, skipped = load_trips(from_, limit)
    report = run_replay(trips, target, rate, files_per_second, fmt, skipped_input_lines=skipped)
    console.print(
        f"{report.rows:,} trips in {report.files} file(s) over {report.seconds:.1f} s "
        f"({report.rows_per_second:,.0f} trips/s, at most {report.max_behind_seconds:.2f} s behind) -> {target}"
        + (f"; {skipped} unreadable input line(s) left out" if skipped else "")
    )
    if as_json:
        _emit_json(report.to_dict())
