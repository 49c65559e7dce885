"""Built-in: deployments follow the registry, and the ml-service runs their canaries.

``startup(host)`` attaches a :class:`~matih_lite.serving.traffic.TrafficManager` to that
host's own plugin manager (the way :mod:`matih_lite.lineage.plugin` attaches its
recorder: one object per host, no globals), so the host's ``on_event`` calls reach it: a version
promoted into a stage, an alias moved or a registry rollback updates every deployment that
follows it. It also starts the traffic manager's loops (the change feed and the canary
scheduler) and the deployments' stream consumers that ran before (:mod:`matih_lite.serving.streams`);
``shutdown`` stops them. Block this plugin to serve deployments as they are, with
neither following nor canary stepping.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from matih_lite.hookspecs import hookimpl

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.serving")


@hookimpl
def register_settings(register):
    from matih_lite.serving.canary import CanarySection, check_canary
    from matih_lite.serving.traffic import ServerSettings

    register("server", ServerSettings)
    register("canary", CanarySection, check=check_canary)


@hookimpl
def startup(host: Host) -> None:
    from matih_lite.serving.traffic import attach_traffic

    manager = attach_traffic(host)
    if manager is not None:
        manager.start()
    from matih_lite.serving.streams import attach_streams

    streams = attach_streams(host)  # the deployments' stream consumers, as they ran before the restart
    if streams is not None:
        try:
            streams.restore()
        except Exception as exc:  # the events slot is down: serve HTTP anyway, say why
            log.warning("stream consumers not restored: %s", getattr(exc, "message", exc))


@hookimpl
def shutdown(host: Host) -> None:
    from matih_lite.serving.streams import detach_streams
    from matih_lite.serving.traffic import detach_traffic

    detach_streams(host)
    detach_traffic(host)
