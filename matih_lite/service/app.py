"""Builds the ml-service: the host as a dependency, controllers per domain, plugin routes, errors."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from matih_lite import __version__
from matih_lite.host import Host
from matih_lite.service.accounts import BearerAuth, BearerGate
from matih_lite.service.fastpath import FastRoutes
from matih_lite.service.health import HealthController
from matih_lite.service.observability import ObservedApp, RequestMetrics
from matih_lite.service.problems import EXCEPTION_HANDLERS

log = logging.getLogger("matih_lite.service")

DOMAIN_CONTROLLERS: tuple[str, ...] = (
    "tracking", "mlflow_compat", "accounts", "registry", "mlflow_registry", "lineage", "cards", "deployments",
    "streams", "oip", "monitoring", "jobs",
)
"""Modules under matih_lite.service exposing ``CONTROLLERS``, added as the domains arrive."""


SWITCH_INTERVAL_S = 0.0005


def settle_heap() -> None:
    """Move everything alive now (modules, the app, the host) out of the garbage collector's sight.

    A full collection walks every tracked object; after the imports of a service with its ML
    libraries that is about a million of them, tens of milliseconds during which no request is
    answered, every few seconds under load (the requests' own short-lived objects trigger it).
    Frozen objects are still freed when unreferenced; they are only not scanned for cycles.
    """
    import gc
    import sys

    gc.collect()
    gc.freeze()
    # A background thread holding the GIL (the inference log building a table, a store query)
    # keeps a request waiting until it lets go: at most this long, instead of CPython's 5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def create_app(host: Host) -> ObservedApp:
    """The ASGI app serving ``host``: mount with uvicorn, or drive with a test client."""
    import importlib

    metrics = RequestMetrics()
    handlers: list[Any] = [HealthController]
    for module_name in DOMAIN_CONTROLLERS:
        handlers.extend(importlib.import_module(f"matih_lite.service.{module_name}").CONTROLLERS)
    handlers.extend(host.registry("register_routes").values())

    def on_startup() -> None:
        host.pm.hook.startup(host=host)
        settle_heap()
        log.info("ml-service ready (profile %s, state in %s)", host.profile, host.config.home)

    def on_shutdown() -> None:
        host.pm.hook.shutdown(host=host)
        host.close()

    gate = BearerGate(host)  # raises ConfigError for a bad [auth] section
    app = Litestar(
        route_handlers=handlers,
        dependencies={"host": Provide(lambda: host, use_cache=True, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[DefineMiddleware(BearerAuth, gate=gate)],  # tokens and role gates (see service/accounts.py)
        openapi_config=OpenAPIConfig(title="matih-lite ml-service", version=__version__, path="/schema"),
        state=State({"host": host, "metrics": metrics}),
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        logging_config=None,
    )
    return ObservedApp(app, metrics, FastRoutes(host, gate, app.request_max_body_size))
