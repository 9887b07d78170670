"""The `taxi-duration` command: thin shells that parse options, build the session, call a stage, write."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, cast, get_args

import typer
from rich.console import Console
from rich.table import Table

from taxi_duration.errors import TaxiDurationError
from taxi_duration.params import ModelKind
from taxi_duration.settings import Settings, get_settings

app = typer.Typer(
    name="taxi-duration",
    help="NYC taxi trip durations on PySpark, MLlib and MLflow: generate, ingest, train, score, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout as the last line.")]


class Context:
    """What the global options decided, shared by every command."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self.overrides = overrides
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings(**self.overrides)
        return self._settings


@app.callback()
def global_options(
    ctx: typer.Context,
    workspace: Annotated[
        Path | None,
        typer.Option(help="Workspace folder (tables, MLflow store, reports). Env: TAXI_DURATION_WORKSPACE."),
    ] = None,
    master: Annotated[
        str | None, typer.Option(help="Spark master: local[*] (default), spark://HOST:7077, yarn, k8s://...")
    ] = None,
    remote: Annotated[str | None, typer.Option(help="Spark Connect URL, e.g. sc://127.0.0.1:15002.")] = None,
    driver_memory: Annotated[str | None, typer.Option(help="Driver heap for local Spark (default 4g).")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: SQLite under the workspace).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Pipeline parameters YAML merged over the defaults.")] = None,
) -> None:
    """Global options go before the command: taxi-duration --workspace DIR --master URL COMMAND ..."""
    ctx.obj = Context(
        {
            "workspace": workspace,
            "master": master,
            "remote": remote,
            "driver_memory": driver_memory,
            "tracking_uri": tracking_uri,
            "config": config,
        }
    )


def _console(as_json: bool) -> Console:
    # with --json the human-readable output goes to stderr so stdout carries only the JSON line
    console = Console(stderr=as_json, highlight=False)
    if not console.is_terminal:
        console.width = 140  # logs and CI: wide enough for the tables
    return console


_json_emitted: list[bool] = []  # whether this process printed its JSON line (an exit code after it is not an error)


def _emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()
    _json_emitted.append(True)


@contextmanager
def _stage(console: Console, message: str) -> Iterator[None]:
    start = time.perf_counter()
    with console.status(f"{message} ..."):
        yield
    console.print(f"[green]done[/green] {message} ({time.perf_counter() - start:.1f} s)")


def _spark(settings: Settings) -> Any:
    from taxi_duration.spark import get_spark

    return get_spark(settings)


def _params(settings: Settings) -> Any:
    from taxi_duration.params import load_params

    return load_params(settings.config)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _alias(settings: Settings, given: str | None) -> str:
    """An alias option, else the champion alias of the pipeline config (the one `train` moves)."""
    return given if given is not None else str(_params(settings).registry.champion_alias)


@app.command()
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
    from taxi_duration.generate.synthetic import month_row_counts, synthetic_trips

    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"--format: expected csv or parquet, found '{fmt}'")
    if service not in ("yellow", "green"):
        raise ConfigError(f"--service: expected yellow or green, found '{service}'")
    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    spark = _spark(settings)
    out = out or settings.workspace / "raw" / "synthetic"
    plan = month_row_counts(rows, start, months)
    written = []
    for index, (year, month, count) in enumerate(plan):
        target = out / f"{service}_tripdata_{year:04d}-{month:02d}"
        with _stage(console, f"generating {count:,} {service} trips for {year:04d}-{month:02d} -> {target}"):
            trips = synthetic_trips(
                spark, count, year, month, seed=seed + index, service=service, partitions=partitions
            )
            writer = trips.write.mode("overwrite")
            if fmt == "csv":
                writer.option("header", True).option("timestampFormat", "yyyy-MM-dd HH:mm:ss").csv(str(target))
            else:
                writer.parquet(str(target))
        written.append(str(target))
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


@app.command()
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


@app.command()
def train(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option(help="gbt (default), rf (classic distance/hour/day_of_week RF) or linear.")
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

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    params = _params(settings)
    kind = model or params.train.model
    if kind not in get_args(ModelKind):
        raise ConfigError(f"--model: expected gbt, rf or linear, found '{kind}'")
    if sample_fraction is not None:
        params = params.model_copy(
            update={"train": params.train.model_copy(update={"sample_fraction": sample_fraction})}
        )
    spark = _spark(settings)
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
    decision = result.promotion
    verdict = "promoted to champion" if decision["promote"] else "kept as challenger"
    console.print(f"model {result.model_name} v{result.model_version}: {verdict} ({decision['reason']})")
    console.print(f"run {result.run_id}; MLflow UI: {mlflow_ui_command(settings)}")
    if as_json:
        _emit_json(result.to_dict())


@app.command()
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


@app.command()
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


# --- monitoring: monitor, cycle -------------------------------------------------------------------------------


def _date_option(text: str | None, option: str) -> Any:
    from datetime import datetime

    from taxi_duration.errors import ConfigError

    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option}: expected a date like 2020-04-01 (or 2020-04-01T06:00), found '{text}'") from None


