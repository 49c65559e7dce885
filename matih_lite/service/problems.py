"""One layer mapping every error to RFC 9457 problem-details JSON."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from matih_lite.errors import MatihError

log = logging.getLogger("matih_lite.service")

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, instance: str, **extra: Any) -> Response[dict[str, Any]]:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "instance": instance}
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def matih_error_handler(request: Request, exc: MatihError) -> Response:
    if exc.status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return problem(exc.status, exc.title, exc.message, request.url.path, **exc.detail)


def http_error_handler(request: Request, exc: HTTPException) -> Response:
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationException) and exc.extra:
        extra["errors"] = exc.extra
    title = {400: "Invalid input", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
             405: "Method not allowed", 413: "Payload too large", 415: "Unsupported media type"}.get(
        exc.status_code, "HTTP error")
    headers = getattr(exc, "headers", None)
    resp = problem(exc.status_code, title, exc.detail, request.url.path, **extra)
    if headers:
        resp.headers.update(headers)
    return resp


def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return problem(500, "Internal error", "an unexpected error occurred; the service log has the details",
                   request.url.path)


EXCEPTION_HANDLERS = {
    MatihError: matih_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
