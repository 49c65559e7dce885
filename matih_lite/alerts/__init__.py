"""Alerts: one path from anything that raises one (drift, canaries, jobs, features) to every notifier.

Notifiers are plugins (``register_notifiers``); the built-ins are ``log`` (:mod:`matih_lite.alerts.log`)
and ``webhook`` (:mod:`matih_lite.alerts.webhook`). ``[notifiers.NAME]`` in matih.toml picks them and
their settings; with none configured, alerts go to the ``log`` notifier.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from matih_lite.errors import MatihError

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.alerts")


def send_alert(host: Host, alert: Mapping[str, Any], *, level: str = "WARNING") -> int:
    """Send ``alert`` to every notifier in ``[notifiers]``; returns how many took it.

    With none configured, the ``log`` notifier writes it at ``level`` (jobs use INFO: a CLI run prints
    its outcome itself). A notifier that fails, or is not installed, is logged, never raised: an alert
    must not undo what it reports.
    """
    try:
        configured = host.config.section("notifiers") or {}
        factories = host.registry("register_notifiers")
    except MatihError:
        log.exception("cannot read the notifiers to send alert %s", alert.get("type"))
        return 0
    if not isinstance(configured, Mapping) or not configured:
        configured = {"log": {"level": level}}
    sent = 0
    for name, settings in configured.items():
        factory = factories.get(name)
        if factory is None:
            log.error("alert %s: notifiers.%s is not installed (installed: %s)", alert.get("type"), name,
                      ", ".join(sorted(factories)) or "none")
            continue
        try:
            factory(dict(settings) if isinstance(settings, Mapping) else {}).notify(dict(alert))
            sent += 1
        except Exception:
            log.exception("notifier %r failed sending alert %s", name, alert.get("type"))
    return sent
