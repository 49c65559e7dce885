"""``features = { backend = "duckdb", repo = "features" }``: the features slot on a laptop.

Offline, every request is one DuckDB query over the sources as they are (parquet, CSV or a
query; nothing is copied): an ``ASOF LEFT JOIN`` per feature view finds each entity row's newest
feature row at or before its time; where rows of one entity share an event time, the one created
last is taken (those winners are worked out once per version of a file); values older than the
view's ttl become null.
Entity rows from a file stream through DuckDB (which spills to ``<home>/features/tmp`` past
``memory_limit``), so an entity set larger than memory is joined in batches of ``batch_rows``.

Online, each view is a table in one SQLite file (``<home>/features/online.db``, WAL): one row per
entity with its event time and its values (msgpack), written only when newer than what is there,
so materializing twice changes nothing. Rows pushed offline are parquet files under
``<home>/features/pushed/``, read together with their batch source.

duckdb and pyarrow load on the first request, not when the backend is built.
"""

from __future__ import annotations

import functools
import glob
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from matih_lite.contracts import BackendContext
from matih_lite.contracts.features import (
    FeatureDefinitions,
    FeatureView,
    HistoricalRequest,
    OnlineRow,
    Source,
)
from matih_lite.contracts.records import Health
from matih_lite.errors import InvalidInput, NotFound, StoreError
from matih_lite.hookspecs import hookimpl

SQL_TYPES = {"float64": "DOUBLE", "float32": "FLOAT", "int64": "BIGINT", "int32": "INTEGER", "string": "VARCHAR",
             "bool": "BOOLEAN", "timestamp": "TIMESTAMPTZ"}
_MIN_HUGE = "9223372036854775808"  # 2**63: shifts a signed epoch-µs into the low 64 bits, order kept


class DuckDBFeatureSettings(msgspec.Struct, forbid_unknown_fields=True):
    repo: str = "features"
    """The folder of ``*.toml`` definitions, relative to matih.toml's folder (read by the features domain)."""
    online_path: str | None = None
    """The SQLite online store; default ``<home>/features/online.db``."""
    memory_limit: str | None = None
    """DuckDB's memory limit (``"2GB"``); joins larger than it spill to ``<home>/features/tmp``."""
    threads: int | None = None
    """DuckDB worker threads; default one per core."""
    batch_rows: int = 100_000
    """Rows per record batch when results stream (entity rows from a file)."""


MAX_CACHED_TIES = 1_000_000
"""Rows tied on (keys, event time) a file version may have for their winners to be kept between requests."""
_UNKNOWN = object()
_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder().decode
_ONE_ROW: dict[str, str] = {}
"""The one-key lookup statement of each online table, built once."""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@functools.lru_cache(maxsize=4096)
def _table_name(project: str, view: str) -> str:
    return _q(f"{project}__{view}")


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ts(micros: int) -> str:
    return f"make_timestamp({int(micros)})::TIMESTAMPTZ"


