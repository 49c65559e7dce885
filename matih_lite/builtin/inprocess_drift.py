"""``drift = { backend = "inprocess" }``: the drift windows checked by a scheduler thread inside the ml-service.

The ``startup`` hook starts the drift slot's runner (whichever backend fills the slot) and
``shutdown`` stops it. This runner wakes every ``poll_seconds``; for every deployment of every
tenant and every window size in ``[drift] windows`` (``1h`` and ``1d`` by default) it checks the
last tumbling window that ended at least ``[drift] grace`` ago and has not been checked yet,
through :meth:`matih_lite.monitoring.Monitoring.check` (``aligned=True``, with actions). One
:class:`~matih_lite.monitoring.Monitoring` lives as long as the runner, so a day's window is
merged from the hours it already aggregated instead of being read again.

A window missed while the service was down is not caught up beyond the latest one of each size.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msgspec

from matih_lite.contracts import BackendContext, Health
from matih_lite.hookspecs import hookimpl

log = logging.getLogger("matih_lite.monitoring.runner")

STARTUP_DELAY = 5.0
"""Seconds between the service's start and the scheduler's first look."""


class InProcessDriftSettings(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    """False keeps the scheduler off (checks still run on demand)."""
    poll_seconds: float = 30.0
    """How often the scheduler looks for windows that are due."""


class InProcessDriftRunner:
    """The :class:`~matih_lite.contracts.DriftRunner` of the lite profile: a daemon thread in the service."""

    def __init__(self, settings: InProcessDriftSettings | None = None, context: BackendContext | None = None) -> None:
        self.settings = settings or InProcessDriftSettings()
        self.host: Any = None
        self.monitoring: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str, str], int] = {}
        self.stats = {"ticks": 0, "checks": 0, "errors": 0, "last_tick": None, "last_error": None}

    # ---- contract ---------------------------------------------------------------------------
    def health(self) -> Health:
        if not self.settings.enabled:
            return Health(True, "scheduler disabled ([profiles.*.drift] enabled = false); checks run on demand")
        alive = self._thread is not None and self._thread.is_alive()
        if not alive:
            return Health(self.host is None, "not started" if self.host is None else "scheduler thread stopped")
        detail = f"{self.stats['checks']} checks, {self.stats['errors']} errors, polling every " \
                 f"{self.settings.poll_seconds:g} s"
        if self.stats["last_error"]:
            detail += f"; last error: {self.stats['last_error']}"
        return Health(True, detail)

    def start(self, host: Any) -> None:
        """Begin checking ``host``'s deployments on schedule (idempotent); returns at once."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self.host = host
            if not self.settings.enabled:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="matih-drift", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the scheduler; a check in progress finishes first."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self._thread = None

    def close(self) -> None:
        self.stop()

    # ---- scheduling -------------------------------------------------------------------------
    def _run(self) -> None:
        from matih_lite.threads import lower_priority

        lower_priority()
        # The first look waits a little: nothing is due the instant the service starts, and the
        # service's own start (imports, opening backends) should not share the CPU with it.
        if self._stop.wait(min(self.settings.poll_seconds, STARTUP_DELAY)):
            return
        while not self._stop.is_set():
            try:
                self.run_due()
            except Exception as exc:  # the scheduler outlives any one failure
                self.stats["errors"] += 1
                self.stats["last_error"] = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
                log.exception("drift scheduler tick failed")
            self._stop.wait(max(self.settings.poll_seconds, 0.05))

    def run_due(self, now: int | None = None) -> list[dict[str, Any]]:
        """Check every window that is due at ``now`` (ms; default the clock); returns the reports."""
        from matih_lite.monitoring import Monitoring
        from matih_lite.monitoring.service import format_duration, parse_duration

        if self.host is None:
            raise RuntimeError("the drift runner was not started")
        if self.monitoring is None:
            self.monitoring = Monitoring(self.host)
        monitoring = self.monitoring
        now = int(time.time() * 1000) if now is None else int(now)
        self.stats["ticks"] += 1
        self.stats["last_tick"] = now
        reports = []
        for tenant in self._tenants():
            principal = _monitor(tenant)
            for d in self._deployments(principal):
                settings = monitoring.settings(d.model)
                grace = parse_duration(settings.grace, "grace")
                sizes = sorted({parse_duration(w) for w in settings.windows})
                for size in sizes:  # smaller first, so larger windows merge them
                    label = format_duration(size)
                    end = (now - grace) // size * size
                    key = (tenant, d.name, label)
                    last = self._last.get(key)
                    if last is None:
                        last = monitoring.last_checked(tenant, d.name, label) or 0
                    if end <= last:
                        self._last[key] = last
                        continue
                    try:
                        reports.append(monitoring.check(principal, d.name, label, end=end, aligned=True, act=True))
                        self.stats["checks"] += 1
                    except Exception as exc:
                        self.stats["errors"] += 1
                        self.stats["last_error"] = f"{d.name} {label}: {type(exc).__name__}: " \
                                                   f"{getattr(exc, 'message', exc)}"
                        log.warning("drift check of %s (%s window ending %s) failed: %s", d.name, label, end,
                                    getattr(exc, "message", exc))
                    self._last[key] = end
        return reports

    def _tenants(self) -> list[str]:
        names = {"default"}
        lister = getattr(self.host.metadata, "list_tenants", None)
        if lister is not None:
            try:
                names |= {t.name for t in lister()}
            except Exception:
                log.debug("listing tenants failed", exc_info=True)
        return sorted(names)

    def _deployments(self, principal: Any) -> list[Any]:
        from matih_lite.serving.deployments import Deployments

        out, token = [], None
        manager = Deployments(self.host)
        while True:
            page = manager.list(principal, max_results=1000, page_token=token)
            out.extend(d for d in page.items if d.status == "active")
            token = page.next_token
            if not token:
                return out


def _monitor(tenant: str) -> Any:
    from matih_lite.identity import Principal
    from matih_lite.monitoring.service import MONITOR_USER

    return Principal(tenant, MONITOR_USER, ("admin",))


def create_runner(settings: InProcessDriftSettings, context: BackendContext) -> InProcessDriftRunner:
    return InProcessDriftRunner(settings, context)


@hookimpl
def register_backends(register):
    register("drift", "inprocess", create_runner, settings=InProcessDriftSettings,
             summary="a scheduler thread in the ml-service; the lite default")


@hookimpl
def startup(host):
    """Start the drift slot's runner, whichever backend fills the slot (runners make ``start`` idempotent)."""
    if host.active("drift") is None:
        return
    try:
        host.backend("drift").start(host)
    except Exception:  # drift monitoring must never keep the service from starting
        log.exception("the drift runner did not start")


@hookimpl
def shutdown(host):
    if host.active("drift") is None:
        return
    try:
        host.backend("drift").stop()
    except Exception:
        log.exception("the drift runner did not stop cleanly")
