"""``/``: MLflow's links land in the workbench.

The unchanged ``mlflow`` client prints ``View run at http://HOST/#/experiments/2/runs/ID``. A
fragment never reaches a server, so ``/`` answers a small page whose script
(``static/links.js``) reads it and replaces itself with the matching workbench page: runs,
experiments (``0`` is the Default experiment), registered models and their versions, and
``compare-runs``; anything else (or no fragment) opens ``/ui``.
"""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.params import FromPath

from matih_lite.service.ui.pages import Pages
from matih_lite.service.ui.render import page


class MlflowLinks(Pages):
    path = "/"

    @get("/", sync_to_thread=False)
    def root(self, request: Request) -> Response:
        return page(request, "links.html", title="matih-lite")


class UnknownPages(Pages):
    """Any other ``/ui/...`` path: a 404 page instead of the API's JSON."""

    path = "/ui"

    @get("/{rest:path}", sync_to_thread=False)
    def unknown(self, request: Request, rest: FromPath[str]) -> Response:
        from matih_lite.errors import NotFound

        raise NotFound(f"the workbench has no page at /ui{rest}; start from /ui")


CONTROLLERS = [MlflowLinks, UnknownPages]
