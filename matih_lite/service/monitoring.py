"""``/api/v1/drift``: drift checks, reports and baselines over REST. Thin: parse, call, return.

Every rule lives in :class:`~matih_lite.monitoring.Monitoring`.

- ``POST /api/v1/drift/deployments/{name}/check`` ``{"window": "1h", "end": ms, "act": true}``:
  check the window ``[end - window, end)`` now (``end`` defaults to now) and, with ``act``, take
  the configured actions; answers the report.
- ``GET /api/v1/drift/deployments/{name}/reports?window=1h``: stored reports, newest first.
- ``GET /api/v1/drift/deployments/{name}/report?window=1h``: the HTML report (no actions).
- ``POST /api/v1/drift/baselines/{model}/versions/{version}`` ``{"columns": {...}, "target": ...}``:
  build and store a version's baseline from training data in the body; answers its summary.
- ``GET /api/v1/drift/baselines/{model}/versions/{version}``: the stored baseline's summary
  (``?full=true``: the whole profile).
- ``GET /api/v1/drift/tests``: the installed drift tests and their default thresholds.
- ``GET /api/v1/drift/runner``: the drift slot's runner and its health, and which replica runs its checks.
- ``GET /api/v1/drift/jobs``: the jobs the drift runner supervises (a Flink job's state, last checkpoint,
  lag per topic, last window; none for the in-process runner). Admins only: it spans every tenant.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from matih_lite.errors import Forbidden
from matih_lite.host import Host
from matih_lite.monitoring.client import describe_tests, drift_jobs
from matih_lite.monitoring.service import Monitoring
from matih_lite.service.auth import Principal, principal

MonitoringDep = NamedDependency[Monitoring]
PrincipalDep = NamedDependency[Principal]
Version = Annotated[int, Parameter(ge=1, le=2**62)]
MAX_BASELINE_BODY = 512 * 1024 * 1024


def provide_monitoring(host: NamedDependency[Host]) -> Monitoring:
    return Monitoring(host)


DEPENDENCIES = {"monitoring": Provide(provide_monitoring, sync_to_thread=False),
                "principal": Provide(principal, sync_to_thread=False)}


class CheckIn(msgspec.Struct, forbid_unknown_fields=True):
    window: str = "1h"
    """A duration: 30m, 1h, 1d."""
    end: int | None = None
    """The window's end (ms since the epoch); now when left out."""
    act: bool = True
    """Take the configured actions (alerts, health, retraining, rollback)."""


class BaselineIn(msgspec.Struct, forbid_unknown_fields=True):
    columns: dict[str, list[Any]]
    """The training data as ``{column: [values]}``."""
    target: str | None = None
    prediction: str | None = None
    """A column holding the model's predictions on these rows (else the model is run)."""
    features: list[str] | None = None
    task: str | None = None
    predict: bool = True


class ReportPage(msgspec.Struct):
    reports: list[dict[str, Any]]


class TestsOut(msgspec.Struct):
    tests: list[dict[str, Any]]


class DriftController(Controller):
    path = "/api/v1/drift"
    tags = ["drift"]
    dependencies = DEPENDENCIES

    @post("/deployments/{name:str}/check", sync_to_thread=True, status_code=200,
          summary="Check a window of a deployment's traffic for drift now (and act on it)")
    def check(self, name: FromPath[str], data: JSONBody[CheckIn], monitoring: MonitoringDep,
              principal: PrincipalDep) -> dict[str, Any]:
        return monitoring.check(principal, name, data.window, end=data.end, act=data.act)

    @get("/deployments/{name:str}/reports", sync_to_thread=True, summary="Stored drift reports, newest first")
    def reports(self, name: FromPath[str], monitoring: MonitoringDep, principal: PrincipalDep,
                window: FromQuery[str | None] = None,
                max_results: Annotated[int, Parameter(ge=1, le=1000)] = 50) -> ReportPage:
        return ReportPage(monitoring.history(principal, name, window=window, max_results=max_results))

    @get("/deployments/{name:str}/report", sync_to_thread=True,
         summary="A self-contained HTML drift report of one window (baseline vs window histograms, statistics)")
    def report(self, name: FromPath[str], monitoring: MonitoringDep, principal: PrincipalDep,
               window: FromQuery[str] = "1h",
               end: FromQuery[int | None] = None) -> Response[str]:
        return Response(monitoring.report_html(principal, name, window, end=end),
                        media_type="text/html; charset=utf-8")

    @post("/baselines/{model:str}/versions/{version:int}", sync_to_thread=True, status_code=201,
          request_max_body_size=MAX_BASELINE_BODY, summary="Build and store a version's drift baseline")
    def build_baseline(self, model: FromPath[str], version: FromPath[Version], data: JSONBody[BaselineIn],
                       monitoring: MonitoringDep,
                       principal: PrincipalDep) -> dict[str, Any]:
        profile = monitoring.build_baseline(principal, model, version, data.columns, target=data.target,
                                            prediction=data.prediction, features=data.features, task=data.task,
                                            predict=data.predict, source={"via": "REST"})
        return profile.summary()

    @get("/baselines/{model:str}/versions/{version:int}", sync_to_thread=True,
         summary="A version's stored drift baseline (summary, or the whole profile with full=true)")
    def baseline(self, model: FromPath[str], version: FromPath[Version], monitoring: MonitoringDep,
                 principal: PrincipalDep,
                 full: FromQuery[bool] = False) -> dict[str, Any]:
        profile = monitoring.baseline(principal, model, version)
        return profile.to_dict() if full else profile.summary()

    @get("/tests", sync_to_thread=True, summary="Installed drift tests and their default thresholds")
    def tests(self, monitoring: MonitoringDep) -> TestsOut:
        return TestsOut(describe_tests(monitoring.tests()))

    @get("/runner", sync_to_thread=True, summary="The drift runner filling the drift slot, and its health")
    def runner(self, host: NamedDependency[Host]) -> dict[str, Any]:
        spec = host.active("drift")
        if spec is None:
            return {"backend": None, "ok": False, "detail": "no drift runner fills the drift slot"}
        from matih_lite.monitoring.plugin import drift_duty

        health = host.health(["drift"])["drift"]
        out = {"backend": spec.name, "ok": bool(health and health.ok), "detail": getattr(health, "detail", "")}
        duty = drift_duty(host)
        if duty is not None:  # which replica checks the windows (the lease holder), and this one's ticks
            out["duty"] = duty.describe()
        return out

    @get("/jobs", sync_to_thread=True, summary="The drift runner's jobs: state, last checkpoint, lag, last window")
    def jobs(self, host: NamedDependency[Host], principal: PrincipalDep) -> dict[str, Any]:
        if not principal.has("admin"):
            raise Forbidden("the drift jobs span every tenant: only an admin may list them")
        return drift_jobs(host)


CONTROLLERS = [DriftController]
