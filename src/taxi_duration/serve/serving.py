"""The models one app serves, and how they change.

The served model is loaded once when the app is built, again on POST /admin/reload, and when a followed registry
alias moves (`follow`, polling in the app's lifespan); it is replaced by assignment (atomic) and read once per
request. A shadow model, if any, scores every ride too without answering, once the answer has been written: the
ride waits in `pending`, and a callback scheduled on the event loop (`call_soon`, no response object of its own)
scores what waits when the request's task is done; /predict/batch, which runs in a worker thread, does it in a
background task of its response. Reading the agreement (/model, /stats, /metrics) and shutting down score what
still waits. Each scored ride is counted (metrics, /stats, shadow agreement) and, with a request log, appended to
it off the request path.

Measured against scoring the shadow in batches of 256 (one vectorised call after the answer that filled a batch):
a batch took ~16 ms on the event loop and its allocations brought garbage collections, and the p99 at concurrency
1 went from 0.44 to 9-14 ms; one ride at a time costs each answer's successor the ride's ~20-50 us instead.
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
from taxi_duration.serve.request_log import RequestLog, micros

log = logging.getLogger(__name__)

NO_MODEL = "no model loaded: the server has nothing to predict with yet (export one and POST /admin/reload)"

Loader = Callable[[], ExportedModel | None]
Probe = Callable[[], str | None]
# when, by which model, a ride, its trip, its minutes
Answered = tuple[datetime, ExportedModel, Ride, dict[str, Any], float]


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
        self.pending: list[Answered] = []  # rides answered, waiting for the shadow model
        self.pending_lock = threading.Lock()  # /predict/batch runs in worker threads
        self.scheduled = False  # a callback will score what waits
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
        self.observe_pending()  # the agreement as of now
        with self.counts:
            rides, total = self.shadow_rides, self.shadow_abs_diff
        return ShadowInfo(
            model_name=self.shadow.name,
            model_version=self.shadow.version,
            rides=rides,
            mean_abs_diff_minutes=total / rides if rides else None,
        )

    # ------------------------------------------------------------------------------------------ scoring

    def score(self, model: ExportedModel, ride: Ride, where: str) -> float:
        """The served model's minutes for one ride. With a shadow model, the ride waits for it (its request log row
        goes with it) and, on the event loop, a callback is scheduled to score it once the answer is out; without
        one, the request log's row (encoded for the log's writer process: about a microsecond) is queued at once."""
        trip = ride.trip()
        minutes = _predict(model, trip, where)
        if self.shadow is not None:
            with self.pending_lock:
                self.pending.append((datetime.now(UTC), model, ride, trip, minutes))
            self.observe_soon()
        elif self.request_log is not None:
            self.log_rides([(datetime.now(UTC), model, ride, trip, minutes)], None, None)
        return minutes

    def observe_soon(self) -> None:
        """On the event loop: score what waits in the loop's next round, after the current request's task (which
        writes the answer) has run. In a worker thread: nothing (its route adds a background task)."""
        if self.scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.scheduled = True
        loop.call_soon(self.observe_pending)

    async def observe(self) -> None:
        """`observe_pending` as a response's background task, run after the response is sent (a coroutine: a plain
        function would take a threadpool hop)."""
        self.observe_pending()

    def observe_pending(self) -> None:
        """The shadow scores the waiting rides and the agreement is counted; the request log gets one row each."""
        self.scheduled = False
        with self.pending_lock:
            batch, self.pending = self.pending, []
        if not batch:
            return
        shadow = self.shadow
        if shadow is None:  # the shadow went away (it cannot today): the rides are still logged
            self.log_rides(batch, None, None)
            return
        shadow_minutes: list[float | None] = []
        rides, total = 0, 0.0
        for answer in batch:
            minutes = shadow.predict_minutes(answer[3])  # the compiled single-ride path: no frame, few objects
            if math.isfinite(minutes):
                rides += 1
                total += abs(answer[4] - minutes)
                shadow_minutes.append(minutes)
            else:
                shadow_minutes.append(None)
        with self.counts:
            self.shadow_rides += rides
            self.shadow_abs_diff += total
        self.metrics.shadow_rides.inc(rides)
        self.metrics.shadow_abs_diff.inc(total)
        if self.request_log is not None:
            self.log_rides(batch, shadow.version, shadow_minutes)

    def log_rides(
        self, answered: list[Answered], shadow_version: str | None, shadow: list[float | None] | None
    ) -> None:
        """One request log row per answered ride (with the shadow's minutes when there is one)."""
        log_rows = self.request_log
        if log_rows is None:
            return
        for i, (answered_at, model, ride, trip, minutes) in enumerate(answered):
            log_rows.append(
                (
                    micros(answered_at),
                    None if ride.ride_id is None else str(ride.ride_id),
                    micros(trip["pickup_datetime"]),
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
                    shadow_version,
                    None if shadow is None else shadow[i],
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
