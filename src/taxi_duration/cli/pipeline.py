"""The batch pipeline: generate, ingest, train, score, report, and demo (all five in a row).

The commands are plain functions; `cli/__init__.py` registers them on the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast, get_args

import typer
from rich.console import Console
from rich.table import Table

from taxi_duration.cli.common import JsonOption, _alias, _console, _emit_json, _params, _spark, _stage
from taxi_duration.params import ModelKind
from taxi_duration.settings import Settings


def generate(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option(min=1, help="Number of trips (before injected duplicates).")] = 100_000,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (default WORKSPACE/raw/synthetic); one dataset per month."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "parquet",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same trips.")] = 42,
    start: Annotated[str, typer.Option(help="First month, YYYY-MM.")] = "2024-01",
    months: Annotated[int, typer.Option(min=1, max=120, help="Number of months.")] = 1,
    service: Annotated[str, typer.Option(help="yellow or green (TLC schema of that service).")] = "yellow",
    partitions: Annotated[int | None, typer.Option(min=1, help="Spark partitions per month.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Generate synthetic trips in the exact TLC schema with Spark (deterministic for a seed, with real-world dirt)."""
    from taxi_duration.errors import ConfigError
    from taxi_duration.generate.output import plan_months, write_month

    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"--format: expected csv or parquet, found '{fmt}'")
    if service not in ("yellow", "green"):
        raise ConfigError(f"--service: expected yellow or green, found '{service}'")
    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    spark = _spark(settings)
    plan = plan_months(out or settings.workspace / "raw" / "synthetic", rows, start, months, seed, service)
    for month in plan:
        label = f"{month.rows:,} {service} trips for {month.year:04d}-{month.month:02d} -> {month.target}"
        with _stage(console, f"generating {label}"):
            write_month(spark, month, fmt, service, partitions)
    written = [str(month.target) for month in plan]
    result = {"rows": rows, "format": fmt, "seed": seed, "service": service, "paths": written}
    if as_json:
        _emit_json(result)


def _print_ingest(console: Console, report: Any) -> None:
    from taxi_duration.quality.rules import REASONS

    table = Table(title="Quality report")
    table.add_column("file")
    table.add_column("format")
    for name in ("rows in", "clean", "quarantined"):
        table.add_column(name, justify="right")
    for f in report.files:
        table.add_row(Path(f.path).name, f.format, f"{f.rows_in:,}", f"{f.rows_clean:,}", f"{f.rows_quarantined:,}")
    table.add_row("[b]total[/b]", "", f"{report.rows_in:,}", f"{report.rows_clean:,}", f"{report.rows_quarantined:,}")
    console.print(table)
    if report.by_reason:
        reasons = Table(title="Quarantined by reason")
        reasons.add_column("reason")
        reasons.add_column("rows", justify="right")
        reasons.add_column("share of input", justify="right")
        reasons.add_column("meaning")
        for reason, count in sorted(report.by_reason.items(), key=lambda kv: -kv[1]):
            share = count / report.rows_in if report.rows_in else 0.0
            reasons.add_row(reason, f"{count:,}", f"{share:.3%}", REASONS.get(reason, ""))
        console.print(reasons)


def ingest(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(help="TLC/Kaggle CSV or Parquet files, folders or globs.")],
    as_json: JsonOption = False,
) -> None:
    """Ingest trip files into `trips` (clean) and `quarantine` (rejected, with a reason), with a quality report.

    Formats are detected per file from its columns: TLC yellow, green, FHV, HVFHV (CSV or Parquet, any
    month's types) and Kaggle "NYC Taxi Trip Duration" train/test. Re-ingesting a file replaces its rows.
    """
    from taxi_duration.ingest.job import run_ingest

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    spark = _spark(settings)
    report_path = settings.reports_path / "quality_report.json"
    with _stage(console, f"ingesting {len(paths)} path(s)"):
        report = run_ingest(
            spark,
            paths,
            settings.trips_path,
            settings.quarantine_path,
            _params(settings).quality,
            report_path,
        )
    _print_ingest(console, report)
    console.print(f"trips: {settings.trips_path}\nquarantine: {settings.quarantine_path}\nreport: {report_path}")
    if as_json:
        _emit_json(report.to_dict())


