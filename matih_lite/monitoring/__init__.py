"""Drift monitoring: baselines of what a model was trained on, windows of what it serves, and what to do.

- :mod:`~matih_lite.monitoring.stats`: the statistics and mergeable aggregates (numpy only, so a
  Flink job can ship the file -- or import ``matih_lite.monitoring.stats`` -- without the rest).
- :mod:`~matih_lite.monitoring.profile`: baselines (:class:`Profile`) built from training data.
- :mod:`~matih_lite.monitoring.settings`: ``[drift]`` (:class:`DriftSettings`), durations.
- :mod:`~matih_lite.monitoring.service`: :class:`Monitoring` -- windows over the inference log, checks,
  stored reports; :mod:`~matih_lite.monitoring.actions` what a check does about drift (alerts, health,
  retraining, rollback); :mod:`~matih_lite.monitoring.schedule` when windows are due.
- :mod:`~matih_lite.monitoring.client`: :class:`DriftClient`, embedded or over HTTP, for the CLI.
- :mod:`~matih_lite.monitoring.report`: the self-contained HTML report.

Names below are imported on first use, so importing the package (or ``stats``) loads no more
than numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matih_lite.host import Host


_LAZY = {
    "BASELINE_TAG": "profile", "Profile": "profile", "build_profile": "profile",
    "HEALTH_TAG": "actions", "HEALTH_DETAIL_TAG": "actions", "DriftClient": "client", "DriftSettings": "settings",
    "Monitoring": "service", "drift_settings": "settings", "DriftSchedule": "schedule",
}

__all__ = [*_LAZY, "build_baseline"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'matih_lite.monitoring' has no attribute {name!r}")
    return getattr(importlib.import_module(f"matih_lite.monitoring.{module}"), name)


def build_baseline(principal: Any, name: str, version: int | str, data: Any = None, *, host: Host | None = None,
                   **options: Any) -> Any:
    """Build and store a version's drift baseline (see :meth:`Monitoring.build_baseline`); returns the Profile.

    ``host`` defaults to this folder's platform (``Host.open()``), closed afterwards.
    """
    from matih_lite.monitoring.service import Monitoring

    if host is not None:
        return Monitoring(host).build_baseline(principal, name, version, data, **options)
    from matih_lite.host import Host

    opened = Host.open()
    try:
        return Monitoring(opened).build_baseline(principal, name, version, data, **options)
    finally:
        opened.close()
