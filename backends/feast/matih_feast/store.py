"""The ``feast`` features backend: Feast 0.67 doing the work, its known differences made good.

Each project (a tenant's definitions) is a Feast repo under ``<home>/feast/<project>/``, applied with
Feast's own apply and re-applied whenever the definitions handed in are not the ones applied
(``.matih-digest`` records which). Where Feast 0.67 answers differently from the contract, this
backend makes the answer the contract's:

- **The file offline store drops entity rows** that have no feature row at or before their time:
  every call sends Feast only a row number, the join keys and the time, and the answer is put back
  in entity-row order, a missing row as nulls; the caller's own columns never pass through Feast.
- **Feast's Redis store answers PRESENT with a 0 event time for an unknown entity** (its SQLite store
  says NOT_FOUND): a row whose features all carry event time 0 is reported absent.
- **Feast's online stores serve values past their ttl as PRESENT**: this backend hands the event times
  up and the features domain judges them against the clock, as for every backend.
- **The duckdb store resolves relative source paths against the working folder**: sources are given
  to Feast by absolute path.

Values come back as the declared dtypes (Feast's pandas path turns an int column with nulls into floats).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matih_feast.plugin import FeastSettings
from matih_feast.repo import feast_objects, feature_store_yaml, parquet_of, python_source
from matih_lite.contracts import BackendContext
from matih_lite.contracts.features import FeatureDefinitions, HistoricalRequest, OnlineRow
from matih_lite.contracts.records import Health
from matih_lite.errors import InvalidInput, StoreError

ROW = "__matih_row"
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def _dt(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, tz=UTC).replace(microsecond=micros % 1_000_000)


def _arrow_type(dtype: str) -> Any:
    import pyarrow as pa

    return {"float64": pa.float64(), "float32": pa.float32(), "int64": pa.int64(), "int32": pa.int32(),
            "string": pa.string(), "bool": pa.bool_(), "timestamp": pa.timestamp("us", "UTC")}[dtype]


def _conform(column: Any, dtype: str) -> Any:
    """A Feast answer column as the declared dtype (NaN that stood for null becomes null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    target = _arrow_type(dtype)
    if col.type == target:
        return col
    if pa.types.is_floating(col.type) and not pa.types.is_floating(target):
        col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
    return pc.cast(col, target)


class FeastFeatureStore:
    """The ``feast`` backend (see the module docstring)."""

    def __init__(self, settings: FeastSettings, context: BackendContext) -> None:
        self.settings = settings
        self.root = context.resolve(settings.feast_repo) if settings.feast_repo else context.home / "feast"
        self._stores: dict[str, tuple[str, Any]] = {}
        self._lock = threading.RLock()

    # ---- the Feast repo of a project -----------------------------------------------------------------
    def repo_path(self, project: str) -> Path:
        return self.root / project

    def _online_config(self, project: str) -> dict[str, Any]:
        if self.settings.online_store == "sqlite":
            return {"type": "sqlite", "path": str(self.repo_path(project) / "online.db")}
        config: dict[str, Any] = {"type": "redis", "connection_string": f"{self.settings.redis},db={self.settings.db}"}
        if self.settings.key_ttl_seconds:
            config["key_ttl_seconds"] = int(self.settings.key_ttl_seconds)
        return config

    def _feast(self, defs: FeatureDefinitions) -> Any:
        """Feast's FeatureStore for ``defs``'s project, applying ``defs`` first when they are not the applied ones."""
        found = self._stores.get(defs.project)
        if found is not None and found[0] == defs.digest:
            return found[1]
        with self._lock:
            found = self._stores.get(defs.project)
            if found is not None and found[0] == defs.digest:
                return found[1]
            marker = self.repo_path(defs.project) / ".matih-digest"
            if not marker.exists() or marker.read_text().strip() != defs.digest:
                self.apply(defs, None)
                found = self._stores[defs.project]
            else:
                found = (defs.digest, self._open(defs.project))
                self._stores[defs.project] = found
            return found[1]

    def _open(self, project: str) -> Any:
        from feast import FeatureStore

        return FeatureStore(repo_path=str(self.repo_path(project)))

    def apply(self, definitions: FeatureDefinitions, previous: FeatureDefinitions | None) -> None:
        from feast.project import Project
        from feast.repo_contents import RepoContents
        from feast.repo_operations import extract_objects_for_apply_delete

        defs = definitions
        repo = self.repo_path(defs.project)
        data = repo / "data"
        with self._lock:
            repo.mkdir(parents=True, exist_ok=True)
            (repo / "feature_store.yaml").write_text(feature_store_yaml(
                defs.project, repo / "registry.db", self._online_config(defs.project), self.settings.offline_store))
            (repo / "definitions.py").write_text(python_source(defs, data))
            objects = feast_objects(defs, data)
            try:
                store = self._open(defs.project)
                kinds = {"Entity": "entities", "FileSource": "data_sources", "PushSource": "data_sources",
                         "FeatureView": "feature_views", "FeatureService": "feature_services"}
                grouped: dict[str, list[Any]] = {k: [] for k in set(kinds.values())}
                for obj in objects:
                    grouped[kinds[type(obj).__name__]].append(obj)
                contents = RepoContents(projects=[Project(name=defs.project)], on_demand_feature_views=[],
                                        stream_feature_views=[], label_views=[], permissions=[], **grouped)
                to_apply, to_delete, _, _ = extract_objects_for_apply_delete(defs.project, store.registry, contents)
                store.apply(to_apply, objects_to_delete=to_delete, partial=False)
            except InvalidInput:
                raise
            except Exception as exc:
                raise StoreError(f"Feast could not apply the definitions of project {defs.project!r}: "
                                 f"{type(exc).__name__}: {exc}") from exc
            (repo / ".matih-digest").write_text(defs.digest)
            self._stores[defs.project] = (defs.digest, store)

    def health(self) -> Health:
        try:
            if self.settings.online_store == "redis":
                import redis

                host, _, rest = self.settings.redis.partition(",")
                hostname, _, port = host.partition(":")
                redis.Redis(host=hostname, port=int(port or 6379), db=self.settings.db, socket_timeout=2).ping()
        except Exception as exc:
            return Health(False, f"Redis at {self.settings.redis} does not answer: {type(exc).__name__}: {exc}")
        return Health(True, f"Feast ({self.settings.offline_store} offline, {self.settings.online_store} online) in "
                            f"{self.root}")

    def close(self) -> None:
        with self._lock:
            self._stores.clear()

    # ---- offline ---------------------------------------------------------------------------------------
    def historical(self, definitions: FeatureDefinitions, request: HistoricalRequest) -> Any:
        import pyarrow as pa

        defs = definitions
        store = self._feast(defs)
        self._check_sources(defs, [s.view for s in request.views])
        refs = [f"{s.view}:{f}" for s in request.views for f in s.features]
        keys: list[str] = []
        for s in request.views:
            keys.extend(k for k in defs.feature_views[s.view].join_keys if k not in keys)
        ts = request.timestamp_column
        full = request.full_feature_names
        if request.entities is not None:
            table = self._join(defs, store, refs, keys, request.entities, ts, full)
            return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
        if request.entity_path is not None:
            chunks = self._entity_chunks(request.entity_path, ts, keys)
            first = next(chunks, None)
            if first is None:
                raise InvalidInput(f"entity rows file {request.entity_path} has no rows")
            head = self._join(defs, store, refs, keys, first, ts, full)

            def rest() -> Iterator[Any]:
                yield from head.to_batches()
                for chunk in chunks:
                    yield from self._join(defs, store, refs, keys, chunk, ts, full).to_batches()

            return pa.RecordBatchReader.from_batches(head.schema, rest())
        entities = self._range_entities(defs, store, request, keys)
        table = self._join(defs, store, refs, keys, entities, ts, full)
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())

    def _check_sources(self, defs: FeatureDefinitions, views: Sequence[str]) -> None:
        """Raises InvalidInput naming a view's source whose file is gone (Feast's own error names neither)."""
        data = self.repo_path(defs.project) / "data"
        for name in views:
            parquet_of(defs.sources[defs.feature_views[name].source], data)

    def _entity_chunks(self, path: str, ts: str, keys: list[str]) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        if path.lower().endswith((".csv", ".tsv")):
            reader: Any = pcsv.open_csv(path)
            schema = reader.schema
        else:
            parquet = pq.ParquetFile(path)
            schema = parquet.schema_arrow
            reader = parquet.iter_batches(batch_size=self.settings.batch_rows)
        missing = [c for c in [ts, *keys] if c not in schema.names]
        if missing:
            raise InvalidInput(f"entity rows file {path} has no column {', '.join(repr(m) for m in missing)}; "
                               f"it has: {', '.join(schema.names)}")
        batch: list[Any] = []
        size = 0
        for b in reader:
            batch.append(b)
            size += b.num_rows
            if size >= self.settings.batch_rows:
                yield pa.Table.from_batches(batch)
                batch, size = [], 0
        if batch:
            yield pa.Table.from_batches(batch)

    def _join(self, defs: FeatureDefinitions, store: Any, refs: list[str], keys: list[str], table: Any,
              ts: str, full: bool) -> Any:
        """Feast's join of ``refs`` onto ``table``'s rows, with ``table``'s own columns kept as they are; each
        feature's column named ``view__feature`` with ``full`` (full feature names), else ``feature``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = table.num_rows
        times = table.column(ts)
        if pa.types.is_string(times.type) or pa.types.is_large_string(times.type):
            times = pc.cast(times, pa.timestamp("us", "UTC"))
        if pa.types.is_date(times.type):
            times = pc.cast(times, pa.timestamp("us"))
        if times.type.tz is None:
            times = pc.assume_timezone(times, "UTC")
        times = pc.cast(times, pa.timestamp("us", "UTC"))
        # Feast's file store also drops repeated (keys, time) rows: ask for each pair once, answer every row.
        group_of: dict[tuple, int] = {}
        groups: list[int] = []
        firsts: list[int] = []
        columns = [table.column(k).to_pylist() for k in keys] + [pc.cast(times, pa.int64()).to_pylist()]
        for i, combo in enumerate(zip(*columns)):
            g = group_of.get(combo)
            if g is None:
                g = group_of[combo] = len(firsts)
                firsts.append(i)
            groups.append(g)
        picked = pa.array(firsts, pa.int64())
        entity = pa.table({ROW: pa.array(range(len(firsts)), pa.int64()),
                           **{k: table.column(k).take(picked) for k in keys},
                           "event_timestamp": times.take(picked)}).to_pandas()
        # With the file store one view's missing row drops the row for every view: ask it view by view.
        if self.settings.offline_store == "file":
            groups_of_refs = [[r for r in refs if r.partition(":")[0] == v] for v in dict.fromkeys(
                r.partition(":")[0] for r in refs)]
        else:
            groups_of_refs = [refs]
        out = table
        for chunk in groups_of_refs:
            result = None
            if n:
                try:
                    job = store.get_historical_features(entity_df=entity, features=chunk, full_feature_names=True)
                    result = job.to_arrow()
                except Exception as exc:
                    raise _feast_error(exc, "historical retrieval") from exc
                where = {r: i for i, r in enumerate(result.column(ROW).to_pylist())}
                # The file store leaves some entity rows out; a missing row is nulls.
                position = pa.array([where.get(g) for g in groups], pa.int64())
            for ref in chunk:
                view, _, feature = ref.partition(":")
                name = f"{view}__{feature}"  # Feast is always asked for full names: two views may share one
                dtype = defs.feature_views[view].feature(feature).dtype  # type: ignore[union-attr]
                column = (pa.nulls(n, _arrow_type(dtype)) if result is None
                          else _conform(result.column(name).take(position), dtype))
                out = out.append_column(name if full else feature, column)
        return out

    def _range_entities(self, defs: FeatureDefinitions, store: Any, request: HistoricalRequest,
                        keys: list[str]) -> Any:
        import pyarrow as pa

        if request.start is None or request.end is None:
            raise InvalidInput("give entity rows, or both start and end for every entity's values over a range")
        provider = store._get_provider()
        seen: set[tuple] = set()
        for s in request.views:
            view = defs.feature_views[s.view]
            if set(view.join_keys) != set(keys):
                raise InvalidInput("retrieval over a range needs views of one entity; "
                                   f"'{view.name}' is keyed by {', '.join(view.join_keys)}, others by "
                                   f"{', '.join(keys)}")
            fv = store.get_feature_view(view.name)
            src = defs.sources[view.source]
            try:
                job = provider.offline_store.pull_all_from_table_or_query(
                    config=store.config, data_source=fv.batch_source, join_key_columns=list(keys),
                    feature_name_columns=[], timestamp_field=src.timestamp_field,
                    created_timestamp_column=src.created_timestamp_field, start_date=_dt(request.start),
                    end_date=_dt(request.end))
                rows = job.to_arrow()
            except Exception as exc:
                raise _feast_error(exc, "reading the entities of a range") from exc
            seen.update(zip(*[rows.column(k).to_pylist() for k in keys]))
        ordered = sorted(seen)
        from matih_feast.repo import defs_key_dtype

        columns = {k: pa.array([row[i] for row in ordered], _arrow_type(defs_key_dtype(defs, k)))
                   for i, k in enumerate(keys)}
        end = pa.array([_dt(request.end)] * len(ordered), pa.timestamp("us", "UTC"))
        return pa.table({**columns, request.timestamp_column: end})

    # ---- materialization and the online store ------------------------------------------------------
    def materialize(self, definitions: FeatureDefinitions, view: str, start: int, end: int) -> int:
        store = self._feast(definitions)
        v = definitions.feature_views[view]
        if not v.online:
            raise InvalidInput(f"feature view '{view}' is not served online (online = false)")
        self._check_sources(definitions, [view])
        lo, hi = _dt(start), _dt(end)
        try:
            store.materialize(lo, hi, [view])
            # Feast does not say how many entities it wrote; its own offline pull of the window does.
            src = definitions.sources[v.source]
            fv = store.get_feature_view(view)
            job = store._get_provider().offline_store.pull_latest_from_table_or_query(
                config=store.config, data_source=fv.batch_source, join_key_columns=list(v.join_keys),
                feature_name_columns=[f.name for f in v.features], timestamp_field=src.timestamp_field,
                created_timestamp_column=src.created_timestamp_field, start_date=lo, end_date=hi)
            return job.to_arrow().num_rows
        except Exception as exc:
            raise _feast_error(exc, f"materializing '{view}'") from exc

    def read_online(self, definitions: FeatureDefinitions, view: str, keys: Sequence[tuple[Any, ...]],
                    features: Sequence[str]) -> list[OnlineRow | None]:
        from feast.type_map import feast_value_type_to_python_type

        if not keys:
            return []
        store = self._feast(definitions)
        v = definitions.feature_views[view]
        rows = [dict(zip(v.join_keys, k)) for k in keys]
        try:
            proto = store.get_online_features(features=[f"{view}:{f}" for f in features], entity_rows=rows).proto
        except Exception as exc:
            raise _feast_error(exc, f"reading '{view}' online") from exc
        index = {name: i for i, name in enumerate(proto.metadata.feature_names.val)}
        cols = [proto.results[index[f]] for f in features]
        out: list[OnlineRow | None] = []
        for i in range(len(keys)):
            stamps = [c.event_timestamps[i] for c in cols]
            micros = [t.seconds * 1_000_000 + t.nanos // 1000 for t in stamps]
            statuses = [c.statuses[i] for c in cols]
            # NOT_FOUND (SQLite store) or a zero event time everywhere (Redis store): no row for this entity.
            if all(s == 3 for s in statuses) or not any(micros):
                out.append(None)
                continue
            values = tuple(None if c.statuses[i] == 3 else feast_value_type_to_python_type(c.values[i]) for c in cols)
            out.append(OnlineRow(max(micros), values))
        return out

    def _frame(self, definitions: FeatureDefinitions, view: str, rows: Any) -> Any:
        import pyarrow as pa

        v = definitions.feature_views[view]
        src = definitions.sources[v.source]
        table = rows
        if src.created_timestamp_field and src.created_timestamp_field not in table.column_names:
            table = table.append_column(src.created_timestamp_field, table.column(src.timestamp_field))
        for f in v.features:
            if f.name not in table.column_names:
                table = table.append_column(f.name, pa.nulls(table.num_rows, _arrow_type(f.dtype)))
        return table.to_pandas()

    def write_online(self, definitions: FeatureDefinitions, view: str, rows: Any) -> int:
        store = self._feast(definitions)
        try:
            store.write_to_online_store(view, self._frame(definitions, view, rows))
        except Exception as exc:
            raise _feast_error(exc, f"writing '{view}' online") from exc
        return rows.num_rows

    def write_offline(self, definitions: FeatureDefinitions, push_source: str, rows: Any) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from feast.data_source import PushMode

        store = self._feast(definitions)
        push = definitions.push_sources[push_source]
        path = parquet_of(definitions.sources[push.batch_source], self.repo_path(definitions.project) / "data")
        schema = pq.read_schema(path)
        # Feast appends to the batch source's file and wants its columns, in its order.
        cols = {}
        for field in schema:
            if field.name in rows.column_names:
                cols[field.name] = rows.column(field.name).cast(field.type)
            else:
                cols[field.name] = pa.nulls(rows.num_rows, field.type)
        try:
            store.push(push_source, pa.table(cols).to_pandas(), to=PushMode.OFFLINE)
        except Exception as exc:
            raise _feast_error(exc, f"pushing to '{push_source}' offline") from exc
        return rows.num_rows

    # ---- monitoring reads: DuckDB over the file Feast reads ---------------------------------------------
    def _view_relation(self, definitions: FeatureDefinitions, view: str) -> tuple[str, Any]:
        v = definitions.feature_views[view]
        src = definitions.sources[v.source]
        path = parquet_of(src, self.repo_path(definitions.project) / "data").replace("'", "''")
        return f"read_parquet('{path}')", src

    def scan(self, definitions: FeatureDefinitions, view: str, start: int | None, end: int | None,
             limit: int) -> Any:
        import duckdb

        rel, src = self._view_relation(definitions, view)
        v = definitions.feature_views[view]
        ts = f'CAST("{src.timestamp_field}" AS TIMESTAMPTZ)'
        where = [f"{ts} IS NOT NULL"]
        if start is not None:
            where.append(f"{ts} >= make_timestamp({int(start)})::TIMESTAMPTZ")
        if end is not None:
            where.append(f"{ts} < make_timestamp({int(end)})::TIMESTAMPTZ")
        cols = "".join(f', "{f.name}"' for f in v.features)
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            return con.sql(f"SELECT epoch_us({ts}) AS event_ts{cols} FROM {rel} WHERE {' AND '.join(where)} "
                           f"ORDER BY {ts} DESC LIMIT {int(limit)}").to_arrow_table()
        except duckdb.Error as exc:
            raise InvalidInput(f"reading feature view {view}: {str(exc).splitlines()[0]}") from exc
        finally:
            con.close()

    def event_time_range(self, definitions: FeatureDefinitions, view: str) -> tuple[int, int, int] | None:
        import duckdb

        rel, src = self._view_relation(definitions, view)
        ts = f'CAST("{src.timestamp_field}" AS TIMESTAMPTZ)'
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            row = con.sql(f"SELECT epoch_us(min({ts})), epoch_us(max({ts})), count({ts}) FROM {rel}").fetchall()[0]
        except duckdb.Error as exc:
            raise InvalidInput(f"reading feature view {view}: {str(exc).splitlines()[0]}") from exc
        finally:
            con.close()
        return None if not row[2] else (int(row[0]), int(row[1]), int(row[2]))


def _feast_error(exc: Exception, what: str) -> Exception:
    """Feast's exception as ours: a bad request or a missing file is InvalidInput, the rest StoreError."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    name = type(exc).__name__
    if isinstance(exc, (FileNotFoundError, KeyError, ValueError)) or name.endswith(("NotFoundException", "Exception")) \
            and "Connection" not in name:
        return InvalidInput(f"Feast refused {what}: {text}")
    return StoreError(f"Feast failed {what}: {text}")
