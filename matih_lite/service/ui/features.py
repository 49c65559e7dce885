"""Features: the applied views with their freshness and quality, and one view's definition, checks and history.

Read through :class:`~matih_lite.features.service.Features` (what ``/api/v1/features`` serves) for the
caller's tenant. Monitoring is computed for the page with alerts off: opening a page never notifies
anyone (``POST /api/v1/features/monitoring`` and the scheduler do that).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.params import FromPath

from matih_lite.errors import InvalidInput, NotFound
from matih_lite.service.ui.pages import Pages
from matih_lite.service.ui.render import page, who


def features_of(request: Request) -> Any:
    from matih_lite.features.service import Features

    return Features.of(request.app.state["host"])


def checked(features: Any, principal: Any, view: str) -> dict[str, Any]:
    """A view's monitoring report without alerts, or its error in words (a source that cannot be read)."""
    from matih_lite.features.monitoring import monitor_view

    try:
        return monitor_view(features, principal, view, alert=False)
    except InvalidInput as exc:
        return {"view": view, "error": exc.message}


class FeaturePages(Pages):
    path = "/ui"

    @get("/features", sync_to_thread=True)
    def features(self, request: Request) -> Response:
        from matih_lite.features.views import overview

        principal = who(request)
        features = features_of(request)
        try:
            applied = overview(features, principal.tenant)
        except NotFound:
            return page(request, "features.html", title="Features", section="features", applied=None, reports={})
        reports = {v["name"]: checked(features, principal, v["name"]) for v in applied["feature_views"]}
        return page(request, "features.html", title="Features", section="features", applied=applied, reports=reports)

    @get("/features/{name:str}", sync_to_thread=True)
    def feature(self, request: Request, name: FromPath[str]) -> Response:
        from matih_lite.features.views import show

        principal = who(request)
        features = features_of(request)
        shown = show(features, principal, name, monitor=False)
        report = checked(features, principal, name) if shown["kind"] == "feature_views" else None
        return page(request, "feature.html", title=name, section="features", shown=shown, report=report)


CONTROLLERS = [FeaturePages]