def _print_monitor(console: Console, result: Any) -> None:
    table = Table(title=f"Drift: {result.current['from'][:10]} .. {result.current['to'][:10]} vs reference")
    for name in ("feature", "PSI", "JS distance", "drifted"):
        table.add_column(name, justify="left" if name == "feature" else "right")
    for row in result.features:
        psi = "-" if row["psi"] is None else f"{row['psi']:.3f}"
        js = "-" if row["js_distance"] is None else f"{row['js_distance']:.3f}"
        flag = "zero variance" if row["zero_variance"] else ("yes" if row["drifted"] else "")
        table.add_row(row["feature"], psi, js, flag)
    console.print(table)
    realized = result.realized
    if realized["rmsle"] is not None:
        console.print(
            f"realised RMSLE {realized['rmsle']:.4f} vs validation {realized['reference_rmsle'] or float('nan'):.4f} "
            f"(ratio {realized['ratio'] or float('nan'):.2f}); {result.rows_current:,} current trips, "
            f"{result.rows_reference:,} reference trips"
        )
    verdict = "[red]ALERT[/red]: " + "; ".join(result.reasons) if result.alert else "[green]no alert[/green]"
    console.print(verdict)
    if result.report_path:
        console.print(f"report: {result.report_path}\ntables: {result.monitoring_path}; MLflow run {result.run_id}")


