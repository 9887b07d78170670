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

Invalid input is a 422 whose body names each field and rule; a body beyond the size limit is a 413 (before it is
read), one that does not arrive in time a 408; a missing model is a 503. With a shadow model every ride is also
scored by it (the answer is the served model's) and their agreement is in /metrics and /model; with a request log
every predicted ride is appended to Parquet off the request path (`request_log.RequestLog`).
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
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException

from taxi_duration import __version__
from taxi_duration.columns import SERVICES
from taxi_duration.params import QualityParams
from taxi_duration.regimes import Regime, regime_of
from taxi_duration.serve.limits import BodyLimits
from taxi_duration.serve.online_features import NEW_YORK
from taxi_duration.serve.predictor import ExportedModel
from taxi_duration.serve.request_log import RequestLog
from taxi_duration.zones import MAX_ZONE_ID, load_zones

log = logging.getLogger(__name__)

QUALITY = QualityParams()  # the same bounds the quality rules apply to training trips
MIN_PICKUP = datetime(QUALITY.min_year, 1, 1)
MAX_AHEAD = timedelta(days=1)
LAT_MIN, LON_MIN, LAT_MAX, LON_MAX = QUALITY.nyc_bbox
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RULE_ERROR = "ride_rule"
NO_MODEL = "no model loaded: the server has nothing to predict with yet (export one and POST /admin/reload)"
MAX_BODY_BYTES = 1024 * 1024  # a batch of 1,000 rides is about 150 KB
BODY_SECONDS = 10.0
PAGE_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[MutableMapping[str, Any]], Awaitable[None]]],
    Awaitable[None],
]


def now_new_york() -> datetime:
    """The current New York wall-clock time (naive, like canonical pickup times)."""
    return datetime.now(NEW_YORK).replace(tzinfo=None)


