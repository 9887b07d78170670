"""The prediction API: an exported model behind FastAPI, no JVM, one ride in microseconds of model time.

    POST /predict          {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66} -> minutes
    POST /predict/batch    {"rides": [...]} (at most `max_batch`), predictions in request order
    GET  /health           the process answers
    GET  /ready            a model is loaded (503 if not)
    GET  /model            name, version, kind, metrics, features
    GET  /metrics          Prometheus text: requests, latency, model version
    POST /admin/reload     header X-API-Key: call the loader again and swap the model atomically

Invalid input is a 422 whose message names the field and the rule; a missing model is a 503.
"""

# no `from __future__ import annotations`: FastAPI resolves the per-app batch model's annotation at runtime

import asyncio
import hmac
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from taxi_duration import __version__
from taxi_duration.params import QualityParams
from taxi_duration.regimes import Regime
from taxi_duration.schema import SERVICES
from taxi_duration.serve.online_features import NEW_YORK
from taxi_duration.serve.predictor import ExportedModel
from taxi_duration.zones import MAX_ZONE_ID

log = logging.getLogger(__name__)

QUALITY = QualityParams()  # the same bounds the quality rules apply to training trips
MIN_PICKUP = datetime(QUALITY.min_year, 1, 1)
MAX_AHEAD = timedelta(days=1)
LAT_MIN, LON_MIN, LAT_MAX, LON_MAX = QUALITY.nyc_bbox
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RULE_ERROR = "ride_rule"
NO_MODEL = "no model loaded: the server has nothing to predict with yet (export one and POST /admin/reload)"

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[MutableMapping[str, Any]], Awaitable[None]]],
    Awaitable[None],
]


def now_new_york() -> datetime:
    """The current New York wall-clock time (naive, like canonical pickup times)."""
    return datetime.now(NEW_YORK).replace(tzinfo=None)


# ---------------------------------------------------------------------------------------------- schemas


def _rule(field: str, rule: str) -> PydanticCustomError:
    """A rule across fields, reported against the field it asks for."""
    return PydanticCustomError(RULE_ERROR, "{field}: {rule}", {"field": field, "rule": rule})


