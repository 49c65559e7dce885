"""The monitoring domain's plugin: the built-in drift tests, and starting the drift slot's runner.

``startup`` starts whichever runner fills the drift slot (the built-in ``inprocess`` one or a
plugin's) with the :class:`~matih_lite.monitoring.schedule.DriftSchedule` of that host; ``shutdown``
stops it. The built-in drift tests are ``ks``, ``psi``, ``chi2``, ``jensen_shannon`` and ``wasserstein``.

Each is a :class:`~matih_lite.monitoring.stats.DriftTest`: a pure function of a baseline's and a
window's aggregates, with a default threshold (override it in ``[drift] thresholds``):

==================  ==========================================================  ==================
test                statistic                                                   drift when
==================  ==========================================================  ==================
``ks``              two-sample Kolmogorov-Smirnov D and its p-value             p < 0.05
``psi``             population stability index (baseline deciles / categories)  PSI >= 0.2
``chi2``            chi-squared test of homogeneity (deciles / categories)      p < 0.05
``jensen_shannon``  Jensen-Shannon distance, natural log                        distance >= 0.1
``wasserstein``     W1 divided by the reference's standard deviation            distance >= 0.1
==================  ==========================================================  ==================

A plugin adds its own the same way: ``register(name, test)`` where ``test(reference, current,
threshold=None)`` returns the same dict and has ``threshold``, ``kind`` and ``applies_to``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from matih_lite.hookspecs import hookimpl
from matih_lite.monitoring.stats import BUILTIN_TESTS

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.monitoring")


@hookimpl
def register_drift_tests(register):
    for test in BUILTIN_TESTS:
        register(test.name, test)


@hookimpl
def register_settings(register):
    from matih_lite.monitoring.settings import DriftSettings, check_drift

    register("drift", DriftSettings, check=check_drift)


DRIFT_DUTY = "drift-runner"
"""The lease the replica that checks drift windows holds (:class:`~matih_lite.replicas.Duty`)."""
DUTY_PLUGIN = "matih_lite.monitoring.duty"
"""The name the host's drift duty is registered under in its plugin manager (for shutdown and reports)."""


@hookimpl
def startup(host: Host) -> None:
    """Start the drift slot's runner with this host's schedule; drift monitoring never keeps the service down.

    Its checks run once across replicas: each tick checks the due windows only on the replica that holds
    the ``drift-runner`` lease (the others skip it), so two services over one platform check a window once."""
    if host.active("drift") is None:
        return
    from matih_lite.monitoring.schedule import DriftSchedule
    from matih_lite.replicas import Duty

    try:
        schedule = DriftSchedule(host)
        duty = drift_duty(host)
        if duty is None:  # a host started again keeps its duty (and its holder name)
            duty = Duty(host.metadata, DRIFT_DUTY)
            host.pm.register(duty, name=DUTY_PLUGIN)
        host.backend("drift").start(once_across_replicas(schedule, duty))
    except Exception:
        log.exception("the drift runner did not start")


def once_across_replicas(schedule: Any, duty: Any) -> Any:
    """``schedule``'s plan whose ``check_due`` checks only while ``duty`` is held here."""
    import dataclasses

    plan = schedule.plan()

    def check_due(now: int) -> list[dict[str, Any]]:
        if not duty.held():
            return []
        if duty.just_taken:
            # Another replica checked windows while this one did not hold the duty: what was checked last is
            # read from the store again rather than from this schedule's memory of its own checks.
            schedule._last.clear()
        return plan.check_due(now)

    return dataclasses.replace(plan, check_due=check_due, held=duty.held)


def drift_duty(host: Host) -> Any:
    """The host's drift duty (None before startup, or without a drift runner)."""
    return host.pm.get_plugin(DUTY_PLUGIN)


@hookimpl
def shutdown(host: Host) -> None:
    if host.active("drift") is None:
        return
    try:
        host.backend("drift").stop()
    except Exception:
        log.exception("the drift runner did not stop cleanly")
    duty = drift_duty(host)
    if duty is not None:
        host.pm.unregister(name=DUTY_PLUGIN)
        duty.release()
