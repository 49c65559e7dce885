"""Experiments, runs, params, metrics and tags over SQL (the tracking part of the metadata slot)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from matih_lite.contracts.records import (
    TERMINAL_STATUSES,
    Experiment,
    Health,
    Metric,
    Page,
    Run,
    decode_page_token,
    encode_page_token,
)
from matih_lite.contracts.search import Comparison, OrderBy, RunFilter
from matih_lite.errors import Conflict, InvalidInput, NotFound
from matih_lite.sqlstore.database import Database
from matih_lite.sqlstore.metric_series import fold_points
from matih_lite.sqlstore.scope import Join, Paging, ScopedStore, paging_clause

_RUN_COLUMNS = ("run_id, experiment_id, tenant, name, status, start_time, end_time, lifecycle_stage, "
                "parent_run_id, artifact_uri, user_id")
_EXPERIMENT_COLUMNS = ("experiment_id, tenant, name, description, artifact_location, lifecycle_stage, "
                       "creation_time, last_update_time")
_ATTRIBUTE_COLUMNS = {
    "run_id": "r.run_id", "run_name": "r.name", "status": "r.status", "user_id": "r.user_id",
    "artifact_uri": "r.artifact_uri", "lifecycle_stage": "r.lifecycle_stage", "start_time": "r.start_time",
    "end_time": "r.end_time",
}
_RUN_SELECT = ", ".join("r." + c.strip() for c in _RUN_COLUMNS.split(","))
_NUMERIC_OPS = {"=", "!=", ">", ">=", "<", "<="}
_KEY_ORDER_TABLES = {"metric": "latest_metrics", "param": "params", "tag": "tags"}
_PREFIX_ROWS = 4000
"""Index entries an ordered search walks first, probing each run against the filter (see _key_order_prefix)."""
_SUBQUERY_CLAUSE = re.compile(r"^r\.run_id (NOT )?IN \(SELECT (\w+)\.run_id FROM (\w+) \2 WHERE (.*)\)$", re.DOTALL)


def _correlated(condition: str) -> str:
    """``r.run_id [NOT] IN (SELECT x.run_id FROM t x WHERE ...)`` as ``[NOT] EXISTS (... x.run_id = r.run_id ...)``:
    a probe per run (what a short walk wants) instead of a list of every matching run."""
    m = _SUBQUERY_CLAUSE.match(condition)
    if m is None:
        return condition
    negate, alias, table, rest = m.groups()
    return f"{negate or ''}EXISTS (SELECT 1 FROM {table} {alias} WHERE {alias}.run_id = r.run_id AND {rest})"
_CHUNK = 500  # ids per IN (...) list, under every engine's parameter limit


encode_token = encode_page_token
decode_token = decode_page_token


def _id(experiment_id: str | int) -> int:
    try:
        value = int(experiment_id)
    except (TypeError, ValueError):
        raise NotFound(f"experiment {experiment_id!r} does not exist") from None
    if value < 0 or value > 2**62:
        raise NotFound(f"experiment {experiment_id!r} does not exist")
    return value


def _metric_row(run_id: str, m: Metric) -> tuple:
    nan = m.value != m.value
    return (run_id, m.key, 0.0 if nan else float(m.value), 1 if nan else 0, int(m.timestamp), int(m.step))


def _metric_from(key: str, value: float, is_nan: int, timestamp: int, step: int) -> Metric:
    return Metric(key=key, value=math.nan if is_nan else float(value), timestamp=int(timestamp), step=int(step))


def _latest_sort_key(m: Metric) -> tuple:
    return (m.step, m.timestamp, -math.inf if m.value != m.value else m.value)


class SqlTrackingStore(ScopedStore):
    """The :class:`~matih_lite.contracts.metadata.TrackingStore` contract over a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._q = db.dialect.sql

    # ---- health -----------------------------------------------------------------------------
    def health(self) -> Health:
        """The engine and the schema version it holds: the newest migration applied (what the log's "schema
        migrated to version N" says), or "schema empty" before the first ``up`` or ``migrate``."""
        applied = self.db.schema_applied()
        if applied is None:
            return Health(True, f"{self.db.dialect.name}, schema empty (matih-lite up or matih-lite migrate "
                                "creates it)")
        return Health(True, f"{self.db.dialect.name}, schema version {applied}")

    def close(self) -> None:
        self.db.close()

    # ---- experiments --------------------------------------------------------------------------
    def create_experiment(self, tenant: str, name: str, *, description: str = "", artifact_location: str = "",
                          tags: Mapping[str, str] | None = None, creation_time: int | None = None) -> Experiment:
        import time

        now = creation_time or int(time.time() * 1000)

        def run(cur: Any) -> int:
            mine = self.scoped(cur, tenant)
            if mine.exists("experiments", "name = ?", (name,)):
                raise Conflict(f"experiment {name!r} already exists (deleted experiments keep their name; "
                               "restore it or pick another name)")
            eid = mine.insert("experiments", {
                "name": name, "description": description, "artifact_location": artifact_location,
                "lifecycle_stage": "active", "creation_time": now, "last_update_time": now},
                returning="experiment_id")[0]
            if tags:
                cur.executemany(self._q("INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?)"),
                                [(eid, k, v) for k, v in tags.items()])
            return eid

        return self.get_experiment(tenant, str(self.db.write(run)))

    def _experiments(self, cur: Any, tenant: str, where: str, params: Sequence[Any], *, order: str = "",
                     paging: Paging | None = None) -> list[Experiment]:
        rows = self.scoped(cur, tenant).select("experiments", _EXPERIMENT_COLUMNS, where, params, order=order,
                                               paging=paging)
        exps = [Experiment(str(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]
        if exps:
            by_id = {e.experiment_id: e for e in exps}
            ids = [int(i) for i in by_id]
            for chunk in _chunks(ids):
                cur.execute(self._q(f"SELECT experiment_id, key, value FROM experiment_tags "
                                    f"WHERE experiment_id IN ({_marks(chunk)})"), tuple(chunk))
                for eid, key, value in cur.fetchall():
                    by_id[str(eid)].tags[key] = value
        return exps

    def get_experiment(self, tenant: str, experiment_id: str) -> Experiment:
        with self.db.read() as cur:
            found = self._experiments(cur, tenant, "experiment_id = ?", (_id(experiment_id),))
        if not found:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        return found[0]

    def get_experiment_by_name(self, tenant: str, name: str) -> Experiment:
        with self.db.read() as cur:
            found = self._experiments(cur, tenant, "name = ?", (name,))
        if not found:
            raise NotFound(f"experiment {name!r} does not exist")
        return found[0]

    def search_experiments(self, tenant: str, *, lifecycle: str = "active", name_like: str | None = None,
                           max_results: int = 1000, page_token: str | None = None) -> Page[Experiment]:
        paging = Paging(page_token, max_results)
        where: list[str] = []
        params: list[Any] = []
        if lifecycle != "all":
            where.append("lifecycle_stage = ?")
            params.append(lifecycle)
        if name_like:
            where.append("name LIKE ?" + _no_escape(self.db.dialect.name))
            params.append(name_like)
        with self.db.read() as cur:
            items = self._experiments(cur, tenant, " AND ".join(where), params,
                                      order="creation_time DESC, experiment_id DESC", paging=paging)
        return paging.page(items)

    def update_experiment(self, tenant: str, experiment_id: str, *, name: str | None = None,
                          description: str | None = None, lifecycle_stage: str | None = None) -> Experiment:
        import time

        eid = _id(experiment_id)

        def run(cur: Any) -> None:
            mine = self.scoped(cur, tenant)
            if not mine.exists("experiments", "experiment_id = ?", (eid,)):
                raise NotFound(f"experiment {experiment_id!r} does not exist")
            if name is not None and mine.exists("experiments", "name = ? AND experiment_id != ?", (name, eid)):
                raise Conflict(f"experiment {name!r} already exists")
            sets, params = ["last_update_time = ?"], [int(time.time() * 1000)]
            for column, value in (("name", name), ("description", description), ("lifecycle_stage", lifecycle_stage)):
                if value is not None:
                    sets.append(f"{column} = ?")
                    params.append(value)
            mine.update("experiments", ", ".join(sets), params, "experiment_id = ?", (eid,))
            if lifecycle_stage is not None:
                mine.update("runs", "lifecycle_stage = ?", (lifecycle_stage,), "experiment_id = ?", (eid,))

        self.db.write(run)
        return self.get_experiment(tenant, experiment_id)

    def set_experiment_tags(self, tenant: str, experiment_id: str, tags: Mapping[str, str]) -> None:
        eid = _id(experiment_id)

        def run(cur: Any) -> None:
            if not self.scoped(cur, tenant).exists("experiments", "experiment_id = ?", (eid,)):
                raise NotFound(f"experiment {experiment_id!r} does not exist")
            cur.executemany(self._q("INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?) "
                                    "ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value"),
                            [(eid, k, v) for k, v in sorted(tags.items())])

        self.db.write(run)

    # ---- runs -----------------------------------------------------------------------------------
    def create_run(self, tenant: str, experiment_id: str, *, run_id: str, name: str, start_time: int,
                   user_id: str = "", parent_run_id: str | None = None, artifact_uri: str = "",
                   tags: Mapping[str, str] | None = None, status: str = "RUNNING") -> Run:
        eid = _id(experiment_id)

        def run(cur: Any) -> None:
            mine = self.scoped(cur, tenant)
            row = mine.first("experiments", "lifecycle_stage", "experiment_id = ?", (eid,))
            if not row:
                raise NotFound(f"experiment {experiment_id!r} does not exist")
            if row[0] != "active":
                raise Conflict(f"experiment {experiment_id!r} is deleted; restore it before adding runs")
            if parent_run_id and not mine.exists("runs", "run_id = ?", (parent_run_id,)):
                raise NotFound(f"parent run {parent_run_id!r} does not exist")
            mine.insert("runs", {"run_id": run_id, "experiment_id": eid, "name": name, "status": status,
                                 "start_time": start_time, "lifecycle_stage": "active", "parent_run_id": parent_run_id,
                                 "artifact_uri": artifact_uri, "user_id": user_id})
            if tags:
                cur.executemany(self._q("INSERT INTO tags (run_id, key, value) VALUES (?, ?, ?)"),
                                [(run_id, k, v) for k, v in tags.items()])

        self.db.write(run)
        return Run(run_id=run_id, experiment_id=str(eid), tenant=tenant, name=name, status=status,
                   start_time=start_time, parent_run_id=parent_run_id, artifact_uri=artifact_uri,
                   user_id=user_id, tags=dict(tags or {}))

    def get_run(self, tenant: str, run_id: str) -> Run:
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("runs", _RUN_COLUMNS, "run_id = ?", (run_id,))
            if not rows:
                raise NotFound(f"run {run_id!r} does not exist")
            return self._hydrate(cur, rows, None)[0]

    def _hydrate(self, cur: Any, rows: list[tuple], columns: Sequence[str] | None) -> list[Run]:
        runs = [Run(run_id=r[0], experiment_id=str(r[1]), tenant=r[2], name=r[3], status=r[4], start_time=r[5],
                    end_time=r[6], lifecycle_stage=r[7], parent_run_id=r[8], artifact_uri=r[9], user_id=r[10])
                for r in rows]
        if not runs:
            return runs
        by_id = {r.run_id: r for r in runs}
        wanted = _columns(columns)
        for table, kind in (("params", "param"), ("tags", "tag"), ("latest_metrics", "metric")):
            keys = wanted.get(kind)
            if keys == set():
                continue
            value_cols = "key, value, is_nan, timestamp, step" if kind == "metric" else "key, value"
            for chunk in _chunks(list(by_id)):
                sql = f"SELECT run_id, {value_cols} FROM {table} WHERE run_id IN ({_marks(chunk)})"
                params: list[Any] = list(chunk)
                if keys is not None:
                    sql += f" AND key IN ({_marks(keys)})"
                    params.extend(sorted(keys))
                cur.execute(self._q(sql), tuple(params))
                for row in cur.fetchall():
                    run = by_id[row[0]]
                    if kind == "param":
                        run.params[row[1]] = row[2]
                    elif kind == "tag":
                        run.tags[row[1]] = row[2]
                    else:
                        run.metrics[row[1]] = _metric_from(*row[1:])
        return runs

    def update_run(self, tenant: str, run_id: str, *, status: str | None = None, end_time: int | None = None,
                   name: str | None = None, lifecycle_stage: str | None = None) -> Run:
        def run(cur: Any) -> None:
            sets, params = [], []
            for column, value in (("status", status), ("end_time", end_time), ("name", name),
                                  ("lifecycle_stage", lifecycle_stage)):
                if value is not None:
                    sets.append(f"{column} = ?")
                    params.append(value)
            if status is not None and status not in TERMINAL_STATUSES and end_time is None:
                sets.append("end_time = NULL")
            if not sets:
                sets.append("run_id = run_id")
            if self.scoped(cur, tenant).update("runs", ", ".join(sets), params, "run_id = ?", (run_id,)) == 0:
                raise NotFound(f"run {run_id!r} does not exist")

        self.db.write(run)
        return self.get_run(tenant, run_id)

    def log_batch(self, tenant: str, run_id: str, *, metrics: Sequence[Metric] = (),
                  params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None) -> None:
        params = params or {}
        tags = tags or {}
        latest: dict[str, Metric] = {}
        for m in metrics:
            cur_best = latest.get(m.key)
            if cur_best is None or _latest_sort_key(m) > _latest_sort_key(cur_best):
                latest[m.key] = m
        q = self._q

        def run(cur: Any) -> None:
            row = self.scoped(cur, tenant).first("runs", "status, lifecycle_stage", "run_id = ?", (run_id,))
            if not row:
                raise NotFound(f"run {run_id!r} does not exist")
            status, stage = row
            if stage != "active":
                raise Conflict(f"run {run_id!r} is deleted; restore it before writing to it")
            if (metrics or params) and status in TERMINAL_STATUSES:
                raise Conflict(f"run {run_id!r} has ended ({status}); metrics and params can only be logged "
                               "to a running run (resume it first)")
            if params:
                keys = list(params)
                existing: dict[str, str] = {}
                for chunk in _chunks(keys):
                    cur.execute(q(f"SELECT key, value FROM params WHERE run_id = ? AND key IN ({_marks(chunk)})"),
                                (run_id, *chunk))
                    existing.update(dict(cur.fetchall()))
                changed = {k: (existing[k], params[k]) for k in keys if k in existing and existing[k] != params[k]}
                if changed:
                    k, (old, new) = next(iter(changed.items()))
                    raise Conflict(f"param {k!r} of run {run_id} is already {old!r}; params are write-once and "
                                   f"cannot change to {new!r}", detail={"params": sorted(changed)})
                fresh = [(run_id, k, v) for k, v in sorted(params.items()) if k not in existing]
                if fresh:
                    cur.executemany(q("INSERT INTO params (run_id, key, value) VALUES (?, ?, ?)"), fresh)
            if tags:
                cur.executemany(q("INSERT INTO tags (run_id, key, value) VALUES (?, ?, ?) "
                                  "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value"),
                                [(run_id, k, v) for k, v in sorted(tags.items())])
            if metrics:
                cur.executemany(q("INSERT INTO metrics (run_id, key, value, is_nan, timestamp, step) "
                                  "VALUES (?, ?, ?, ?, ?, ?)"), [_metric_row(run_id, m) for m in metrics])
                cur.executemany(q(
                    "INSERT INTO latest_metrics (run_id, key, value, is_nan, timestamp, step) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, is_nan = excluded.is_nan, "
                    "timestamp = excluded.timestamp, step = excluded.step "
                    "WHERE excluded.step > latest_metrics.step OR (excluded.step = latest_metrics.step AND "
                    "(excluded.timestamp > latest_metrics.timestamp OR (excluded.timestamp = latest_metrics.timestamp "
                    "AND excluded.is_nan = 0 AND (latest_metrics.is_nan = 1 OR excluded.value > latest_metrics.value))))"),
                    [_metric_row(run_id, latest[k]) for k in sorted(latest)])
                fold_points(cur, q, run_id, metrics)  # the series' chart blocks (sqlstore/metric_series.py)

        self.db.write(run)

    def delete_tag(self, tenant: str, run_id: str, key: str) -> None:
        def run(cur: Any) -> None:
            if not self.scoped(cur, tenant).exists("runs", "run_id = ?", (run_id,)):
                raise NotFound(f"run {run_id!r} does not exist")
            cur.execute(self._q("DELETE FROM tags WHERE run_id = ? AND key = ?"), (run_id, key))
            if cur.rowcount == 0:
                raise NotFound(f"run {run_id!r} has no tag {key!r}")

        self.db.write(run)

    def get_metric_history(self, tenant: str, run_id: str, key: str, *, max_results: int | None = None,
                           page_token: str | None = None) -> Page[Metric]:
        paging: Paging[Metric] = Paging(page_token, max_results)
        with self.db.read() as cur:
            if not self.scoped(cur, tenant).exists("runs", "run_id = ?", (run_id,)):
                raise NotFound(f"run {run_id!r} does not exist")
            sql = "SELECT value, is_nan, timestamp, step FROM metrics WHERE run_id = ? AND key = ? " \
                  "ORDER BY step, timestamp" + paging_clause(self.db.dialect.name, paging.kind)
            cur.execute(self._q(sql), (run_id, key, *paging.params()))
            rows = cur.fetchall()
        nan = math.nan
        return paging.page([Metric(key, nan if is_nan else value, ts, step) for value, is_nan, ts, step in rows])

    def search_runs(self, tenant: str, experiment_ids: Sequence[str], *, filter: RunFilter | None = None,
                    order_by: Sequence[OrderBy] = (), lifecycle: str = "active", max_results: int = 1000,
                    page_token: str | None = None, columns: Sequence[str] | None = None) -> Page[Run]:
        paging: Paging[tuple] = Paging(page_token, max_results)
        ids = []
        for e in experiment_ids:
            try:
                ids.append(_id(e))
            except NotFound:
                continue  # an id that cannot exist matches nothing
        if not ids:
            return Page([], None)
        joins: list[Join] = []
        where = [f"r.experiment_id IN ({_marks(ids)})"]
        params: list[Any] = [*ids]
        if lifecycle != "all":
            where.append("r.lifecycle_stage = ?")
            params.append(lifecycle)
        for clause in (filter.clauses if filter else ()):
            sql, values = self._clause(clause)
            where.append(sql)
            params.extend(values)
        if len(order_by) == 1 and order_by[0].kind in _KEY_ORDER_TABLES:
            return self._search_in_key_order(tenant, order_by[0], where, params, paging, columns)
        order: list[str] = []
        for i, ob in enumerate(order_by):
            direction = "ASC" if ob.ascending else "DESC"
            if ob.kind == "attribute":
                column = _ATTRIBUTE_COLUMNS.get(ob.key)
                if column is None:
                    raise InvalidInput(f"cannot order by attribute {ob.key!r}")
                order.append(f"({column} IS NULL), {column} {direction}")
                continue
            table = {"metric": "latest_metrics", "param": "params", "tag": "tags"}.get(ob.kind)
            if table is None:
                raise InvalidInput(f"cannot order by {ob.kind}s")
            alias = f"o{i}"
            joins.append(Join(table, alias, f"{alias}.run_id = r.run_id AND {alias}.key = ?", (ob.key,), "LEFT JOIN"))
            if ob.kind == "metric":
                order.append(f"({alias}.run_id IS NULL), {alias}.is_nan, {alias}.value {direction}")
            else:
                order.append(f"({alias}.value IS NULL), {alias}.value {direction}")
        order.append("r.start_time DESC, r.run_id ASC")
        with self.db.read() as cur:
            page = paging.page(self.scoped(cur, tenant).select(
                "runs", _RUN_SELECT, " AND ".join(where), params, alias="r", joins=joins, order=", ".join(order),
                paging=paging))
            return Page(self._hydrate(cur, page.items, columns), page.next_token)

    def _search_in_key_order(self, tenant: str, ob: OrderBy, where: list[str], params: list[Any],
                             paging: Paging, columns: Sequence[str] | None) -> Page[Run]:
        """Runs ordered by one metric, param or tag, in the order search_runs defines, phase by phase.

        Runs with a value come first (walked in the order of the key's ``(key, value)`` index, so the
        first page of 100,000 runs costs a page, not a sort of them all), then for a metric those
        whose value is NaN, then runs without the key; each phase by start time, newest first, after
        the value. A page that starts past a phase counts that phase to know where the next begins.
        """
        table = _KEY_ORDER_TABLES[ob.kind]
        direction = "ASC" if ob.ascending else "DESC"
        if self.db.dialect.name == "sqlite":
            # Unary + keeps SQLite from driving the join from the runs index (then sorting every run).
            where = [("+" + w) if w.startswith(("r.experiment_id IN", "r.lifecycle_stage =")) else w for w in where]
        joined = [Join(table, "o0", "o0.run_id = r.run_id AND o0.key = ?", (ob.key,))]
        phases: list[tuple[list[Join], str, list[Any], str]] = []
        if ob.kind == "metric":
            phases.append((joined, "o0.is_nan = 0", [], f"o0.value {direction}, "))
            phases.append((joined, "o0.is_nan = 1", [], ""))
        else:
            phases.append((joined, "", [], f"o0.value {direction}, "))
        key_alias = "m" if ob.kind == "metric" else "p"
        missing = f"r.run_id NOT IN (SELECT {key_alias}.run_id FROM {table} {key_alias} WHERE {key_alias}.key = ?)"
        phases.append(([], missing, [ob.key], ""))
        want = (paging.limit or 0) + 1
        skip = paging.offset
        rows: list[tuple] = []
        with self.db.read() as cur:
            scope = self.scoped(cur, tenant)
            found = self._key_order_prefix(cur, scope, ob, table, where, params, skip, want)
            if found is not None:  # the page lies within the first values of the key's index
                page = paging.page(found)
                return Page(self._hydrate(cur, page.items, columns), page.next_token)
            for joins, extra, extra_params, order in phases:
                if len(rows) >= want:
                    break
                conditions = " AND ".join([*where, extra] if extra else where)
                values = [*params, *extra_params]
                got = scope.select("runs", _RUN_SELECT, conditions, values, alias="r", joins=joins,
                                   order=f"{order}r.start_time DESC, r.run_id ASC",
                                   paging=Paging(encode_token(skip) if skip else None, want - len(rows)))
                got = got[:want - len(rows)]
                if not got and skip:
                    skip -= scope.select("runs", "COUNT(*)", conditions, values, alias="r", joins=joins)[0][0]
                    skip = max(skip, 0)
                elif got:
                    skip = 0
                rows.extend(got)
            page = paging.page(rows)
            return Page(self._hydrate(cur, page.items, columns), page.next_token)

    def _key_order_prefix(self, cur: Any, scope: Any, ob: OrderBy, table: str, where: list[str],
                          params: list[Any], skip: int, want: int) -> list[tuple] | None:
        """The page from the first values of the key's index, checking each run against the filter, or None.

        With a filter most runs pass, walking the ordered index and probing each run (EXISTS) finds a
        page in a few hundred rows; building every clause's full list of runs (the IN form) reads them
        all. A filter few runs pass would walk the whole index, so the walk stops at the value the
        ``prefix``-th entry holds (ties included, so the order within it is exact); when that yields no
        full page (a selective filter, or the values run out before the NaNs and runs without the key
        that follow them) the caller takes the phase-by-phase path.
        """
        prefix = max(_PREFIX_ROWS, 8 * (skip + want))
        direction = "ASC" if ob.ascending else "DESC"
        nan = " AND is_nan = 0" if ob.kind == "metric" else ""
        cur.execute(self._q(f"SELECT value FROM {table} WHERE key = ?{nan} ORDER BY value {direction} "
                            "LIMIT 1 OFFSET ?"), (ob.key, prefix - 1))
        boundary = cur.fetchone()
        conditions = [_correlated(w) for w in where]
        values = list(params)
        if ob.kind == "metric":
            conditions.append("o0.is_nan = 0")
        if boundary is not None:
            conditions.append(f"o0.value {'<=' if ob.ascending else '>='} ?")
            values.append(boundary[0])
        got = scope.select("runs", _RUN_SELECT, " AND ".join(conditions), values, alias="r",
                           joins=[Join(table, "o0", "o0.run_id = r.run_id AND o0.key = ?", (ob.key,))],
                           order=f"o0.value {direction}, r.start_time DESC, r.run_id ASC",
                           paging=Paging(encode_token(skip) if skip else None, want))[:want]
        return got if len(got) == want else None  # a short page continues with NaNs and missing values

    def _clause(self, c: Comparison) -> tuple[str, list[Any]]:
        """SQL for one filter clause, with its values as parameters."""
        if c.kind == "attribute":
            column = _ATTRIBUTE_COLUMNS.get(c.key)
            if column is None:
                raise InvalidInput(f"cannot filter on attribute {c.key!r}")
            return self._compare(column, c.op, c.value)
        # "r.run_id IN (SELECT ...)" lets the engine walk the (key, value) index once instead of
        # probing per run as EXISTS (...) does: 5x faster over 10,000 runs on SQLite.
        if c.kind == "metric":
            if c.op not in _NUMERIC_OPS:
                raise InvalidInput(f"metrics compare with {', '.join(sorted(_NUMERIC_OPS))}, not {c.op}")
            if c.op == "!=":
                cond = "(m.is_nan = 1 OR m.value != ?)"
            else:
                cond = f"m.is_nan = 0 AND m.value {c.op} ?"
            return (f"r.run_id IN (SELECT m.run_id FROM latest_metrics m WHERE m.key = ? AND {cond})",
                    [c.key, float(c.value)])  # type: ignore[arg-type]
        if c.kind in ("param", "tag"):
            table = "params" if c.kind == "param" else "tags"
            if c.op == "IS NULL":
                return f"r.run_id NOT IN (SELECT p.run_id FROM {table} p WHERE p.key = ?)", [c.key]
            if c.op == "IS NOT NULL":
                return f"r.run_id IN (SELECT p.run_id FROM {table} p WHERE p.key = ?)", [c.key]
            cond, values = self._compare("p.value", c.op, c.value)
            return (f"r.run_id IN (SELECT p.run_id FROM {table} p WHERE p.key = ? AND {cond})",
                    [c.key, *values])
        if c.kind == "dataset" and c.key in ("name", "digest", "context"):  # any one of the run's dataset inputs
            cond, values = self._compare(f"d.{c.key}", c.op, c.value)
            return f"r.run_id IN (SELECT d.run_id FROM run_dataset_inputs d WHERE {cond})", values
        raise InvalidInput(f"filtering on {c.kind}s is not supported by this store")

    def _compare(self, column: str, op: str, value: Any) -> tuple[str, list[Any]]:
        if op in ("IN", "NOT IN"):
            values = list(value)
            return f"{column} {op} ({_marks(values)})", values
        if op == "ILIKE":
            if self.db.dialect.name == "postgres":
                return f"{column} ILIKE ?{_no_escape('postgres')}", [value]
            return f"lower({column}) LIKE lower(?)", [value]
        if op == "LIKE":
            return f"{column} LIKE ?{_no_escape(self.db.dialect.name)}", [value]
        if op == "IS NULL":
            return f"{column} IS NULL", []
        if op == "IS NOT NULL":
            return f"{column} IS NOT NULL", []
        return f"{column} {op} ?", [value]


def _no_escape(dialect: str) -> str:
    """PostgreSQL's LIKE treats backslash as an escape; SQLite's (and MLflow's) has none."""
    return " ESCAPE ''" if dialect == "postgres" else ""


def _marks(values: Any) -> str:
    return ", ".join("?" for _ in values)


def _chunks(values: list[Any]) -> list[list[Any]]:
    return [values[i:i + _CHUNK] for i in range(0, len(values), _CHUNK)] or [[]]


def _columns(columns: Sequence[str] | None) -> dict[str, set[str] | None]:
    """``["metrics.auc", "params.*"]`` -> {"metric": {"auc"}, "param": None, "tag": set()}; None -> all."""
    if columns is None:
        return {"metric": None, "param": None, "tag": None}
    wanted: dict[str, set[str] | None] = {"metric": set(), "param": set(), "tag": set()}
    kinds = {"metrics": "metric", "params": "param", "tags": "tag", "metric": "metric", "param": "param",
             "tag": "tag"}
    for col in columns:
        prefix, _, key = col.partition(".")
        kind = kinds.get(prefix)
        if kind is None:
            raise InvalidInput(f"unknown column {col!r}; use metrics.KEY, params.KEY, tags.KEY or PREFIX.*")
        if key in ("", "*"):
            wanted[kind] = None
        elif wanted[kind] is not None:
            wanted[kind].add(key)  # type: ignore[union-attr]
    return wanted
