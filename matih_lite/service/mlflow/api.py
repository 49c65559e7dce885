"""MLflow's REST conventions, shared by every MLflow-compatible route: paths, errors, protobuf JSON.

Bodies and answers are protobuf JSON as the client writes and parses them (field names as in
MLflow's ``service.proto``, int64 as JSON numbers, NaN and infinities as ``"NaN"``,
``"Infinity"`` and ``"-Infinity"``); errors are ``{"error_code": ..., "message": ...}`` with
MLflow's HTTP status.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from matih_lite.contracts.records import decode_page_token, encode_page_token
from matih_lite.errors import (
    Conflict,
    Forbidden,
    GovernanceRefused,
    InvalidInput,
    MatihError,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    StoreError,
    Unauthorized,
)
from matih_lite.tracking.service import check_key, check_value

log = logging.getLogger("matih_lite.service.mlflow")

API = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
ARTIFACTS_API = ("/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts")
SEARCH_MAX_RESULTS = 50_000
VIEW_TYPES = {"ACTIVE_ONLY": "active", "DELETED_ONLY": "deleted", "ALL": "all", 1: "active", 2: "deleted", 3: "all"}


def paths(suffix: str, prefixes: tuple[str, ...] = API) -> list[str]:
    """The route of an MLflow endpoint: ``/api/2.0/mlflow/{suffix}`` (or under another prefix pair)."""
    # Only the /api/ spelling: the service rewrites /ajax-api/ to /api/ before routing
    # (service/observability.py), because a handler on two paths runs through the thread pool twice.
    return [f"{prefixes[0]}/{suffix}"]


# ---- errors ----------------------------------------------------------------------------------------
class MlflowApiError(Exception):
    """An answer in MLflow's own words: an ``error_code`` name and the HTTP status MLflow gives it."""

    def __init__(self, error_code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status


def required(value: Any, name: str) -> Any:
    """``value``, or MLflow's error for a missing required parameter."""
    if value is None or value == "":
        raise InvalidInput(f"Missing value for required parameter '{name}'. See the API docs for more "
                           "information about request parameters.")
    return value


def error_body(error_code: str, message: str, status: int) -> Response[dict[str, str]]:
    """MLflow's error answer: ``{"error_code", "message"}`` with the status it gives that code."""
    return Response({"error_code": error_code, "message": message}, status_code=status,
                    media_type="application/json")


def mlflow_error_handler(request: Request, exc: Exception) -> Response:
    """MatihError, Litestar's HTTP errors and anything unexpected, as MLflow-shaped JSON."""
    if isinstance(exc, MlflowApiError):
        return error_body(exc.error_code, exc.message, exc.status)
    if isinstance(exc, MatihError):
        message = exc.message
        if isinstance(exc, NotFound):
            return error_body("RESOURCE_DOES_NOT_EXIST", message, 404)
        if isinstance(exc, Conflict):
            code = "RESOURCE_ALREADY_EXISTS" if "already exists" in message else "INVALID_PARAMETER_VALUE"
            return error_body(code, message, 400)
        if isinstance(exc, (InvalidInput, GovernanceRefused)):
            return error_body("INVALID_PARAMETER_VALUE", message, 400)
        if isinstance(exc, Unauthorized):
            return error_body("UNAUTHENTICATED", message, 401)
        if isinstance(exc, Forbidden):
            return error_body("PERMISSION_DENIED", message, 403)
        if isinstance(exc, StoreError):
            return error_body("TEMPORARILY_UNAVAILABLE", message, 503)
        if isinstance(exc, (PayloadTooLarge, QuotaExceeded)):  # [quotas] on artifact uploads
            return error_body("RESOURCE_EXHAUSTED", message, exc.status)
        log.error("%s %s failed: %s", request.method, request.url.path, message)
        return error_body("INTERNAL_ERROR", message, 500)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        detail = exc.detail
        if isinstance(exc, ValidationException) and exc.extra:
            problems = "; ".join(f"{e.get('key', '')}: {e.get('message', '')}" if isinstance(e, dict) else str(e)
                                 for e in (exc.extra if isinstance(exc.extra, list) else [exc.extra]))
            detail = f"{detail}: {problems}"
        code = {400: "INVALID_PARAMETER_VALUE", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "ENDPOINT_NOT_FOUND", 409: "RESOURCE_CONFLICT", 413: "INVALID_PARAMETER_VALUE",
                415: "INVALID_PARAMETER_VALUE", 429: "REQUEST_LIMIT_EXCEEDED"}.get(status)
        if code is None:
            code = "BAD_REQUEST" if 400 <= status < 500 else "INTERNAL_ERROR"
        response = error_body(code, detail, status)
        if getattr(exc, "headers", None):
            response.headers.update(exc.headers)  # e.g. WWW-Authenticate on a 401
        return response
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return error_body("INTERNAL_ERROR", "an unexpected error occurred; the service log has the details", 500)


EXCEPTION_HANDLERS = {MlflowApiError: mlflow_error_handler, MatihError: mlflow_error_handler,
                      HTTPException: mlflow_error_handler, Exception: mlflow_error_handler}
"""The same keys as the app's own handlers: Litestar picks by exception class first, then by layer."""


# ---- protobuf JSON -----------------------------------------------------------------------------------
class KeyValue(msgspec.Struct):
    """A tag or param as the client sends it (fields it may add and we do not use are ignored)."""

    key: str | None = None
    value: str | None = None


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """Protobuf JSON leaves unset fields out."""
    return {k: v for k, v in d.items() if v is not None}


def kv(items: dict[str, str]) -> list[dict[str, str]]:
    """Tags or params as protobuf's list of ``{"key", "value"}``."""
    return [{"key": k, "value": v} for k, v in items.items()]


def pairs(items: Iterable[KeyValue], what: str, *, limit: int) -> dict[str, str]:
    """Key/value pairs as a dict; a key given twice with different values is refused, as MLflow does."""
    out: dict[str, str] = {}
    for item in items:
        key = check_key(item.key, what)
        value = "" if item.value is None else item.value
        check_value(value, limit, what, key)
        if key in out and out[key] != value:
            raise InvalidInput(f"Duplicate {what} keys have been submitted with different values: {key!r}")
        out[key] = value
    return out


def result_limit(value: int | None, default: int) -> int:
    """A search's ``max_results``: the default when not given, else 1..50,000 as MLflow allows."""
    if value is None:
        return default
    if value < 1 or value > SEARCH_MAX_RESULTS:
        raise InvalidInput(f"Invalid value {value} for parameter 'max_results' supplied. It must be at most "
                           f"{SEARCH_MAX_RESULTS} and at least 1")
    return value


def view_type(value: str | int | None) -> str:
    """MLflow's ``ViewType`` (name or number) as a lifecycle: active, deleted or all."""
    if value is None or value == "":
        return "active"
    found = VIEW_TYPES.get(value.upper() if isinstance(value, str) else value)
    if found is None:
        raise InvalidInput(f"invalid view type {value!r}; use ACTIVE_ONLY, DELETED_ONLY or ALL")
    return found


def millis(value: int | None, name: str) -> int | None:
    """A time in milliseconds as the stores keep it (int64, not negative), or None when not given."""
    if value is None or value == 0:
        return None
    if not 0 < value < 2**63:
        raise InvalidInput(f"{name} must be milliseconds since the epoch, got {value}")
    return value


def page_of(rows: list[Any], field: str, limit: int, page_token: str | None) -> dict[str, Any]:
    """``{field: rows of this page, "next_page_token": ...}`` for answer rows filtered and sorted in memory."""
    offset = decode_page_token(page_token)
    out: dict[str, Any] = {field: rows[offset:offset + limit]}
    if offset + limit < len(rows):
        out["next_page_token"] = encode_page_token(offset + limit)
    return out
