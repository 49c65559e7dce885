"""Traces and their assessments over SQL (the :class:`~matih_lite.contracts.traces.TraceStore`).

A trace is a row of ``traces`` (owned by its tenant) with its tags, metadata and assessments in
child tables. Each change is one write transaction that first finds the tenant's trace through
:class:`~matih_lite.sqlstore.scope.Scoped`, so a trace of another tenant is NotFound; a
search's filter clauses become ``IN (SELECT ...)`` over the tags' and metadata's
``(key, value, trace_id)`` indexes, with every value bound as a parameter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from matih_lite.contracts.records import Page
from matih_lite.contracts.traces import TRACE_COLUMNS, Assessment, TraceClause, TraceInfo, TraceOrder
from matih_lite.errors import Conflict, InvalidInput, NotFound
from matih_lite.sqlstore.scope import EVERY_TENANT, OWNED, Child, Join, Paging, ScopedStore
from matih_lite.sqlstore.tracking import _chunks, _id, _marks

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (400, "traces", [
        """CREATE TABLE traces (
            trace_id {text} PRIMARY KEY,
            tenant {text} NOT NULL,
            experiment_id {bigint} NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
            request_time {bigint} NOT NULL,
            execution_duration {bigint},
            state {text} NOT NULL,
            client_request_id {text},
            request_preview {text},
            response_preview {text})""",
        "CREATE INDEX traces_by_experiment ON traces (tenant, experiment_id, request_time)",
        """CREATE TABLE trace_tags (
            trace_id {text} NOT NULL REFERENCES traces (trace_id) ON DELETE CASCADE,
            key {text} NOT NULL, value {text} NOT NULL,
            PRIMARY KEY (trace_id, key))""",
        "CREATE INDEX trace_tags_search ON trace_tags (key, value, trace_id)",
        """CREATE TABLE trace_metadata (
            trace_id {text} NOT NULL REFERENCES traces (trace_id) ON DELETE CASCADE,
            key {text} NOT NULL, value {text} NOT NULL,
            PRIMARY KEY (trace_id, key))""",
        "CREATE INDEX trace_metadata_search ON trace_metadata (key, value, trace_id)",
        """CREATE TABLE trace_assessments (
            assessment_id {text} PRIMARY KEY,
            trace_id {text} NOT NULL REFERENCES traces (trace_id) ON DELETE CASCADE,
            name {text} NOT NULL,
            kind {text} NOT NULL,
            body {text} NOT NULL DEFAULT '{{}}',
            source_type {text} NOT NULL DEFAULT '',
            source_id {text} NOT NULL DEFAULT '',
            span_id {text},
            rationale {text},
            error {text},
            metadata {text} NOT NULL DEFAULT '{{}}',
            overrides {text},
            valid {bigint} NOT NULL DEFAULT 1,
            create_time {bigint} NOT NULL,
            last_update_time {bigint} NOT NULL)""",
        "CREATE INDEX trace_assessments_by_trace ON trace_assessments (trace_id, create_time)",
    ]),
]
"""Schema for traces: version 400 (400-449 are this module's)."""

TABLES = {
    "traces": OWNED,
    "trace_tags": Child("traces"),
    "trace_metadata": Child("traces"),
    "trace_assessments": Child("traces"),
}

_COLUMNS = ("t.trace_id, t.tenant, t.experiment_id, t.request_time, t.execution_duration, t.state, "
            "t.client_request_id, t.request_preview, t.response_preview")
_VALUE_COLUMNS = ("trace_id", "experiment_id", "request_time", "execution_duration", "state", "client_request_id",
                  "request_preview", "response_preview")
_ATTRIBUTE_SQL = {"trace_id": "t.trace_id", "request_time": "t.request_time",
                  "execution_duration": "t.execution_duration",
                  "end_time": "(t.request_time + t.execution_duration)", "state": "t.state",
                  "client_request_id": "t.client_request_id"}
_NUMERIC = {"request_time", "execution_duration", "end_time"}
_CHILD = {"tag": "trace_tags", "metadata": "trace_metadata"}
_ASSESSMENT_COLUMNS = ("assessment_id, trace_id, name, kind, body, source_type, source_id, span_id, rationale, error, "
                       "metadata, overrides, valid, create_time, last_update_time")
_COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")


def _now() -> int:
    return int(time.time() * 1000)


def _trace(row: Sequence[Any]) -> TraceInfo:
    return TraceInfo(trace_id=row[0], tenant=row[1], experiment_id=str(row[2]), request_time=int(row[3]),
                     execution_duration=None if row[4] is None else int(row[4]), state=row[5],
                     client_request_id=row[6], request_preview=row[7], response_preview=row[8])


def _assessment(row: Sequence[Any]) -> Assessment:
    return Assessment(assessment_id=row[0], trace_id=row[1], name=row[2], kind=row[3], body=row[4],
                      source_type=row[5], source_id=row[6], span_id=row[7], rationale=row[8], error=row[9],
                      metadata=json.loads(row[10] or "{}"), overrides=row[11], valid=bool(row[12]),
                      create_time=int(row[13]), last_update_time=int(row[14]))


def _assessment_row(a: Assessment, now: int) -> tuple:
    created = a.create_time or now
    return (a.assessment_id, a.trace_id, a.name, a.kind, a.body, a.source_type, a.source_id, a.span_id, a.rationale,
            a.error, json.dumps(a.metadata, sort_keys=True), a.overrides, 1 if a.valid else 0, created,
            a.last_update_time or created)


class SqlTraceStore(ScopedStore):
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db`` and ``self._q``."""

    _q: Any

    # ---- helpers ------------------------------------------------------------------------------------
    def _find_trace(self, cur: Any, tenant: str, trace_id: str) -> None:
        """NotFound unless the tenant holds the trace."""
        if not self.scoped(cur, tenant).exists("traces", "trace_id = ?", (trace_id,)):
            raise NotFound(f"trace {trace_id!r} does not exist")

    def _upsert_trace_items(self, cur: Any, table: str, trace_id: str, items: Mapping[str, str]) -> None:
        if items:
            cur.executemany(self._q(f"INSERT INTO {table} (trace_id, key, value) VALUES (?, ?, ?) "
                                    "ON CONFLICT (trace_id, key) DO UPDATE SET value = excluded.value"),
                            [(trace_id, k, v) for k, v in sorted(items.items())])

    def _trace_details(self, cur: Any, traces: list[TraceInfo]) -> list[TraceInfo]:
        by_id = {t.trace_id: t for t in traces}
        q = self._q
        for chunk in _chunks(list(by_id)) if by_id else []:
            marks = _marks(chunk)
            for table, field in (("trace_tags", "tags"), ("trace_metadata", "metadata")):
                cur.execute(q(f"SELECT trace_id, key, value FROM {table} WHERE trace_id IN ({marks})"), tuple(chunk))
                for tid, key, value in cur.fetchall():
                    getattr(by_id[tid], field)[key] = value
            cur.execute(q(f"SELECT {_ASSESSMENT_COLUMNS} FROM trace_assessments WHERE trace_id IN ({marks}) "
                          "ORDER BY create_time, assessment_id"), tuple(chunk))
            for row in cur.fetchall():
                by_id[row[1]].assessments.append(_assessment(row))
        return traces

    def _trace_where(self, c: TraceClause) -> tuple[str, list[Any]]:
        """SQL for one filter clause, its values as parameters."""
        if c.kind == "attribute":
            column = _ATTRIBUTE_SQL.get(c.key)
            if column is None:
                raise InvalidInput(f"cannot filter traces on attribute {c.key!r}; use one of "
                                   f"{', '.join(TRACE_COLUMNS)}")
            if c.key in _NUMERIC:
                if c.op not in _COMPARISONS or isinstance(c.value, bool) or not isinstance(c.value, int):
                    raise InvalidInput(f"trace attribute {c.key!r} compares with an integer "
                                       f"({', '.join(_COMPARISONS)}), not {c.op} {c.value!r}")
                return f"{column} {c.op} ?", [c.value]
            return self._trace_compare(column, c.op, c.value)
        table = _CHILD.get(c.kind)
        if table is None:
            raise InvalidInput(f"cannot filter traces on {c.kind!r}; use attributes, tags or metadata")
        if c.op == "IS NULL":
            return f"t.trace_id NOT IN (SELECT g.trace_id FROM {table} g WHERE g.key = ?)", [c.key]
        if c.op == "IS NOT NULL":
            return f"t.trace_id IN (SELECT g.trace_id FROM {table} g WHERE g.key = ?)", [c.key]
        cond, values = self._trace_compare("g.value", c.op, c.value)
        return f"t.trace_id IN (SELECT g.trace_id FROM {table} g WHERE g.key = ? AND {cond})", [c.key, *values]

    def _trace_compare(self, column: str, op: str, value: Any) -> tuple[str, list[Any]]:
        postgres = self.db.dialect.name == "postgres"
        if op in ("IN", "NOT IN"):
            if not isinstance(value, tuple) or not value or not all(isinstance(v, str) for v in value):
                raise InvalidInput(f"{op} takes a non-empty list of strings, not {value!r}")
            return f"{column} {op} ({_marks(value)})", list(value)
        if not isinstance(value, str):
            raise InvalidInput(f"{op} compares text with a string, not {value!r}")
        if op == "LIKE":
            return f"{column} LIKE ?" + (" ESCAPE ''" if postgres else ""), [value]
        if op == "ILIKE":
            if postgres:
                return f"{column} ILIKE ? ESCAPE ''", [value]
            return f"lower({column}) LIKE lower(?)", [value]
        if op in _COMPARISONS:
            return f"{column} {op} ?", [value]
        raise InvalidInput(f"unknown comparison {op!r}; use =, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS NULL "
                           "or IS NOT NULL")

    # ---- traces -------------------------------------------------------------------------------------
    def start_trace(self, trace: TraceInfo) -> TraceInfo:
        eid = _id(trace.experiment_id)
        values = (trace.trace_id, eid, int(trace.request_time), trace.execution_duration, trace.state,
                  trace.client_request_id, trace.request_preview, trace.response_preview)

        def run(cur: Any) -> None:
            mine = self.scoped(cur, trace.tenant)
            if not mine.exists("experiments", "experiment_id = ?", (eid,)):
                raise NotFound(f"experiment {trace.experiment_id!r} does not exist")
            # Trace ids are the client's and unique across tenants (the primary key): say so, not a driver error.
            holder = self.scoped(cur, EVERY_TENANT).first("traces", "tenant", "trace_id = ?", (trace.trace_id,))
            if holder is None:
                mine.insert_many("traces", _VALUE_COLUMNS, [values])
            elif holder[0] != trace.tenant:
                raise Conflict(f"trace {trace.trace_id!r} already exists; trace ids are unique")
            else:
                mine.update("traces", ", ".join(f"{c} = ?" for c in _VALUE_COLUMNS[1:]), values[1:],
                            "trace_id = ?", (trace.trace_id,))
            self._upsert_trace_items(cur, "trace_tags", trace.trace_id, trace.tags)
            self._upsert_trace_items(cur, "trace_metadata", trace.trace_id, trace.metadata)
            now = _now()
            for a in trace.assessments:
                cur.execute(self._q(f"INSERT INTO trace_assessments ({_ASSESSMENT_COLUMNS}) VALUES "
                                    f"({_marks(range(15))}) ON CONFLICT (assessment_id) DO NOTHING"),
                            _assessment_row(msgspec.structs.replace(a, trace_id=trace.trace_id), now))

        self.db.write(run)
        return self.get_trace(trace.tenant, trace.trace_id)

    def get_trace(self, tenant: str, trace_id: str) -> TraceInfo:
        found = self.get_traces(tenant, [trace_id])
        if not found:
            raise NotFound(f"trace {trace_id!r} does not exist")
        return found[0]

    def get_traces(self, tenant: str, trace_ids: Sequence[str]) -> list[TraceInfo]:
        ids = list(dict.fromkeys(str(t) for t in trace_ids))
        found: dict[str, TraceInfo] = {}
        with self.db.read() as cur:
            for chunk in _chunks(ids) if ids else []:
                rows = self.scoped(cur, tenant).select("traces", _COLUMNS, f"t.trace_id IN ({_marks(chunk)})", chunk,
                                                       alias="t")
                for trace in self._trace_details(cur, [_trace(r) for r in rows]):
                    found[trace.trace_id] = trace
        return [found[i] for i in ids if i in found]

    def search_traces(self, tenant: str, experiment_ids: Sequence[str], *, clauses: Sequence[TraceClause] = (),
                      order_by: Sequence[TraceOrder] = (), max_results: int = 100,
                      page_token: str | None = None) -> Page[TraceInfo]:
        paging: Paging[TraceInfo] = Paging(page_token, max_results)
        ids = []
        for e in experiment_ids:
            try:
                ids.append(_id(e))
            except NotFound:
                continue  # an id that cannot exist holds no traces
        where = [f"t.experiment_id IN ({_marks(ids)})"]
        params: list[Any] = list(ids)
        for clause in clauses:
            sql, values = self._trace_where(clause)
            where.append(sql)
            params.extend(values)
        if not ids:
            return Page([], None)
        joins: list[Join] = []
        order: list[str] = []
        for i, ob in enumerate(order_by):
            direction = "ASC" if ob.ascending else "DESC"
            if ob.kind == "attribute":
                column = _ATTRIBUTE_SQL.get(ob.key)
                if column is None:
                    raise InvalidInput(f"cannot order traces by attribute {ob.key!r}; use one of "
                                       f"{', '.join(TRACE_COLUMNS)}")
            elif ob.kind in _CHILD:
                alias = f"o{i}"
                joins.append(Join(_CHILD[ob.kind], alias, f"{alias}.trace_id = t.trace_id AND {alias}.key = ?",
                                  (ob.key,), "LEFT JOIN"))
                column = f"{alias}.value"
            else:
                raise InvalidInput(f"cannot order traces by {ob.kind!r}; use attributes, tags or metadata")
            order.append(f"({column} IS NULL), {column} {direction}")
        order.append("t.request_time DESC, t.trace_id ASC")
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("traces", _COLUMNS, " AND ".join(where), params, alias="t",
                                                   joins=joins, order=", ".join(order), paging=paging)
            page = paging.page([_trace(r) for r in rows])
            return Page(self._trace_details(cur, page.items), page.next_token)

    def delete_traces(self, tenant: str, experiment_id: str, *, trace_ids: Sequence[str] | None = None,
                      max_request_time: int | None = None, max_traces: int | None = None) -> list[str]:
        try:
            eid = _id(experiment_id)
        except NotFound:
            return []
        if (trace_ids is None) == (max_request_time is None):
            raise InvalidInput("delete traces by their ids or by max_request_time, one of the two")
        if max_traces is not None and max_traces < 1:
            raise InvalidInput(f"max_traces must be at least 1, got {max_traces}")

        def run(cur: Any) -> list[str]:
            mine = self.scoped(cur, tenant)
            if trace_ids is not None:
                found: list[str] = []
                wanted = list(dict.fromkeys(str(t) for t in trace_ids))
                for chunk in _chunks(wanted) if wanted else []:
                    found += [r[0] for r in mine.select("traces", "trace_id",
                                                        f"experiment_id = ? AND trace_id IN ({_marks(chunk)})",
                                                        (eid, *chunk))]
            else:
                paging: Paging[tuple] = Paging(None, max_traces)
                rows = mine.select("traces", "trace_id", "experiment_id = ? AND request_time <= ?",
                                   (eid, int(max_request_time or 0)), order="request_time, trace_id", paging=paging)
                found = [r[0] for r in paging.page(rows).items]
            for chunk in _chunks(found) if found else []:
                mine.delete("traces", f"trace_id IN ({_marks(chunk)})", chunk)
            return found

        return self.db.write(run)

    def set_trace_tags(self, tenant: str, trace_id: str, tags: Mapping[str, str]) -> None:
        def run(cur: Any) -> None:
            self._find_trace(cur, tenant, trace_id)
            self._upsert_trace_items(cur, "trace_tags", trace_id, tags)

        self.db.write(run)

    def delete_trace_tag(self, tenant: str, trace_id: str, key: str) -> None:
        def run(cur: Any) -> None:
            self._find_trace(cur, tenant, trace_id)
            cur.execute(self._q("DELETE FROM trace_tags WHERE trace_id = ? AND key = ?"), (trace_id, key))
            if cur.rowcount == 0:
                raise NotFound(f"trace {trace_id!r} has no tag {key!r}")

        self.db.write(run)

    # ---- assessments --------------------------------------------------------------------------------
    def create_assessment(self, tenant: str, assessment: Assessment) -> Assessment:
        a = assessment
        q = self._q

        def run(cur: Any) -> None:
            self._find_trace(cur, tenant, a.trace_id)
            cur.execute(q("SELECT 1 FROM trace_assessments WHERE assessment_id = ?"), (a.assessment_id,))
            if cur.fetchone() is not None:
                raise Conflict(f"assessment {a.assessment_id!r} already exists")
            if a.overrides:
                cur.execute(q("UPDATE trace_assessments SET valid = 0, last_update_time = ? "
                              "WHERE assessment_id = ? AND trace_id = ?"), (_now(), a.overrides, a.trace_id))
                if cur.rowcount == 0:
                    raise NotFound(f"assessment {a.overrides!r} to override does not exist on trace {a.trace_id!r}")
            cur.execute(q(f"INSERT INTO trace_assessments ({_ASSESSMENT_COLUMNS}) VALUES ({_marks(range(15))})"),
                        _assessment_row(a, _now()))

        self.db.write(run)
        return self.get_assessment(tenant, a.trace_id, a.assessment_id)

    def get_assessment(self, tenant: str, trace_id: str, assessment_id: str) -> Assessment:
        with self.db.read() as cur:
            self._find_trace(cur, tenant, trace_id)
            cur.execute(self._q(f"SELECT {_ASSESSMENT_COLUMNS} FROM trace_assessments WHERE assessment_id = ? "
                                "AND trace_id = ?"), (assessment_id, trace_id))
            row = cur.fetchone()
        if row is None:
            raise NotFound(f"assessment {assessment_id!r} does not exist on trace {trace_id!r}")
        return _assessment(row)

    def update_assessment(self, tenant: str, assessment: Assessment) -> Assessment:
        a = assessment

        def run(cur: Any) -> None:
            self._find_trace(cur, tenant, a.trace_id)
            cur.execute(self._q("UPDATE trace_assessments SET name = ?, body = ?, rationale = ?, error = ?, "
                                "metadata = ?, valid = ?, last_update_time = ? WHERE assessment_id = ? "
                                "AND trace_id = ?"),
                        (a.name, a.body, a.rationale, a.error, json.dumps(a.metadata, sort_keys=True),
                         1 if a.valid else 0, _now(), a.assessment_id, a.trace_id))
            if cur.rowcount == 0:
                raise NotFound(f"assessment {a.assessment_id!r} does not exist on trace {a.trace_id!r}")

        self.db.write(run)
        return self.get_assessment(tenant, a.trace_id, a.assessment_id)

    def delete_assessment(self, tenant: str, trace_id: str, assessment_id: str) -> None:
        q = self._q

        def run(cur: Any) -> None:
            self._find_trace(cur, tenant, trace_id)
            cur.execute(q("SELECT overrides FROM trace_assessments WHERE assessment_id = ? AND trace_id = ?"),
                        (assessment_id, trace_id))
            row = cur.fetchone()
            if row is None:
                raise NotFound(f"assessment {assessment_id!r} does not exist on trace {trace_id!r}")
            cur.execute(q("DELETE FROM trace_assessments WHERE assessment_id = ?"), (assessment_id,))
            if row[0]:
                cur.execute(q("UPDATE trace_assessments SET valid = 1, last_update_time = ? "
                              "WHERE assessment_id = ? AND trace_id = ?"), (_now(), row[0], trace_id))

        self.db.write(run)

