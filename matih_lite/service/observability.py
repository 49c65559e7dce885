"""Per-request access log lines and Prometheus request metrics, as one outer ASGI layer.

It wraps the whole app (not one route) so that 404s and errors are counted too; the route
label is the matched path template (``/api/v1/runs/{run_id:str}``), never the raw path.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

access_log = logging.getLogger("matih_lite.access")


class RequestMetrics:
    """The service's own registry: no global state, so tests can build many apps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("matih_http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("matih_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route", "method"], registry=self.registry,
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))


class ObservedApp:
    """ASGI wrapper: times each HTTP request, records it, writes one access-log line at INFO.

    ``fast`` (a :class:`~matih_lite.service.fastpath.FastRoutes`) may take a request before the app does.
    """

    def __init__(self, app: Any, metrics: RequestMetrics, fast: Any = None) -> None:
        self.app = app
        self.metrics = metrics
        self.fast = fast

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.startswith("/ajax-api/"):
            # MLflow's web UI calls /ajax-api/...; the same handlers serve it as /api/...
            new_path = "/api/" + path[len("/ajax-api/"):]
            scope = {**scope, "path": new_path, "raw_path": new_path.encode()}
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        handler = self.fast.match(scope) if self.fast is not None else None
        try:
            await (handler or self.app)(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("path_template") or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("-", 0)
                access_log.info('%s "%s %s" %d %.1fms', client[0], method, scope.get("path", ""), status,
                                elapsed * 1000)
