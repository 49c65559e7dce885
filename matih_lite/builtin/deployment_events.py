"""Built-in: deployments follow the registry, and the ml-service runs their canaries.

``startup(host)`` attaches a :class:`~matih_lite.serving.deployments.TrafficManager` to that
host's own plugin manager (the way :mod:`matih_lite.builtin.lineage_events` attaches its
recorder: one object per host, no globals), so the host's ``on_event`` calls reach it: a version
promoted into a stage, an alias moved or a registry rollback updates every deployment that
follows it. It also starts the traffic manager's loops (the change feed and the canary
scheduler); ``shutdown`` stops them. Block this plugin to serve deployments as they are, with
neither following nor canary stepping.
"""

from __future__ import annotations

from typing import Any

from matih_lite.hookspecs import hookimpl


@hookimpl
def startup(host: Any) -> None:
    from matih_lite.serving.deployments import attach_traffic

    manager = attach_traffic(host)
    if manager is not None:
        manager.start()


@hookimpl
def shutdown(host: Any) -> None:
    from matih_lite.serving.deployments import detach_traffic

    detach_traffic(host)
