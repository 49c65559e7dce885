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
from matih_lite.service.openapi import (
    StrictStructSchemaPlugin,
    TruthfulDocument,
    TruthfulJson,
    TruthfulSwagger,
    TruthfulYaml,
    repair_options_allow,
)
from matih_lite.service.problems import EXCEPTION_HANDLERS, BodyRequest

log = logging.getLogger("matih_lite.service")

DOMAIN_CONTROLLERS: tuple[str, ...] = (
    "tracking", "mlflow", "accounts", "registry", "lineage", "cards", "deployments",
    "llm", "streams", "oip", "oip_triton", "monitoring", "jobs", "ui", "features",
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


DOCS_ASSETS = "/schema/assets"
"""Where the API docs page's scripts and styles are served from: this service, never a CDN (it works offline)."""


def docs_pages(auth: bool) -> list[Any]:
    """``/schema`` (and ``/schema/swagger``): Swagger UI from the ``swagger-ui-bundle`` package's files, served
    here; ``/schema/openapi.json`` and ``.yaml`` the document itself, each the truthful document
    (:mod:`matih_lite.service.openapi`) of a service with or without ``auth``."""
    truth = TruthfulDocument(auth)
    return [
        TruthfulSwagger(truth, js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                        standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
                        path=["/", "/swagger"],
                        favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>"),
        TruthfulJson(truth), TruthfulYaml(truth),
    ]


def docs_assets() -> Any:
    """The static route holding Swagger UI's files (from the pinned ``swagger-ui-bundle`` distribution)."""
    from litestar.static_files import create_static_files_router
    from swagger_ui_bundle import swagger_ui_path

    return create_static_files_router(path=DOCS_ASSETS, directories=[str(swagger_ui_path)], include_in_schema=False,
                                      name="docs-assets")


def create_app(host: Host) -> ObservedApp:
    """The ASGI app serving ``host``: mount with uvicorn, or drive with a test client."""
    import importlib

    metrics = RequestMetrics()
    handlers: list[Any] = [HealthController]
    for module_name in DOMAIN_CONTROLLERS:
        handlers.extend(importlib.import_module(f"matih_lite.service.{module_name}").CONTROLLERS)
    handlers.extend(host.registry("register_routes").values())
    handlers.append(docs_assets())

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
        openapi_config=OpenAPIConfig(title="matih-lite ml-service", version=__version__, path="/schema",
                                     render_plugins=docs_pages(gate.enabled)),
        plugins=[StrictStructSchemaPlugin()],
        request_class=BodyRequest,  # where JSON bodies are decoded: 415 / 400 problems, never a 500
        state=State({"host": host, "metrics": metrics}),
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        logging_config=None,
    )
    repair_options_allow(app)
    return ObservedApp(app, metrics, FastRoutes(host, gate, app.request_max_body_size))
