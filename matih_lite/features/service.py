"""The feature store of one platform (a :class:`~matih_lite.host.Host`): definitions, retrieval, materialization.

:class:`Features` holds the rules and talks to two slots: the metadata slot keeps the applied
definitions (versioned, with an audit entry per change), materializations and alert claims; the
features slot (``duckdb`` built in, ``feast`` for a cluster) joins, materializes and serves. The
definitions a backend is handed are always the applied ones, never the files on disk, so what is
served changes only with ``apply``.

Every call is made for a principal and sees only its tenant's features: each tenant's definitions
are a project of their own in the backend.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.contracts.features import (
    DefinitionVersion,
    FeatureDefinitions,
    HistoricalRequest,
    PushTarget,
    ViewSelection,
)
from matih_lite.errors import InvalidInput, MatihError, NotFound
from matih_lite.events import PlatformEvent
from matih_lite.features import on_demand, retrieval
from matih_lite.features.definitions import did_you_mean, load_repo, parse_files, read_repo
from matih_lite.features.plan import Plan, diff
from matih_lite.features.retrieval import OnlineFeatures, Resolution
from matih_lite.features.sources import check_definitions
from matih_lite.identity import Principal

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.features")

DEFINITIONS_RECHECK_S = 1.0
"""How often a cached tenant's definitions are checked against the metadata slot (another process may apply)."""

_BY_HOST: weakref.WeakKeyDictionary[Any, Features] = weakref.WeakKeyDictionary()
_BY_HOST_LOCK = threading.Lock()


def now_us() -> int:
    return time.time_ns() // 1000


def to_micros(value: Any, what: str = "time") -> int:
    """A datetime (naive: UTC), a date or an ISO 8601 string as µs since the epoch. Raises InvalidInput."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise InvalidInput(f"{what}: expected an ISO 8601 time like 2025-01-31T12:00:00Z, got {text!r}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp()) * 1_000_000 + value.microsecond
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()) * 1_000_000
    raise InvalidInput(f"{what}: expected a datetime or an ISO 8601 string, got {type(value).__name__}")


def from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, tz=UTC).replace(microsecond=micros % 1_000_000)


def project_of(tenant: str) -> str:
    """The backend namespace of a tenant's features: a Feast-valid project name."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", tenant)
    return name if name and name[0].isalnum() else f"t{name}"


PRESENT_STATUS, NOT_FOUND_STATUS, OUTSIDE_STATUS = "PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"


class _OnlinePlan:
    """A resolution's online lookup worked out: per view (name, join keys, features, ttl in µs), the key
    dtypes, and the output columns in answer order with the internal column each is read from."""

    __slots__ = ("dtypes", "key_dtypes", "order", "views")

    def __init__(self, views: list, key_dtypes: dict[str, str], order: list, dtypes: dict[str, str]) -> None:
        self.views, self.key_dtypes, self.order, self.dtypes = views, key_dtypes, order, dtypes


def _normalized(defs: FeatureDefinitions, key: str, dtype: str, values: list[Any]) -> list[Any]:
    if dtype in ("int64", "int32"):
        if all(type(v) is int for v in values):
            return values
    elif all(type(v) is str for v in values):
        return values
    return [retrieval.normalize_key(defs, key, v) for v in values]


class ApplyResult(msgspec.Struct, frozen=True):
    """What an apply did: the version now applied and the changes recorded (none when nothing changed)."""

    version: int
    digest: str
    changes: tuple[Any, ...]
    applied: bool


