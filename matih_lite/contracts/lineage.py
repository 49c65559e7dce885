"""The lineage part of the metadata slot: a graph of nodes and directed edges, per tenant.

A node is anything data or models flow through: a dataset, a table, a feature view, a run,
a model version, a deployment. It is named by a stable ``key`` whose prefix gives its kind
(``dataset:s3://bucket/train.parquet@v3``, ``run:<run_id>``, ``model:<name>/<version>``,
``deployment:<name>``) and carries free-form JSON ``properties``. An edge points the way the
data flows (``dataset -> run``, ``run -> model version``, ``model version -> deployment``)
and is identified by (source, target, kind): adding it twice changes nothing.

The store keeps primitives only; walking the graph (upstream, downstream, depth limits,
cycles) is written once in :mod:`matih_lite.lineage`. Timestamps are milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from matih_lite.contracts.records import Page

Direction = Literal["upstream", "downstream"]


class LineageNode(msgspec.Struct, frozen=True):
    tenant: str
    key: str
    kind: str
    name: str = ""
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0


class LineageEdge(msgspec.Struct, frozen=True):
    """``source`` feeds ``target`` (``kind`` says how: ``consumed_by``, ``produced``, ``deployed_as``...)."""

    tenant: str
    source: str
    target: str
    kind: str
    created_at: int = 0


@runtime_checkable
class LineageStore(Protocol):
    """Methods every metadata backend provides for lineage; a key of another tenant is never visible."""

    def put_lineage_node(self, tenant: str, key: str, *, kind: str, at: int, name: str = "",
                         properties: Mapping[str, Any] | None = None) -> LineageNode:
        """Create the node, or merge ``properties`` into it (and rename it when ``name`` is given).

        Raises Conflict if the node exists with another kind.
        """

    def get_lineage_nodes(self, tenant: str, keys: Sequence[str]) -> dict[str, LineageNode]:
        """The nodes among ``keys`` that exist, by key (unknown keys are left out, never raised)."""

    def list_lineage_nodes(self, tenant: str, *, kind: str | None = None, max_results: int = 1000,
                           page_token: str | None = None) -> Page[LineageNode]:
        """Nodes oldest first (then by key); only ``kind`` when given. Raises InvalidInput on a bad token."""

    def add_lineage_edge(self, tenant: str, source: str, target: str, *, kind: str, at: int) -> LineageEdge:
        """Record ``source -> target``; an edge already there is returned unchanged.

        Raises NotFound for a missing node."""

    def lineage_edges(self, tenant: str, keys: Sequence[str], *, direction: Direction) -> list[LineageEdge]:
        """Edges into ``keys`` (``upstream``) or out of them (``downstream``), oldest first."""
