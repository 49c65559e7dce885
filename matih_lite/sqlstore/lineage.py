"""The lineage part of the metadata contract over SQL: nodes and edges, both keyed by tenant."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from matih_lite.contracts.lineage import Direction, LineageEdge, LineageNode
from matih_lite.contracts.records import Page
from matih_lite.errors import Conflict, InvalidInput, NotFound

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

_NODE_COLUMNS = "tenant, node_key, kind, name, properties, created_at, updated_at"
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


class SqlLineageStore:
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db`` and ``self._q``."""

    db: Any
    _q: Any

    def put_lineage_node(self, tenant: str, key: str, *, kind: str, at: int, name: str = "",
                         properties: Mapping[str, Any] | None = None) -> LineageNode:
        q = self._q
        new_props = dict(properties or {})

        def run(cur: Any) -> LineageNode:
            cur.execute(q(f"SELECT {_NODE_COLUMNS} FROM lineage_nodes WHERE tenant = ? AND node_key = ?"),
                        (tenant, key))
            row = cur.fetchone()
            if row is None:
                cur.execute(q(f"INSERT INTO lineage_nodes ({_NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"),
                            (tenant, key, kind, name, json.dumps(new_props, sort_keys=True), at, at))
                return LineageNode(tenant, key, kind, name, new_props, at, at)
            old = _node(row)
            if old.kind != kind:
                raise Conflict(f"lineage node {key!r} is a {old.kind}, not a {kind}")
            merged = {**old.properties, **new_props}
            new_name = name or old.name
            if merged == old.properties and new_name == old.name:
                return old
            cur.execute(q("UPDATE lineage_nodes SET name = ?, properties = ?, updated_at = ? "
                          "WHERE tenant = ? AND node_key = ?"),
                        (new_name, json.dumps(merged, sort_keys=True), at, tenant, key))
            return LineageNode(tenant, key, kind, new_name, merged, old.created_at, at)

        return self.db.write(run)

    def get_lineage_nodes(self, tenant: str, keys: Sequence[str]) -> dict[str, LineageNode]:
        wanted = sorted(set(keys))
        found: dict[str, LineageNode] = {}
        with self.db.read() as cur:
            for chunk in _chunks(wanted):
                cur.execute(self._q(f"SELECT {_NODE_COLUMNS} FROM lineage_nodes WHERE tenant = ? "
                                    f"AND node_key IN ({_marks(chunk)})"), (tenant, *chunk))
                for row in cur.fetchall():
                    found[row[1]] = _node(row)
        return found

    def list_lineage_nodes(self, tenant: str, *, kind: str | None = None, max_results: int = 1000,
                           page_token: str | None = None) -> Page[LineageNode]:
        from matih_lite.sqlstore.tracking import decode_token, encode_token

        offset = decode_token(page_token)
        if max_results < 1:
            raise InvalidInput(f"max_results must be at least 1, got {max_results}")
        where, params = "tenant = ?", [tenant]
        if kind is not None:
            where += " AND kind = ?"
            params.append(kind)
        with self.db.read() as cur:
            cur.execute(self._q(f"SELECT {_NODE_COLUMNS} FROM lineage_nodes WHERE {where} "
                                "ORDER BY created_at, node_key LIMIT ? OFFSET ?"),
                        (*params, max_results + 1, offset))
            rows = cur.fetchall()
        more = len(rows) > max_results
        return Page([_node(r) for r in rows[:max_results]], encode_token(offset + max_results) if more else None)

    def add_lineage_edge(self, tenant: str, source: str, target: str, *, kind: str, at: int) -> LineageEdge:
        q = self._q

        def run(cur: Any) -> LineageEdge:
            cur.execute(q("SELECT node_key FROM lineage_nodes WHERE tenant = ? AND node_key IN (?, ?)"),
                        (tenant, source, target))
            present = {r[0] for r in cur.fetchall()}
            for key in (source, target):
                if key not in present:
                    raise NotFound(f"lineage node {key!r} does not exist")
            # DO NOTHING keeps the first created_at: recording an edge again is not news.
            cur.execute(q("INSERT INTO lineage_edges (tenant, source_key, target_key, kind, created_at) "
                          "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, source_key, target_key, kind) DO NOTHING"),
                        (tenant, source, target, kind, at))
            cur.execute(q(f"SELECT {_EDGE_COLUMNS} FROM lineage_edges WHERE tenant = ? AND source_key = ? "
                          "AND target_key = ? AND kind = ?"), (tenant, source, target, kind))
            return _edge(cur.fetchone())

        return self.db.write(run)

    def lineage_edges(self, tenant: str, keys: Sequence[str], *, direction: Direction) -> list[LineageEdge]:
        if direction not in ("upstream", "downstream"):
            raise InvalidInput(f"direction must be upstream or downstream, not {direction!r}")
        column = "target_key" if direction == "upstream" else "source_key"
        edges: list[LineageEdge] = []
        with self.db.read() as cur:
            for chunk in _chunks(sorted(set(keys))):
                cur.execute(self._q(f"SELECT {_EDGE_COLUMNS} FROM lineage_edges WHERE tenant = ? "
                                    f"AND {column} IN ({_marks(chunk)})"), (tenant, *chunk))
                edges.extend(_edge(r) for r in cur.fetchall())
        edges.sort(key=lambda e: (e.created_at, e.source, e.target, e.kind))
        return edges