class Features:
    """Feature definitions, retrieval and the online store of one platform (see the module docstring)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._defs: dict[str, tuple[float, DefinitionVersion, FeatureDefinitions]] = {}
        """tenant -> (when last checked, the applied version, its definitions)."""
        self._resolved: dict[tuple, Resolution] = {}

    @classmethod
    def of(cls, host: Host) -> Features:
        """The one instance for ``host`` (its caches live as long as the host)."""
        with _BY_HOST_LOCK:
            found = _BY_HOST.get(host)
            if found is None:
                found = _BY_HOST[host] = cls(host)
            return found

    @property
    def store(self) -> Any:
        """The features backend."""
        return self.host.backend("features")

    @property
    def metadata(self) -> Any:
        return self.host.metadata

    # ---- the repo folder ------------------------------------------------------------------------------
    def repo(self) -> tuple[Path, str]:
        """The repo folder (absolute) and how messages name it (as written in the profile)."""
        entry = self.host.selection().get("features") or {}
        written = str(entry.get("repo") or "features")
        return self.host.context.resolve(written).resolve(), written.rstrip("/")

    def parse(self, tenant: str, files: dict[str, str] | None = None) -> FeatureDefinitions:
        """The definitions of the repo folder (or of ``files``: name -> TOML text), checked against their sources
        and on-demand functions. Raises InvalidInput (DefinitionError) listing every problem."""
        root, label = self.repo()
        if files is None:
            defs = load_repo(root, project=project_of(tenant), label=label)
        else:
            defs = parse_files(files, project=project_of(tenant), root=root, label=label)
        defs = check_definitions(defs, label=label)
        for odfv in defs.on_demand_views.values():
            on_demand.load_function(defs, odfv)
        return defs

    def read_files(self) -> dict[str, str]:
        """``{name: TOML text}`` of the repo folder (what a client uploads to a service)."""
        root, label = self.repo()
        return read_repo(root, label=label)

    # ---- applied definitions ----------------------------------------------------------------------------
    def current(self, tenant: str) -> DefinitionVersion | None:
        try:
            return self.metadata.get_feature_definitions(tenant)
        except NotFound:
            return None

    def definitions(self, tenant: str) -> FeatureDefinitions:
        """The applied definitions (cached; rechecked every second). Raises NotFound when none are applied."""
        cached = self._defs.get(tenant)
        now = time.monotonic()
        if cached is not None and now - cached[0] < DEFINITIONS_RECHECK_S:
            return cached[2]
        if cached is not None and self.metadata.latest_feature_definition_version(tenant) == cached[1].version:
            self._defs[tenant] = (now, cached[1], cached[2])
            return cached[2]
        latest = self.metadata.get_feature_definitions(tenant)
        defs = FeatureDefinitions.from_document(latest.document)
        self._defs[tenant] = (now, latest, defs)
        return defs

    def version(self, tenant: str) -> DefinitionVersion:
        """The applied version. Raises NotFound."""
        self.definitions(tenant)
        return self._defs[tenant][1]

    def plan(self, principal: Principal, files: dict[str, str] | None = None) -> Plan:
        """What applying the repo folder (or ``files``) would change. Raises InvalidInput."""
        new = self.parse(principal.tenant, files)
        applied = self.current(principal.tenant)
        old = FeatureDefinitions.from_document(applied.document) if applied is not None else None
        return Plan(applied.version if applied else 0, tuple(diff(old, new)), new, new.digest)

    def apply(self, principal: Principal, files: dict[str, str] | None = None, *,
              expected_version: int | None = None) -> ApplyResult:
        """Record the repo folder's definitions as the next version, all or nothing (the backend is set up
        first; if recording fails it is set back). Raises InvalidInput, Conflict when ``expected_version`` is
        not the applied one any more."""
        plan = self.plan(principal, files)
        if expected_version is not None and expected_version != plan.base_version:
            from matih_lite.errors import Conflict

            raise Conflict(f"version {plan.base_version} is applied, not {expected_version}; plan again")
        if plan.empty:
            return ApplyResult(plan.base_version, plan.digest, (), False)
        applied = self.current(principal.tenant)
        previous = FeatureDefinitions.from_document(applied.document) if applied is not None else None
        self.store.apply(plan.definitions, previous)
        try:
            version = self.metadata.put_feature_definitions(
                principal.tenant, plan.definitions.document(), digest=plan.digest, actor=principal.user,
                at=now_us() // 1000, changes=plan.changes, expected_version=plan.base_version)
        except BaseException:
            if previous is not None:
                try:
                    self.store.apply(previous, plan.definitions)
                except MatihError:
                    pass  # the recorded version is still the previous one; the next apply sets the backend up
            raise
        with self._lock:
            self._defs.pop(principal.tenant, None)
        try:
            from matih_lite.features.lineage import record_definitions

            record_definitions(self.host, principal.tenant, plan.definitions)
        except MatihError as exc:  # the definitions are applied; lineage is recorded again by the next apply
            log.warning("features: lineage of version %s not recorded: %s", version.version, exc.message)
        self.host.emit(PlatformEvent("features.applied", f"features/{version.version}", principal.tenant,
                                     {"version": version.version, "digest": plan.digest,
                                      **plan.counts(), "actor": principal.user}))
        return ApplyResult(version.version, plan.digest, plan.changes, True)

    def audit(self, tenant: str, name: str | None = None, max_results: int = 1000) -> list[Any]:
        return self.metadata.feature_audit(tenant, name=name, max_results=max_results)

    def find(self, tenant: str, name: str) -> tuple[str, Any]:
        """(kind, object) of the entity, source, view or service called ``name``. Raises NotFound with a
        did-you-mean."""
        defs = self.definitions(tenant)
        for kind in ("feature_views", "on_demand_views", "services", "entities", "sources", "push_sources"):
            obj = getattr(defs, kind).get(name)
            if obj is not None:
                return kind, obj
        everything = [n for k in ("feature_views", "on_demand_views", "services", "entities", "sources",
                                  "push_sources") for n in getattr(defs, k)]
        raise NotFound(f"no feature view, service, entity or source '{name}'{did_you_mean(name, everything)}")

    # ---- retrieval --------------------------------------------------------------------------------------
    def resolve(self, tenant: str, features: Sequence[str] | None = None, service: str | None = None, *,
                full_feature_names: bool = False) -> tuple[FeatureDefinitions, Resolution]:
        defs = self.definitions(tenant)
        key = (self._defs[tenant][1].digest, tenant, tuple(features) if features is not None
               and not isinstance(features, str) else features, service, full_feature_names)
        found = self._resolved.get(key)
        if found is None:
            found = retrieval.resolve(defs, features, service, full_feature_names=full_feature_names)
            if len(self._resolved) > 1000:
                self._resolved.clear()
            self._resolved[key] = found
        return defs, found

    def historical(self, principal: Principal, entity_rows: Any = None, features: Sequence[str] | None = None,
                   service: str | None = None, *, timestamp_column: str = "event_timestamp",
                   start: Any = None, end: Any = None, full_feature_names: bool = False) -> Any:
        """Point-in-time correct features for each entity row (the same kind out as in: pandas, Arrow; a dict of
        lists gives Arrow), or without rows every entity's values between ``start`` and ``end`` (Arrow)."""
        kind = retrieval.input_kind(entity_rows) if entity_rows is not None else "arrow"
        reader = self.historical_batches(principal, entity_rows, features, service,
                                         timestamp_column=timestamp_column, start=start, end=end,
                                         full_feature_names=full_feature_names)
        table = reader.read_all()
        if kind == "pandas":
            return _to_pandas(table, entity_rows)
        return table

    def historical_batches(self, principal: Principal, entity_rows: Any = None, features: Sequence[str] | None = None,
                           service: str | None = None, *, entity_path: str | None = None,
                           timestamp_column: str = "event_timestamp", start: Any = None, end: Any = None,
                           full_feature_names: bool = False) -> Any:
        """:meth:`historical` as a ``pyarrow.RecordBatchReader`` (entity rows may be a parquet or CSV file,
        streamed: it may be larger than memory)."""
        import pyarrow as pa

        defs, res = self.resolve(principal.tenant, features, service, full_feature_names=full_feature_names)
        table = None
        if entity_rows is not None:
            table = retrieval.entity_table(entity_rows, res, defs, timestamp_column)
        elif entity_path is None:
            if start is None or end is None:
                raise InvalidInput("give entity rows, or start and end for every entity's values over a range")
        request = HistoricalRequest(
            views=res.views, entities=table, entity_path=str(entity_path) if entity_path else None,
            timestamp_column=timestamp_column, start=None if start is None else to_micros(start, "start"),
            end=None if end is None else to_micros(end, "end"), full_feature_names=True)
        if request.start is not None and request.end is not None and request.start > request.end:
            raise InvalidInput("start is after end")
        reader = self.store.historical(defs, request)
        internal = {f"{s.view}__{f}" for s in res.views for f in s.features}
        schema = reader.schema
        entity_cols = [n for n in schema.names if n not in internal]
        if entity_rows is None and entity_path is not None:
            for name in res.request_columns:
                if name not in entity_cols:
                    raise InvalidInput(f"entity rows file has no column '{name}' (request data of an on-demand view)")
        fields = [schema.field(n) for n in entity_cols]
        for ref in res.refs:
            view, _, feature = ref.partition(":")
            odfv = defs.on_demand_views.get(view)
            kind = (on_demand.arrow_type(odfv.feature(feature).dtype) if odfv is not None  # type: ignore[union-attr]
                    else schema.field(f"{view}__{feature}").type)
            fields.append(pa.field(res.column(ref), kind))
        out_schema = pa.schema(fields)

        def batches() -> Any:
            for batch in reader:
                yield self._finish(defs, res, entity_cols, batch, out_schema)

        return pa.RecordBatchReader.from_batches(out_schema, batches())

    def _finish(self, defs: FeatureDefinitions, res: Resolution, entity_cols: list[str], batch: Any,
                schema: Any) -> Any:
        """A backend batch (entity columns, then ``view__feature``) as the caller asked: on-demand views
        computed, columns named and ordered as requested."""
        import pyarrow as pa

        outputs: dict[str, Any] = {}
        for odfv, _ in res.on_demand:
            cols = {f: batch.column(f"{v}__{f}") for v, f in on_demand.inputs_of(defs, odfv)}
            for req in odfv.request_schema:
                cols[req.name] = batch.column(req.name)
            for name, array in on_demand.run(defs, odfv, cols, batch.num_rows).items():
                outputs[f"{odfv.name}__{name}"] = array
        arrays = [batch.column(n) for n in entity_cols]
        for ref in res.refs:
            view, _, feature = ref.partition(":")
            internal = f"{view}__{feature}"
            arrays.append(outputs[internal] if internal in outputs else batch.column(internal))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def historical_to_file(self, principal: Principal, output: str | Path, *, entity_path: str | Path | None = None,
                           features: Sequence[str] | None = None, service: str | None = None,
                           timestamp_column: str = "event_timestamp", start: Any = None, end: Any = None,
                           full_feature_names: bool = False,
                           progress: Callable[[int], None] | None = None) -> int:
        """Write the join of an entity file (parquet or CSV, streamed) or of a range to ``output`` (.parquet or
        .csv); returns the rows written. ``progress(rows)`` is told after each batch."""
        out = Path(output)
        fmt = _file_format(out, "output")
        if entity_path is not None:
            _file_format(Path(entity_path), "entity rows")
            entity_path = Path(entity_path).resolve()
        reader = self.historical_batches(principal, None, features, service,
                                         entity_path=str(entity_path) if entity_path is not None else None,
                                         timestamp_column=timestamp_column, start=start, end=end,
                                         full_feature_names=full_feature_names)
        return write_batches(reader, out, fmt, progress)

    def online(self, principal: Principal, entity_rows: Any, features: Sequence[str] | None = None,
               service: str | None = None, *, full_feature_names: bool = False,
               now: int | None = None) -> OnlineFeatures:
        """The online values of each entity (``[{"customer_id": 5}, ...]`` or ``{"customer_id": [5, ...]}``): a
        value older than its view's ttl (against the clock, ``now`` µs) is null with status OUTSIDE_MAX_AGE,
        an unknown entity null with NOT_FOUND."""
        defs, res = self.resolve(principal.tenant, features, service, full_feature_names=full_feature_names)
        plan = self._online_plan(defs, res)
        cols, n = retrieval.columnar(entity_rows)
        missing = [k for k in res.join_keys if k not in cols]
        if missing:
            views = [s.view for s in res.views if set(missing) & set(defs.feature_views[s.view].join_keys)]
            raise InvalidInput(f"entity rows have no join key {', '.join(repr(m) for m in missing)} (needed by "
                               f"feature view {', '.join(views)}); given: {', '.join(cols) or 'none'}")
        for name in res.request_columns:
            if name not in cols:
                raise InvalidInput(f"entity rows have no '{name}' (request data of an on-demand view)")
        clock = now_us() if now is None else now
        store = self.store
        values: dict[str, list[Any]] = {}
        statuses: dict[str, list[str]] = {}
        stamps: dict[str, list[int]] = {}
        normalized = {k: _normalized(defs, k, plan.key_dtypes[k], cols[k]) for k in res.join_keys}
        keys_shown = [k for k in cols if k in plan.key_dtypes]
        for k in keys_shown:
            values[k] = normalized[k]
            statuses[k] = [PRESENT_STATUS] * n
            stamps[k] = [0] * n
        internal: dict[str, tuple[list[Any], list[str], list[int]]] = {}
        for view, join_keys, wanted, ttl_us in plan.views:
            keys = list(zip(*[normalized[k] for k in join_keys])) if n else []
            rows = store.read_online(defs, view, keys, wanted)
            row_status: list[str] = []
            row_ts: list[int] = []
            for r in rows:
                if r is None:
                    row_status.append(NOT_FOUND_STATUS)
                    row_ts.append(0)
                else:
                    row_status.append(OUTSIDE_STATUS if ttl_us and r.event_ts < clock - ttl_us else PRESENT_STATUS)
                    row_ts.append(r.event_ts)
            for j, f in enumerate(wanted):
                vals = [r.values[j] if s is PRESENT_STATUS else None for r, s in zip(rows, row_status)]
                internal[f"{view}__{f}"] = (vals, row_status, row_ts)
        for odfv, _ in res.on_demand:
            import pyarrow as pa

            inputs: dict[str, Any] = {}
            for v, f in on_demand.inputs_of(defs, odfv):
                feat = defs.feature_views[v].feature(f)
                inputs[f] = pa.array(internal[f"{v}__{f}"][0], type=on_demand.arrow_type(feat.dtype))
            for req in odfv.request_schema:
                try:
                    inputs[req.name] = pa.array(cols[req.name], type=on_demand.arrow_type(req.dtype))
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    raise InvalidInput(f"request data '{req.name}' is not {req.dtype}: {exc}") from exc
            for name, array in on_demand.run(defs, odfv, inputs, n).items():
                internal[f"{odfv.name}__{name}"] = (array.to_pylist(), [PRESENT_STATUS] * n, [0] * n)
        names = list(keys_shown)
        for col, key in plan.order:
            names.append(col)
            values[col], statuses[col], stamps[col] = internal[key]
        return OnlineFeatures(keys_shown, names, values, statuses, stamps, plan.dtypes)

    def _online_plan(self, defs: FeatureDefinitions, res: Resolution) -> _OnlinePlan:
        """What :meth:`online` needs of a resolution, worked out once per definitions version."""
        plan = getattr(res, "_online", None)
        if plan is not None:
            return plan
        views = []
        dtypes: dict[str, str] = {}
        for sel in res.views:
            view = defs.feature_views[sel.view]
            if not view.online:
                raise InvalidInput(f"feature view '{view.name}' is not served online (online = false)")
            views.append((view.name, view.join_keys, sel.features, view.ttl_seconds * 1_000_000))
        key_dtypes = {k: retrieval.key_dtype(defs, k) for k in res.join_keys}
        order = []
        for ref in res.online_order():
            view, _, feature = ref.partition(":")
            col = res.column(ref)
            order.append((col, f"{view}__{feature}"))
            owner = defs.feature_views.get(view) or defs.on_demand_views[view]
            dtypes[col] = owner.feature(feature).dtype  # type: ignore[union-attr]
        plan = _OnlinePlan(views, key_dtypes, order, {**key_dtypes, **dtypes})
        object.__setattr__(res, "_online", plan)
        return plan

    # ---- materialization and push ------------------------------------------------------------------------
    def _online_views(self, defs: FeatureDefinitions, views: Sequence[str] | None) -> list[str]:
        if not views:
            return [name for name, v in defs.feature_views.items() if v.online]
        out = []
        for name in views:
            v = defs.feature_views.get(name)
            if v is None:
                raise NotFound(f"no feature view '{name}'{did_you_mean(name, defs.feature_views)}")
            if not v.online:
                raise InvalidInput(f"feature view '{name}' is not served online (online = false)")
            out.append(name)
        return out

    def materialize(self, principal: Principal, start: Any, end: Any, views: Sequence[str] | None = None,
                    progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
        """Copy each entity's newest row with ``start <= event time <= end`` into the online store, view by view;
        returns the rows per view. Idempotent: a newer value online is never replaced by an older one."""
        defs = self.definitions(principal.tenant)
        lo, hi = to_micros(start, "start"), to_micros(end, "end")
        if lo > hi:
            raise InvalidInput("start is after end")
        return {name: self._materialize_one(principal, defs, name, lo, hi, progress)
                for name in self._online_views(defs, views)}

    def materialize_incremental(self, principal: Principal, end: Any, views: Sequence[str] | None = None,
                                progress: Callable[[str, int], None] | None = None) -> dict[str, dict[str, Any]]:
        """Materialize each view from where its last materialization ended (or ``end - ttl`` the first time, the
        epoch for views that never expire) up to ``end``; returns ``{view: {"start", "end", "rows"}}``."""
        defs = self.definitions(principal.tenant)
        hi = to_micros(end, "end")
        out: dict[str, dict[str, Any]] = {}
        for name in self._online_views(defs, views):
            last = self.metadata.materializations(principal.tenant, name, max_results=1)
            view = defs.feature_views[name]
            if last:
                lo = last[0].end
            else:
                lo = max(hi - view.ttl_seconds * 1_000_000, 0) if view.ttl_seconds else 0
            if lo > hi:
                out[name] = {"start": lo, "end": hi, "rows": 0}
                continue
            rows = self._materialize_one(principal, defs, name, lo, hi, progress)
            out[name] = {"start": lo, "end": hi, "rows": rows}
        return out

    def _materialize_one(self, principal: Principal, defs: FeatureDefinitions, view: str, lo: int, hi: int,
                         progress: Callable[[str, int], None] | None) -> int:
        rows = self.store.materialize(defs, view, lo, hi)
        self.metadata.record_materialization(principal.tenant, view, start=lo, end=hi, rows=rows,
                                             at=now_us() // 1000)
        if progress is not None:
            progress(view, rows)
        return rows

    def push(self, principal: Principal, push_source: str, rows: Any, to: PushTarget = "online") -> int:
        """Write fresh rows (pandas, Arrow or a dict of lists: join keys, the batch source's timestamp field,
        the features) through ``push_source`` online, offline or both; returns the rows. Raises InvalidInput."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if to not in ("online", "offline", "online_and_offline"):
            raise InvalidInput(f"to must be online, offline or online_and_offline, not {to!r}")
        defs = self.definitions(principal.tenant)
        push = defs.push_sources.get(push_source)
        if push is None:
            raise NotFound(f"no push source '{push_source}'{did_you_mean(push_source, defs.push_sources)}; defined: "
                           f"{', '.join(sorted(defs.push_sources)) or 'none'}")
        src = defs.sources[push.batch_source]
        views = [v for v in defs.feature_views.values() if v.push_source == push_source]
        table = retrieval.to_arrow(rows)
        names = table.column_names
        needed: dict[str, str] = {}
        for v in views:
            for k in v.join_keys:
                needed.setdefault(k, retrieval.key_dtype(defs, k))
            for f in v.features:
                needed.setdefault(f.name, f.dtype)
        needed[src.timestamp_field] = "timestamp"
        missing = [c for c in needed if c not in names]
        if missing:
            raise InvalidInput(f"rows pushed to '{push_source}' have no column {', '.join(repr(m) for m in missing)}; "
                               f"they need {', '.join(needed)}")
        columns = {}
        wanted = [*needed, *([src.created_timestamp_field] if src.created_timestamp_field in names else [])]
        for name in wanted:
            dtype = needed.get(name, "timestamp")
            col = table.column(name)
            target = on_demand.arrow_type(dtype)
            try:
                columns[name] = col if col.type == target else pc.cast(col, target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise InvalidInput(f"pushed column '{name}' is {col.type}, not {dtype}: {exc}") from exc
        table = pa.table(columns)
        if table.column(src.timestamp_field).null_count:
            raise InvalidInput(f"pushed rows need a time in '{src.timestamp_field}'; some are null")
        if to in ("online", "online_and_offline"):
            for v in views:
                if v.online:
                    keep = [*v.join_keys, src.timestamp_field, *[f.name for f in v.features]]
                    if src.created_timestamp_field in table.column_names:
                        keep.append(src.created_timestamp_field)
                    self.store.write_online(defs, v.name, table.select(keep))
        if to in ("offline", "online_and_offline"):
            self.store.write_offline(defs, push_source, table)
        return table.num_rows

    def view_selection(self, tenant: str, view: str) -> ViewSelection:
        """Every feature of ``view``. Raises NotFound."""
        defs = self.definitions(tenant)
        v = defs.feature_views.get(view)
        if v is None:
            raise NotFound(f"no feature view '{view}'{did_you_mean(view, defs.feature_views)}")
        return ViewSelection(v.name, tuple(f.name for f in v.features))


def _file_format(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise InvalidInput(f"{what} {path}: expected a .parquet or .csv file")


def write_batches(reader: Any, out: Path, fmt: str, progress: Callable[[int], None] | None = None) -> int:
    """Stream ``reader`` into a parquet or CSV file (written beside it, then renamed); returns the rows."""
    import os

    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    rows = 0
    writer = pq.ParquetWriter(tmp, reader.schema) if fmt == "parquet" else pcsv.CSVWriter(tmp, reader.schema)
    try:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
            if progress is not None:
                progress(rows)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, out)
    return rows


def _to_pandas(table: Any, original: Any) -> Any:
    """The joined table as pandas, the caller's own entity columns (index included) kept exactly as given."""
    import pandas as pd

    added = [n for n in table.column_names if n not in original.columns]
    frame = table.select(added).to_pandas()
    frame.index = original.index
    return pd.concat([original, frame], axis=1)
