"""The API's routes, one router per area: predictions, status, metrics, the page, admin.

The prediction router is built per app (`predict_router(models)`) because its request bodies are that app's
`Ride` and `BatchRequest` classes (bounds from its quality parameters); the other routers are shared. Handlers
get what they need from `deps` and answer with the models of `models`.
"""

# no `from __future__ import annotations`: FastAPI reads the per-app request classes from the annotations at runtime

from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.background import BackgroundTask

from taxi_duration.serve.deps import CurrentModel, MetricsDep, ServingDep, require_admin
from taxi_duration.serve.errors import ApiError, printable
from taxi_duration.serve.fast_route import FastJsonRoute
from taxi_duration.serve.models import (
    BatchPrediction,
    ErrorBody,
    ModelInfo,
    Prediction,
    ReloadResult,
    RequestModels,
    RidePrediction,
    Stats,
    Status,
    ValidationErrorBody,
    Zone,
)
from taxi_duration.serve.serving import NO_MODEL, Serving
from taxi_duration.zones import MAX_ZONE_ID, load_zones

Answer = TypeVar("Answer", bound=BaseModel)
PAGE_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body cannot be read as JSON text (e.g. it is not UTF-8)"},
    422: {"model": ValidationErrorBody, "description": "Invalid request: each error names its field"},
    408: {"model": ErrorBody, "description": "The body did not arrive in time"},
    413: {"model": ErrorBody, "description": "The body is larger than the server's limit"},
}
NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": ErrorBody, "description": "No model loaded"}}


# ---------------------------------------------------------------------------------------------- predictions


def _then_observe(answer: Answer, serving: Serving) -> Answer | Response:
    """The answer, as is; when rides wait for the shadow model (answered in a worker thread, which cannot schedule
    on the event loop), as JSON (None fields left out as the routes declare) with their scoring as a background
    task, run once the response has been sent."""
    if not serving.pending:
        return answer
    return Response(
        answer.model_dump_json(exclude_none=True),
        media_type="application/json",
        background=BackgroundTask(serving.observe),
    )


def predict_router(models: RequestModels, serving: Serving, route_class: type[APIRoute] = FastJsonRoute) -> APIRouter:
    """POST /predict and /predict/batch over `models.ride` and `models.batch` (one app's bounds), answered by
    `serving`: the app's, given here rather than as a dependency, which would cost FastAPI a second round of
    dependency solving per ride.

    The body annotations are that app's classes, which FastAPI reads at runtime (validation and OpenAPI); mypy
    cannot take a class built at runtime as a type, hence the ignores (the bodies are `Ride`/`BatchRequest`)."""
    router = APIRouter(route_class=route_class)  # FastJsonRoute: a valid ride skips FastAPI's generic handler

    @router.post(
        "/predict", response_model=Prediction, response_model_exclude_none=True, responses={**ERRORS, **NOT_READY}
    )
    async def predict(ride: models.ride) -> Prediction | Response:  # type: ignore[name-defined]
        model = serving.current()  # after validation: an invalid ride is a 422 with or without a model
        minutes = serving.score(model, ride, "ride")
        serving.counted(model, 1)
        answer = Prediction(
            duration_minutes=minutes,
            model_name=model.name,
            model_version=model.version,
            regime=ride.regime,
            ride_id=ride.ride_id,
        )
        return _then_observe(answer, serving)

    @router.post(
        "/predict/batch",
        response_model=BatchPrediction,
        response_model_exclude_none=True,
        responses={**ERRORS, **NOT_READY},
    )
    def predict_batch(batch: models.batch) -> BatchPrediction | Response:  # type: ignore[name-defined]
        model = serving.current()
        predictions = [
            RidePrediction(
                duration_minutes=serving.score(model, ride, f"rides.{i}"),
                regime=ride.regime,
                ride_id=ride.ride_id,
            )
            for i, ride in enumerate(batch.rides)
        ]
        serving.counted(model, len(predictions))
        answer = BatchPrediction(model_name=model.name, model_version=model.version, predictions=predictions)
        return _then_observe(answer, serving)

    return router


# ---------------------------------------------------------------------------------------------- status

status_router = APIRouter()


@status_router.get("/health", response_model=Status, response_model_exclude_none=True)
async def health() -> Status:
    return Status(status="ok")


@status_router.get(
    "/ready", response_model=Status, response_model_exclude_none=True, responses={503: {"model": Status}}
)
async def ready(serving: ServingDep) -> Status | JSONResponse:
    model = serving.model
    if model is None:
        detail = f"{NO_MODEL}; {serving.last_error}" if serving.last_error else NO_MODEL
        return JSONResponse(status_code=503, content={"status": "not ready", "detail": detail})
    return Status(status="ready", model_name=model.name, model_version=model.version, detail=serving.last_error)


@status_router.get("/model", response_model=ModelInfo, response_model_exclude_none=True, responses=NOT_READY)
async def model_info(model: CurrentModel, serving: ServingDep) -> ModelInfo:
    return ModelInfo(**model.info(), shadow=serving.shadow_info())


@status_router.get("/zones", response_model=list[Zone])
async def zones() -> list[Zone]:
    return [
        Zone(id=z.location_id, zone=z.zone, borough=z.borough) for z in load_zones() if z.location_id <= MAX_ZONE_ID
    ]


@status_router.get("/stats", response_model=Stats, response_model_exclude_none=True)
async def stats(serving: ServingDep, metrics: MetricsDep) -> Stats:
    with serving.counts:
        requests, predicted = serving.requests, serving.predicted
    request_log = serving.request_log
    return Stats(
        requests=requests,
        predicted_rides=predicted,
        started_at=datetime.fromtimestamp(metrics.started, UTC).isoformat(timespec="seconds"),
        model_version=serving.model.version if serving.model else None,
        shadow=serving.shadow_info(),
        request_log_rows=request_log.rows_written if request_log is not None else None,
    )


# ---------------------------------------------------------------------------------------------- metrics

metrics_router = APIRouter()


@metrics_router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def prometheus(serving: ServingDep, metrics: MetricsDep) -> Response:
    shadow = serving.shadow_info()
    text = metrics.exposition(
        shadow_mean=(shadow.mean_abs_diff_minutes or 0.0) if shadow is not None else None,
        request_log=serving.request_log,
    )
    return Response(text, media_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------------------------------------- the page


def _page(name: str) -> str:
    return resources.files("taxi_duration.serve").joinpath("page", name).read_text(encoding="utf-8")


page_router = APIRouter(include_in_schema=False)


@page_router.get("/", response_class=HTMLResponse)
async def page() -> HTMLResponse:
    return HTMLResponse(_page("index.html"))


@page_router.get("/page/{name}")
async def page_file(name: str) -> Response:
    if name not in PAGE_FILES:
        raise ApiError(404, f"{printable(name)}: no such page file")
    return Response(_page(name), media_type=PAGE_FILES[name])


# ---------------------------------------------------------------------------------------------- admin

admin_router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])


@admin_router.post(
    "/reload",
    response_model=ReloadResult,
    responses={
        401: {"model": ErrorBody, "description": "No X-API-Key header"},
        403: {"model": ErrorBody, "description": "Wrong key, or admin endpoints disabled (no key configured)"},
        **NOT_READY,
        503: {"model": ErrorBody, "description": "The reload failed: the current model is kept"},
    },
)
def reload(serving: ServingDep) -> ReloadResult:  # no docstring: it would be the operation's OpenAPI description
    fresh, previous = serving.reload()
    return ReloadResult(
        model_name=fresh.name, model_version=fresh.version, previous_version=previous.version if previous else None
    )
