"""The prediction API: an exported model behind FastAPI, no JVM, one ride in microseconds of model time.

    POST /predict          {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66} -> minutes
    POST /predict/batch    {"rides": [...]} (at most `max_batch`), predictions in request order
    GET  /health           the process answers
    GET  /ready            a model is loaded (503 if not)
    GET  /model            name, version, kind, metrics, features
    GET  /metrics          Prometheus text: requests, latency, model version, shadow agreement, request log
    POST /admin/reload     header X-API-Key: call the loader again and swap the model atomically
    GET  /                 the trip estimator page for people (zones by name, the model card, live counters)
    GET  /zones, /stats    what the page reads: the TLC zones; counters as JSON

Invalid input is a 422 whose body names each field and rule (bounds: the pipeline's quality parameters); a body
beyond the size limit is a 413 (before it is read), one that does not arrive in time a 408; a missing model is a
503. With a shadow model every ride is also scored by it (the answer is the served model's) and their agreement is
in /metrics and /model; with a request log every predicted ride is appended to Parquet off the request path.

`create_app` only puts the parts together: request bodies (`models`), routes (`routes`, with `deps`), the models
served and their reloads (`serving`), errors (`errors`), metrics (`metrics`) and body limits (`limits`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from taxi_duration import __version__
from taxi_duration.params import QualityParams
from taxi_duration.serve.errors import add_error_handlers
from taxi_duration.serve.fast_route import FastJsonRoute
from taxi_duration.serve.limits import BodyLimits
from taxi_duration.serve.metrics import Metrics, MetricsMiddleware
from taxi_duration.serve.models import DEFAULT_QUALITY, Ride, now_new_york, request_models
from taxi_duration.serve.predictor import ExportedModel
from taxi_duration.serve.request_log import RequestLog
from taxi_duration.serve.routes import admin_router, metrics_router, page_router, predict_router, status_router
from taxi_duration.serve.serving import Serving

__all__ = ["Ride", "create_app", "now_new_york"]  # Ride (package-default bounds) and now_new_york: as before

MAX_BODY_BYTES = 1024 * 1024  # a batch of 1,000 rides is about 150 KB
BODY_SECONDS = 10.0


def create_app(
    loader: Callable[[], ExportedModel | None],
    admin_key: str | None,
    max_batch: int = 1000,
    probe: Callable[[], str | None] | None = None,
    poll_seconds: float = 0.0,
    *,
    shadow_loader: Callable[[], ExportedModel | None] | None = None,
    shadow_probe: Callable[[], str | None] | None = None,
    request_log: RequestLog | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_seconds: float = BODY_SECONDS,
    quality: QualityParams | None = None,
    fast_route: bool = True,
) -> FastAPI:
    """An app serving what `loader()` returns (called now, and again on POST /admin/reload).

    `admin_key` None disables the admin endpoint. `max_batch` bounds /predict/batch. With a `probe` (the version
    the registry alias points to) and `poll_seconds` > 0, the app follows the alias: when the probed version
    differs from the one served, it loads the new one in a worker thread and swaps it in between requests.
    `shadow_loader` (and `shadow_probe`) do the same for a shadow model that scores every ride too without
    answering, after the answer. `request_log` receives every predicted ride; it is closed (flushed) when the app
    shuts down.
    Bodies beyond `max_body_bytes` are refused (413) and must arrive within `body_seconds` (408). A ride must
    keep `quality`'s bounds (the pipeline config's `quality` section; default: the package defaults), which the
    app's OpenAPI schema states. `fast_route` False serves the prediction endpoints with FastAPI's own route class
    instead of `FastJsonRoute` (same answers, slower: for the side-by-side benchmark)."""
    models = request_models(quality if quality is not None else DEFAULT_QUALITY, max_batch)
    metrics = Metrics()
    serving = Serving(
        loader,
        metrics,
        probe=probe,
        shadow_loader=shadow_loader,
        shadow_probe=shadow_probe,
        request_log=request_log,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(serving.follow(poll_seconds)) if serving.follows and poll_seconds > 0 else None
        yield
        if task is not None:
            task.cancel()
        serving.observe_pending()  # the shadow's last rides (and their request log rows)
        if request_log is not None:
            await asyncio.to_thread(request_log.close)

    app = FastAPI(
        lifespan=lifespan,
        title="Taxi trip duration",
        version=__version__,
        description="Predicted NYC taxi trip durations from the exported champion model (no Spark at serving time).",
    )
    add_error_handlers(app)
    app.state.metrics = metrics
    app.state.serving = serving
    app.state.admin_key = admin_key
    predict = predict_router(models, serving, FastJsonRoute if fast_route else APIRoute)
    for router in (predict, status_router, metrics_router, page_router, admin_router):
        app.include_router(router)
    app.add_middleware(MetricsMiddleware, metrics=metrics, counted=serving.count_request)
    app.add_middleware(BodyLimits, max_bytes=max_body_bytes, seconds=body_seconds)
    return app
