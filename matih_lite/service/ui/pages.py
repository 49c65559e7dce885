"""What every workbench controller shares: no OpenAPI entries, and errors as pages.

An error on a page is a page (404, 400, 403...) with the message, never JSON and never a bare 500;
on ``/ui/api/...`` (what the pages' scripts fetch) it is RFC 9457 problem details like the REST API.
A page request without a valid session goes to the sign-in page and comes back afterwards.
"""

from __future__ import annotations

import logging
import time

from litestar import Controller, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException

from matih_lite.errors import MatihError, Unauthorized
from matih_lite.service.problems import problem_of, problem_response

log = logging.getLogger("matih_lite.service.ui")


def error_page(request: Request, exc: Exception) -> Response:
    """The page (or, under ``/ui/api``, the problem document) for an exception a workbench route raised."""
    if request.url.path.startswith("/ui/api/"):
        return problem_response(request, exc)
    from matih_lite.service.ui.render import page
    from matih_lite.service.ui.session import unauthenticated_redirect

    if isinstance(exc, (NotAuthorizedException, Unauthorized)) and request.method in ("GET", "HEAD"):
        return unauthenticated_redirect(request)
    status, body, headers = problem_of(exc, request.method, request.url.path)
    try:
        response = page(request, "error.html", status_code=status, title=body["title"], problem=body)
    except Exception:  # the error page itself failed: say so in plain text rather than lose the status
        log.exception("the error page for %s failed", request.url.path)
        response = Response(f"{body['title']}: {body['detail']}", status_code=status, media_type="text/plain")
    for name, value in headers.items():
        if name.lower() != "www-authenticate":
            response.headers[name] = value
    return response


async def mark_start(request: Request) -> None:
    """Note when the route began, for the ``Server-Timing`` header the pages send (the benchmark reads it)."""
    request.scope["matih_ui_started"] = time.perf_counter()  # type: ignore[typeddict-unknown-key]


def server_timing(request: Request) -> str:
    """``app;dur=MS``: the time since the route began."""
    started = request.scope.get("matih_ui_started") or time.perf_counter()
    return f"app;dur={(time.perf_counter() - started) * 1000:.2f}"


class Pages(Controller):
    """Base of the workbench's controllers."""

    include_in_schema = False
    before_request = mark_start
    # Every class the app maps itself, so these win over the app's JSON handlers on workbench routes.
    exception_handlers = {MatihError: error_page, HTTPException: error_page,  # type: ignore[dict-item]  # noqa: RUF012
                          Exception: error_page}
