"""``drift = { backend = "inprocess" }``: the drift windows checked by a scheduler thread inside the ml-service.

The monitoring domain starts whichever runner fills the drift slot with a
:class:`~matih_lite.contracts.slots.DriftPlan`; this one wakes every ``poll_seconds`` and calls the
plan's ``check_due(now)``, which checks every window that is due (what is due, and catching up after a
pause, is :mod:`matih_lite.monitoring.schedule`'s to decide). ``stop`` lets a check in progress finish.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import msgspec

from matih_lite.contracts import BackendContext, Health
from matih_lite.contracts.slots import DriftPlan
from matih_lite.hookspecs import hookimpl

log = logging.getLogger("matih_lite.monitoring.runner")

STARTUP_DELAY = 5.0
"""Seconds between the service's start and the scheduler's first look."""


class InProcessDriftSettings(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    """False keeps the scheduler off (checks still run on demand)."""
    poll_seconds: float = 30.0
    """How often the scheduler looks for windows that are due."""
    startup_delay_seconds: float = STARTUP_DELAY
    """How long after the start the first look waits (nothing is due the instant the service starts)."""


@dataclass
class RunnerStats:
    """What the scheduler has done since it started (its health says it)."""

    ticks: int = 0
    checks: int = 0
    errors: int = 0
    last_tick: int | None = None
    last_error: str | None = None


class InProcessDriftRunner:
    """The :class:`~matih_lite.contracts.DriftRunner` of the lite profile: a daemon thread in the service."""

    def __init__(self, settings: InProcessDriftSettings | None = None, context: BackendContext | None = None) -> None:
        self.settings = settings or InProcessDriftSettings()
        self.plan: DriftPlan | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.stats = RunnerStats()

    def health(self) -> Health:
        if not self.settings.enabled:
            return Health(True, "scheduler disabled ([profiles.*.drift] enabled = false); checks run on demand")
        alive = self._thread is not None and self._thread.is_alive()
        if not alive:
            return Health(self.plan is None, "not started" if self.plan is None else "scheduler thread stopped")
        stats = self.stats
        detail = (f"{stats.ticks} ticks, {stats.checks} checks, {stats.errors} errors, "
                  f"polling every {self.settings.poll_seconds:g} s")
        if stats.last_error:
            detail += f"; last error: {stats.last_error}"
        return Health(True, detail)

    def start(self, plan: DriftPlan) -> None:
        """Begin calling ``plan.check_due`` on schedule (idempotent while running); returns at once."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self.plan = plan
            if not self.settings.enabled:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(plan,), name="matih-drift", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the scheduler; a check in progress finishes first."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)

    def close(self) -> None:
        self.stop()

    def _run(self, plan: DriftPlan) -> None:
        from matih_lite.threads import lower_priority

        lower_priority()
        # The service's own start (imports, opening backends) should not share the CPU with a first check.
        if self._stop.wait(min(self.settings.poll_seconds, self.settings.startup_delay_seconds)):
            return
        while not self._stop.is_set():
            stats = self.stats
            stats.ticks += 1
            stats.last_tick = int(time.time() * 1000)
            try:
                stats.checks += len(plan.check_due(stats.last_tick))
            except Exception as exc:  # the scheduler outlives any one failure
                stats.errors += 1
                stats.last_error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
                log.exception("drift scheduler tick failed")
            self._stop.wait(max(self.settings.poll_seconds, 0.05))


def create_runner(settings: InProcessDriftSettings, context: BackendContext) -> InProcessDriftRunner:
    return InProcessDriftRunner(settings, context)


@hookimpl
def register_backends(register):
    register("drift", "inprocess", create_runner, settings=InProcessDriftSettings,
             summary="a scheduler thread in the ml-service; the lite default")
