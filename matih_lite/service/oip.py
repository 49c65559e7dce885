"""``/v2``: the Open Inference Protocol (KServe v2 / Triton REST) for every deployment.

The deployment name is the protocol's model name; ``/versions/{v}`` pins one of the versions the
deployment serves (its routes, shadows and canary), otherwise the deployment routes the request
as it routes any other (an ``X-Request-Key`` header, or ``parameters.request_key``, makes it
sticky). JSON tensors and the binary tensor extension that ``tritonclient.http`` uses by default
are both understood; :mod:`matih_lite.serving.oip` does the encoding. Errors carry the
protocol's ``{"error": message}`` beside the problem-details fields, so protocol clients and
people read the same body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from matih_lite import __version__
from matih_lite.errors import InvalidInput, MatihError
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.service.deployments import REQUEST_ID, REQUEST_KEY, checked_request_id
from matih_lite.serving.traffic import attach_traffic

_json = msgspec.json.Encoder()


def oip_problem(exc: BaseException, method: str, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A failed protocol call: the problem details with ``{"error": ...}`` beside them (what protocol clients read)."""
    from matih_lite.service.problems import problem_of

    status, body, headers = problem_of(exc, method, path)
    return status, {"error": body["detail"], **body}, headers


def _oip_error(request: Request, exc: Exception) -> Response:
    status, body, headers = oip_problem(exc, request.method, request.url.path)
    return Response(_json.encode(body), status_code=status, media_type="application/json", headers=headers or None)


def _who(request: Request) -> Any:
    return request.scope.get("matih_principal") or LOCAL_ADMIN


def _json_response(doc: Any, status: int = 200) -> Response:
    return Response(_json.encode(doc), status_code=status, media_type="application/json")


class OpenInferenceController(Controller):
    path = "/v2"
    tags = ["open inference protocol"]
    exception_handlers = {Exception: _oip_error}  # type: ignore[dict-item]

    @get("/", summary="Server metadata: name, version, protocol extensions")
    async def server(self) -> Response:
        from matih_lite.serving.oip import server_metadata

        return _json_response(server_metadata(__version__))

    @get("/health/live", summary="The server is live")
    async def live(self) -> Response:
        from matih_lite.serving.oip import live_body

        return _json_response(live_body(True))

    @get("/health/ready", summary="The server is ready to serve inference requests")
    async def ready(self) -> Response:
        from matih_lite.serving.oip import ready_body

        return _json_response(ready_body(True))

    # ---- models ------------------------------------------------------------------------------------------
    @get("/models/{name:str}", summary="Model metadata of a deployment")
    async def model(self, name: FromPath[str], request: Request) -> Response:
        return await self._metadata(request, name, None)

    @get("/models/{name:str}/versions/{version:int}", summary="Model metadata of one version a deployment serves")
    async def model_version(self, name: FromPath[str], version: FromPath[int], request: Request) -> Response:
        return await self._metadata(request, name, version)

    @get("/models/{name:str}/ready", summary="Whether the deployment can answer now")
    async def model_ready(self, name: FromPath[str], request: Request) -> Response:
        return await self._ready(request, name, None)

    @get("/models/{name:str}/versions/{version:int}/ready",
         summary="Whether a version of the deployment can answer now")
    async def model_version_ready(self, name: FromPath[str], version: FromPath[int], request: Request) -> Response:
        return await self._ready(request, name, version)

    @post("/models/{name:str}/infer", status_code=200,
          summary="Inference through the deployment's routes (JSON or binary tensors)")
    async def infer(self, name: FromPath[str], request: Request) -> Response:
        return await self._infer(request, name, None)

    @post("/models/{name:str}/versions/{version:int}/infer", status_code=200,
          summary="Inference with one version the deployment serves")
    async def infer_version(self, name: FromPath[str], version: FromPath[int], request: Request) -> Response:
        return await self._infer(request, name, version)

    # ---- internals ---------------------------------------------------------------------------------------
    @staticmethod
    async def _metadata(request: Request, name: str, version: int | None) -> Response:
        from matih_lite.serving.oip import model_metadata, output_specs

        manager = attach_traffic(request.app.state["host"])
        who = _who(request)
        live = await manager.live(who.tenant, name)
        target = await manager.target(who.tenant, name, version=version if version is not None else
                                      _primary(live))
        served = target.served
        outputs = output_specs(served.info)
        versions = [version] if version is not None else list(live.versions)
        return _json_response(model_metadata(name, versions, served.flavor, served.schema, outputs))

    @staticmethod
    async def _ready(request: Request, name: str, version: int | None) -> Response:
        from matih_lite.serving.oip import ready_body

        manager = attach_traffic(request.app.state["host"])
        who = _who(request)
        live = await manager.live(who.tenant, name)
        try:
            await manager.target(who.tenant, name, version=version if version is not None else _primary(live))
        except MatihError as exc:
            if exc.status == 404 and version is not None:
                raise
            return _json_response(ready_body(False), 400)
        return _json_response(ready_body(True))

    @staticmethod
    async def _infer(request: Request, name: str, version: int | None) -> Response:
        body, media, headers = await infer_call(request.app.state["host"], _who(request), name, version,
                                                await request.body(), request.headers)
        return Response(body, status_code=200, media_type=media, headers=headers)


async def infer_call(host: Any, who: Any, name: str, version: int | None, body: bytes,
                     headers: Mapping[str, str]) -> tuple[bytes, str, dict[str, str]]:
    """One ``.../infer`` call: the response body, its media type and headers. Shared by the route above
    (which gives the OpenAPI entry) and the fast path that serves it (:mod:`matih_lite.service.fastpath`).
    ``headers`` are the request's, by lower-case name."""
    from matih_lite.serving.flavors.base import named_outputs
    from matih_lite.serving.oip import decode_infer_request, encode_infer_response, model_inputs

    manager = attach_traffic(host)
    infer = decode_infer_request(body, headers)
    key = headers.get(REQUEST_KEY)
    if key is None and "request_key" in infer.parameters:
        key = infer.parameters.pop("request_key")
        if not isinstance(key, str) or not key or len(key) > 1024:
            raise InvalidInput("parameters.request_key must be a string of 1 to 1024 characters",
                               detail={"field": "request_key"})
    target = await manager.target(who.tenant, name, key=key, version=version)
    inputs = model_inputs(infer, target.served.schema)
    answer = await manager.infer(target, inputs, request_id=checked_request_id(headers.get(REQUEST_ID)) or infer.id)
    outputs = named_outputs(answer.outputs, getattr(target.served.info, "output_names", ()) or ())
    out, out_headers = encode_infer_response(name, outputs, model_version=str(answer.version), request=infer,
                                             parameters={"variant": answer.variant, "request_id": answer.request_id})
    media = out_headers.pop("Content-Type")
    out_headers.update({"X-Request-Id": answer.request_id, "X-Model-Version": str(answer.version),
                        "X-Variant": answer.variant})
    return out, media, out_headers


def _primary(live: Any) -> int | None:
    """The version metadata and readiness describe: the deployment's heaviest route (None: route as usual)."""
    from matih_lite.serving.routing import primary_version

    return primary_version(live.deployment)


CONTROLLERS = [OpenInferenceController]
