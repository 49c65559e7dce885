"""The running ml-service over HTTP, as every client of ``MATIH_URL`` reaches it.

:class:`ServiceHttp` is one keep-alive ``httpx.Client`` on the service's URL with the bearer
token, for the SDK's tracking and registry clients and for the CLI's ``MATIH_URL`` modes alike,
so they all fail the same way: a service that cannot be reached raises
:class:`~matih_lite.errors.StoreError` saying what to do about it, and an error response raises
the :mod:`matih_lite.errors` class its problem details map to (:func:`error_from_response`),
the same one the embedded call would have raised.

httpx loads when a client is built, not when this module is imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from matih_lite.errors import (
    Conflict,
    Forbidden,
    GovernanceRefused,
    InvalidInput,
    MatihError,
    NotFound,
    StoreError,
    Unauthorized,
)

START_OR_UNSET = "start it with 'matih-lite up', or unset MATIH_URL to work on this folder's store"

_ERRORS: dict[int, type[MatihError]] = {400: InvalidInput, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                        409: Conflict, 422: GovernanceRefused}


def error_from_response(status: int, body: Any, *, method: str = "", url: str = "") -> MatihError:
    """The :mod:`matih_lite.errors` exception for a problem-details response (RFC 9457).

    400 InvalidInput, 401 Unauthorized, 403 Forbidden, 404 NotFound, 409 Conflict,
    422 GovernanceRefused, 408/429/5xx StoreError (worth retrying), other 4xx InvalidInput.
    Extra members of the problem (``position``, ``unmet``...) land in ``exc.detail``.
    """
    problem = body if isinstance(body, dict) else {}
    message = str(problem.get("detail") or problem.get("title") or "").strip()
    if not message:
        text = body.strip() if isinstance(body, str) else ""
        message = f"{method} {url} answered {status}" + (f": {text[:300]}" if text else "")
    errors = problem.get("errors")
    if isinstance(errors, list) and errors:
        message += ": " + "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors[:5])
    cls = _ERRORS.get(status)
    if cls is None:
        cls = StoreError if status >= 500 or status in (408, 429) else InvalidInput
    detail = {k: v for k, v in problem.items() if k not in ("type", "title", "status", "detail", "instance")}
    return cls(message, detail=detail)


class ServiceHttp:
    """One keep-alive ``httpx.Client`` to the ml-service at ``url`` (thread-safe, as httpx's is).

    ``timeout`` bounds each request, of which connecting may take 5 seconds at most; ``retries``
    retries connecting only, never a request the service has seen. ``hint`` ends the message of a
    service that cannot be reached: what this caller's user can do about it (empty: nothing said).
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 user_agent: str = "matih-lite-sdk", retries: int = 0, hint: str = START_OR_UNSET) -> None:
        import httpx

        self._httpx = httpx
        self.url = url.rstrip("/")
        self.hint = hint
        headers = {"Accept": "application/json", "User-Agent": user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers,
                                 timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                                 transport=httpx.HTTPTransport(retries=retries))

    @classmethod
    def from_env(cls, config: str | None = None, **options: Any) -> ServiceHttp | None:
        """A client on the service this command should talk to (``options`` as the constructor's): ``MATIH_URL``
        with ``MATIH_TOKEN``, else the ``matih-lite up`` that owns this folder's state
        (:func:`matih_lite.ownership.service_target`); None when neither: the caller then works on this
        folder's store, or says why it cannot."""
        from matih_lite.ownership import service_target

        target = service_target(config)
        if target is None:
            return None
        if not os.environ.get("MATIH_URL"):
            options.setdefault("hint", "the matih-lite up that owns this folder (.matih/service.json) does not "
                                       "answer; is it still starting, or stuck?")
        return cls(target[0], target[1], **options)

    def __enter__(self) -> ServiceHttp:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON the service answers ``method path`` with, or None for an empty answer (a 204)."""
        return self.call_with_status(method, path, **kwargs)[1]

    def call_with_status(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """``(status, JSON or None)``, for the endpoints whose success status says what happened
        (a promotion done, 200, or waiting for approval, 202)."""
        resp = self.send(method, path, **kwargs)
        return resp.status_code, (resp.json() if resp.content else None)

    def send(self, method: str, path: str, **kwargs: Any) -> Any:
        """The ``httpx.Response`` to ``method path``, once it is known not to be an error: for a
        body that is not JSON."""
        try:
            resp = self.http.request(method, path, **kwargs)
        except self._httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if resp.status_code >= 400:
            raise self._error(resp, method, path)
        return resp

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[Any]:
        """The ``httpx.Response`` to ``method path`` with its body unread, for one too large to hold:
        losing the service while reading it raises as :meth:`call` does."""
        try:
            with self.http.stream(method, path, **kwargs) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise self._error(resp, method, path)
                yield resp
        except self._httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> StoreError:
        return StoreError(f"cannot reach the matih-lite service at {self.url} (MATIH_URL): {type(exc).__name__}: "
                          f"{exc or 'no detail'}" + (f"; {self.hint}" if self.hint else ""))

    def _error(self, resp: Any, method: str, path: str) -> MatihError:
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        return error_from_response(resp.status_code, body, method=method, url=self.url + path)


def resolve_service(url: str | None, token: str | None, config: str | None = None,
                    host: Any = None) -> tuple[str | None, str | None]:
    """``(url, token)`` of the service a client should talk to, or ``(None, token)`` to work embedded.

    ``url`` when given; none when a host was handed in; else ``MATIH_URL``, else the ``matih-lite up``
    that owns this folder's state (:func:`matih_lite.ownership.service_target`). ``token`` defaults
    to ``MATIH_TOKEN``.
    """
    token = token if token is not None else (os.environ.get("MATIH_TOKEN") or None)
    if url or host is not None:
        return url or None, token
    from matih_lite.ownership import service_target

    target = service_target(config)
    return (target[0], token) if target is not None else (None, token)


class HostOrService:
    """The base of every domain client (tracking's aside, which has its own transports): it works on this
    folder's host (embedded, acting as ``principal``, the local admin by default) or through the ml-service
    (:func:`resolve_service`: ``url``, ``MATIH_URL``, or the ``up`` that owns this folder; the token naming
    the caller). A host or connection handed in is used as it is and left open; one opened here is closed
    with the client."""

    def __init__(self, url: str | None = None, *, token: str | None = None, config: str | None = None,
                 profile: str | None = None, host: Any = None, principal: Any = None,
                 http: ServiceHttp | None = None, timeout: float = 30.0) -> None:
        from matih_lite.identity import LOCAL_ADMIN

        self.principal = principal or LOCAL_ADMIN
        self.host = host
        self.http = http
        self._owns = host is None and http is None
        if http is not None or host is not None:
            return
        url, token = resolve_service(url, token, config)
        if url:
            self.http = ServiceHttp(url, token, timeout=timeout, retries=2)
            return
        from matih_lite.host import Host

        self.host = Host.open(config, profile)

    @property
    def transport(self) -> str:
        """``"embedded"`` or ``"http"``."""
        return "http" if self.http is not None else "embedded"

    @property
    def location(self) -> str:
        """The service URL, or the embedded state folder."""
        return self.http.url if self.http is not None else str(self.host.config.home)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._owns:
            (self.http or self.host).close()