def _print_metrics(console: Console, result: Any) -> None:
    table = Table(title=f"Validation metrics ({result.metrics.get('rows', 0):,} trips after the time cutoff)")
    table.add_column("metric")
    table.add_column(f"{result.model_kind} model", justify="right")
    table.add_column("zone-pair median", justify="right")
    for name in ("rmse_minutes", "mae_minutes", "rmsle", "r2"):
        table.add_row(name, f"{result.metrics[name]:.4f}", f"{result.baseline_metrics[name]:.4f}")
    console.print(table)


def train(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(
            help="gbt (default), rf (classic distance/hour/day_of_week RF), linear or xgboost (XGBoost's Spark "
            "estimator; classic sessions only, not Spark Connect)."
        ),
    ] = None,
    tune: Annotated[bool, typer.Option("--tune", help="Search the parameter grid (TrainValidationSplit).")] = False,
    sample_fraction: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Train on this fraction of the trips.")
    ] = None,
    window_months: Annotated[
        int | None, typer.Option(min=1, help="Train on the newest N months of trips only (a rolling window).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Train on the trips table with a time-based split, log to MLflow, register, promote if better."""
    from taxi_duration.errors import ConfigError
    from taxi_duration.lakehouse import read_trips
    from taxi_duration.tracking import configure_mlflow, mlflow_ui_command
    from taxi_duration.train.job import run_train
    from taxi_duration.train.pipeline import refuse_on_connect

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    params = _params(settings)
    kind = model or params.train.model
    if kind not in get_args(ModelKind):
        raise ConfigError(f"--model: expected gbt, rf, linear or xgboost, found '{kind}'")
    if sample_fraction is not None:
        params = params.model_copy(
            update={"train": params.train.model_copy(update={"sample_fraction": sample_fraction})}
        )
    spark = _spark(settings)
    refuse_on_connect(kind, spark)
    experiment_id = configure_mlflow(settings)
    trips = read_trips(spark, settings.trips_path)
    data_info: dict[str, Any] = {"trips_path": str(settings.trips_path)}
    pickup_window = None
    if window_months is not None:
        from taxi_duration.cycle.job import recent_months

        pickup_window = recent_months(trips, window_months)
        if pickup_window is not None:
            data_info.update(window_from=pickup_window[0].isoformat(), window_to=pickup_window[1].isoformat())
    with _stage(console, f"training {kind}{' with tuning' if tune else ''}"):
        result = run_train(
            trips,
            kind=cast(ModelKind, kind),
            params=params,
            tune=tune,
            model_name=settings.model_name,
            experiment_id=experiment_id,
            data_info=data_info,
            pickup_window=pickup_window,
        )
    _print_metrics(console, result)
    if result.data["fit_fraction"] < 1.0:
        console.print(
            f"fitted on a sample of {result.data['fit_fraction']:.1%} of the {result.data['train_rows']:,} training "
            f"trips (train.max_fit_trips {params.train.max_fit_trips:,}); the travel-time table uses all of them"
        )
    if result.data["eval_fraction"] < 1.0:
        console.print(
            f"metrics on a sample of {result.data['eval_fraction']:.1%} of the {result.data['validation_rows']:,} "
            f"validation trips (train.max_eval_trips {params.train.max_eval_trips:,})"
        )
    decision = result.promotion
    verdict = "promoted to champion" if decision["promote"] else "kept as challenger"
    console.print(f"model {result.model_name} v{result.model_version}: {verdict} ({decision['reason']})")
    console.print(f"run {result.run_id}; MLflow UI: {mlflow_ui_command(settings)}")
    if as_json:
        _emit_json(result.to_dict())


def score(
    ctx: typer.Context,
    alias: Annotated[
        str | None,
        typer.Option(
            help="Registered model alias to score with (default: registry.champion_alias in the pipeline config)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Batch-score the trips table with models:/<name>@<alias> into `predictions` (Parquet)."""
    from taxi_duration.lakehouse import read_trips
    from taxi_duration.score.job import run_score
    from taxi_duration.tracking import configure_mlflow

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    alias = _alias(settings, alias)
    spark = _spark(settings)
    configure_mlflow(settings)
    trips = read_trips(spark, settings.trips_path)
    with _stage(console, f"scoring trips with models:/{settings.model_name}@{alias}"):
        result = run_score(trips, settings.model_name, alias, settings.predictions_path)
    mean = f"{result.mean_predicted_minutes:.2f}" if result.mean_predicted_minutes is not None else "-"
    console.print(
        f"{result.rows:,} predictions by {result.model_name} v{result.model_version} "
        f"(mean {mean} min) -> {result.predictions_path}"
    )
    if as_json:
        _emit_json(result.to_dict())


def report(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="Number of busiest zone pairs.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Spark SQL analytics of the trips table: by borough, by hour and weekday, busiest zone pairs (HTML too)."""
    from taxi_duration.analytics.report import build_report, print_tables, register_views, render_html
    from taxi_duration.lakehouse import read_trips
    from taxi_duration.zones import zones_frame

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    spark = _spark(settings)
    trips = read_trips(spark, settings.trips_path)
    with _stage(console, "building the report with Spark SQL"):
        register_views(trips, zones_frame(spark))
        tables = build_report(spark, limit=limit)
        path = render_html(
            tables,
            settings.reports_path / "report.html",
            title="NYC taxi trips: duration and volume",
            subtitle=f"trips table: {settings.trips_path}",
        )
    # the 168-row weekday x hour table is in the HTML; the terminal gets the two short ones
    print_tables({k: v for k, v in tables.items() if k != "by_hour_weekday"}, console)
    console.print(f"report: {path}")
    if as_json:
        _emit_json(
            {
                "report_path": str(path),
                "by_borough": tables["by_borough"].to_dict(orient="records"),
                "zone_pairs": tables["zone_pairs"].head(limit).to_dict(orient="records"),
            }
        )


def demo(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option(min=1000, help="Synthetic trips to generate.")] = 1_000_000,
    model: Annotated[str, typer.Option(help="gbt, rf, linear or xgboost.")] = "gbt",
    as_json: JsonOption = False,
) -> None:
    """End to end on the embedded default: generate, ingest (plus the real TLC sample), train, score, report."""
    from taxi_duration.zones import package_data_path

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    raw = settings.workspace / "raw" / "synthetic"
    console.rule("1/5 generate")
    ctx.invoke(
        generate,
        ctx=ctx,
        rows=rows,
        out=raw,
        fmt="parquet",
        seed=42,
        start="2024-01",
        months=3,
        service="yellow",
        partitions=None,
        as_json=False,
    )
    console.rule("2/5 ingest")
    samples = [
        package_data_path("taxis_sample_2019-03.csv"),
        package_data_path("yellow_tripdata_sample_2020-07.csv"),
    ]
    ctx.invoke(ingest, ctx=ctx, paths=[str(raw), *samples], as_json=False)
    console.rule("3/5 train")
    ctx.invoke(train, ctx=ctx, model=model, tune=False, sample_fraction=None, as_json=False)
    console.rule("4/5 score")
    ctx.invoke(score, ctx=ctx, alias=None, as_json=False)
    console.rule("5/5 report")
    ctx.invoke(report, ctx=ctx, limit=20, as_json=False)
    from taxi_duration.tracking import mlflow_ui_command

    console.rule("where to look")
    console.print(f"report:      {settings.reports_path / 'report.html'}")
    console.print(f"quality:     {settings.reports_path / 'quality_report.json'}")
    console.print(f"predictions: {settings.predictions_path}")
    console.print(f"MLflow UI:   {mlflow_ui_command(settings)}  (then open http://127.0.0.1:5000)")
    if as_json:
        _emit_json({"workspace": str(settings.workspace), "report": str(settings.reports_path / "report.html")})
