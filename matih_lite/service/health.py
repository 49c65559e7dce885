"""``/health`` (the process is up), ``/ready`` (every active backend answers) and ``/metrics``."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from prometheus_client import generate_latest

from matih_lite.host import Host

PROMETHEUS_TEXT = "text/plain; version=0.0.4"


class SlotHealth(msgspec.Struct):
    ok: bool
    detail: str


class Readiness(msgspec.Struct):
    status: str
    profile: str
    slots: dict[str, SlotHealth | None]
    """Each slot's backend health; null for a slot no installed backend fills yet."""


class HealthController(Controller):
    tags = ["health"]

    @get("/health", sync_to_thread=False, summary="Liveness: the process answers")
    def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", sync_to_thread=True, summary="Readiness: each active backend's health",
         responses={503: ResponseSpec(Readiness, description="At least one backend is unhealthy")})
    def ready(self, host: NamedDependency[Host]) -> Response[Readiness]:
        checks = host.health()
        slots = {slot: None if h is None else SlotHealth(h.ok, h.detail) for slot, h in checks.items()}
        ok = all(h is None or h.ok for h in checks.values())
        body = Readiness("ready" if ok else "unavailable", host.profile, slots)
        return Response(body, status_code=200 if ok else 503)

    @get("/metrics", sync_to_thread=False, summary="Prometheus metrics (text exposition format)",
         media_type=PROMETHEUS_TEXT)
    def metrics(self, request: Request) -> bytes:
        state = request.app.state
        if state.get("inference_log_metrics") is None:  # the inference log's counters, registered once per app
            from matih_lite.serving.inference_log import InferenceLogMetrics

            state["inference_log_metrics"] = InferenceLogMetrics(state["host"])
            state["metrics"].registry.register(state["inference_log_metrics"])
        return generate_latest(state["metrics"].registry)