class DuckDBFeatureStore:
    """The ``duckdb`` features backend (see the module docstring)."""

    def __init__(self, settings: DuckDBFeatureSettings, context: BackendContext) -> None:
        self.settings = settings
        self.folder = context.home / "features"
        self.online_path = context.resolve(settings.online_path) if settings.online_path else self.folder / "online.db"
        self.pushed = self.folder / "pushed"
        self._db: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._closed = False
        self._ties: dict[tuple, Any] = {}
        """Per file version of a source: its rows tied on (keys, event time), the winners (see _tie_winners)."""

    # ---- plumbing ------------------------------------------------------------------------------------
    def _duck(self, defs: FeatureDefinitions | None = None) -> Any:
        """A fresh DuckDB connection (a cursor of the one in-memory database) set up for one request."""
        if self._closed:
            raise StoreError("the duckdb features backend is closed")
        if self._db is None:
            with self._lock:
                if self._db is None:
                    import duckdb

                    tmp = self.folder / "tmp"
                    tmp.mkdir(parents=True, exist_ok=True)
                    config: dict[str, Any] = {"temp_directory": str(tmp)}
                    if self.settings.memory_limit:
                        config["memory_limit"] = self.settings.memory_limit
                    if self.settings.threads:
                        config["threads"] = int(self.settings.threads)
                    self._db = duckdb.connect(":memory:", config=config)
        cur = self._db.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        if defs is not None and defs.root:
            cur.execute(f"SET file_search_path = {_lit(defs.root)}")
        return cur

    def _sqlite(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError("the duckdb features backend is closed")
            self.online_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.online_path), isolation_level=None, check_same_thread=False,
                                   timeout=30)
            conn.execute("PRAGMA busy_timeout = 30000")
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise StoreError(f"{self.online_path}: SQLite refused WAL mode; is the file on a network share?")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @staticmethod
    def _table(defs: FeatureDefinitions, view: str) -> str:
        return _table_name(defs.project, view)

    def health(self) -> Health:
        # /ready asks every slot as the service starts: DuckDB is only looked up until a request opens it.
        try:
            self._sqlite().execute("SELECT 1").fetchone()
            if self._db is not None:
                cur = self._duck()
                try:
                    cur.execute("SELECT 1").fetchall()
                finally:
                    cur.close()
            else:
                import importlib.util

                if importlib.util.find_spec("duckdb") is None:
                    return Health(False, "duckdb is not installed (pip install duckdb)")
        except Exception as exc:
            return Health(False, f"{type(exc).__name__}: {exc}")
        return Health(True, f"duckdb offline, SQLite online at {self.online_path}")

    def close(self) -> None:
        self._closed = True
        with self._lock:
            conns, self._conns = self._conns, []
            db, self._db = self._db, None
        mine = getattr(self._local, "conn", None)
        self._local = threading.local()
        if mine is not None:
            mine.close()
        del conns  # another thread's SQLite connection closes itself when that thread lets go of it
        if db is not None:
            db.close()

    # ---- definitions ---------------------------------------------------------------------------------
    def apply(self, definitions: FeatureDefinitions, previous: FeatureDefinitions | None) -> None:
        conn = self._sqlite()
        keep = {name for name, v in definitions.feature_views.items() if v.online}
        stale = []
        if previous is not None:
            for name, old in previous.feature_views.items():
                new = definitions.feature_views.get(name)
                # Rows keyed by other join keys can never be found again: start that view afresh.
                if new is None or not new.online or new.join_keys != old.join_keys:
                    stale.append(name)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for name in stale:
                conn.execute(f"DROP TABLE IF EXISTS {self._table(definitions, name)}")
            for name in sorted(keep):
                conn.execute(f"CREATE TABLE IF NOT EXISTS {self._table(definitions, name)} ("
                             "entity_key BLOB PRIMARY KEY, event_ts INTEGER NOT NULL, created_ts INTEGER, "
                             "payload BLOB NOT NULL) WITHOUT ROWID")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"cannot prepare the online tables in {self.online_path}: {exc}") from exc

    # ---- offline ---------------------------------------------------------------------------------------
    def _pushed_glob(self, defs: FeatureDefinitions, source: str) -> str | None:
        folder = self.pushed / defs.project / source
        if folder.is_dir() and any(folder.glob("*.parquet")):
            return str(folder / "*.parquet")
        return None

    def _view_sql(self, defs: FeatureDefinitions, view: FeatureView, features: Sequence[str]) -> str:
        """The view's rows: join keys, ``__ts`` and ``__created`` (TIMESTAMPTZ), features cast to their dtype."""
        src = defs.sources[view.source]
        self._check_source(src)
        cols = [_q(k) for k in view.join_keys]
        cols.append(f"CAST({_q(src.timestamp_field)} AS TIMESTAMPTZ) AS __ts")
        cols.append(f"CAST({_q(src.created_timestamp_field)} AS TIMESTAMPTZ) AS __created"
                    if src.created_timestamp_field else "CAST(NULL AS TIMESTAMPTZ) AS __created")
        for name in features:
            f = view.feature(name)
            if f is None:
                raise InvalidInput(f"feature view '{view.name}' has no feature '{name}'")
            cols.append(f"CAST({_q(name)} AS {SQL_TYPES[f.dtype]}) AS {_q(name)}")
        select = ", ".join(cols)
        rel = _relation(src)
        sql = f"SELECT {select} FROM {rel}"
        pushed = self._pushed_glob(defs, src.name)
        if pushed is not None:
            sql += f" UNION ALL BY NAME SELECT {select} FROM read_parquet({_lit(pushed)}, union_by_name = true)"
        return f"SELECT * FROM ({sql}) WHERE __ts IS NOT NULL"

    @staticmethod
    def _check_source(src: Source) -> None:
        if src.format != "query" and "*" not in src.location and not os.path.isfile(src.location):
            raise InvalidInput(f"source '{src.name}': file not found: {src.location} (declared path "
                               f"{src.path!r}); restore it, or change the definitions and apply them")

    def historical(self, definitions: FeatureDefinitions, request: HistoricalRequest) -> Any:
        import pyarrow as pa

        defs = definitions
        views = [(defs.feature_views[s.view], s.features) for s in request.views]
        keys: list[str] = []
        for view, _ in views:
            keys.extend(k for k in view.join_keys if k not in keys)
        cur = self._duck(defs)
        in_memory = request.entities is not None
        try:
            if in_memory:
                table = request.entities
                ts = request.timestamp_column
                cur.register("__entity_rows", pa.table({
                    "__row": pa.array(range(table.num_rows), pa.int64()),
                    **{k: table.column(k) for k in keys}, "__ets": table.column(ts)}))
                entity_sql = (f"SELECT __row, {', '.join(_q(k) for k in keys)}, CAST(__ets AS TIMESTAMPTZ) AS __ets "
                              "FROM __entity_rows")
                carried: list[str] = []
            elif request.entity_path is not None:
                entity_sql, carried = self._entity_file(cur, request.entity_path, request.timestamp_column, keys)
            else:
                entity_sql, carried = self._entity_range(defs, views, keys, request)
            sql = self._join_sql(cur, defs, views, keys, entity_sql, carried, request.full_feature_names)
            if in_memory:
                result = self._run(cur, sql, views).to_arrow_table()
                out = request.entities
                for name in result.column_names:
                    out = out.append_column(name, result.column(name))
                return pa.RecordBatchReader.from_batches(out.schema, out.to_batches(self.settings.batch_rows))
            reader = self._run(cur, sql, views).arrow(self.settings.batch_rows)
            return pa.RecordBatchReader.from_batches(reader.schema, _closing(reader, cur))
        except BaseException:
            cur.close()
            raise
        finally:
            if in_memory:
                cur.close()

    def _entity_file(self, cur: Any, path: str, ts: str, keys: list[str]) -> tuple[str, list[str]]:
        if not os.path.isfile(path):
            raise InvalidInput(f"entity rows file not found: {path}")
        suffix = Path(path).suffix.lower()
        if suffix in (".parquet", ".pq"):
            rel = f"read_parquet({_lit(path)}, file_row_number = true)"
            row = "file_row_number"
        elif suffix in (".csv", ".tsv"):
            rel = f"(SELECT *, row_number() OVER () - 1 AS __file_row FROM read_csv({_lit(path)}, header = true))"
            row = "__file_row"
        else:
            raise InvalidInput(f"entity rows file {path}: expected a .parquet or .csv file")
        cols = [r[0] for r in cur.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()]
        cols = [c for c in cols if c != row]
        missing = [c for c in [ts, *keys] if c not in cols]
        if missing:
            raise InvalidInput(f"entity rows file {path} has no column {', '.join(repr(m) for m in missing)}; "
                               f"it has: {', '.join(cols)}")
        carried = ", ".join(_q(c) for c in cols)
        return (f"SELECT {row} AS __row, {carried}, CAST({_q(ts)} AS TIMESTAMPTZ) AS __ets FROM {rel}"), cols

    def _entity_range(self, defs: FeatureDefinitions, views: list, keys: list[str],
                      request: HistoricalRequest) -> tuple[str, list[str]]:
        if request.start is None or request.end is None:
            raise InvalidInput("give entity rows, or both start and end for every entity's values over a range")
        parts = []
        for view, _ in views:
            if set(view.join_keys) != set(keys):
                raise InvalidInput("retrieval over a range needs views of one entity; "
                                   f"'{view.name}' is keyed by {', '.join(view.join_keys)}, others by "
                                   f"{', '.join(keys)}")
            parts.append(f"SELECT {', '.join(_q(k) for k in keys)} FROM ({self._view_sql(defs, view, [])}) "
                         f"WHERE __ts >= {_ts(request.start)} AND __ts <= {_ts(request.end)}")
        key_list = ", ".join(_q(k) for k in keys)
        ets = f"{_ts(request.end)}"
        sql = (f"SELECT row_number() OVER (ORDER BY {key_list}) - 1 AS __row, {key_list}, {ets} AS __ets, "
               f"{ets} AS {_q(request.timestamp_column)} FROM (SELECT DISTINCT * FROM ({' UNION '.join(parts)}))")
        return sql, [*keys, request.timestamp_column]

    def _join_sql(self, cur: Any, defs: FeatureDefinitions, views: list, keys: list[str], entity_sql: str,
                  carried: list[str], full_names: bool) -> str:
        """One query: an ASOF LEFT JOIN per view, then, where the source holds rows of one entity at one event
        time, the one created last in place of whichever the ASOF join met, then the ttl; entity-row order."""
        ctes = [f"e AS ({entity_sql})"]
        prev = "e"
        payload = list(dict.fromkeys(["__row", "__ets", *keys, *carried]))
        ties: dict[int, str] = {}
        for i, (view, features) in enumerate(views):
            ctes.append(f"v{i} AS ({self._view_sql(defs, view, features)})")
            on = " AND ".join(f"j.{_q(k)} = v.{_q(k)}" for k in view.join_keys)
            carried_cols = ", ".join(f"j.{_q(c)}" for c in payload)
            fcols = "".join(f", v.{_q(f)} AS {_q(f'__f{i}_{f}')}" for f in features)
            ctes.append(f"j{i} AS (SELECT {carried_cols}, v.__ts AS __ts{i}{fcols} FROM {prev} j "
                        f"ASOF LEFT JOIN v{i} v ON {on} AND j.__ets >= v.__ts)")
            payload += [f"__ts{i}", *[f"__f{i}_{f}" for f in features]]
            prev = f"j{i}"
            if features:
                winners = self._tie_winners(cur, defs, view, i)
                if winners is not None:
                    ties[i] = winners
        last = prev
        joins = []
        for i, winners in ties.items():
            view, _ = views[i]
            on = " AND ".join(f"r.{_q(c)} = t{i}.{_q(c)}" for c in view.join_keys)
            joins.append(f" LEFT JOIN {winners} t{i} ON {on} AND r.__ts{i} = t{i}.__ts")
        out_cols: list[str] = []
        for i, (view, features) in enumerate(views):
            fresh = (f"r.__ts{i} >= r.__ets - INTERVAL {int(view.ttl_seconds)} SECOND" if view.ttl_seconds
                     else f"r.__ts{i} IS NOT NULL")
            for f in features:
                value = (f"CASE WHEN t{i}.__ts IS NOT NULL THEN t{i}.__v.{_q(f)} ELSE r.{_q(f'__f{i}_{f}')} END"
                         if i in ties else f"r.{_q(f'__f{i}_{f}')}")
                name = f"{view.name}__{f}" if full_names else f
                out_cols.append(f"CASE WHEN {fresh} THEN {value} END AS {_q(name)}")
        front = [f"r.{_q(c)}" for c in carried]
        return (f"WITH {', '.join(ctes)} SELECT {', '.join(front + out_cols)} FROM {last} r{''.join(joins)} "
                "ORDER BY r.__row")

    def _tie_winners(self, cur: Any, defs: FeatureDefinitions, view: FeatureView, i: int) -> str | None:
        """A relation of the view's rows that share (keys, event time) with another, one per pair: the one created
        last (``keys, __ts, __v`` with every feature in ``__v``); None when no two rows share one, or the source
        has no created timestamp to choose by.

        A file's winners are worked out once per version of it (path, size and mtime of each file, pushed ones
        included) and kept while there are at most ``MAX_CACHED_TIES`` of them; a query's, in every request.
        """
        src = defs.sources[view.source]
        if not src.created_timestamp_field:
            return None
        keys = ", ".join(_q(k) for k in view.join_keys)
        packed = ", ".join(f"{_q(f.name)} := {_q(f.name)}" for f in view.features)
        sql = (f"SELECT {keys}, __ts, arg_max(struct_pack({packed}), coalesce(__created, '-infinity'::TIMESTAMPTZ)) "
               f"AS __v FROM ({self._view_sql(defs, view, [f.name for f in view.features])}) GROUP BY {keys}, __ts "
               "HAVING count(*) > 1")
        signature = self._signature(defs, src)
        if signature is None:
            return f"({sql})"
        key = (signature, view.join_keys, view.features, src.timestamp_field, src.created_timestamp_field)
        found = self._ties.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            table = self._run(cur, f"{sql} LIMIT {MAX_CACHED_TIES + 1}", [(view, [])]).to_arrow_table()
            found = None if table.num_rows == 0 else table if table.num_rows <= MAX_CACHED_TIES else sql
            if len(self._ties) > 256:
                self._ties.clear()
            self._ties[key] = found
        if found is None:
            return None
        if isinstance(found, str):
            return f"({found})"
        name = f"__ties{i}"
        cur.register(name, found)
        return name

    def _signature(self, defs: FeatureDefinitions, src: Source) -> tuple | None:
        """(path, size, mtime) of every file a file source reads (pushed rows included); None for a query."""
        if src.format == "query":
            return None
        files = sorted(glob.glob(src.location)) if "*" in src.location else [src.location]
        pushed = self._pushed_glob(defs, src.name)
        if pushed is not None:
            files += sorted(glob.glob(pushed))
        try:
            return tuple((f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files)
        except OSError:
            return None

    @staticmethod
    def _run(cur: Any, sql: str, views: list) -> Any:
        import duckdb

        names = ", ".join(sorted({v.name for v, _ in views}))
        try:
            rel = cur.sql(sql)
            return _Result(rel, names)
        except duckdb.Error as exc:
            raise _duck_error(exc, names) from exc

    # ---- materialization and the online store ------------------------------------------------------
    def materialize(self, definitions: FeatureDefinitions, view: str, start: int, end: int) -> int:
        v = definitions.feature_views[view]
        if not v.online:
            raise InvalidInput(f"feature view '{view}' is not served online (online = false)")
        features = [f.name for f in v.features]
        packed = ", ".join(f"{_q(f)} := {_q(f)}" for f in features)
        keys = ", ".join(_q(k) for k in v.join_keys)
        order = (f"(epoch_us(__ts)::HUGEINT << 64) + (coalesce(epoch_us(__created), -{_MIN_HUGE})::HUGEINT + "
                 f"{_MIN_HUGE})")
        sql = (f"SELECT {keys}, arg_max(struct_pack(__ts := epoch_us(__ts), __created := epoch_us(__created), "
               f"{packed}), {order}) AS __v FROM ({self._view_sql(definitions, v, features)}) "
               f"WHERE __ts >= {_ts(start)} AND __ts <= {_ts(end)} GROUP BY {keys}")
        cur = self._duck(definitions)
        try:
            table = self._run(cur, sql, [(v, features)]).to_arrow_table()
        finally:
            cur.close()
        key_cols = [table.column(k).to_pylist() for k in v.join_keys]
        packed_rows = table.column("__v").to_pylist()
        rows = []
        enc = msgspec.msgpack.encode
        for i, p in enumerate(packed_rows):
            key = enc([c[i] for c in key_cols])
            rows.append((key, p.pop("__ts"), p.pop("__created"), enc(p)))
        self._upsert(definitions, view, rows)
        return len(rows)

    def _upsert(self, defs: FeatureDefinitions, view: str, rows: list[tuple]) -> None:
        t = self._table(defs, view)
        conn = self._sqlite()
        sql = (f"INSERT INTO {t} (entity_key, event_ts, created_ts, payload) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (entity_key) DO UPDATE SET event_ts = excluded.event_ts, created_ts = excluded.created_ts, "
               f"payload = excluded.payload WHERE excluded.event_ts > {t}.event_ts OR (excluded.event_ts = "
               f"{t}.event_ts AND coalesce(excluded.created_ts, -1) >= coalesce({t}.created_ts, -1))")
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if "no such table" in str(exc):
                raise NotFound(f"feature view '{view}' has no online table; run 'matih-lite features apply'") from exc
            raise StoreError(f"cannot write the online store {self.online_path}: {exc}") from exc

    def read_online(self, definitions: FeatureDefinitions, view: str, keys: Sequence[tuple[Any, ...]],
                    features: Sequence[str]) -> list[OnlineRow | None]:
        enc = _ENCODE
        wanted = [enc(list(k)) for k in keys]
        t = self._table(definitions, view)
        conn = self._sqlite()
        found: dict[bytes, tuple[int, bytes]] = {}
        try:
            if len(wanted) == 1:
                # The one-entity lookup is the serving path: one statement, cached by sqlite3, one row.
                row = conn.execute(_ONE_ROW.get(t) or _ONE_ROW.setdefault(
                    t, f"SELECT event_ts, payload FROM {t} WHERE entity_key = ?"), wanted).fetchone()
                if row is None:
                    return [None]
                values = _DECODE(row[1])
                return [OnlineRow(row[0], tuple(values.get(f) for f in features))]
            else:
                unique = list(dict.fromkeys(wanted))
                for i in range(0, len(unique), 500):
                    chunk = unique[i:i + 500]
                    marks = ", ".join("?" * len(chunk))
                    for row in conn.execute(f"SELECT entity_key, event_ts, payload FROM {t} "
                                            f"WHERE entity_key IN ({marks})", chunk):
                        found[row[0]] = (row[1], row[2])
        except sqlite3.Error as exc:
            if "no such table" in str(exc):
                return [None] * len(wanted)
            raise StoreError(f"cannot read the online store {self.online_path}: {exc}") from exc
        dec = _DECODE
        out: list[OnlineRow | None] = []
        for key in wanted:
            hit = found.get(key)
            if hit is None:
                out.append(None)
            else:
                values = dec(hit[1])
                out.append(OnlineRow(hit[0], tuple(values.get(f) for f in features)))
        return out

    def online_rows(self, definitions: FeatureDefinitions, view: str) -> Any:
        """Every stored row of ``view`` (the :class:`~matih_lite.contracts.transfer.OnlineCatalog`)."""
        import pyarrow as pa

        v = definitions.feature_views[view]
        src = definitions.sources[v.source]
        try:
            rows = self._sqlite().execute(f"SELECT entity_key, event_ts, created_ts, payload FROM "
                                          f"{self._table(definitions, view)} ORDER BY entity_key").fetchall()
        except sqlite3.Error as exc:
            if "no such table" not in str(exc):
                raise StoreError(f"cannot read the online store {self.online_path}: {exc}") from exc
            rows = []
        keys = [_DECODE(r[0]) for r in rows]
        payloads = [_DECODE(r[3]) for r in rows]
        cols: dict[str, Any] = {k: [key[i] for key in keys] for i, k in enumerate(v.join_keys)}
        cols[src.timestamp_field] = pa.array([r[1] for r in rows], pa.timestamp("us", "UTC"))
        if src.created_timestamp_field:
            cols[src.created_timestamp_field] = pa.array([r[2] for r in rows], pa.timestamp("us", "UTC"))
        for f in v.features:
            cols[f.name] = [p.get(f.name) for p in payloads]
        return pa.table(cols)

    def write_online(self, definitions: FeatureDefinitions, view: str, rows: Any) -> int:
        v = definitions.feature_views[view]
        src = definitions.sources[v.source]
        cols = {name: rows.column(name).to_pylist() for name in rows.column_names}
        ts = _micros(rows.column(src.timestamp_field))
        created = (_micros(rows.column(src.created_timestamp_field))
                   if src.created_timestamp_field and src.created_timestamp_field in cols else [None] * rows.num_rows)
        enc = msgspec.msgpack.encode
        features = [f.name for f in v.features if f.name in cols]
        out = []
        for i in range(rows.num_rows):
            out.append((enc([cols[k][i] for k in v.join_keys]), ts[i], created[i],
                        enc({f: cols[f][i] for f in features})))
        self._upsert(definitions, view, out)
        return len(out)

    def write_offline(self, definitions: FeatureDefinitions, push_source: str, rows: Any) -> int:
        import pyarrow.parquet as pq

        push = definitions.push_sources[push_source]
        folder = self.pushed / definitions.project / push.batch_source
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{uuid.uuid4().hex}.tmp"
        pq.write_table(rows, tmp)
        os.replace(tmp, folder / f"{uuid.uuid4().hex}.parquet")  # readers never see half a file
        return rows.num_rows

    # ---- monitoring reads ----------------------------------------------------------------------------
    def scan(self, definitions: FeatureDefinitions, view: str, start: int | None, end: int | None,
             limit: int) -> Any:
        v = definitions.feature_views[view]
        features = [f.name for f in v.features]
        where = []
        if start is not None:
            where.append(f"__ts >= {_ts(start)}")
        if end is not None:
            where.append(f"__ts < {_ts(end)}")
        cols = "".join(f", {_q(f)}" for f in features)
        sql = (f"SELECT epoch_us(__ts) AS event_ts{cols} FROM ({self._view_sql(definitions, v, features)})"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY __ts DESC LIMIT {int(limit)}")
        cur = self._duck(definitions)
        try:
            return self._run(cur, sql, [(v, features)]).to_arrow_table()
        finally:
            cur.close()

    def event_time_range(self, definitions: FeatureDefinitions, view: str) -> tuple[int, int, int] | None:
        v = definitions.feature_views[view]
        sql = f"SELECT epoch_us(min(__ts)), epoch_us(max(__ts)), count(*) FROM ({self._view_sql(definitions, v, [])})"
        cur = self._duck(definitions)
        try:
            row = self._run(cur, sql, [(v, [])]).fetchone()
        finally:
            cur.close()
        return None if not row or row[2] == 0 else (int(row[0]), int(row[1]), int(row[2]))


class _Result:
    """A DuckDB relation whose errors name the feature views being read."""

    def __init__(self, rel: Any, names: str) -> None:
        self.rel = rel
        self.names = names

    def _call(self, fn: str, *args: Any) -> Any:
        import duckdb

        try:
            return getattr(self.rel, fn)(*args)
        except duckdb.Error as exc:
            raise _duck_error(exc, self.names) from exc

    def to_arrow_table(self) -> Any:
        return self._call("to_arrow_table")

    def arrow(self, batch_rows: int) -> Any:
        return self._call("to_arrow_reader", batch_rows)

    def fetchone(self) -> Any:
        rows = self._call("fetchall")
        return rows[0] if rows else None


def _duck_error(exc: Exception, names: str) -> Exception:
    import duckdb

    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, (duckdb.ConversionException, duckdb.BinderException, duckdb.IOException,
                        duckdb.InvalidInputException, duckdb.CatalogException, duckdb.ParserException)):
        return InvalidInput(f"reading feature view(s) {names}: {first}; check the source against the definitions "
                            "(matih-lite features plan)")
    return StoreError(f"DuckDB failed reading feature view(s) {names}: {first}")


def _closing(reader: Any, cur: Any) -> Iterator[Any]:
    """The reader's batches; the DuckDB connection closes when they are all read (or the reader is dropped)."""
    import duckdb

    try:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (duckdb.Error, OSError) as exc:
                # pyarrow hands DuckDB's errors on as OSError once the stream has begun
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if "Out of Memory" in text:
                    raise StoreError(f"DuckDB ran out of memory joining the features: {text}; give it more "
                                     "(memory_limit in the features slot of matih.toml) or fewer threads") from exc
                raise _duck_error(exc, "the requested views") from exc
            yield batch
    finally:
        cur.close()


def _relation(src: Source) -> str:
    if src.format == "query":
        return f"({src.query})"
    if src.format == "csv":
        return f"read_csv({_lit(src.location)}, header = true)"
    return f"read_parquet({_lit(src.location)})"


def _micros(column: Any) -> list[int | None]:
    """A timestamp column as integer µs since the epoch, UTC (naive times are UTC)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_timestamp(col.type):
        return pc.cast(pc.cast(col, pa.timestamp("us", col.type.tz)), pa.int64()).to_pylist()
    if pa.types.is_date(col.type):
        return pc.cast(pc.cast(col, pa.timestamp("us")), pa.int64()).to_pylist()
    raise InvalidInput(f"expected a timestamp column, got {col.type}")


def create_store(settings: DuckDBFeatureSettings, context: BackendContext) -> DuckDBFeatureStore:
    return DuckDBFeatureStore(settings, context)


@hookimpl
def register_backends(register):
    register("features", "duckdb", create_store, settings=DuckDBFeatureSettings,
             summary="DuckDB ASOF joins over the sources as they are; SQLite online store; the lite default")
