"""Local Spark services: `cluster` (a standalone master and workers) and `connect-server` (Spark Connect)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from taxi_duration.cli.common import JsonOption, _console, _emit_json, _stage
from taxi_duration.settings import Settings


def _report_status(status: dict[str, Any], title: str, as_json: bool) -> None:
    table = Table(title=title, show_header=False)
    for key, value in status.items():
        table.add_row(key, str(value))
    _console(as_json).print(table)
    if as_json:
        _emit_json(status)


def _report_stopped(stopped: list[int], as_json: bool) -> None:
    listed = f": {', '.join(map(str, stopped))}" if stopped else ""
    _console(as_json).print(f"stopped {len(stopped)} process(es){listed}")
    if as_json:
        _emit_json({"stopped_pids": stopped})


cluster_app = typer.Typer(
    help="A Spark standalone cluster on this machine (master + workers from the installed pyspark).",
    no_args_is_help=True,
)


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

    _report_status(cluster_status(ctx.obj.settings.workspace), "Spark standalone cluster", as_json)


@cluster_app.command("stop")
def cluster_stop(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Stop this workspace's cluster (SIGTERM, then SIGKILL after 15 s)."""
    from taxi_duration.cluster import stop_cluster

    _report_stopped(stop_cluster(ctx.obj.settings.workspace), as_json)


connect_app = typer.Typer(
    help="A Spark Connect server on this machine (from the installed pyspark); commands reach it with --remote.",
    no_args_is_help=True,
)


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

    _report_status(connect_server_status(ctx.obj.settings.workspace), "Spark Connect server", as_json)


@connect_app.command("stop")
def connect_stop(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Stop this workspace's Connect server (SIGTERM, then SIGKILL after 15 s)."""
    from taxi_duration.cluster.connect import stop_connect_server

    _report_stopped(stop_connect_server(ctx.obj.settings.workspace), as_json)


def class_archive(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Build it again even if a usable one exists.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the JVM class archive that makes every later local Spark session start 2-4 s sooner (once per machine,
    and again after a Java or pyspark upgrade); runs generate, ingest and report on 20,000 synthetic trips."""
    import tempfile

    from taxi_duration import jvm
    from taxi_duration.errors import ConfigError
    from taxi_duration.spark import class_archive as archive_for
    from taxi_duration.spark import configure_driver_process, get_spark, stop_jvm

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    if settings.remote:
        raise ConfigError("class-archive: the archive is for a driver JVM this machine starts; drop --remote")
    archive = archive_for(settings)
    if archive is None:
        raise ConfigError("class-archive: no `java` found (JAVA_HOME or PATH) to build it for")
    if force or not jvm.usable(archive):
        archive.parent.mkdir(parents=True, exist_ok=True)
        scratch = jvm.scratch_path(archive)
        configure_driver_process(settings)
        with tempfile.TemporaryDirectory(prefix="class-archive-") as folder:
            # the archive is keyed by the JVM options, not the workspace: a scratch one keeps the user's untouched
            scratch_settings = settings.model_copy(update={"workspace": Path(folder)})
            with _stage(console, f"running generate, ingest and report with Java recording the classes to {archive}"):
                spark = get_spark(scratch_settings, "taxi-duration-class-archive", archive_classes_to=scratch)
                try:
                    _archive_workload(spark, scratch_settings)
                except BaseException:
                    stop_jvm(spark)
                    scratch.unlink(missing_ok=True)  # the classes of a run cut short: not kept
                    raise
                code = stop_jvm(spark)
            if code != 0 or not scratch.is_file():
                scratch.unlink(missing_ok=True)
                raise ConfigError(f"class-archive: Java exited with {code} without writing {scratch}")
            size = jvm.install(scratch, archive)
        console.print(f"class archive {archive} ({size / 1e6:.0f} MB): local sessions use it from now on")
    else:
        size = archive.stat().st_size
        console.print(f"class archive {archive} is up to date ({size / 1e6:.0f} MB)")
    if as_json:
        _emit_json({"path": str(archive), "bytes": size})


def _archive_workload(spark: Any, settings: Settings) -> None:
    """What most commands do, small: the classes it loads are the ones worth archiving."""
    from taxi_duration.analytics.report import build_report, register_views
    from taxi_duration.generate.output import plan_months, write_month
    from taxi_duration.ingest.job import run_ingest
    from taxi_duration.lakehouse import read_trips
    from taxi_duration.params import load_params
    from taxi_duration.zones import zones_frame

    raw = settings.workspace / "raw"
    for fmt, month in zip(("parquet", "csv"), plan_months(raw, 20_000, "2024-01", 2, 42, "yellow"), strict=True):
        write_month(spark, month, fmt)
    run_ingest(spark, [str(raw)], settings.trips_path, settings.quarantine_path, load_params(settings.config).quality)
    register_views(read_trips(spark, settings.trips_path), zones_frame(spark))
    build_report(spark, limit=5)
