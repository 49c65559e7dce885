"""Builds the ml-service: the host as a dependency, controllers per domain, plugin routes, errors."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from matih_lite import __version__
from matih_lite.host import Host
from matih_lite.service.accounts import bearer_auth
from matih_lite.service.health import HealthController
from matih_lite.service.observability import ObservedApp, RequestMetrics
from matih_lite.service.problems import EXCEPTION_HANDLERS

log = logging.getLogger("matih_lite.service")

DOMAIN_CONTROLLERS: tuple[str, ...] = (
    "tracking", "mlflow_compat", "accounts", "registry", "mlflow_registry", "lineage", "cards", "deployments", "oip",
    "monitoring", "jobs",
)
"""Modules under matih_lite.service exposing ``CONTROLLERS``, added as the domains arrive."""


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
        log.info("ml-service ready (profile %s, state in %s)", host.profile, host.config.home)

    def on_shutdown() -> None:
        host.pm.hook.shutdown(host=host)
        host.close()

    app = Litestar(
        route_handlers=handlers,
        dependencies={"host": Provide(lambda: host, use_cache=True, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[bearer_auth(host)],  # tokens and role gates when auth is on (see service/accounts.py)
        openapi_config=OpenAPIConfig(title="matih-lite ml-service", version=__version__, path="/schema"),
        state=State({"host": host, "metrics": metrics}),
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        logging_config=None,
    )
    return ObservedApp(app, metrics)
