"""``/api/v1/lineage``: nodes, edges, upstream and downstream walks, OpenLineage export. Thin: parse, call, return.

Node keys hold ``/`` and ``:`` (``dataset:s3://bucket/train.parquet@v3``), so they travel as the
``key`` query parameter rather than in the path.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter

from matih_lite.host import Host
from matih_lite.lineage.service import (
    MAX_DEPTH,
    EdgeView,
    GraphView,
    Lineage,
    NodeView,
    edge_view,
    graph_view,
    node_view,
)
from matih_lite.service.auth import Principal, principal

LineageDep = NamedDependency[Lineage]
PrincipalDep = NamedDependency[Principal]
Depth = Annotated[int, Parameter(ge=0, le=MAX_DEPTH, description="How many hops to follow.")]
Key = Annotated[str, QueryParameter(name="key", min_length=3, max_length=2000,
                                    description="A node key: dataset:URI[@VERSION], run:RUN_ID, model:NAME/VERSION, "
                                                "deployment:NAME, table:NAME, feature_view:NAME.")]


def provide_lineage(host: NamedDependency[Host]) -> Lineage:
    return Lineage(host)


DEPENDENCIES = {"lineage": Provide(provide_lineage, sync_to_thread=False),
                "principal": Provide(principal, sync_to_thread=False)}


# ---- DTOs ------------------------------------------------------------------------------------------
class NodeIn(msgspec.Struct, forbid_unknown_fields=True):
    key: str
    name: str = ""
    properties: dict[str, Any] = {}


class EdgeIn(msgspec.Struct, forbid_unknown_fields=True):
    source: str
    target: str
    kind: str


class InputIn(msgspec.Struct, forbid_unknown_fields=True):
    uri: str
    version: str | None = None
    digest: str | None = None
    name: str | None = None
    properties: dict[str, Any] = {}


class InputOut(msgspec.Struct):
    name: str
    node: NodeView
    tags: dict[str, str]


class NodePage(msgspec.Struct):
    nodes: list[NodeView]
    next_page_token: str | None = None


class OpenLineageEvents(msgspec.Struct):
    events: list[dict[str, Any]]


class LineageController(Controller):
    path = "/api/v1/lineage"
    tags = ["lineage"]
    dependencies = DEPENDENCIES

    @get("/node", sync_to_thread=True, summary="Get one lineage node by key")
    def node(self, key: FromQuery[Key], lineage: LineageDep, principal: PrincipalDep) -> NodeView:
        return node_view(lineage.get_node(principal.tenant, key))

    @get("/nodes", sync_to_thread=True, summary="List lineage nodes, oldest first")
    def nodes(self, lineage: LineageDep, principal: PrincipalDep, kind: FromQuery[str | None] = None,
              max_results: Annotated[int, Parameter(ge=1, le=10_000)] = 1000,
              page_token: FromQuery[str | None] = None) -> NodePage:
        page = lineage.list_nodes(principal.tenant, kind=kind, max_results=max_results, page_token=page_token)
        return NodePage([node_view(n) for n in page.items], page.next_token)

    @post("/nodes", sync_to_thread=True, status_code=200,
          summary="Record a node (a table, a feature view, ...) or merge properties into it")
    def record_node(self, data: JSONBody[NodeIn], lineage: LineageDep, principal: PrincipalDep) -> NodeView:
        return node_view(lineage.record_node(principal.tenant, data.key, name=data.name, properties=data.properties))

    @post("/edges", sync_to_thread=True, status_code=200, summary="Record an edge source -> target (idempotent)")
    def record_edge(self, data: JSONBody[EdgeIn], lineage: LineageDep, principal: PrincipalDep) -> EdgeView:
        return edge_view(lineage.record_edge(principal.tenant, data.source, data.target, data.kind))

    @post("/runs/{run_id:str}/inputs", sync_to_thread=True, status_code=200,
          summary="Record that a run reads a dataset (what ml.log_input sends)")
    def log_input(self, run_id: FromPath[str], data: JSONBody[InputIn], lineage: LineageDep,
                  principal: PrincipalDep) -> InputOut:
        out = lineage.log_input(principal.tenant, run_id, data.uri, data.version, data.digest, data.name,
                                properties=data.properties)
        return InputOut(out["name"], node_view(out["node"]), out["tags"])

    @get("/upstream", sync_to_thread=True, summary="What a node was built from")
    def upstream(self, key: FromQuery[Key], lineage: LineageDep, principal: PrincipalDep,
                 depth: FromQuery[Depth] = 5) -> GraphView:
        return graph_view(lineage.upstream(principal.tenant, key, depth))

    @get("/downstream", sync_to_thread=True, summary="What was built from a node")
    def downstream(self, key: FromQuery[Key], lineage: LineageDep, principal: PrincipalDep,
                   depth: FromQuery[Depth] = 5) -> GraphView:
        return graph_view(lineage.downstream(principal.tenant, key, depth))

    @get("/openlineage", sync_to_thread=True,
         summary="OpenLineage COMPLETE run events for every run and deployment (or those around key)")
    def openlineage(self, lineage: LineageDep, principal: PrincipalDep, depth: FromQuery[Depth] = 5,
                    key: Annotated[str | None,
                                   QueryParameter(name="key", max_length=2000)] = None) -> OpenLineageEvents:
        return OpenLineageEvents(lineage.export_openlineage(principal.tenant, key, depth=depth))


CONTROLLERS = [LineageController]
