"""When drift windows are due: the tumbling windows of every deployment, and catching up after a pause.

:class:`DriftSchedule` is what the drift slot's runner is started with (as a
:class:`~matih_lite.contracts.slots.DriftPlan`): ``check_due(now)`` checks, for every active deployment
of every tenant and every window size in ``[drift] windows`` (``1h`` and ``1d`` by default, or the
model's own), each tumbling window that ended at least ``[drift] grace`` ago and was not checked
yet, smaller sizes first so that a day is merged from the hours already aggregated. After a pause
(the service was down), the missed windows are checked oldest first, at most ``[drift] catch_up``
of each size; a deployment never checked before starts with its latest window.

Whatever runs the schedule (a thread in the service, a Flink job handing back results through
``record``), what a check is stays :meth:`matih_lite.monitoring.Monitoring.check`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from matih_lite.contracts.clock import now_ms
from matih_lite.contracts.slots import DriftPlan, DriftWindow
from matih_lite.identity import Principal
from matih_lite.monitoring.service import Monitoring
from matih_lite.monitoring.settings import MONITOR_USER, format_duration, parse_duration

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.monitoring.schedule")


class DriftSchedule:
    """The drift windows due for one platform (a :class:`~matih_lite.host.Host`), checked through one
    :class:`Monitoring` that lives as long as the schedule (so windows merge from ones already read)."""

    def __init__(self, host: Host, monitoring: Monitoring | None = None) -> None:
        self.host = host
        self.monitoring = monitoring or Monitoring(host)
        self._last: dict[tuple[str, str, str], int] = {}
        self.stats: dict[str, Any] = {"ticks": 0, "checks": 0, "errors": 0, "last_tick": None, "last_error": None}

    def plan(self) -> DriftPlan:
        """This schedule as the drift slot's runner takes it."""
        settings = self.monitoring.settings()
        sizes = sorted({parse_duration(w) for w in settings.windows})
        return DriftPlan(windows=tuple(DriftWindow(format_duration(s), s) for s in sizes),
                         grace_ms=parse_duration(settings.grace, "grace"),
                         check_due=self.run_due, record=self.monitoring.record, targets=self.targets,
                         token=self.job_token, kernel="matih_lite.monitoring.window",
                         events=dict(self.host.selection().get("events") or {}))

    def targets(self) -> list[dict[str, Any]]:
        """Every active deployment of every tenant as a remote runner watches it: its inference-log and labels
        streams, its model, and the model's ``[drift]`` settings as plain values."""
        import msgspec

        from matih_lite.serving.inference_log import inference_stream, label_stream
        from matih_lite.serving.traffic import inference_log_name

        out = []
        for tenant in self._tenants():
            principal = Principal(tenant, MONITOR_USER, ("admin",))
            for d in self._deployments(principal):
                name = inference_log_name(tenant, d.name)
                settings = self.monitoring.settings(d.model)
                out.append({"tenant": tenant, "deployment": d.name, "model": d.model,
                            "stream": inference_stream(name), "labels": label_stream(name),
                            "settings": msgspec.to_builtins(settings),
                            "windows": [{"label": format_duration(size), "size_ms": size}
                                        for size in sorted({parse_duration(w) for w in settings.windows})]})
        return out

    def job_token(self, tenant: str) -> str:
        """A token of the drift monitor in ``tenant`` for a remote drift job (viewer: it reads baselines), the
        previous one revoked; "" when the service requires no token."""
        from matih_lite.auth import auth_enabled
        from matih_lite.auth.service import Accounts
        from matih_lite.errors import NotFound

        if not auth_enabled(self.host):
            return ""
        accounts = Accounts(self.host)
        try:
            accounts.get_user(tenant, MONITOR_USER)
        except NotFound:
            accounts.create_user(tenant, MONITOR_USER, ["viewer"])
        for old in accounts.list_tokens(tenant, user=MONITOR_USER):
            if old.name == "drift-job" and not getattr(old, "revoked", False):
                accounts.revoke_token(tenant, old.token_id)
        return accounts.create_token(tenant, MONITOR_USER, name="drift-job", expires_in_days=7,
                                     description="the drift runner's job: reads baselines; revoked at its next "
                                                 "start").secret

    def run_due(self, now: int | None = None) -> list[dict[str, Any]]:
        """Check every window that is due at ``now`` (ms; default the clock); returns the reports, oldest first
        per window size. A check that fails is logged and counted, and the schedule moves past it."""
        monitoring = self.monitoring
        now = now_ms() if now is None else int(now)
        self.stats["ticks"] += 1
        self.stats["last_tick"] = now
        reports = []
        for tenant in self._tenants():
            principal = Principal(tenant, MONITOR_USER, ("admin",))
            for d in self._deployments(principal):
                settings = monitoring.settings(d.model)
                grace = parse_duration(settings.grace, "grace")
                for size in sorted({parse_duration(w) for w in settings.windows}):
                    for end in self.due_ends(tenant, d.name, size, now - grace, settings.catch_up):
                        label = format_duration(size)
                        try:
                            reports.append(monitoring.check(principal, d.name, label, end=end, aligned=True, act=True))
                            self.stats["checks"] += 1
                        except Exception as exc:  # one deployment's failure never stops the others
                            self.stats["errors"] += 1
                            self.stats["last_error"] = (f"{d.name} {label}: {type(exc).__name__}: "
                                                        f"{getattr(exc, 'message', exc)}")
                            log.warning("drift check of %s (%s window ending %s) failed: %s", d.name, label, end,
                                        getattr(exc, "message", exc))
                        self._last[(tenant, d.name, label)] = end
        return reports

    def due_ends(self, tenant: str, deployment: str, size: int, horizon: int, catch_up: int) -> list[int]:
        """The ends of the windows of ``size`` due by ``horizon`` and not checked yet, oldest first: every one
        since the last check (at most ``catch_up``), or only the latest for a deployment never checked."""
        latest = horizon // size * size
        key = (tenant, deployment, format_duration(size))
        last = self._last.get(key)
        if last is None:
            last = self.monitoring.last_checked(tenant, deployment, key[2])
            if last is None:
                return [latest] if latest > 0 else []
            self._last[key] = last
        if latest <= last:
            return []
        ends = list(range(last + size, latest + 1, size))
        if len(ends) > catch_up:
            log.warning("drift: %d %s windows of %s were missed; checking the last %d", len(ends), key[2],
                        deployment, catch_up)
            ends = ends[-catch_up:] if catch_up > 0 else [latest]
        return ends

    def _tenants(self) -> list[str]:
        names = {"default"}
        lister = getattr(self.host.metadata, "list_tenants", None)
        if lister is not None:
            try:
                names |= {t.name for t in lister()}
            except Exception:
                log.debug("listing tenants failed", exc_info=True)
        return sorted(names)

    def _deployments(self, principal: Principal) -> list[Any]:
        from matih_lite.serving.deployments import Deployments

        out, token = [], None
        manager = Deployments(self.host)
        while True:
            page = manager.list(principal, max_results=1000, page_token=token)
            out.extend(d for d in page.items if d.status == "active")
            token = page.next_token
            if not token:
                return out