@app.command()
def monitor(
    ctx: typer.Context,
    from_: Annotated[str, typer.Option("--from", help="First pickup date of the current window (inclusive).")],
    to: Annotated[str, typer.Option("--to", help="End of the current window (exclusive).")],
    reference_from: Annotated[
        str | None, typer.Option(help="Reference start (default: the champion's first training pickup).")
    ] = None,
    reference_to: Annotated[
        str | None, typer.Option(help="Reference end, exclusive (default: after its last training pickup).")
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option(
            help="Registry alias of the model to monitor (default: registry.champion_alias in the pipeline config)."
        ),
    ] = None,
    window: Annotated[str, typer.Option(help="Time series inside the window: day, week or month.")] = "week",
    source: Annotated[str, typer.Option(help="trips (the lakehouse) or stream (the stream's predictions).")] = (
        "trips"
    ),
    fail_on_alert: Annotated[
        bool, typer.Option("--fail-on-alert", help="Exit with code 4 when there is an alert (2 is bad input).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Drift (PSI, Jensen-Shannon) of features, target and prediction, the champion's realised error, and quality
    drift, current window against the champion's training window; tables, MLflow run, HTML report, one decision."""
    from taxi_duration.monitor.command import monitor_command

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    result = monitor_command(
        settings,
        _params(settings),
        start=_date_option(from_, "--from"),
        end=_date_option(to, "--to"),
        reference_from=_date_option(reference_from, "--reference-from"),
        reference_to=_date_option(reference_to, "--reference-to"),
        alias=_alias(settings, alias),
        window=window,
        source=source,
        spark=_spark(settings),
    )
    _print_monitor(console, result)
    if as_json:
        _emit_json(result.to_dict())
    if fail_on_alert and result.alert:
        from taxi_duration.monitor.job import ALERT_EXIT_CODE

        raise typer.Exit(ALERT_EXIT_CODE)


@app.command()
def cycle(
    ctx: typer.Context,
    files: Annotated[list[str], typer.Argument(help="New trip files (as for ingest); known files are skipped.")],
    force: Annotated[bool, typer.Option("--force", help="Retrain even without an alert (and re-monitor).")] = False,
    no_retrain: Annotated[
        bool,
        typer.Option(
            "--no-retrain", help="Stop after monitoring (a scheduler branches on the result, e.g. a Databricks job)."
        ),
    ] = False,
    window: Annotated[str, typer.Option(help="Monitoring time series: day, week or month.")] = "week",
    fail_on_alert: Annotated[
        bool, typer.Option("--fail-on-alert", help="Exit with code 4 when the monitor alerted (after retraining).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Ingest new months, score them with the champion, monitor them, retrain on the newest
    `train.window_months` months when alerted (or --force), promote if the challenger wins on the newest trips.
    Idempotent: the same files a second time change nothing."""
    from taxi_duration.cycle.job import run_cycle

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    result = run_cycle(
        _spark(settings),
        settings,
        _params(settings),
        files,
        force=force,
        retrain=not no_retrain,
        window=window,
        log=lambda line: console.print(line, markup=False, highlight=False),
    )
    if as_json:
        _emit_json(result.to_dict())
    if fail_on_alert and result.monitor and result.monitor.get("alert"):
        from taxi_duration.monitor.job import ALERT_EXIT_CODE

        raise typer.Exit(ALERT_EXIT_CODE)


def _serving_client() -> None:
    """A registry that does not answer fails in seconds, not after MLflow's minutes of retries (env overrides)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def _model_source(settings: Settings, alias: str, model_dir: Path | None) -> tuple[Any, Any, str]:
    """(loader, probe, what) for an exported model folder or a registry alias; nothing loaded yet."""
    from taxi_duration.serve.predictor import ExportedModel

    if model_dir is not None:
        return (lambda: ExportedModel.load(model_dir)), None, f"--model-dir {model_dir}"
    from taxi_duration.serve.champion import alias_loader, connect_registry

    _serving_client()
    connect_registry(settings.mlflow_tracking_uri, settings.registry_uri)
    loader, probe = alias_loader(settings.model_name, alias)
    return loader, probe, f"models:/{settings.model_name}@{alias}"


def _load_first(loader: Any, what: str) -> Any:
    """Load once now, so a wrong folder, registry or alias is one line and exit 2 before anything starts."""
    from taxi_duration.errors import ModelNotFoundError

    model = loader()
    if model is None:
        raise ModelNotFoundError(
            f"{what}: no such registered model or alias; expected an alias set by `taxi-duration train` "
            "(champion, challenger) or an exported model folder (--model-dir)"
        )
    return model


def _exported_model(settings: Settings, alias: str, model_dir: Path | None) -> Any:
    loader, _, what = _model_source(settings, alias, model_dir)
    return _load_first(loader, what)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to bind; 127.0.0.1 unless you mean to expose it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    model_alias: Annotated[
        str | None,
        typer.Option(
            help="Registry alias to serve and follow (default: registry.champion_alias in the pipeline config)."
        ),
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Serve an exported model folder instead of the registry alias.")
    ] = None,
    shadow_alias: Annotated[
        str | None, typer.Option(help="Also score every ride with this alias (e.g. challenger); answer with the first.")
    ] = None,
    shadow_dir: Annotated[Path | None, typer.Option(help="A shadow model from an exported folder instead.")] = None,
    request_log: Annotated[
        Path | None, typer.Option(help="Append every predicted ride to Parquet files in this folder (off: nothing).")
    ] = None,
    request_log_mb: Annotated[int, typer.Option(min=1, help="Disk bound of the request log; oldest files go.")] = 1024,
    poll_seconds: Annotated[float, typer.Option(min=0, help="How often to check the alias (0: never).")] = 30.0,
    max_batch: Annotated[int, typer.Option(min=1, help="Most rides per /predict/batch request.")] = 1000,
    max_body_kb: Annotated[int, typer.Option(min=1, help="Largest request body; beyond it 413.")] = 1024,
    body_seconds: Annotated[
        float, typer.Option(min=0.1, help="Time for a request body to arrive; beyond it 408.")
    ] = 10.0,
    admin_key: Annotated[
        str | None,
        typer.Option(help="Key for POST /admin/reload (X-API-Key). Default: TAXI_DURATION_ADMIN_KEY (or .env)."),
    ] = None,
) -> None:
    """Serve predictions over HTTP (FastAPI + uvicorn) from the exported champion: no Spark, no JVM."""
    import uvicorn

    from taxi_duration.serve.app import create_app
    from taxi_duration.serve.predictor import ExportedModel
    from taxi_duration.serve.request_log import RequestLog

    settings: Settings = ctx.obj.settings
    loader, probe, what = _model_source(settings, _alias(settings, model_alias), model_dir)
    first = [_load_first(loader, what)]
    shadow_loader = shadow_probe = None
    if shadow_dir is not None:
        shadow_loader, shadow_what = (lambda: ExportedModel.load(shadow_dir)), f"--shadow-dir {shadow_dir}"
    elif shadow_alias is not None:
        shadow_loader, shadow_probe, shadow_what = _model_source(settings, shadow_alias, None)
    shadow_first = [_load_first(shadow_loader, shadow_what)] if shadow_loader is not None else []

    def once(initial: list[Any], load: Any) -> Any:
        return lambda: initial.pop() if initial else load()  # the model loaded above, then the loader

    log = RequestLog(request_log, max_bytes=request_log_mb * 1024 * 1024) if request_log is not None else None
    if log is not None:
        log.file_bytes = min(log.file_bytes, log.max_bytes // 4)
    app_ = create_app(
        once(first, loader),
        admin_key if admin_key is not None else _secret(settings.admin_key),
        max_batch,
        probe=probe,
        poll_seconds=poll_seconds if probe is not None or shadow_probe is not None else 0.0,
        shadow_loader=once(shadow_first, shadow_loader) if shadow_loader is not None else None,
        shadow_probe=shadow_probe,
        request_log=log,
        max_body_bytes=max_body_kb * 1024,
        body_seconds=body_seconds,
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


@app.command()
def predict(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON-lines trips (TLC, Kaggle or canonical columns).")],
    out: Annotated[
        Path | None, typer.Option(help="Output .parquet or .csv (default: FILE.predictions.parquet).")
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option(help="Registry alias of the model (default: registry.champion_alias in the pipeline config)."),
    ] = None,
    model_dir: Annotated[Path | None, typer.Option(help="An exported model folder instead of the registry.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Score a small file in-process with the exported model (no Spark start-up): for quick batches."""
    from taxi_duration.serve.batch_file import predict_file

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    model = _exported_model(settings, _alias(settings, alias), model_dir)
    start = time.perf_counter()
    result = predict_file(model, file)
    seconds = time.perf_counter() - start
    target = out or file.with_name(file.name.split(".")[0] + ".predictions.parquet")
    if target.suffix == ".csv":
        result.to_csv(target, index=False)
    else:
        result.to_parquet(target, index=False)
    scored = int(result["predicted_duration_minutes"].notna().sum())
    console.print(
        f"{len(result):,} trips ({scored:,} with a prediction) by {model.name} v{model.version} "
        f"in {seconds:.2f} s ({len(result) / max(seconds, 1e-9):,.0f} trips/s) -> {target}"
    )
    if as_json:
        _emit_json(
            {
                "rows": len(result),
                "predicted": scored,
                "model_version": model.version,
                "path": str(target),
                "seconds": seconds,
            }
        )


@app.command()
def demo(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option(min=1000, help="Synthetic trips to generate.")] = 1_000_000,
    model: Annotated[str, typer.Option(help="gbt, rf or linear.")] = "gbt",
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


cluster_app = typer.Typer(
    help="A Spark standalone cluster on this machine (master + workers from the installed pyspark).",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("start")
def cluster_start(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option(min=1, help="Number of workers.")] = 2,
    cores: Annotated[int, typer.Option(min=1, help="Cores per worker.")] = 1,
    memory: Annotated[str, typer.Option(help="Memory per worker for executors, e.g. 1g.")] = "1g",
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Master port.")] = 7077,
    webui_port: Annotated[int, typer.Option(help="Master web UI port.")] = 8080,
    authenticate: Annotated[
        bool, typer.Option("--authenticate", help="Require a generated shared secret (spark.authenticate).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Start a master and workers in the background; return when every worker has registered."""
    from taxi_duration.cluster import start_cluster

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    with _stage(console, f"starting a master and {workers} worker(s) of {cores} core(s), {memory}"):
        info = start_cluster(
            settings.workspace,
            workers=workers,
            cores=cores,
            memory=memory,
            host=host,
            port=port,
            webui_port=webui_port,
            authenticate=authenticate,
        )
    console.print(f"master [bold]{info.master_url}[/bold], web UI {info.webui_url}, logs in {info.cluster_dir}/logs")
    if info.authenticate:
        console.print(f"shared secret in {info.auth_conf} (mode 0600); clients need it:")
    console.print(info.client_instructions(), markup=False)
    if as_json:
        _emit_json(info.to_dict())


@cluster_app.command("status")
def cluster_status_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Master URL, live daemons, and workers/cores as the master sees them."""
    from taxi_duration.cluster import cluster_status

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    status = cluster_status(settings.workspace)
    table = Table(title="Spark standalone cluster", show_header=False)
    for key, value in status.items():
        table.add_row(key, str(value))
    console.print(table)
    if as_json:
        _emit_json(status)


@cluster_app.command("stop")
def cluster_stop(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Stop this workspace's cluster (SIGTERM, then SIGKILL after 15 s)."""
    from taxi_duration.cluster import stop_cluster

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    stopped = stop_cluster(settings.workspace)
    console.print(f"stopped {len(stopped)} process(es)" + (f": {', '.join(map(str, stopped))}" if stopped else ""))
    if as_json:
        _emit_json({"stopped_pids": stopped})


connect_app = typer.Typer(
    help="A Spark Connect server on this machine (from the installed pyspark); commands reach it with --remote.",
    no_args_is_help=True,
)
app.add_typer(connect_app, name="connect-server")


@connect_app.command("start")
def connect_start(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="gRPC port.")] = 15002,
    spark_master: Annotated[
        str, typer.Option(help="Where the server's Spark runs: local[*] or a cluster, e.g. spark://127.0.0.1:7077.")
    ] = "local[*]",
    server_memory: Annotated[str, typer.Option(help="The server's driver heap.")] = "2g",
    token: Annotated[
        bool, typer.Option("--token/--no-token", help="Require a generated bearer token (default: on).")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Start a Spark Connect server in the background; return when it accepts connections."""
    from taxi_duration.cluster.connect import start_connect_server

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    with _stage(console, f"starting a Spark Connect server on {host}:{port} (Spark: {spark_master})"):
        info = start_connect_server(
            settings.workspace,
            host=host,
            port=port,
            master=spark_master,
            driver_memory=server_memory,
            authenticate=token,
        )
    console.print(f"Spark Connect at [bold]{info.public_url}[/bold] (pid {info.pid}), log {info.log}")
    if info.url_file:
        console.print(f"the URL with its token is in {info.url_file} (mode 0600); clients:")
    console.print(info.client_instructions(), markup=False)
    if as_json:
        _emit_json(info.to_dict())


@connect_app.command("status")
def connect_status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Whether this workspace's Connect server runs and accepts connections."""
    from taxi_duration.cluster.connect import connect_server_status

    console = _console(as_json)
    status = connect_server_status(ctx.obj.settings.workspace)
    table = Table(title="Spark Connect server", show_header=False)
    for key, value in status.items():
        table.add_row(key, str(value))
    console.print(table)
    if as_json:
        _emit_json(status)


@connect_app.command("stop")
def connect_stop(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Stop this workspace's Connect server (SIGTERM, then SIGKILL after 15 s)."""
    from taxi_duration.cluster.connect import stop_connect_server

    console = _console(as_json)
    stopped = stop_connect_server(ctx.obj.settings.workspace)
    console.print(f"stopped {len(stopped)} process(es)" + (f": {', '.join(map(str, stopped))}" if stopped else ""))
    if as_json:
        _emit_json({"stopped_pids": stopped})


# --- streaming: stream, replay --------------------------------------------------------------------------------


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


@app.command()
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
    from taxi_duration.stream.job import StreamOptions, StreamPaths, run_stream
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


@app.command()
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
    from taxi_duration.stream.job import StreamPaths
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


bench_app = typer.Typer(
    help="Benchmarks: the same workload on pandas, Polars, DuckDB and Spark (docs/benchmarks.md).",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


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


def _fail(message: str, code: int, as_json: bool, hint: str = "") -> None:
    """The one way a failed command ends: one terminal-safe line on stderr (control characters from users' files
    escaped), with --json also `{"error": ..., "code": ...}` as the last line of stdout, and the exit code."""
    from taxi_duration.errors import terminal_safe

    sys.stderr.write(f"error: {terminal_safe(message)}\n{hint}")
    if as_json:
        _emit_json({"error": message, "code": code})
    sys.exit(code)


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    as_json = "--json" in sys.argv[1:]
    _json_emitted.clear()
    try:
        app()
    except TaxiDurationError as exc:
        _fail(str(exc), exc.exit_code, as_json)
    except KeyboardInterrupt:
        _fail("interrupted", 130, as_json)
    except SystemExit as exc:  # usage errors (bad option, missing argument) were printed by typer
        if as_json and exc.code not in (0, None) and not _json_emitted:  # e.g. monitor --fail-on-alert printed
            code = exc.code if isinstance(exc.code, int) else 1
            _emit_json({"error": "invalid command line (the message above says what)", "code": code})
        raise
    except Exception as exc:
        from py4j.protocol import Py4JJavaError
        from pyspark.errors import PySparkException

        from taxi_duration.ingest.readers import spark_error_summary

        if isinstance(exc, PySparkException | Py4JJavaError) and not os.environ.get("TAXI_DURATION_DEBUG"):
            _fail(spark_error_summary(exc), 1, as_json, "(set TAXI_DURATION_DEBUG=1 for the full trace)\n")
        if as_json:
            _emit_json({"error": f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300], "code": 1})
        raise


if __name__ == "__main__":
    main()
