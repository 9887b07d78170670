"""The models one app serves, and how they change.

The served model is loaded once when the app is built, again on POST /admin/reload, and when a followed registry
alias moves (`follow`, polling in the app's lifespan); it is replaced by assignment (atomic) and read once per
request. A shadow model, if any, scores every ride too without answering, after the answer has been sent. Each
scored ride is counted (metrics, /stats, shadow agreement) and, with a request log, appended to it off the request
path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from taxi_duration.serve.errors import ApiError
from taxi_duration.serve.metrics import Metrics
from taxi_duration.serve.models import Ride, ShadowInfo
from taxi_duration.serve.predictor import ExportedModel
from taxi_duration.serve.request_log import RequestLog

log = logging.getLogger(__name__)

NO_MODEL = "no model loaded: the server has nothing to predict with yet (export one and POST /admin/reload)"

Loader = Callable[[], ExportedModel | None]
Probe = Callable[[], str | None]
Answered = tuple[Ride, dict[str, Any], float]  # a ride, its trip, the served model's minutes


def _first(load: Loader | None, what: str) -> ExportedModel | None:
    if load is None:
        return None
    try:
        return load()
    except Exception:  # a server that starts without a model still answers /health, and can be reloaded
        log.exception("loading the %s failed; serving without it until /admin/reload", what)
        return None


def _predict(model: ExportedModel, trip: dict[str, Any], where: str) -> float:
    minutes = model.predict_minutes(trip)
    if not math.isfinite(minutes):
        raise ApiError(422, f"{where}: the model gives no finite prediction for these inputs")
    return minutes


class Serving:
    """What `loader()` returns (and `shadow_loader()` for the shadow), with the counters about them.

    With a `probe` (the version the registry alias points to) `follow` reloads when it differs from the version
    served; `shadow_probe` does the same for the shadow."""

    def __init__(
        self,
        loader: Loader,
        metrics: Metrics,
        *,
        probe: Probe | None = None,
        shadow_loader: Loader | None = None,
        shadow_probe: Probe | None = None,
        request_log: RequestLog | None = None,
    ) -> None:
        self.loader = loader
        self.metrics = metrics
        self.probe = probe
        self.shadow_loader = shadow_loader
        self.shadow_probe = shadow_probe
        self.request_log = request_log
        self.lock = threading.Lock()  # one reload at a time
        self.last_error: str | None = None  # why the last reload failed; cleared by the next one that works
        self.counts = threading.Lock()
        self.requests = 0
        self.predicted = 0
        self.shadow_rides = 0
        self.shadow_abs_diff = 0.0
        self.model = _first(loader, "model")
        self.shadow = _first(shadow_loader, "shadow model")
        metrics.serving(self.model)
        if self.shadow is not None:
            metrics.shadowing(self.shadow)

    # ------------------------------------------------------------------------------------------ reading

    def current(self) -> ExportedModel:
        """The served model; 503 without one."""
        model = self.model
        if model is None:
            raise ApiError(503, NO_MODEL)
        return model

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

    # ------------------------------------------------------------------------------------------ scoring

    def score(self, model: ExportedModel, ride: Ride, where: str, answered: list[Answered] | None = None) -> float:
        """The served model's minutes for one ride. With a shadow model, its minutes and the request log's row
        come after: in `observe`, for the rides collected in `answered` (once the answer has left). Without one,
        the request log's row (a tuple queued for the writer thread: about a microsecond) is queued at once, which
        costs less than a response with a background task."""
        trip = ride.trip()
        minutes = _predict(model, trip, where)
        if answered is not None and self.shadow is not None:
            answered.append((ride, trip, minutes))
        elif self.request_log is not None or self.shadow is not None:
            self.observe_now(model, [(ride, trip, minutes)])
        return minutes

    async def observe(self, model: ExportedModel, answered: list[Answered]) -> None:
        """`observe_now` as a response's background task: it runs on the event loop after the response is sent,
        so a shadow model never delays an answer (a coroutine: a plain function would take a threadpool hop)."""
        self.observe_now(model, answered)

    def observe_now(self, model: ExportedModel, answered: list[Answered]) -> None:
        """The shadow scores the answered rides and the agreement is counted; the request log gets one row each."""
        shadow = self.shadow
        for ride, trip, minutes in answered:
            shadow_minutes = None
            if shadow is not None:
                shadow_minutes = shadow.predict_minutes(trip)
                if math.isfinite(shadow_minutes):
                    difference = abs(minutes - shadow_minutes)
                    with self.counts:
                        self.shadow_rides += 1
                        self.shadow_abs_diff += difference
                    self.metrics.shadow_rides.inc()
                    self.metrics.shadow_abs_diff.inc(difference)
                else:
                    shadow_minutes = None
            if self.request_log is not None:
                self.request_log.append(
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

    def counted(self, model: ExportedModel, rides: int) -> None:
        """`rides` rides were answered by `model`."""
        self.metrics.child(self.metrics.rides, model.version).inc(rides)
        with self.counts:
            self.predicted += rides

    def count_request(self) -> None:
        with self.counts:
            self.requests += 1

    # ------------------------------------------------------------------------------------------ changing

    def failed(self, what: str, exc: BaseException | str) -> str:
        """Record (and log) why `what` failed, with what is still served; the message, for an answer."""
        served = self.model
        still = f"still serving version {served.version}" if served else "still no model"
        reason = exc if isinstance(exc, str) else f"{exc.__class__.__name__}: {exc}"
        self.last_error = f"{what} failed at {datetime.now(UTC).isoformat(timespec='seconds')} ({reason}); {still}"
        log.error("%s", self.last_error)
        return self.last_error

    def reload(self) -> tuple[ExportedModel, ExportedModel | None]:
        """Call the loader again and swap the model in: (the new model, the previous one). A failure keeps the
        current model and is a 503 saying why."""
        with self.lock:
            previous = self.model
            try:
                fresh = self.loader()
            except Exception as exc:
                log.exception("reloading the model failed")
                self.metrics.reloads.labels("failed").inc()
                raise ApiError(503, self.failed("reload", exc)) from None
            if fresh is None:
                self.metrics.reloads.labels("no_model").inc()
                raise ApiError(503, self.failed("reload", "no model found"))
            self.model = fresh
            self.last_error = None
            self.metrics.serving(fresh)
            self.metrics.reloads.labels("ok").inc()
            try:
                self.reload_shadow()
            except Exception as exc:  # the served model moved; the shadow keeps its version
                self.failed("reloading the shadow model", exc)
        return fresh, previous

    def reload_shadow(self) -> None:
        if self.shadow_loader is None:
            return
        fresh = self.shadow_loader()
        if fresh is not None:
            self.shadow = fresh
            with self.counts:  # agreement is about one pair of models
                self.shadow_rides, self.shadow_abs_diff = 0, 0.0
            self.metrics.shadowing(fresh)

    def follow_alias(self) -> None:
        """One poll: reload when an alias moved. Failures keep the current models (counted, logged, in /ready)."""
        if self.probe is not None:
            try:
                wanted = self.probe()
                served = self.model.version if self.model else None
                if wanted is not None and wanted != served:
                    with self.lock:
                        fresh = self.loader()
                        if fresh is not None:
                            self.model = fresh
                            self.last_error = None
                            self.metrics.serving(fresh)
                            self.metrics.reloads.labels("poll").inc()
                            log.info("alias moved: now serving version %s (was %s)", fresh.version, served)
            except Exception as exc:
                self.metrics.reloads.labels("poll_failed").inc()
                self.failed("following the model alias", exc)
        if self.shadow_probe is not None and self.shadow_loader is not None:
            try:
                wanted = self.shadow_probe()
                if wanted is not None and wanted != (self.shadow.version if self.shadow else None):
                    self.reload_shadow()
            except Exception as exc:
                self.failed("following the shadow alias", exc)

    @property
    def follows(self) -> bool:
        """Whether there is an alias to follow."""
        return self.probe is not None or self.shadow_probe is not None

    async def follow(self, poll_seconds: float) -> None:
        """Poll the aliases every `poll_seconds` (in a worker thread: loading a model blocks) until cancelled."""
        while True:
            await asyncio.sleep(poll_seconds)
            await asyncio.to_thread(self.follow_alias)
