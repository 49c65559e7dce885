"""The prediction routes, served as plain ASGI in front of Litestar.

``POST /api/v1/deployments/{name}/predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer``
are the service's hot path: at thousands of requests a second, a framework's per-request work
(routing, dependency resolution, middleware layers, response objects) costs more than the
model. :class:`FastRoutes` answers exactly those requests itself, with the same work the
Litestar handlers do (:func:`~matih_lite.service.deployments.predict_call`,
:func:`~matih_lite.service.oip.infer_call`), the same bearer-token gate
(:class:`~matih_lite.service.accounts.BearerGate`), the same body-size limit and the same
problem-details errors; the Litestar routes stay for the OpenAPI document and answer anything
this path does not take (another method, a trailing slash, a version that is not a number).
Metrics and the access log come from :class:`~matih_lite.service.observability.ObservedApp`
around both, under the same route templates.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from matih_lite.identity import LOCAL_ADMIN
from matih_lite.service.problems import PROBLEM_JSON, problem_of

PREDICT_TEMPLATE = "/api/v1/deployments/{name}/predict"
INFER_TEMPLATE = "/v2/models/{name}/infer"
INFER_VERSION_TEMPLATE = "/v2/models/{name}/versions/{version}/infer"

ONLINE_FEATURE_PATHS = frozenset({"/get-online-features", "/api/v1/features/online"})
"""The feature store's online lookups (Feast's and ours), answered by :func:`matih_lite.service.features.online_call`."""

_PREDICT = re.compile(r"/api/v1/deployments/([^/]+)/predict")
_INFER = re.compile(r"/v2/models/([^/]+)/(?:versions/([0-9]{1,18})/)?infer")
_json = msgspec.json.Encoder()

Handler = Callable[[dict, Any, Any], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body is over the service's limit."""


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


class FastRoutes:
    """Matches the prediction routes and serves them (see the module docstring)."""

    def __init__(self, host: Any, gate: Any, max_body_size: int | None) -> None:
        self.host = host
        self.gate = gate
        self.max_body = max_body_size

    def match(self, scope: dict) -> Handler | None:
        """The handler for this request, or None to let Litestar route it."""
        if scope.get("method") != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if path.endswith("/predict"):
            found = _PREDICT.fullmatch(path)
            if found is not None:
                scope["path_template"] = PREDICT_TEMPLATE
                name = found.group(1)
                return lambda s, r, w: self._predict(s, r, w, name)
        elif path in ONLINE_FEATURE_PATHS:
            scope["path_template"] = path
            return self._online_features
        elif path.endswith("/infer"):
            found = _INFER.fullmatch(path)
            if found is not None:
                version = found.group(2)
                scope["path_template"] = INFER_TEMPLATE if version is None else INFER_VERSION_TEMPLATE
                name = found.group(1)
                return lambda s, r, w: self._infer(s, r, w, name, None if version is None else int(version))
        return None

    async def _predict(self, scope: dict, receive: Any, send: Any, name: str) -> None:
        from matih_lite.service.deployments import predict_call

        try:
            who, headers, body = await self._request(scope, receive)
            out, out_headers = await predict_call(self.host, who, name, body, headers)
        except ClientGone:
            return
        except Exception as exc:
            status, doc, extra = problem_of(_as_http(exc), "POST", scope["path"])
            await _respond(send, status, _json.encode(doc), PROBLEM_JSON, extra)
            return
        await _respond(send, 200, out, "application/json", out_headers)

    async def _online_features(self, scope: dict, receive: Any, send: Any) -> None:
        from matih_lite.service.features import online_call

        try:
            who, _, body = await self._request(scope, receive)
            out = await online_call(self.host, who, body)
        except ClientGone:
            return
        except Exception as exc:
            status, doc, extra = problem_of(_as_http(exc), "POST", scope["path"])
            await _respond(send, status, _json.encode(doc), PROBLEM_JSON, extra)
            return
        await _respond(send, 200, out, "application/json", {})

    async def _infer(self, scope: dict, receive: Any, send: Any, name: str, version: int | None) -> None:
        from matih_lite.service.oip import infer_call, oip_problem

        try:
            who, headers, body = await self._request(scope, receive)
            out, media, out_headers = await infer_call(self.host, who, name, version, body, headers)
        except ClientGone:
            return
        except Exception as exc:
            status, doc, extra = oip_problem(_as_http(exc), "POST", scope["path"])
            await _respond(send, status, _json.encode(doc), "application/json", extra)
            return
        await _respond(send, 200, out, media, out_headers)

    async def _request(self, scope: dict, receive: Any) -> tuple[Any, dict[str, str], bytes]:
        """The caller (through the token gate when auth is on), the headers by lower-case name, the body."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        who = await self.gate.principal(scope) if self.gate.enabled else LOCAL_ADMIN
        scope["matih_principal"] = who
        limit = self.max_body
        declared = headers.get("content-length")
        if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return who, headers, chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _as_http(exc: Exception) -> Exception:
    if isinstance(exc, BodyTooLarge):
        from litestar.exceptions import HTTPException

        return HTTPException(status_code=413, detail="the request body is larger than the service accepts")
    return exc


async def _respond(send: Any, status: int, body: bytes, media: str, headers: dict[str, str]) -> None:
    raw = [(b"content-type", media.encode("latin-1")), (b"content-length", str(len(body)).encode())]
    raw.extend((k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
