"""Built-in notifiers: ``log`` writes each alert to the ``matih_lite.alerts`` logger."""

from __future__ import annotations

import json
import logging
from typing import Any

from matih_lite.hookspecs import hookimpl

log = logging.getLogger("matih_lite.alerts")


class LogNotifier:
    """Writes the alert as one JSON line at WARNING (alerts are worth a look)."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.level = getattr(logging, str((settings or {}).get("level", "WARNING")).upper(), logging.WARNING)

    def notify(self, alert: dict[str, Any]) -> None:
        log.log(self.level, "alert %s", json.dumps(alert, sort_keys=True, default=str))


@hookimpl
def register_notifiers(register):
    register("log", LogNotifier)
