"""The ML workbench at ``/ui``: server-rendered pages over the same domain services as the REST API.

Pages are jinja2 templates (``templates/``) with a few kilobytes of hand-written script and CSS
(``static/``): charts, the parallel-coordinates plot, row selection, live refresh. Nothing is
fetched from outside the service and nothing is built at install or run time.

Each page reads through the domain (``Tracking``, ``Registry``, ``Deployments``, ``Monitoring``,
``Lineage``, ``Jobs``) as the caller (:mod:`matih_lite.service.auth`), so the tenant scoping and
roles are the REST API's; writes go through the same governance and show its refusals in words.
Sign-in and CSRF: :mod:`matih_lite.service.ui.session`.

Modules: ``runs`` (experiments, runs, artifacts, compare, metric series), ``models`` (registry),
``deployments`` (deployments and drift), ``lineage``, ``jobs``, ``features``, ``links`` (``/``,
MLflow's links), ``session``, ``render`` and ``pages`` (what they share).
"""

from __future__ import annotations

from typing import Any


def _controllers() -> list[Any]:
    from litestar.datastructures import CacheControlHeader
    from litestar.static_files import create_static_files_router

    from matih_lite.service.ui import deployments, features, jobs, lineage, links, models, runs, session
    from matih_lite.service.ui.render import STATIC

    static = create_static_files_router(path="/ui/static", directories=[STATIC], include_in_schema=False,
                                        cache_control=CacheControlHeader(max_age=86400))
    handlers: list[Any] = [static, session.SessionController]
    for module in (links, runs, models, deployments, lineage, jobs, features):
        handlers.extend(module.CONTROLLERS)
    return handlers


CONTROLLERS = _controllers()
