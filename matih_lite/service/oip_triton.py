"""``/v2`` as Triton extends it: model configuration, inference statistics and the repository index, per deployment.

The deployment name is the model name, as everywhere on ``/v2``, so ``tritonclient``'s
``get_model_config``, ``get_inference_statistics`` and ``get_model_repository_index`` work against
matih-lite on any serving backend:

- ``GET /v2/models/{name}[/versions/{v}]/config``: a serving backend that runs models in Triton answers
  with Triton's own configuration of the version's model (its ``model_config(key)``), renamed to the
  deployment and listing the versions the deployment serves; any other backend gets the configuration
  Triton would hold for the same model (platform by flavor, the inputs and outputs of the ``/v2``
  metadata, the ml-service's micro-batching as dynamic batching).
- ``GET /v2/models[/{name}[/versions/{v}]]/stats``: per version, Triton's own statistics when the
  backend has them (``model_statistics(key)``: queue, compute and batch times measured in Triton); else
  what the ml-service measured: the requests answered and failed, the model calls, and each count's
  time as the window's median latency times the count (the service keeps percentiles, not sums).
- ``POST /v2/repository/index``: every deployment of the tenant and version it serves, ``READY`` once
  loaded (``{"ready": true}`` lists only those), as Triton lists its repository.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from matih_lite.errors import InvalidInput, NotFound
from matih_lite.service.oip import _json_response, _oip_error, _who
from matih_lite.serving.traffic import attach_traffic

_TYPES = {"BYTES": "TYPE_STRING"}


def _config_type(datatype: str) -> str:
    return _TYPES.get(datatype, f"TYPE_{datatype}")


def _dims(shape: list[int]) -> dict[str, Any]:
    rest = [int(d) for d in shape[1:]]
    return {"dims": rest} if rest else {"dims": [1], "reshape": {"shape": []}}


def _io_config(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": s["name"], "data_type": _config_type(s["datatype"]), **_dims(list(s["shape"]))} for s in specs]


class TritonProtocolController(Controller):
    path = "/v2"
    tags = ["open inference protocol"]
    exception_handlers = {Exception: _oip_error}  # type: ignore[dict-item]

    @get("/models/{name:str}/config", summary="Triton's model configuration of a deployment (its primary version)")
    async def config(self, name: FromPath[str], request: Request) -> Response:
        return _json_response(await _config(request, name, None))

    @get("/models/{name:str}/versions/{version:int}/config",
         summary="Triton's model configuration of one version a deployment serves")
    async def config_version(self, name: FromPath[str], version: FromPath[int], request: Request) -> Response:
        return _json_response(await _config(request, name, version))

    @get("/models/stats", summary="Inference statistics of every deployment, per version (Triton's shape)")
    async def stats_all(self, request: Request) -> Response:
        return _json_response({"model_stats": await _all_stats(request)})

    @get("/models/{name:str}/stats", summary="Inference statistics of a deployment, per version (Triton's shape)")
    async def stats(self, name: FromPath[str], request: Request) -> Response:
        return _json_response({"model_stats": await _stats(request, name, None)})

    @get("/models/{name:str}/versions/{version:int}/stats",
         summary="Inference statistics of one version a deployment serves (Triton's shape)")
    async def stats_version(self, name: FromPath[str], version: FromPath[int], request: Request) -> Response:
        return _json_response({"model_stats": await _stats(request, name, version)})

    @post("/repository/index", status_code=200,
          summary="Every deployment and version it serves, with its state (Triton's repository index)")
    async def index(self, request: Request) -> Response:
        body = await request.body()
        ready_only = False
        if body.strip():
            import msgspec

            try:
                doc = msgspec.json.decode(body)
            except msgspec.DecodeError as exc:
                raise InvalidInput(f"the body is not valid JSON: {exc}", detail={"field": "body"}) from None
            if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
                raise InvalidInput('the body is {"ready": true|false}', detail={"field": "ready"})
            ready_only = doc.get("ready", False)
        return _json_response(await _index(request, ready_only))


# ---- the answers -------------------------------------------------------------------------------------------------
async def _config(request: Request, name: str, version: int | None) -> dict[str, Any]:
    from matih_lite.serving.oip import PLATFORMS, input_specs, output_specs
    from matih_lite.serving.routing import primary_version

    host = request.app.state["host"]
    manager = attach_traffic(host)
    who = _who(request)
    live = await manager.live(who.tenant, name)
    target = await manager.target(who.tenant, name, version=version if version is not None
                                  else primary_version(live.deployment))
    served = target.served
    versions = [version] if version is not None else list(live.versions)
    backend = host.backend("serving")
    own = getattr(backend, "model_config", None)
    if callable(own):
        import asyncio

        cfg = dict(await asyncio.to_thread(own, served.key))
        cfg["name"] = name
        cfg["version_policy"] = {"specific": {"versions": versions}}
        return cfg
    batch = manager.batch_max_size
    return {"name": name, "platform": PLATFORMS.get(served.flavor, served.flavor), "backend": "",
            "version_policy": {"specific": {"versions": versions}}, "max_batch_size": batch,
            "input": _io_config(input_specs(served.schema)), "output": _io_config(output_specs(served.info)),
            "instance_group": [{"name": name, "kind": "KIND_CPU", "count": 1}],
            "dynamic_batching": {"max_queue_delay_microseconds": int(manager.batch_max_wait_ms * 1000)},
            "parameters": {"matih_backend": {"string_value": host.selection().get("serving", {}).get("backend", "")}}}


def _counts(count: int, ms: float) -> dict[str, int]:
    return {"count": count, "ns": int(round(ms * 1e6)) * count}


async def _stats(request: Request, name: str, version: int | None) -> list[dict[str, Any]]:
    import asyncio

    host = request.app.state["host"]
    manager = attach_traffic(host)
    who = _who(request)
    live = await manager.live(who.tenant, name)
    versions = [version] if version is not None else list(live.versions)
    if version is not None and version not in live.versions:
        raise NotFound(f"deployment {name!r} does not serve version {version}")
    measured = manager.stats(who.tenant, name)["variants"]
    backend = host.backend("serving")
    own = getattr(backend, "model_statistics", None)
    loaded = backend.loaded()
    out = []
    for v in versions:
        served = manager.served_version(who.tenant, live.deployment.model, v)
        if callable(own) and served is not None:
            try:
                found = (await asyncio.to_thread(own, served.key)).get("model_stats") or []
            except NotFound:
                found = []
            for entry in found:
                out.append({**entry, "name": name, "version": str(v)})
            if found:
                continue
        m = next((s for s in measured.values() if s["version"] == v), None) or {}
        total, errors = int(m.get("total_requests", 0)), int(m.get("total_errors", 0))
        info = loaded.get(served.key) if served is not None else None
        p50 = float(m.get("p50_ms") or 0.0)
        zero = {"count": 0, "ns": 0}
        out.append({"name": name, "version": str(v), "last_inference": 0,
                    "inference_count": total - errors, "execution_count": info.predictions if info else 0,
                    "inference_stats": {"success": _counts(total - errors, p50), "fail": _counts(errors, p50),
                                        "queue": zero, "compute_input": zero,
                                        "compute_infer": _counts(info.predictions if info else 0, p50),
                                        "compute_output": zero, "cache_hit": zero, "cache_miss": zero},
                    "batch_stats": [], "memory_usage": []})
    return out


async def _all_stats(request: Request) -> list[dict[str, Any]]:
    out = []
    for d in await _deployments(request):
        try:
            out += await _stats(request, d.name, None)
        except NotFound:
            continue
    return out


async def _deployments(request: Request) -> list[Any]:
    import asyncio

    from matih_lite.serving.deployments import Deployments

    host = request.app.state["host"]
    who = _who(request)
    found, token = [], None
    while True:
        page = await asyncio.to_thread(Deployments(host).list, who, max_results=1000, page_token=token)
        found += page.items
        token = page.next_token
        if not token:
            return found


async def _index(request: Request, ready_only: bool) -> list[dict[str, Any]]:
    host = request.app.state["host"]
    manager = attach_traffic(host)
    who = _who(request)
    out = []
    for d in await _deployments(request):
        live = await manager.live(who.tenant, d.name)
        if not live.versions:
            if not ready_only:
                out.append({"name": d.name, "version": "", "state": "UNAVAILABLE",
                            "reason": f"follows {d.target} {d.follows!r}, which holds no version yet"})
            continue
        for v in live.versions:
            ready = manager.served_version(who.tenant, d.model, v) is not None
            if ready_only and not ready:
                continue
            out.append({"name": d.name, "version": str(v), "state": "READY" if ready else "UNAVAILABLE",
                        "reason": "" if ready else "not loaded yet: it loads on its first request"})
    return out


CONTROLLERS = [TritonProtocolController]
