"""The API's Prometheus metrics: per-app collectors and the middleware that counts and times every request.

Kept by hand rather than prometheus-fastapi-instrumentator (8.1): its metrics label the route `handler` (ours:
`route`), call an unmatched path `none` (ours: `unmatched`) and it builds a Request and a Response object per
request; keeping our names would take a custom instrumentation function anyway, so it would be one more dependency
of the serving install in place of the ~30 lines of `MetricsMiddleware` (which also feed /stats).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from taxi_duration import __version__
from taxi_duration.serve.predictor import ExportedModel
from taxi_duration.serve.request_log import RequestLog

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Metrics:
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
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        Gauge("taxi_duration_build_info", "Package version", ["version"], registry=self.registry).labels(
            __version__
        ).set(1)

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set: `labels()` takes a lock and builds its key on every
        call, and the request path asks for the same few children on every request. Bounded by the label sets the
        callers use (routes x methods x statuses, model versions). Not for metrics that are `clear()`ed (the info
        gauges): a cached child would outlive its clearing."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def serving(self, model: ExportedModel | None) -> None:
        """The served model is now `model` (None: no model)."""
        self.model_info.clear()
        if model is None:
            self.model_version.set(0)
            return
        self.model_info.labels(model.name, model.version, model.kind).set(1)
        try:
            self.model_version.set(float(model.version))
        except ValueError:
            self.model_version.set(float("nan"))

    def shadowing(self, model: ExportedModel) -> None:
        """The shadow model is now `model`."""
        self.shadow_info.clear()
        self.shadow_info.labels(model.name, model.version).set(1)

    def exposition(self, shadow_mean: float | None, request_log: RequestLog | None) -> bytes:
        """The Prometheus text of every collector, with the gauges read at scrape time brought up to date."""
        if shadow_mean is not None:
            self.shadow_mean.set(shadow_mean)
        if request_log is not None:
            self.request_log.labels("written").set(request_log.rows_written)
            self.request_log.labels("dropped").set(request_log.rows_dropped)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count and time every HTTP request by its route template (not the raw path: label values stay bounded);
    `counted()` is called once per request too (the /stats counter)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, counted: Callable[[], None]) -> None:
        self.app = app
        self.metrics = metrics
        self.counted = counted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            self.metrics.child(self.metrics.requests, route, scope.get("method", ""), str(status)).inc()
            self.metrics.child(self.metrics.latency, route).observe(time.perf_counter() - start)
            self.counted()