def _printable(text: str) -> str:
    """`text` as valid UTF-8: lone surrogates (valid in JSON escapes, not in UTF-8) escaped, never a 500."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _valid_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


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
        json_schema_extra={"minimum": 1, "maximum": MAX_ZONE_ID},
    )
    DOLocationID: int | None = Field(
        None,
        validation_alias=AliasChoices("DOLocationID", "dropoff_location_id"),
        description=f"Dropoff TLC zone id (1..{MAX_ZONE_ID}); or give dropoff_latitude/dropoff_longitude",
        examples=[205],
        json_schema_extra={"minimum": 1, "maximum": MAX_ZONE_ID},
    )
    trip_distance: float | None = Field(
        None,
        description="Metered route distance in miles; without it the zone pair's median distance is used "
        "(regime zones_only or coordinates_only)",
        json_schema_extra={"minimum": 0, "maximum": QUALITY.max_distance_miles},
    )
    pickup_datetime: datetime | None = Field(
        None,
        description=f"ISO 8601; without an offset it is New York time. From {MIN_PICKUP.date()} to 1 day from now. "
        "Default: now in New York",
    )
    passenger_count: int | None = Field(
        None,
        description=f"0..{QUALITY.max_passenger_count}",
        json_schema_extra={"minimum": 0, "maximum": QUALITY.max_passenger_count},
    )
    service: str | None = Field(
        None, description=f"One of {', '.join(SERVICES)}", json_schema_extra={"enum": list(SERVICES)}
    )
    ride_id: str | int | None = Field(None, description="Echoed in the response")
    pickup_latitude: float | None = Field(None, json_schema_extra={"minimum": LAT_MIN, "maximum": LAT_MAX})
    pickup_longitude: float | None = Field(None, json_schema_extra={"minimum": LON_MIN, "maximum": LON_MAX})
    dropoff_latitude: float | None = Field(None, json_schema_extra={"minimum": LAT_MIN, "maximum": LAT_MAX})
    dropoff_longitude: float | None = Field(None, json_schema_extra={"minimum": LON_MIN, "maximum": LON_MAX})

    @field_validator("PULocationID", "DOLocationID", "passenger_count", mode="before")
    @classmethod
    def _not_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true/false would otherwise pass as 1/0
            raise ValueError(f"must be an integer, got {str(value).lower()}")
        return value

    @field_validator("ride_id", "service", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _valid_text(value)

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
        try:
            local = value.astimezone(NEW_YORK).replace(tzinfo=None) if value.tzinfo is not None else value
        except OverflowError:  # 0001-01-01T00:00:00Z or 9999-12-31T23:59:59-05:00 leave datetime's range in New York
            raise ValueError(f"must be from {MIN_PICKUP.date()} to 1 day from now, got {value.isoformat()}") from None
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

    @property
    def regime(self) -> Regime:
        """What the ride gives: its distance (recorded_distance), both zones (zones_only) or coordinates."""
        return regime_of(
            {
                "trip_distance": self.trip_distance,
                "pickup_location_id": self.PULocationID,
                "dropoff_location_id": self.DOLocationID,
            }
        )


REGIME = Field(
    description="What the ride gave, and so how it was predicted: recorded_distance (the metered distance), "
    "zones_only (zones, the distance estimated from the zone pair's median) or coordinates_only"
)


class Prediction(BaseModel):
    duration_minutes: float
    model_name: str
    model_version: str
    regime: Regime = REGIME
    ride_id: str | int | None = None


class RidePrediction(BaseModel):
    duration_minutes: float
    regime: Regime = REGIME
    ride_id: str | int | None = None


class BatchPrediction(BaseModel):
    model_name: str
    model_version: str
    predictions: list[RidePrediction]


class ShadowInfo(BaseModel):
    model_name: str | None = None
    model_version: str | None = None
    rides: int = Field(description="Rides scored by both models since the server started")
    mean_abs_diff_minutes: float | None = Field(description="Mean |served - shadow| in minutes (null before a ride)")


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
    shadow: ShadowInfo | None = None


class Zone(BaseModel):
    id: int
    zone: str
    borough: str


class Stats(BaseModel):
    requests: int
    predicted_rides: int
    started_at: str
    model_version: str | None
    shadow: ShadowInfo | None = None
    request_log_rows: int | None = None


class ReloadResult(BaseModel):
    model_name: str
    model_version: str
    previous_version: str | None


class Status(BaseModel):
    status: str
    model_name: str | None = None
    model_version: str | None = None
    detail: str | None = None


class FieldError(BaseModel):
    field: str = Field(description='The field, dotted for nested ones ("rides.2.PULocationID"); "body" for all')
    message: str
    type: str


class ValidationErrorBody(BaseModel):
    """What every 422 answers: one line in `detail`, one entry per field in `errors`."""

    detail: str
    errors: list[FieldError]


class ErrorBody(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body cannot be read as JSON text (e.g. it is not UTF-8)"},
    422: {"model": ValidationErrorBody, "description": "Invalid request: each error names its field"},
    408: {"model": ErrorBody, "description": "The body did not arrive in time"},
    413: {"model": ErrorBody, "description": "The body is larger than the server's limit"},
}
NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": ErrorBody, "description": "No model loaded"}}


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
    field = _printable(_field(loc))
    message = _printable(str(error.get("msg", "invalid")).removeprefix("Value error, "))
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
        message = _printable(str(ctx.get("rule")))
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


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = str(exc.detail)
    if exc.status_code == 400:  # FastAPI could not decode the body (e.g. bytes that are not UTF-8)
        detail = f"body: cannot be read as JSON text ({detail[0].lower() + detail[1:]})"
    return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)


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
        self.shadow_rides = Counter(
            "taxi_duration_shadow_rides", "Rides scored by both the served and the shadow model", registry=self.registry
        )
        self.shadow_abs_diff = Counter(
            "taxi_duration_shadow_abs_diff_minutes",
            "Sum of |served - shadow| predictions in minutes (divide by taxi_duration_shadow_rides_total)",
            registry=self.registry,
        )
        self.shadow_mean = Gauge(
            "taxi_duration_shadow_mean_abs_diff_minutes",
            "Mean |served - shadow| prediction in minutes since start",
            registry=self.registry,
        )
        self.shadow_info = Gauge(
            "taxi_duration_shadow_model_info",
            "The shadow model (value 1)",
            ["model_name", "model_version"],
            registry=self.registry,
        )
        self.request_log = Gauge(
            "taxi_duration_request_log_rows", "Rows of the request log by outcome", ["outcome"], registry=self.registry
        )
        self.started = time.time()
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
    """Count and time every HTTP request by its route template (not the raw path: label values stay bounded).

    Kept by hand rather than prometheus-fastapi-instrumentator: that library does the same two metrics (plus
    sizes) but is one more dependency of the serving install for about 30 lines, and these also feed /stats."""

    def __init__(self, app: ASGIApp, metrics: _Metrics, state: "_State") -> None:
        self.app = app
        self.metrics = metrics
        self.state = state

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
            with self.state.counts:
                self.state.requests += 1


# ---------------------------------------------------------------------------------------------- the app


class _State:
    """The models being served: replaced by assignment (atomic), read once per request."""

    def __init__(self, model: ExportedModel | None, shadow: ExportedModel | None) -> None:
        self.model = model
        self.shadow = shadow
        self.lock = threading.Lock()  # one reload at a time
        self.last_error: str | None = None  # why the last reload failed; cleared by the next one that works
        self.counts = threading.Lock()
        self.requests = 0
        self.predicted = 0
        self.shadow_rides = 0
        self.shadow_abs_diff = 0.0

    def shadow_info(self) -> ShadowInfo | None:
        if self.shadow is None:
            return None
        with self.counts:
            rides, total = self.shadow_rides, self.shadow_abs_diff
        return ShadowInfo(
            model_name=self.shadow.name,
            model_version=self.shadow.version,
            rides=rides,
            mean_abs_diff_minutes=total / rides if rides else None,
        )


def _predict(model: ExportedModel, trip: dict[str, Any], where: str) -> float:
    minutes = model.predict_minutes(trip)
    if not math.isfinite(minutes):
        raise ApiError(422, f"{where}: the model gives no finite prediction for these inputs")
    return minutes


def _page(name: str) -> str:
    return resources.files("taxi_duration.serve").joinpath("page", name).read_text(encoding="utf-8")


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
) -> FastAPI:
    """An app serving what `loader()` returns (called now, and again on POST /admin/reload).

    `admin_key` None disables the admin endpoint. `max_batch` bounds /predict/batch. With a `probe` (the version
    the registry alias points to) and `poll_seconds` > 0, the app follows the alias: when the probed version
    differs from the one served, it loads the new one in a worker thread and swaps it in between requests.
    `shadow_loader` (and `shadow_probe`) do the same for a shadow model that scores every ride too without
    answering. `request_log` receives every predicted ride; it is closed (flushed) when the app shuts down.
    Bodies beyond `max_body_bytes` are refused (413) and must arrive within `body_seconds` (408)."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    metrics = _Metrics()

    def first(load: Callable[[], ExportedModel | None] | None, what: str) -> ExportedModel | None:
        if load is None:
            return None
        try:
            return load()
        except Exception:  # a server that starts without a model still answers /health, and can be reloaded
            log.exception("loading the %s failed; serving without it until /admin/reload", what)
            return None

    state = _State(first(loader, "model"), first(shadow_loader, "shadow model"))
    metrics.serving(state.model)
    if state.shadow is not None:
        metrics.shadow_info.labels(state.shadow.name, state.shadow.version).set(1)

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        rides: list[Ride] = Field(description=f"1 to {max_batch} rides", min_length=1, max_length=max_batch)

        @field_validator("rides", mode="before")
        @classmethod
        def _size(cls, value: Any) -> Any:
            if isinstance(value, list):
                if not value:
                    raise ValueError("must hold at least one ride")
                if len(value) > max_batch:
                    raise ValueError(f"must hold at most {max_batch} rides per request, got {len(value)}")
            return value

    def failed(what: str, exc: BaseException | str) -> str:
        served = state.model
        still = f"still serving version {served.version}" if served else "still no model"
        reason = exc if isinstance(exc, str) else f"{exc.__class__.__name__}: {exc}"
        state.last_error = f"{what} failed at {datetime.now(UTC).isoformat(timespec='seconds')} ({reason}); {still}"
        log.error("%s", state.last_error)
        return state.last_error

    def follow_alias() -> None:
        """One poll: reload when an alias moved. Failures keep the current models (counted, logged, in /ready)."""
        if probe is not None:
            try:
                wanted = probe()
                served = state.model.version if state.model else None
                if wanted is not None and wanted != served:
                    with state.lock:
                        fresh = loader()
                        if fresh is not None:
                            state.model = fresh
                            state.last_error = None
                            metrics.serving(fresh)
                            metrics.reloads.labels("poll").inc()
                            log.info("alias moved: now serving version %s (was %s)", fresh.version, served)
            except Exception as exc:
                metrics.reloads.labels("poll_failed").inc()
                failed("following the model alias", exc)
        if shadow_probe is not None and shadow_loader is not None:
            try:
                wanted = shadow_probe()
                if wanted is not None and wanted != (state.shadow.version if state.shadow else None):
                    reload_shadow()
            except Exception as exc:
                failed("following the shadow alias", exc)

    def reload_shadow() -> None:
        if shadow_loader is None:
            return
        fresh = shadow_loader()
        if fresh is not None:
            state.shadow = fresh
            with state.counts:  # agreement is about one pair of models
                state.shadow_rides, state.shadow_abs_diff = 0, 0.0
            metrics.shadow_info.clear()
            metrics.shadow_info.labels(fresh.name, fresh.version).set(1)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = None
        if (probe is not None or shadow_probe is not None) and poll_seconds > 0:

            async def poll() -> None:
                while True:
                    await asyncio.sleep(poll_seconds)
                    await asyncio.to_thread(follow_alias)

            task = asyncio.create_task(poll())
        yield
        if task is not None:
            task.cancel()
        if request_log is not None:
            await asyncio.to_thread(request_log.close)

    app = FastAPI(
        lifespan=lifespan,
        title="Taxi trip duration",
        version=__version__,
        description="Predicted NYC taxi trip durations from the exported champion model (no Spark at serving time).",
    )

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.state.metrics = metrics
    app.state.serving = state

    def current() -> ExportedModel:
        model = state.model
        if model is None:
            raise ApiError(503, NO_MODEL)
        return model

    def score(model: ExportedModel, ride: Ride, where: str) -> float:
        """The served model's minutes for one ride; the shadow scores it too; the request log gets it."""
        trip = ride.trip()
        minutes = _predict(model, trip, where)
        shadow = state.shadow
        shadow_minutes = None
        if shadow is not None:
            shadow_minutes = shadow.predict_minutes(trip)
            if math.isfinite(shadow_minutes):
                difference = abs(minutes - shadow_minutes)
                with state.counts:
                    state.shadow_rides += 1
                    state.shadow_abs_diff += difference
                metrics.shadow_rides.inc()
                metrics.shadow_abs_diff.inc(difference)
            else:
                shadow_minutes = None
        if request_log is not None:
            request_log.append(
                (
                    datetime.now(UTC),
                    None if ride.ride_id is None else str(ride.ride_id),
                    trip["pickup_datetime"],
                    ride.PULocationID,
                    ride.DOLocationID,
                    ride.trip_distance,
                    ride.pickup_latitude,
                    ride.pickup_longitude,
                    ride.dropoff_latitude,
                    ride.dropoff_longitude,
                    ride.passenger_count,
                    ride.service,
                    ride.regime,
                    minutes,
                    model.name,
                    model.version,
                    shadow.version if shadow is not None else None,
                    shadow_minutes,
                )
            )
        return minutes

    def counted(model: ExportedModel, rides: int) -> None:
        metrics.rides.labels(model.version).inc(rides)
        with state.counts:
            state.predicted += rides

    @app.post(
        "/predict", response_model=Prediction, response_model_exclude_none=True, responses={**ERRORS, **NOT_READY}
    )
    async def predict(ride: Ride) -> Prediction:
        model = current()
        minutes = score(model, ride, "ride")
        counted(model, 1)
        return Prediction(
            duration_minutes=minutes,
            model_name=model.name,
            model_version=model.version,
            regime=ride.regime,
            ride_id=ride.ride_id,
        )

    @app.post(
        "/predict/batch",
        response_model=BatchPrediction,
        response_model_exclude_none=True,
        responses={**ERRORS, **NOT_READY},
    )
    def predict_batch(batch: BatchRequest) -> BatchPrediction:
        model = current()
        predictions = [
            RidePrediction(
                duration_minutes=score(model, ride, f"rides.{i}"),
                regime=ride.regime,
                ride_id=ride.ride_id,
            )
            for i, ride in enumerate(batch.rides)
        ]
        counted(model, len(predictions))
        return BatchPrediction(model_name=model.name, model_version=model.version, predictions=predictions)

    @app.get("/health", response_model=Status, response_model_exclude_none=True)
    async def health() -> Status:
        return Status(status="ok")

    @app.get("/ready", response_model=Status, response_model_exclude_none=True, responses={503: {"model": Status}})
    async def ready() -> Status | JSONResponse:
        model = state.model
        if model is None:
            detail = f"{NO_MODEL}; {state.last_error}" if state.last_error else NO_MODEL
            return JSONResponse(status_code=503, content={"status": "not ready", "detail": detail})
        return Status(status="ready", model_name=model.name, model_version=model.version, detail=state.last_error)

    @app.get("/model", response_model=ModelInfo, response_model_exclude_none=True, responses=NOT_READY)
    async def model_info() -> ModelInfo:
        return ModelInfo(**current().info(), shadow=state.shadow_info())

    @app.get("/zones", response_model=list[Zone])
    async def zones() -> list[Zone]:
        return [
            Zone(id=z.location_id, zone=z.zone, borough=z.borough) for z in load_zones() if z.location_id <= MAX_ZONE_ID
        ]

    @app.get("/stats", response_model=Stats, response_model_exclude_none=True)
    async def stats() -> Stats:
        with state.counts:
            requests, predicted = state.requests, state.predicted
        return Stats(
            requests=requests,
            predicted_rides=predicted,
            started_at=datetime.fromtimestamp(metrics.started, UTC).isoformat(timespec="seconds"),
            model_version=state.model.version if state.model else None,
            shadow=state.shadow_info(),
            request_log_rows=request_log.rows_written if request_log is not None else None,
        )

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def prometheus() -> Response:
        shadow = state.shadow_info()
        if shadow is not None:
            metrics.shadow_mean.set(shadow.mean_abs_diff_minutes or 0.0)
        if request_log is not None:
            metrics.request_log.labels("written").set(request_log.rows_written)
            metrics.request_log.labels("dropped").set(request_log.rows_dropped)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page("index.html"))

    @app.get("/page/{name}", include_in_schema=False)
    async def page_file(name: str) -> Response:
        if name not in PAGE_FILES:
            raise ApiError(404, f"{_printable(name)}: no such page file")
        return Response(_page(name), media_type=PAGE_FILES[name])

    @app.post(
        "/admin/reload",
        response_model=ReloadResult,
        responses={
            401: {"model": ErrorBody, "description": "No X-API-Key header"},
            403: {"model": ErrorBody, "description": "Wrong key, or admin endpoints disabled (no key configured)"},
            **NOT_READY,
            503: {"model": ErrorBody, "description": "The reload failed: the current model is kept"},
        },
    )
    def reload(x_api_key: Annotated[str | None, Header(description="The admin key")] = None) -> ReloadResult:
        if admin_key is None:
            raise ApiError(403, "admin endpoints are disabled: the server was started without an admin key")
        if not x_api_key:
            raise ApiError(401, "X-API-Key: header required for admin endpoints")
        if not hmac.compare_digest(x_api_key.encode("utf-8", "backslashreplace"), admin_key.encode("utf-8")):
            raise ApiError(403, "X-API-Key: wrong key")
        with state.lock:
            previous = state.model
            try:
                fresh = loader()
            except Exception as exc:
                log.exception("reloading the model failed")
                metrics.reloads.labels("failed").inc()
                raise ApiError(503, failed("reload", exc)) from None
            if fresh is None:
                metrics.reloads.labels("no_model").inc()
                raise ApiError(503, failed("reload", "no model found"))
            state.model = fresh
            state.last_error = None
            metrics.serving(fresh)
            metrics.reloads.labels("ok").inc()
            try:
                reload_shadow()
            except Exception as exc:  # the served model moved; the shadow keeps its version
                failed("reloading the shadow model", exc)
        return ReloadResult(
            model_name=fresh.name, model_version=fresh.version, previous_version=previous.version if previous else None
        )

    app.add_middleware(_MetricsMiddleware, metrics=metrics, state=state)
    app.add_middleware(BodyLimits, max_bytes=max_body_bytes, seconds=body_seconds)
    return app
