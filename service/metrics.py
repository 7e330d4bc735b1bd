"""Prometheus metrics of the service (prometheus-client), one registry per app.

Requests and their latency by endpoint (the route's path template, so ids do not make
new series) and status; selection and answer time; errors by code. Each Serve replica is
its own process with its own registry: ``/metrics`` shows the replica that answered.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UNMATCHED = "unmatched"  # a path no route serves (one label value, not one per path)


class ServiceMetrics:
    """The collectors of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vmem_http_requests",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "vmem_http_request_seconds",
            "HTTP request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.selection = Histogram(
            "vmem_selection_seconds",
            "memory selection time per question",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.answer = Histogram(
            "vmem_answer_seconds",
            "answer generation time per question",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "vmem_http_errors", "error responses by error code", ["code"], registry=self.registry
        )

    def count_error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware: count each request and time it, by its route's path template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: list) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    def endpoint(self, scope: Scope) -> str:
        """The path template of the route serving ``scope`` (or whose path matches with
        another method: a 405), else ``unmatched``."""
        partial = UNMATCHED
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", UNMATCHED)
            if match == Match.PARTIAL and partial == UNMATCHED:
                partial = getattr(route, "path", UNMATCHED)
        return partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app raises before it answers
        started = time.perf_counter()

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            endpoint = self.endpoint(scope)
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