class Ride(BaseModel):
    """One ride to predict: zones (TLC ids) or coordinates for each end; everything else optional."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    PULocationID: int | None = Field(
        None,
        validation_alias=AliasChoices("PULocationID", "pickup_location_id"),
        description=f"Pickup TLC zone id (1..{MAX_ZONE_ID}); or give pickup_latitude/pickup_longitude",
        examples=[130],
    )
    DOLocationID: int | None = Field(
        None,
        validation_alias=AliasChoices("DOLocationID", "dropoff_location_id"),
        description=f"Dropoff TLC zone id (1..{MAX_ZONE_ID}); or give dropoff_latitude/dropoff_longitude",
        examples=[205],
    )
    trip_distance: float | None = Field(
        None,
        description=(
            "Metered route distance in miles; without it the zone pair's median distance is used "
            "(regime zones_only or coordinates_only)"
        ),
    )
    pickup_datetime: datetime | None = Field(
        None, description="ISO 8601; without an offset it is New York time. Default: now in New York"
    )
    passenger_count: int | None = Field(None, description=f"0..{QUALITY.max_passenger_count}")
    service: str | None = Field(None, description=f"One of {', '.join(SERVICES)}")
    ride_id: str | int | None = Field(None, description="Echoed in the response")
    pickup_latitude: float | None = None
    pickup_longitude: float | None = None
    dropoff_latitude: float | None = None
    dropoff_longitude: float | None = None

    @field_validator("PULocationID", "DOLocationID")
    @classmethod
    def _zone(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= MAX_ZONE_ID:
            raise ValueError(f"must be a TLC zone id from 1 to {MAX_ZONE_ID}, got {value}")
        return value

    @field_validator("trip_distance")
    @classmethod
    def _distance(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError(f"must not be negative, got {value}")
        if value is not None and value > QUALITY.max_distance_miles:
            raise ValueError(f"must be at most {QUALITY.max_distance_miles:g} miles, got {value}")
        return value

    @field_validator("pickup_datetime")
    @classmethod
    def _pickup(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        local = value.astimezone(NEW_YORK).replace(tzinfo=None) if value.tzinfo is not None else value
        if local < MIN_PICKUP:
            raise ValueError(f"must not be before {MIN_PICKUP.date()} (TLC data starts in {QUALITY.min_year})")
        if local > now_new_york() + MAX_AHEAD:
            raise ValueError("must not be more than 1 day in the future")
        return local

    @field_validator("passenger_count")
    @classmethod
    def _passengers(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= QUALITY.max_passenger_count:
            raise ValueError(f"must be from 0 to {QUALITY.max_passenger_count}, got {value}")
        return value

    @field_validator("service")
    @classmethod
    def _service(cls, value: str | None) -> str | None:
        if value is not None and value not in SERVICES:
            raise ValueError(f"must be one of {', '.join(SERVICES)}, got {value!r}")
        return value

    @field_validator("pickup_latitude", "dropoff_latitude")
    @classmethod
    def _latitude(cls, value: float | None) -> float | None:
        if value is not None and not LAT_MIN <= value <= LAT_MAX:
            raise ValueError(f"must be within New York ({LAT_MIN} to {LAT_MAX}), got {value}")
        return value

    @field_validator("pickup_longitude", "dropoff_longitude")
    @classmethod
    def _longitude(cls, value: float | None) -> float | None:
        if value is not None and not LON_MIN <= value <= LON_MAX:
            raise ValueError(f"must be within New York ({LON_MIN} to {LON_MAX}), got {value}")
        return value

    @model_validator(mode="after")
    def _locations(self) -> "Ride":
        for end, zone, lat, lon, zone_name in (
            ("pickup", self.PULocationID, self.pickup_latitude, self.pickup_longitude, "PULocationID"),
            ("dropoff", self.DOLocationID, self.dropoff_latitude, self.dropoff_longitude, "DOLocationID"),
        ):
            if (lat is None) != (lon is None):
                missing = f"{end}_latitude" if lat is None else f"{end}_longitude"
                raise _rule(missing, f"required with {end}_{'longitude' if lat is None else 'latitude'}")
            if zone is None and lat is None:
                raise _rule(zone_name, f"required (or give {end}_latitude and {end}_longitude)")
        return self

    def trip(self) -> dict[str, Any]:
        """The canonical trip the model scores."""
        return {
            "pickup_datetime": self.pickup_datetime or now_new_york(),
            "pickup_location_id": self.PULocationID,
            "dropoff_location_id": self.DOLocationID,
            "trip_distance": self.trip_distance,
            "pickup_latitude": self.pickup_latitude,
            "pickup_longitude": self.pickup_longitude,
            "dropoff_latitude": self.dropoff_latitude,
            "dropoff_longitude": self.dropoff_longitude,
            "passenger_count": self.passenger_count,
        }


class Prediction(BaseModel):
    duration_minutes: float
    regime: Regime = Field(description="what the ride gave: recorded_distance, zones_only or coordinates_only")
    model_name: str
    model_version: str
    ride_id: str | int | None = None


class RidePrediction(BaseModel):
    duration_minutes: float
    regime: Regime
    ride_id: str | int | None = None


class BatchPrediction(BaseModel):
    model_name: str
    model_version: str
    predictions: list[RidePrediction]


class ModelInfo(BaseModel):
    model_name: str
    model_version: str
    kind: str
    metrics: dict[str, Any]
    metrics_by_regime: dict[str, Any] = Field(description="validation metrics per regime, from train")
    features: list[str]
    spark_version: str
    exported_at: str
    feature_sql_sha256: str


class ReloadResult(BaseModel):
    model_name: str
    model_version: str
    previous_version: str | None


class Status(BaseModel):
    status: str
    model_name: str | None = None
    model_version: str | None = None
    detail: str | None = None


# ---------------------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered as JSON {"detail": message} with its status code."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part != "body"]
    return ".".join(parts) or "body"


def _describe(error: dict[str, Any]) -> dict[str, str]:
    kind = str(error.get("type", ""))
    loc = tuple(error.get("loc", ()))
    field = _field(loc)
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "json_invalid":
        field, message = "body", f"not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
    elif kind == "missing" and field == "body":
        message = "a JSON object is required"
    elif kind == "extra_forbidden":
        message = "unknown field"
    elif kind in ("model_attributes_type", "dict_type", "model_type"):
        message = "expected a JSON object"
    elif kind == RULE_ERROR:  # a rule across fields, about the field it names
        ctx = error.get("ctx", {})
        field = ".".join(part for part in (field if field != "body" else "", str(ctx.get("field"))) if part)
        message = str(ctx.get("rule"))
    else:
        message = message[0].lower() + message[1:] if message else message
    return {"field": field, "message": message, "type": kind}


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_describe(dict(error)) for error in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.message})


# ---------------------------------------------------------------------------------------------- metrics


class _Metrics:
    """Per-app Prometheus collectors (their own registry: several apps in one process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "taxi_duration_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "taxi_duration_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rides = Counter(
            "taxi_duration_predicted_rides", "Rides predicted", ["model_version"], registry=self.registry
        )
        self.model_info = Gauge(
            "taxi_duration_model_info",
            "The model being served (value 1)",
            ["model_name", "model_version", "kind"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "taxi_duration_model_version",
            "Version of the model being served (numeric versions; 0 = no model)",
            registry=self.registry,
        )
        self.reloads = Counter("taxi_duration_model_reloads", "Reloads by outcome", ["outcome"], registry=self.registry)
        Gauge("taxi_duration_build_info", "Package version", ["version"], registry=self.registry).labels(
            __version__
        ).set(1)

    def serving(self, model: ExportedModel | None) -> None:
        self.model_info.clear()
        if model is None:
            self.model_version.set(0)
            return
        self.model_info.labels(model.name, model.version, model.kind).set(1)
        try:
            self.model_version.set(float(model.version))
        except ValueError:
            self.model_version.set(float("nan"))


class _MetricsMiddleware:
    """Count and time every HTTP request by its route template (not the raw path: label values stay bounded)."""

    def __init__(self, app: ASGIApp, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def observe_send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observe_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------- the app


class _State:
    """The model being served: replaced by assignment (atomic), read once per request."""

    def __init__(self, model: ExportedModel | None) -> None:
        self.model = model
        self.lock = threading.Lock()  # one reload at a time


def _predict(model: ExportedModel, ride: Ride, where: str) -> tuple[float, Regime]:
    trip = ride.trip()
    minutes = model.predict_minutes(trip)
    if not math.isfinite(minutes):
        raise ApiError(422, f"{where}: the model gives no finite prediction for these inputs")
    return minutes, model.regime(trip)


def create_app(
    loader: Callable[[], ExportedModel | None],
    admin_key: str | None,
    max_batch: int = 1000,
    probe: Callable[[], str | None] | None = None,
    poll_seconds: float = 0.0,
) -> FastAPI:
    """An app serving what `loader()` returns (called now, and again on POST /admin/reload).

    `admin_key` None disables the admin endpoint. `max_batch` bounds /predict/batch. With a `probe` (the version
    the registry alias points to) and `poll_seconds` > 0, the app follows the alias: when the probed version
    differs from the one served, it loads the new one in a worker thread and swaps it in between requests."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    metrics = _Metrics()
    try:
        initial = loader()
    except Exception:  # a server that starts without a model still answers /health, and can be reloaded
        log.exception("loading the model failed; serving without one until /admin/reload")
        initial = None
    state = _State(initial)
    metrics.serving(initial)

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        rides: list[Ride] = Field(description=f"1 to {max_batch} rides")

        @field_validator("rides", mode="before")
        @classmethod
        def _size(cls, value: Any) -> Any:
            if isinstance(value, list):
                if not value:
                    raise ValueError("must hold at least one ride")
                if len(value) > max_batch:
                    raise ValueError(f"must hold at most {max_batch} rides per request, got {len(value)}")
            return value

    def follow_alias() -> None:
        """One poll: reload when the alias moved. Failures keep the current model (and are counted)."""
        if probe is None:
            return
        try:
            wanted = probe()
            served = state.model.version if state.model else None
            if wanted is None or wanted == served:
                return
            with state.lock:
                fresh = loader()
                if fresh is None:
                    return
                state.model = fresh
                metrics.serving(fresh)
                metrics.reloads.labels("poll").inc()
            log.info("alias moved: now serving version %s (was %s)", fresh.version, served)
        except Exception:
            metrics.reloads.labels("poll_failed").inc()
            log.exception("following the model alias failed; still serving the current model")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = None
        if probe is not None and poll_seconds > 0:

            async def poll() -> None:
                while True:
                    await asyncio.sleep(poll_seconds)
                    await asyncio.to_thread(follow_alias)

            task = asyncio.create_task(poll())
        yield
        if task is not None:
            task.cancel()

    app = FastAPI(
        lifespan=lifespan,
        title="Taxi trip duration",
        version=__version__,
        description="Predicted NYC taxi trip durations from the exported champion model (no Spark at serving time).",
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.state.metrics = metrics
    app.state.serving = state

    def current() -> ExportedModel:
        model = state.model
        if model is None:
            raise ApiError(503, NO_MODEL)
        return model

    @app.post("/predict", response_model=Prediction, response_model_exclude_none=True)
    async def predict(ride: Ride) -> Prediction:
        model = current()
        minutes, regime = _predict(model, ride, "ride")
        metrics.rides.labels(model.version).inc()
        return Prediction(
            duration_minutes=minutes,
            regime=regime,
            model_name=model.name,
            model_version=model.version,
            ride_id=ride.ride_id,
        )

    @app.post("/predict/batch", response_model=BatchPrediction, response_model_exclude_none=True)
    def predict_batch(batch: BatchRequest) -> BatchPrediction:
        model = current()
        predictions = []
        for i, ride in enumerate(batch.rides):
            minutes, regime = _predict(model, ride, f"rides.{i}")
            predictions.append(RidePrediction(duration_minutes=minutes, regime=regime, ride_id=ride.ride_id))
        metrics.rides.labels(model.version).inc(len(predictions))
        return BatchPrediction(model_name=model.name, model_version=model.version, predictions=predictions)

    @app.get("/health", response_model=Status, response_model_exclude_none=True)
    async def health() -> Status:
        return Status(status="ok")

    @app.get("/ready", response_model=Status, response_model_exclude_none=True)
    async def ready() -> Status | JSONResponse:
        model = state.model
        if model is None:
            return JSONResponse(status_code=503, content={"status": "not ready", "detail": NO_MODEL})
        return Status(status="ready", model_name=model.name, model_version=model.version)

    @app.get("/model", response_model=ModelInfo)
    async def model_info() -> ModelInfo:
        return ModelInfo(**current().info())

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", response_model=ReloadResult)
    def reload(x_api_key: Annotated[str | None, Header(description="The admin key")] = None) -> ReloadResult:
        if admin_key is None:
            raise ApiError(403, "admin endpoints are disabled: the server was started without an admin key")
        if not x_api_key:
            raise ApiError(401, "X-API-Key: header required for admin endpoints")
        if not hmac.compare_digest(x_api_key.encode("utf-8"), admin_key.encode("utf-8")):
            raise ApiError(403, "X-API-Key: wrong key")
        with state.lock:
            previous = state.model
            still = f"still serving version {previous.version}" if previous else "still no model"
            try:
                fresh = loader()
            except Exception as exc:
                log.exception("reloading the model failed")
                metrics.reloads.labels("failed").inc()
                raise ApiError(503, f"reload failed ({exc.__class__.__name__}: {exc}); {still}") from None
            if fresh is None:
                metrics.reloads.labels("no_model").inc()
                raise ApiError(503, f"reload found no model; {still}")
            state.model = fresh
            metrics.serving(fresh)
            metrics.reloads.labels("ok").inc()
        return ReloadResult(
            model_name=fresh.name, model_version=fresh.version, previous_version=previous.version if previous else None
        )

    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    return app
