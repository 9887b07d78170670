"""Monitoring: monitor (drift, realised error, one decision) and cycle (ingest, score, monitor, retrain).

The commands are plain functions; `cli/__init__.py` registers them on the app.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from taxi_duration.cli.common import JsonOption, _alias, _console, _emit_json, _params, _spark
from taxi_duration.settings import Settings


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
    samples = {period: share for period, share in result.sampled.items() if share < 1.0}
    if samples:
        shares = ", ".join(f"{share:.2%} of the {period} trips" for period, share in samples.items())
        console.print(f"statistics on a sample chosen by trip id (monitor.max_trips): {shares}")
    verdict = "[red]ALERT[/red]: " + "; ".join(result.reasons) if result.alert else "[green]no alert[/green]"
    console.print(verdict)
    if result.report_path:
        console.print(f"report: {result.report_path}\ntables: {result.monitoring_path}; MLflow run {result.run_id}")


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
