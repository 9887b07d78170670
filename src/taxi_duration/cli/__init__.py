"""The `taxi-duration` command: thin shells that parse options, build the session, call a stage, write.

One module per area (pipeline, monitoring, serving, streaming, ops, bench); this one builds the app with the global
options, registers the commands in the order `--help` lists them, and is the entry point (`main`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from taxi_duration.cli import bench, monitoring, ops, pipeline, serving, streaming
from taxi_duration.cli.common import Context, _alias, _emit_json, _fail, _json_emitted
from taxi_duration.errors import TaxiDurationError

__all__ = ["_alias", "app", "main"]

app = typer.Typer(
    name="taxi-duration",
    help="NYC taxi trip durations on PySpark, MLlib and MLflow: generate, ingest, train, score, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


# the order here is the order `taxi-duration --help` lists them in (commands first, then the groups)
for command in (
    pipeline.generate,
    pipeline.ingest,
    pipeline.train,
    pipeline.score,
    pipeline.report,
    monitoring.monitor,
    monitoring.cycle,
    serving.serve,
    serving.predict,
    pipeline.demo,
    streaming.stream,
    streaming.replay,
):
    app.command()(command)
app.command("class-archive")(ops.class_archive)
app.add_typer(ops.cluster_app, name="cluster")
app.add_typer(ops.connect_app, name="connect-server")
app.add_typer(bench.bench_app, name="bench")


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

        from taxi_duration.errors import spark_error_summary

        if isinstance(exc, PySparkException | Py4JJavaError) and not os.environ.get("TAXI_DURATION_DEBUG"):
            _fail(spark_error_summary(exc), 1, as_json, "(set TAXI_DURATION_DEBUG=1 for the full trace)\n")
        if as_json:
            _emit_json({"error": f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300], "code": 1})
        raise
