"""Serving without Spark: serve (FastAPI + uvicorn) and predict (a file in-process), from the registry or a folder.

The commands are plain functions; `cli/__init__.py` registers them on the app.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from taxi_duration.cli.common import JsonOption, _alias, _console, _emit_json, _params, _secret
from taxi_duration.settings import Settings


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
    from taxi_duration.serve.parquet import require_pyarrow
    from taxi_duration.serve.predictor import ExportedModel
    from taxi_duration.serve.request_log import FILE_BYTES, RequestLog

    settings: Settings = ctx.obj.settings
    if request_log is not None:  # before loading anything: the serving install has no pyarrow
        require_pyarrow(f"--request-log {request_log}")
    quality = _params(settings).quality  # the API refuses what ingest would quarantine, under the same --config
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

    log = None
    if request_log is not None:
        bound = request_log_mb * 1024 * 1024
        log = RequestLog(request_log, file_bytes=min(FILE_BYTES, bound // 4), max_bytes=bound)
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
        quality=quality,
    )
    # What is loaded by now (modules, the model, the zone tables) lives as long as the server: frozen out of the
    # collector's reach, so its collections stop walking it again and again. Measured side by side: about 20% more
    # requests/s at concurrency 16 and a lower p99 (docs/benchmarks.md). The cost: after a reload the first model's
    # compiled trees (a function and its namespace: a cycle) are never collected; once, a few hundred KB.
    gc.collect()
    gc.freeze()
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


def predict(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON-lines trips (TLC, Kaggle or canonical columns).")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output .parquet or .csv (default: FILE.predictions.parquet; .csv in a serving install without "
            "pyarrow)."
        ),
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
    from taxi_duration.serve.parquet import has_pyarrow, require_pyarrow

    console = _console(as_json)
    settings: Settings = ctx.obj.settings
    suffix = ".predictions.parquet" if has_pyarrow() else ".predictions.csv"
    target = out or file.with_name(file.name.split(".")[0] + suffix)
    if target.suffix != ".csv":  # before scoring: a serving install without pyarrow writes CSV only
        require_pyarrow(f"--out {target}")
    model = _exported_model(settings, _alias(settings, alias), model_dir)
    start = time.perf_counter()
    result = predict_file(model, file)
    seconds = time.perf_counter() - start
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
