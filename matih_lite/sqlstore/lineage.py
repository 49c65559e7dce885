"""The lineage part of the metadata contract over SQL: nodes and edges, both keyed by tenant."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from matih_lite.contracts.lineage import Direction, LineageEdge, LineageNode
from matih_lite.contracts.records import Page
from matih_lite.errors import Conflict, InvalidInput, NotFound
from matih_lite.sqlstore.scope import OWNED, Paging, ScopedStore

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (4, "lineage", [
        """CREATE TABLE lineage_nodes (
            tenant {text} NOT NULL,
            node_key {text} NOT NULL,
            kind {text} NOT NULL,
            name {text} NOT NULL DEFAULT '',
            properties {text} NOT NULL DEFAULT '{{}}',
            created_at {bigint} NOT NULL,
            updated_at {bigint} NOT NULL,
            PRIMARY KEY (tenant, node_key))""",
        "CREATE INDEX lineage_nodes_by_kind ON lineage_nodes (tenant, kind, created_at)",
        """CREATE TABLE lineage_edges (
            tenant {text} NOT NULL,
            source_key {text} NOT NULL,
            target_key {text} NOT NULL,
            kind {text} NOT NULL,
            created_at {bigint} NOT NULL,
            PRIMARY KEY (tenant, source_key, target_key, kind),
            FOREIGN KEY (tenant, source_key) REFERENCES lineage_nodes (tenant, node_key) ON DELETE CASCADE,
            FOREIGN KEY (tenant, target_key) REFERENCES lineage_nodes (tenant, node_key) ON DELETE CASCADE)""",
        "CREATE INDEX lineage_edges_by_target ON lineage_edges (tenant, target_key)",
    ]),
]
"""Schema for lineage: version 4 (and 4 to 4.x by convention, e.g. 401, 402 for later changes)."""

TABLES = {"lineage_nodes": OWNED, "lineage_edges": OWNED}

_NODE_COLUMNS = "tenant, node_key, kind, name, properties, created_at, updated_at"
_NODE_VALUES = ("node_key", "kind", "name", "properties", "created_at", "updated_at")
_EDGE_COLUMNS = "tenant, source_key, target_key, kind, created_at"
_CHUNK = 500  # keys per IN (...) list, under every engine's parameter limit


def _node(row: Sequence[Any]) -> LineageNode:
    return LineageNode(row[0], row[1], row[2], row[3], json.loads(row[4] or "{}"), int(row[5]), int(row[6]))


def _edge(row: Sequence[Any]) -> LineageEdge:
    return LineageEdge(row[0], row[1], row[2], row[3], int(row[4]))


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[i:i + _CHUNK] for i in range(0, len(values), _CHUNK)]


class SqlLineageStore(ScopedStore):
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db`` and ``self._q``."""

    db: Any
    _q: Any

    def put_lineage_node(self, tenant: str, key: str, *, kind: str, at: int, name: str = "",
                         properties: Mapping[str, Any] | None = None) -> LineageNode:
        new_props = dict(properties or {})

        def run(cur: Any) -> LineageNode:
            mine = self.scoped(cur, tenant)
            row = mine.first("lineage_nodes", _NODE_COLUMNS, "node_key = ?", (key,))
            if row is None:
                mine.insert_many("lineage_nodes", _NODE_VALUES,
                                 [(key, kind, name, json.dumps(new_props, sort_keys=True), at, at)])
                return LineageNode(tenant, key, kind, name, new_props, at, at)
            old = _node(row)
            if old.kind != kind:
                raise Conflict(f"lineage node {key!r} is a {old.kind}, not a {kind}")
            merged = {**old.properties, **new_props}
            new_name = name or old.name
            if merged == old.properties and new_name == old.name:
                return old
            mine.update("lineage_nodes", "name = ?, properties = ?, updated_at = ?",
                        (new_name, json.dumps(merged, sort_keys=True), at), "node_key = ?", (key,))
            return LineageNode(tenant, key, kind, new_name, merged, old.created_at, at)

        return self.db.write(run)

    def get_lineage_nodes(self, tenant: str, keys: Sequence[str]) -> dict[str, LineageNode]:
        wanted = sorted(set(keys))
        found: dict[str, LineageNode] = {}
        with self.db.read() as cur:
            mine = self.scoped(cur, tenant)
            for chunk in _chunks(wanted):
                for row in mine.select("lineage_nodes", _NODE_COLUMNS, f"node_key IN ({_marks(chunk)})", chunk):
                    found[row[1]] = _node(row)
        return found

    def list_lineage_nodes(self, tenant: str, *, kind: str | None = None, max_results: int = 1000,
                           page_token: str | None = None) -> Page[LineageNode]:
        paging = Paging(page_token, max_results)
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("lineage_nodes", _NODE_COLUMNS, "kind = ?" if kind is not None else "",
                                                   (kind,) if kind is not None else (), order="created_at, node_key",
                                                   paging=paging)
        return paging.page([_node(r) for r in rows])

    def add_lineage_edge(self, tenant: str, source: str, target: str, *, kind: str, at: int) -> LineageEdge:
        def run(cur: Any) -> LineageEdge:
            mine = self.scoped(cur, tenant)
            present = {r[0] for r in mine.select("lineage_nodes", "node_key", "node_key IN (?, ?)", (source, target))}
            for key in (source, target):
                if key not in present:
                    raise NotFound(f"lineage node {key!r} does not exist")
            # DO NOTHING keeps the first created_at: recording an edge again is not news.
            mine.insert("lineage_edges", {"source_key": source, "target_key": target, "kind": kind, "created_at": at},
                        on_conflict="(tenant, source_key, target_key, kind) DO NOTHING")
            return _edge(mine.first("lineage_edges", _EDGE_COLUMNS, "source_key = ? AND target_key = ? AND kind = ?",
                                    (source, target, kind)))

        return self.db.write(run)

    def lineage_edges(self, tenant: str, keys: Sequence[str], *, direction: Direction) -> list[LineageEdge]:
        if direction not in ("upstream", "downstream"):
            raise InvalidInput(f"direction must be upstream or downstream, not {direction!r}")
        column = "target_key" if direction == "upstream" else "source_key"
        edges: list[LineageEdge] = []
        with self.db.read() as cur:
            mine = self.scoped(cur, tenant)
            for chunk in _chunks(sorted(set(keys))):
                edges.extend(_edge(r) for r in mine.select("lineage_edges", _EDGE_COLUMNS,
                                                           f"{column} IN ({_marks(chunk)})", chunk))
        edges.sort(key=lambda e: (e.created_at, e.source, e.target, e.kind))
        return edges
