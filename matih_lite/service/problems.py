"""One layer mapping every error to RFC 9457 problem-details JSON."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from matih_lite.errors import MatihError

log = logging.getLogger("matih_lite.service")

PROBLEM_JSON = "application/problem+json"


HTTP_TITLES = {400: "Invalid input", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
               405: "Method not allowed", 413: "Payload too large", 415: "Unsupported media type"}


def problem_of(exc: BaseException, method: str, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, problem-details document and extra headers for any exception a route raised (logged
    when it is the service's fault). Every error layer, Litestar's and the fast prediction path's, uses it."""
    headers: dict[str, str] = {}
    if isinstance(exc, MatihError):
        if exc.status >= 500:
            log.error("%s %s failed: %s", method, path, exc.message)
        status, title, detail, extra = exc.status, exc.title, exc.message, dict(exc.detail)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
    elif isinstance(exc, HTTPException):
        extra = {}
        if isinstance(exc, ValidationException) and exc.extra:
            extra["errors"] = exc.extra
        status, title, detail = exc.status_code, HTTP_TITLES.get(exc.status_code, "HTTP error"), exc.detail
        headers.update(getattr(exc, "headers", None) or {})
    else:
        log.exception("unexpected error in %s %s", method, path, exc_info=exc)
        status, title, extra = 500, "Internal error", {}
        detail = "an unexpected error occurred; the service log has the details"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "instance": path}
    body.update({k: v for k, v in extra.items() if v is not None})
    return status, body, headers


def problem_response(request: Request, exc: Exception) -> Response:
    """Litestar's exception handler: the problem details of :func:`problem_of`."""
    status, body, headers = problem_of(exc, request.method, request.url.path)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers or None)


EXCEPTION_HANDLERS = {
    MatihError: problem_response,
    HTTPException: problem_response,
    Exception: problem_response,
}
