"""One layer mapping every error to RFC 9457 problem-details JSON, and the one place request bodies are decoded.

:func:`problem_of` turns any exception into a status and a problem document (every error layer uses it:
Litestar's, the fast prediction path's, the protocol controllers'); :data:`PROBLEM_SCHEMA` is that document's
JSON Schema, the one the OpenAPI document gives every error response (:mod:`matih_lite.service.openapi`).
:class:`BodyRequest` is the app's request class: its ``json()`` is where every JSON body a Litestar route takes
is decoded, so a body that is not JSON, is sent as another media type, or nests too deep is a 4xx problem there.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException

from matih_lite.errors import InvalidInput, MatihError

log = logging.getLogger("matih_lite.service")

PROBLEM_JSON = "application/problem+json"


HTTP_TITLES = {400: "Invalid input", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
               405: "Method not allowed", 413: "Payload too large", 415: "Unsupported media type"}

TOO_DEEP = ("the request nests deeper than the service reads (a JSON body or value nested hundreds of levels); "
            "flatten it")

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ProblemDetails",
    "description": "An error, as RFC 9457 problem details. Extension members say more where there is more to say: "
                   "`errors` (what failed validation, each with `message`, `key` and `source`), `field` (the input "
                   "at fault), `unmet` (governance thresholds missed), `error` (the Open Inference Protocol's "
                   "message, or OpenAI's error object on the LLM routes), `retry_after` and others.",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "description": "A URI naming the kind of problem; about:blank when the status "
                                                  "says it all."},
        "title": {"type": "string", "description": "A short summary of the kind of problem."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599, "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong with this request, and what to do about it."},
        "instance": {"type": "string", "description": "The request path."},
        "errors": {"type": "array", "items": {"type": "object"},
                   "description": "Each problem the input validation found."},
        "field": {"type": "string", "description": "The input field at fault."},
    },
    "additionalProperties": True,
}
"""The JSON Schema of what :func:`problem_of` answers."""


def problem_of(exc: BaseException, method: str, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, problem-details document and extra headers for any exception a route raised (logged
    when it is the service's fault). Every error layer, Litestar's and the fast prediction path's, uses it."""
    headers: dict[str, str] = {}
    if isinstance(exc, RecursionError):
        # Decoders recurse once per level of nesting (msgspec's and numpy's included): input nested past the
        # interpreter's limit fails wherever it is first walked, which for the fast paths is outside BodyRequest.
        log.warning("%s %s: input nested too deep: %s", method, path, exc)
        exc = InvalidInput(TOO_DEEP)
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


def is_json_media(content_type: str | None) -> bool:
    """Whether a request's ``Content-Type`` may carry a JSON body: JSON, a ``+json`` type, or none given
    (clients that send JSON without saying so are many, and nothing else is read from such a body)."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json", "") or media.endswith("+json")


class BodyRequest(Request):
    """The app's request class: ``json()`` is the one place a Litestar route's JSON body is decoded."""

    async def json(self) -> Any:
        """The decoded JSON body. 415 when the body is sent as another media type; 400 when it is not JSON
        or nests deeper than the decoder goes (a RecursionError would otherwise surface as a 500)."""
        content_type = self.headers.get("content-type")
        if not is_json_media(content_type) and await self.body():
            raise HTTPException(status_code=415, detail=f"this route reads a JSON body; send it with "
                                f"'Content-Type: application/json', not {content_type!r}")
        try:
            return await super().json()
        except RecursionError:
            raise InvalidInput(TOO_DEEP) from None
        except SerializationException as exc:
            raise InvalidInput(f"the request body is not valid JSON: {exc}", detail={"field": "body"}) from None
