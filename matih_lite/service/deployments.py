"""``/api/v1/deployments``: deployments over REST, and predictions in MLflow's scoring shapes.

Thin: records go through :class:`~matih_lite.serving.deployments.Deployments`, requests through
the host's :class:`~matih_lite.serving.traffic.TrafficManager`. The predict route is the hot
path: it reads the body, routes (``X-Request-Key`` header or ``request_key`` in the body for a
sticky variant), parses the body straight to arrays for the routed version's input schema,
awaits the micro-batched prediction and writes the JSON itself; the record it routes by comes
from memory. Bad input is a 400 problem naming the field; a model that raises is a 500 problem
(``title: Model error``) counted in the variant's error rate.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from matih_lite.contracts.deployments import CanaryState, Deployment, DeploymentChange, Route
from matih_lite.errors import InvalidInput, StoreError
from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.service.auth import Principal, principal
from matih_lite.serving.deployments import Deployments
from matih_lite.serving.traffic import ModelUnavailable, attach_traffic

MaxResults = Annotated[int, Parameter(ge=1, le=50_000)]
REQUEST_KEY = "x-request-key"
REQUEST_ID = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
_json = msgspec.json.Encoder()


# ---- DTOs ---------------------------------------------------------------------------------------------
class RouteOut(msgspec.Struct):
    variant: str
    version: int
    weight: float


class CanaryOut(msgspec.Struct):
    candidate: int
    primary: int | None
    percent: float
    status: str
    started_at: int
    stepped_at: int
    steps: int
    reason: str
    finished_at: int | None
    policy: dict[str, Any]


class DeploymentOut(msgspec.Struct):
    name: str
    model: str
    target: str
    follows: str | None
    routes: list[RouteOut]
    shadows: list[int]
    canary: CanaryOut | None
    use_canary: bool
    policy: dict[str, Any]
    status: str
    description: str
    created_by: str
    created_at: int
    updated_at: int
    revision: int


class ChangeOut(msgspec.Struct):
    change_id: int
    action: str
    actor: str
    timestamp: int
    reason: str
    detail: dict[str, Any]


class DeploymentPage(msgspec.Struct):
    deployments: list[DeploymentOut]
    next_page_token: str | None = None


class ChangePage(msgspec.Struct):
    changes: list[ChangeOut]
    next_page_token: str | None = None


class CreateDeployment(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    model: str
    version: int | None = None
    split: str | dict[str, float] | None = None
    """``"3=90,4=10"`` or ``{"3": 90, "4": 10}``: percents by version."""
    stage: str | None = None
    alias: str | None = None
    shadows: list[int] = []
    canary: bool = False
    """New versions enter through a canary (a promotion followed, a deploy of another version)."""
    policy: dict[str, Any] | None = None
    """Canary policy overrides: initial_percent, step_percent, interval_seconds, max_error_rate_delta,
    max_p99_ratio, min_requests, p99_floor_ms."""
    description: str = ""


class UpdateDeployment(msgspec.Struct, forbid_unknown_fields=True):
    version: int | None = None
    split: str | dict[str, float] | None = None
    stage: str | None = None
    alias: str | None = None
    shadows: list[int] | None = None
    canary: bool | None = None
    policy: dict[str, Any] | None = None
    description: str | None = None
    reason: str = ""


class Label(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    label: Any
    row: int | None = None
    timestamp: int | None = None


class Labels(msgspec.Struct, forbid_unknown_fields=True):
    """One label (``request_id``, ``label``) or several under ``labels``."""

    request_id: str | None = None
    label: Any = None
    row: int | None = None
    timestamp: int | None = None
    labels: list[Label] | None = None


class LabelsOut(msgspec.Struct):
    accepted: int


class StartStream(msgspec.Struct, forbid_unknown_fields=True):
    source: str
    """Topic the request records are read from (the tenant's own)."""
    sink: str
    """Topic the predictions are written to."""
    group: str | None = None
    """Consumer group (default: the deployment's name); its committed offset survives restarts."""
    batch_size: int = 500
    engine: str = "inprocess"
    """``inprocess`` (the service consumes) or ``flink`` (a Flink job with the model embedded: the profile's drift
    slot must be the flink backend)."""


class StreamOut(msgspec.Struct):
    deployment: str
    source: str
    sink: str
    group: str
    batch_size: int
    started_by: str
    started_at: int
    running: bool
    lag: int | None
    """Requests in the source not yet committed by the group (None when the events slot cannot say)."""
    consumed: int | None
    """Requests read (since the service started it; a job's since the job started); None when its engine cannot say."""
    predicted: int | None
    failed: int | None
    duplicates: int | None
    """Replayed requests skipped (in-process consumers; None for a job)."""
    last_error: str | None
    engine: str = "inprocess"


def stream_out(d: dict[str, Any]) -> StreamOut:
    return StreamOut(d["deployment"], d["source"], d["sink"], d["group"], d["batch_size"], d["started_by"],
                     d["started_at"], d["running"], d["lag"], d["consumed"], d["predicted"], d["failed"],
                     d["duplicates"], d["last_error"], d.get("engine", "inprocess"))


def streams_of(host: Host) -> Any:
    """The host's stream consumers; ModelUnavailable (503) when the service's loop is not running."""
    from matih_lite.serving.streams import attach_streams
    from matih_lite.serving.traffic import ModelUnavailable

    streams = attach_streams(host)
    if streams is None:
        raise ModelUnavailable("stream consumers run inside the ml-service; it has not started its loop yet")
    return streams


def route_out(r: Route) -> RouteOut:
    return RouteOut(r.variant, r.version, r.weight)


def canary_out(c: CanaryState | None) -> CanaryOut | None:
    if c is None:
        return None
    return CanaryOut(c.candidate, c.primary, c.percent, c.status, c.started_at, c.stepped_at, c.steps, c.reason,
                     c.finished_at, c.policy)


def deployment_out(d: Deployment) -> DeploymentOut:
    return DeploymentOut(d.name, d.model, d.target, d.follows, [route_out(r) for r in d.routes], list(d.shadows),
                         canary_out(d.canary), d.use_canary, d.policy, d.status, d.description, d.created_by,
                         d.created_at, d.updated_at, d.revision)


def change_out(c: DeploymentChange) -> ChangeOut:
    return ChangeOut(c.change_id, c.action, c.actor, c.timestamp, c.reason, c.detail)


DeploymentsDep = NamedDependency[Deployments]
PrincipalDep = NamedDependency[Principal]
HostDep = NamedDependency[Host]


def provide_deployments(host: NamedDependency[Host]) -> Deployments:
    return Deployments(host)


DEPENDENCIES = {"deployments": Provide(provide_deployments, sync_to_thread=False),
                "principal": Provide(principal, sync_to_thread=False)}


def checked_request_id(rid: str | None) -> str | None:
    """The caller's ``X-Request-Id`` (so labels can be posted under the caller's own ids), checked."""
    if rid is not None and not _REQUEST_ID.match(rid):
        raise InvalidInput(f"{REQUEST_ID} must be 1 to 128 letters, digits or . _ : @ -", detail={"field": REQUEST_ID})
    return rid


async def predict_call(host: Host, who: Principal, name: str, body: bytes,
                       headers: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
    """One ``predict`` call: the JSON response body and headers. Shared by the route below (which gives the
    OpenAPI entry) and the fast path that serves it (:mod:`matih_lite.service.fastpath`). ``headers`` are
    the request's, by lower-case name."""
    from matih_lite.serving.payload import decode_json, encode_predictions, parse_scoring_request

    doc = decode_json(body)
    key = headers.get(REQUEST_KEY)
    if isinstance(doc, dict) and "request_key" in doc:
        key = doc.pop("request_key")
        if not isinstance(key, str) or not key or len(key) > 1024:
            raise InvalidInput("request_key must be a string of 1 to 1024 characters",
                               detail={"field": "request_key"})
    rid = checked_request_id(headers.get(REQUEST_ID))
    manager = attach_traffic(host)
    target = await manager.target(who.tenant, name, key=key)
    lookup_ms = None
    if target.served.feature_source is not None:  # a version trained on a feature service: keys in, features added
        from matih_lite.serving.enrichment import enrich

        doc, lookup_ms = await enrich(host, who, target.served, doc)
    parsed = parse_scoring_request(doc, target.served.schema)
    answer = await manager.infer(target, parsed.inputs, request_id=rid, feature_lookup_ms=lookup_ms)
    out = encode_predictions(answer.outputs, {
        "deployment": answer.deployment, "model": answer.model, "version": answer.version,
        "variant": answer.variant, "request_id": answer.request_id})
    headers = {"X-Request-Id": answer.request_id, "X-Model-Version": str(answer.version), "X-Variant": answer.variant}
    if lookup_ms is not None:
        headers["X-Feature-Lookup-Ms"] = f"{lookup_ms:.3f}"
    return out, headers


class DeploymentController(Controller):
    path = "/api/v1/deployments"
    tags = ["deployments"]
    dependencies = DEPENDENCIES

    @post("/", sync_to_thread=True, summary="Create a deployment of fixed versions, a split, a stage or an alias")
    def create(self, data: JSONBody[CreateDeployment], deployments: DeploymentsDep, principal: PrincipalDep,
               host: HostDep) -> DeploymentOut:
        traffic = attach_traffic(host)  # a version the serving backend refuses to load refuses the change (422)
        d = deployments.create(principal, data.name, data.model, version=data.version, split=data.split,
                               stage=data.stage, alias=data.alias, shadows=data.shadows, canary=data.canary,
                               policy=data.policy, description=data.description, admit=traffic.admit)
        traffic.updated(d)
        return deployment_out(d)

    @get("/", sync_to_thread=True, summary="List deployments by name")
    def index(self, deployments: DeploymentsDep, principal: PrincipalDep, model: FromQuery[str | None] = None,
              max_results: FromQuery[MaxResults] = 1000, page_token: FromQuery[str | None] = None) -> DeploymentPage:
        page = deployments.list(principal, model=model, max_results=max_results, page_token=page_token)
        return DeploymentPage([deployment_out(d) for d in page.items], page.next_token)

    @get("/{name:str}", sync_to_thread=True, summary="Get a deployment")
    def read(self, name: FromPath[str], deployments: DeploymentsDep, principal: PrincipalDep) -> DeploymentOut:
        return deployment_out(deployments.get(principal, name))

    @patch("/{name:str}", sync_to_thread=True,
           summary="Change versions, split, followed stage or alias, shadows, canary use, policy")
    def update(self, name: FromPath[str], data: JSONBody[UpdateDeployment], deployments: DeploymentsDep,
               principal: PrincipalDep,
               host: HostDep) -> DeploymentOut:
        traffic = attach_traffic(host)  # a version the serving backend refuses to load refuses the change (422)
        d = deployments.update(principal, name, version=data.version, split=data.split, stage=data.stage,
                               alias=data.alias, shadows=data.shadows, canary=data.canary, policy=data.policy,
                               description=data.description, reason=data.reason, admit=traffic.admit)
        traffic.updated(d)
        return deployment_out(d)

    @delete("/{name:str}", sync_to_thread=True, status_code=204, summary="Delete a deployment (its history stays)")
    def remove(self, name: FromPath[str], deployments: DeploymentsDep, principal: PrincipalDep, host: HostDep,
               reason: FromQuery[str] = "") -> None:
        deployments.delete(principal, name, reason=reason)
        attach_traffic(host).removed(principal.tenant, name)

    @get("/{name:str}/history", sync_to_thread=True, summary="Every change to the deployment, oldest first")
    def history(self, name: FromPath[str], deployments: DeploymentsDep, principal: PrincipalDep,
                max_results: FromQuery[MaxResults] = 1000, page_token: FromQuery[str | None] = None) -> ChangePage:
        page = deployments.history(principal, name, max_results=max_results, page_token=page_token)
        return ChangePage([change_out(c) for c in page.items], page.next_token)

    @get("/{name:str}/stats",
         summary="Per-variant requests, errors and latency, and each shadow's agreement with the primary")
    async def stats(self, name: FromPath[str], principal: PrincipalDep, host: HostDep,
                    since: FromQuery[int] = 0) -> dict[str, Any]:
        manager = attach_traffic(host)
        await manager.live(principal.tenant, name)  # NotFound for an unknown deployment
        out = manager.stats(principal.tenant, name, since_ms=since)
        try:  # every replica's requests, from the shared inference log; "variants" are this process's own
            out["platform"] = await asyncio.to_thread(manager.platform_stats, principal.tenant, name,
                                                      since_ms=since or None)
        except (ModelUnavailable, StoreError) as exc:
            out["platform"] = {"error": exc.message}
        return out

    @post("/{name:str}/labels", status_code=202,
          summary="Post the true outcome of earlier requests by request id")
    async def labels(self, name: FromPath[str], data: JSONBody[Labels], principal: PrincipalDep,
                     host: HostDep) -> LabelsOut:
        items = list(data.labels or [])
        if data.request_id is not None:
            items.append(Label(data.request_id, data.label, data.row, data.timestamp))
        if not items:
            raise InvalidInput("give request_id and label, or labels: [{request_id, label}]",
                               detail={"field": "request_id"})
        for i, item in enumerate(items):
            if not _REQUEST_ID.match(item.request_id):
                raise InvalidInput(f"labels[{i}].request_id is not a request id", detail={"field": "request_id"})
        manager = attach_traffic(host)
        await manager.live(principal.tenant, name)  # NotFound for an unknown deployment
        for item in items:
            manager.record_label(principal.tenant, name, item.request_id, item.label, row=item.row,
                                 timestamp=item.timestamp)
        return LabelsOut(len(items))

    @post("/{name:str}/streams", sync_to_thread=True, status_code=201,
          summary="Start consuming a topic of requests into a topic of predictions through the deployment's routes")
    def start_stream(self, name: FromPath[str], data: JSONBody[StartStream], principal: PrincipalDep,
                     host: HostDep) -> StreamOut:
        return stream_out(streams_of(host).start(principal, name, data.source, data.sink, group=data.group,
                                                 batch_size=data.batch_size, engine=data.engine))

    @get("/{name:str}/streams", sync_to_thread=True, summary="The deployment's stream consumers, their counts and lag")
    def list_streams(self, name: FromPath[str], deployments: DeploymentsDep, principal: PrincipalDep,
                     host: HostDep) -> list[StreamOut]:
        deployments.get(principal, name)  # NotFound for an unknown deployment
        return [stream_out(d) for d in streams_of(host).list(principal, name)]

    @delete("/{name:str}/streams/{group:str}", sync_to_thread=True, status_code=204,
            summary="Stop a stream consumer (its committed offset stays)")
    def stop_stream(self, name: FromPath[str], group: FromPath[str], principal: PrincipalDep, host: HostDep) -> None:
        streams_of(host).stop(principal, name, group)

    @post("/{name:str}/predict", status_code=200,
          summary="Predict with MLflow's scoring JSON: dataframe_split, dataframe_records, instances or inputs")
    async def predict(self, name: FromPath[str], request: Request) -> Response:
        who = request.scope.get("matih_principal") or LOCAL_ADMIN
        body, headers = await predict_call(request.app.state["host"], who, name, await request.body(),
                                           request.headers)
        return Response(body, media_type="application/json", status_code=200, headers=headers)


CONTROLLERS = [DeploymentController]
