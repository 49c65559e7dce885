"""Feature references, entity rows and answers: the rules that are the same whatever backend serves them.

- :func:`resolve` turns ``["view:feature", ...]`` or a feature service into what to ask each view for,
  with the on-demand views' inputs added (and later dropped from the answer).
- :func:`entity_table` checks entity rows (pandas, Arrow or a dict of lists): the timestamp column
  and every join key present, of usable types. Timestamps are UTC; naive ones are taken as UTC.
- :class:`OnlineFeatures` is an online answer: values, statuses (``PRESENT``, ``NOT_FOUND``,
  ``OUTSIDE_MAX_AGE``) and event times per feature, across the entities in request order, and
  :meth:`OnlineFeatures.to_feast` writes it the way Feast 0.67's feature server does.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from matih_lite.contracts.features import (
    NOT_FOUND,
    OUTSIDE_MAX_AGE,
    PRESENT,
    FeatureDefinitions,
    OnDemandView,
    ViewSelection,
)
from matih_lite.errors import InvalidInput
from matih_lite.features.definitions import did_you_mean, expand_ref


@dataclass(frozen=True)
class Resolution:  # frozen, but the domain caches its online plan on it (object.__setattr__)
    """What a list of feature references asks for."""

    refs: tuple[str, ...]
    """Every requested ``view:feature``, expanded, in order."""
    views: tuple[ViewSelection, ...]
    """The feature views to read (requested features plus on-demand inputs), in order of first use."""
    on_demand: tuple[tuple[OnDemandView, tuple[str, ...]], ...]
    """Requested on-demand views with their requested outputs."""
    join_keys: tuple[str, ...]
    request_columns: tuple[str, ...]
    full_feature_names: bool
    service: str | None = None

    def column(self, ref: str) -> str:
        """The output column of ``view:feature``: ``feature``, or ``view__feature`` with full names."""
        view, _, feature = ref.partition(":")
        return f"{view}__{feature}" if self.full_feature_names else feature

    @property
    def columns(self) -> list[str]:
        return [self.column(r) for r in self.refs]

    def online_order(self) -> list[str]:
        """The refs grouped as Feast's feature server answers them: by view in order of first
        appearance, plain views before on-demand ones."""
        plain = [s.view for s in self.views]
        order: list[str] = []
        for group in (plain, [o.name for o, _ in self.on_demand]):
            for view in group:
                order.extend(r for r in self.refs if r.partition(":")[0] == view and r not in order)
        return order


def resolve(defs: FeatureDefinitions, features: Sequence[str] | None = None, service: str | None = None, *,
            full_feature_names: bool = False) -> Resolution:
    """The views and features behind ``features`` (``view:feature`` refs) or ``service``. Raises InvalidInput
    (NotFound for an unknown service) naming the unknown view or feature, with a did-you-mean."""
    if (features is None or not len(features)) == (service is None):
        raise InvalidInput("give either features (view:feature references) or a feature service, not "
                           + ("both" if service is not None else "neither"))
    if service is not None:
        svc = defs.services.get(service)
        if svc is None:
            from matih_lite.errors import NotFound

            raise NotFound(f"no feature service '{service}'{did_you_mean(service, defs.services)}; defined: "
                           f"{', '.join(sorted(defs.services)) or 'none'}")
        refs = list(svc.features)
    else:
        if isinstance(features, str):
            raise InvalidInput("features must be a list of 'view:feature' references, not one string")
        refs = []
        for ref in features:  # type: ignore[union-attr]
            if not isinstance(ref, str) or ":" not in ref and ref not in defs.feature_views \
                    and ref not in defs.on_demand_views:
                raise InvalidInput(f"expected a 'view:feature' reference, got {ref!r}")
            for r in expand_ref(ref, defs.feature_views, defs.on_demand_views):
                if r not in refs:
                    refs.append(r)
    wanted: dict[str, list[str]] = {}
    odfvs: dict[str, list[str]] = {}
    for ref in refs:
        view, _, feature = ref.partition(":")
        if view in defs.on_demand_views:
            odfvs.setdefault(view, []).append(feature)
            for src in defs.on_demand_views[view].sources:
                bucket = wanted.setdefault(src, [])
                bucket.extend(f.name for f in defs.feature_views[src].features if f.name not in bucket)
        else:
            bucket = wanted.setdefault(view, [])
            if feature not in bucket:
                bucket.append(feature)
    if not full_feature_names:
        seen: dict[str, str] = {}
        for ref in refs:
            view, _, feature = ref.partition(":")
            if feature in seen and seen[feature] != view:
                raise InvalidInput(f"feature '{feature}' is asked of both '{seen[feature]}' and '{view}'; ask with "
                                   "full feature names (view__feature) to tell them apart")
            seen[feature] = view
    keys: list[str] = []
    for view in wanted:
        keys.extend(k for k in defs.feature_views[view].join_keys if k not in keys)
    request: list[str] = []
    for name in odfvs:
        request.extend(f.name for f in defs.on_demand_views[name].request_schema if f.name not in request)
    return Resolution(tuple(refs), tuple(ViewSelection(v, tuple(f)) for v, f in wanted.items()),
                      tuple((defs.on_demand_views[n], tuple(f)) for n, f in odfvs.items()), tuple(keys),
                      tuple(request), full_feature_names, service)


# ---- entity rows ----------------------------------------------------------------------------------------
def input_kind(rows: Any) -> str:
    """``pandas``, ``arrow`` or ``dict``. Raises InvalidInput for anything else."""
    module = type(rows).__module__
    if module.startswith("pandas"):
        return "pandas"
    if module.startswith("pyarrow"):
        return "arrow"
    if isinstance(rows, Mapping):
        return "dict"
    raise InvalidInput(f"entity rows must be a pandas DataFrame, a pyarrow Table or a dict of lists, "
                       f"not {type(rows).__name__}")


def to_arrow(rows: Any) -> Any:
    """Entity rows as a ``pyarrow.Table``."""
    import pyarrow as pa

    kind = input_kind(rows)
    if kind == "arrow":
        return rows if isinstance(rows, pa.Table) else pa.Table.from_batches(rows)
    if kind == "pandas":
        return pa.Table.from_pandas(rows, preserve_index=False)
    try:
        return pa.table({str(k): list(v) if not hasattr(v, "__array__") else v for k, v in rows.items()})
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise InvalidInput(f"entity rows: {exc}") from exc


def entity_table(rows: Any, res: Resolution, defs: FeatureDefinitions, timestamp_column: str) -> Any:
    """``rows`` as a ``pyarrow.Table`` checked for ``res``: the timestamp column (a UTC timestamp after this;
    strings are parsed, naive times taken as UTC) and every join key, of the entity's type. Raises InvalidInput."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = to_arrow(rows)
    names = table.column_names
    if timestamp_column not in names:
        raise InvalidInput(f"entity rows have no '{timestamp_column}' column (the time each row is joined as of)"
                           f"{did_you_mean(timestamp_column, names)}; columns: {', '.join(names) or 'none'}")
    for key in res.join_keys:
        if key not in names:
            views = [s.view for s in res.views if key in defs.feature_views[s.view].join_keys]
            raise InvalidInput(f"entity rows have no join key '{key}' (needed by feature view "
                               f"{', '.join(views)}){did_you_mean(key, names)}; columns: {', '.join(names)}")
        check_key_type(defs, key, table.column(key).type)
    for name in res.request_columns:
        if name not in names:
            odfv = next(o.name for o, _ in res.on_demand if any(f.name == name for f in o.request_schema))
            raise InvalidInput(f"entity rows have no column '{name}', request data of on-demand view '{odfv}'")
    for ref in res.refs:
        if res.column(ref) in names:
            raise InvalidInput(f"entity rows already have a column '{res.column(ref)}', the name of feature {ref}; "
                               "rename or drop it, or ask with full feature names (view__feature)")
    ts = table.column(timestamp_column)
    if pa.types.is_string(ts.type) or pa.types.is_large_string(ts.type):
        try:
            parsed = pc.cast(ts, pa.timestamp("us", "UTC"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidInput(f"entity rows: '{timestamp_column}' holds text that is not an ISO 8601 time: {exc}"
                               ) from exc
        table = table.set_column(names.index(timestamp_column), timestamp_column, parsed)
    elif not (pa.types.is_timestamp(ts.type) or pa.types.is_date(ts.type)):
        raise InvalidInput(f"entity rows: '{timestamp_column}' is {ts.type}, not a timestamp")
    if table.column(timestamp_column).null_count:
        raise InvalidInput(f"entity rows: '{timestamp_column}' has {table.column(timestamp_column).null_count} "
                           "null times; every row needs the time it is joined as of")
    return table


def check_key_type(defs: FeatureDefinitions, key: str, arrow_type: Any) -> None:
    """Raises InvalidInput when a join-key column's type cannot match the entity's key type."""
    import pyarrow as pa

    dtype = key_dtype(defs, key)
    ok = (pa.types.is_integer(arrow_type) if dtype in ("int64", "int32") else
          pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) if dtype == "string" else True)
    if not ok and not pa.types.is_null(arrow_type):
        raise InvalidInput(f"join key '{key}' is {arrow_type} in the entity rows, but the entity's key is {dtype}")


def key_dtype(defs: FeatureDefinitions, key: str) -> str:
    for entity in defs.entities.values():
        if key in entity.dtypes:
            return entity.dtypes[key]
    return "string"


def normalize_key(defs: FeatureDefinitions, key: str, value: Any) -> Any:
    """An online request's key value as the entity's type (``"5"`` -> ``5`` for int64). Raises InvalidInput."""
    dtype = key_dtype(defs, key)
    if dtype in ("int64", "int32"):
        if isinstance(value, bool) or value is None:
            raise InvalidInput(f"entity key {key}={value!r} is not an integer")
        if isinstance(value, int):
            return value
        try:
            number = float(value) if not isinstance(value, str) else int(value.strip())
        except (TypeError, ValueError):
            raise InvalidInput(f"entity key {key}={value!r} is not an integer") from None
        if isinstance(number, float) and not number.is_integer():
            raise InvalidInput(f"entity key {key}={value!r} is not an integer")
        return int(number)
    if value is None:
        raise InvalidInput(f"entity key {key} is null")
    return value if isinstance(value, str) else str(value)


def columnar(entity_rows: Any) -> tuple[dict[str, list[Any]], int]:
    """Online entity rows (``[{"customer_id": 1}, ...]`` or ``{"customer_id": [1, ...]}``) as columns and their
    length. Raises InvalidInput for ragged or empty input."""
    if isinstance(entity_rows, Mapping):
        cols = {str(k): list(v) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") else [v]
                for k, v in entity_rows.items()}
    elif isinstance(entity_rows, Sequence) and not isinstance(entity_rows, (str, bytes)):
        cols = {}
        for i, row in enumerate(entity_rows):
            if not isinstance(row, Mapping):
                raise InvalidInput(f"entity row {i} is {type(row).__name__}, not a mapping of join keys to values")
            for k in row:
                cols.setdefault(str(k), [None] * i)
            for k in cols:
                cols[k].append(row.get(k))
    else:
        kind = input_kind(entity_rows)
        table = to_arrow(entity_rows) if kind != "dict" else None
        cols = table.to_pydict() if table is not None else {}
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in cols.items())
        raise InvalidInput(f"entity columns have different lengths: {sizes}")
    return cols, (lengths.pop() if lengths else 0)


# ---- answers ------------------------------------------------------------------------------------------
@dataclass
class OnlineFeatures:
    """An online answer: per column (join keys first), a value, a status and an event time (µs) per entity."""

    join_keys: list[str]
    names: list[str]
    values: dict[str, list[Any]]
    statuses: dict[str, list[str]]
    event_ts: dict[str, list[int]]
    """0 where there is no event time (join keys, values not found), as Feast's epoch."""
    dtypes: dict[str, str] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [n for n in self.names if n not in self.join_keys]

    def to_dict(self, include_event_timestamps: bool = False) -> dict[str, list[Any]]:
        """``{column: [value per entity]}``, with ``column__ts`` (seconds) after each when asked, as Feast's
        ``OnlineResponse.to_dict`` does."""
        out: dict[str, list[Any]] = {}
        for name in self.names:
            out[name] = list(self.values[name])
            if include_event_timestamps:
                out[f"{name}__ts"] = [ts // 1_000_000 for ts in self.event_ts[name]]
        return out

    def to_df(self) -> Any:
        """A pandas DataFrame of :meth:`to_dict`."""
        import pandas as pd

        return pd.DataFrame(self.to_dict())

    def to_arrow(self) -> Any:
        import pyarrow as pa

        return pa.table(self.to_dict())

    def records(self) -> list[dict[str, Any]]:
        """One ``{column: value}`` per entity."""
        n = len(next(iter(self.values.values()), []))
        return [{name: self.values[name][i] for name in self.names} for i in range(n)]

    @classmethod
    def from_feast(cls, doc: Mapping[str, Any], given_keys: Sequence[str] = ()) -> OnlineFeatures:
        """An answer back from :meth:`to_feast`'s shape (what a client of the REST API receives)."""
        names = list(doc["metadata"]["feature_names"])
        values, statuses, stamps = {}, {}, {}
        for name, result in zip(names, doc["results"]):
            values[name] = [float(v) if v in ("NaN", "Infinity", "-Infinity") else v for v in result["values"]]
            statuses[name] = list(result["statuses"])
            stamps[name] = [_micros_of(t) for t in result.get("event_timestamps", [])]
        keys = [n for n in names if n in given_keys]
        return cls(keys, names, values, statuses, stamps)

    def to_feast(self) -> dict[str, Any]:
        """The body Feast 0.67's ``POST /get-online-features`` answers with."""
        stamps = _STAMPS
        texts_of: dict[int, list[str]] = {}  # the features of one view share one list of times
        results = []
        for name in self.names:
            times = self.event_ts[name]
            texts = texts_of.get(id(times))
            if texts is None:
                texts = []
                for t in times:
                    text = stamps.get(t)
                    if text is None:
                        if len(stamps) > 100_000:
                            stamps.clear()
                            stamps[0] = EPOCH
                        text = stamps[t] = _feast_ts(t)
                    texts.append(text)
                texts_of[id(times)] = texts
            results.append({"values": _feast_values(self.values[name], self.dtypes.get(name)),
                            "statuses": self.statuses[name], "event_timestamps": texts})
        return {"metadata": {"feature_names": list(self.names)}, "results": results}


_AS_IS = frozenset({"int64", "int32", "string", "bool"})
_FLOATS = frozenset({"float64", "float32"})
_INF = float("inf")


def _feast_values(values: list[Any], dtype: str | None) -> list[Any]:
    """Values as Feast's JSON writes them; most lists need no change at all."""
    if dtype in _AS_IS:
        return values
    if dtype in _FLOATS:
        for v in values:
            if v is not None and not -_INF < v < _INF:  # NaN fails both comparisons
                return [_feast_value(x, dtype) for x in values]
        return values
    return [_feast_value(v, dtype) for v in values]


def _feast_value(value: Any, dtype: str | None) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return int(value.timestamp())
    if dtype == "timestamp" and isinstance(value, int):
        return value // 1_000_000
    return value


EPOCH = "1970-01-01T00:00:00Z"
"""Feast's event time of a value it has none for (join keys, entities not found)."""
_STAMPS: dict[int, str] = {0: EPOCH}
"""Event times as Feast writes them, by µs: online rows' times repeat from one lookup to the next."""


def _feast_ts(micros: int) -> str:
    """RFC 3339 with Z, as Feast writes a protobuf Timestamp (fraction only as precise as needed)."""
    if not micros:
        return "1970-01-01T00:00:00Z"
    seconds, frac = divmod(int(micros), 1_000_000)
    base = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac == 0:
        return base + "Z"
    if frac % 1000 == 0:
        return base + ".%03dZ" % (frac // 1000)
    return base + ".%06dZ" % frac


def _micros_of(text: str) -> int:
    if not text or text.startswith("1970-01-01T00:00:00Z"):
        return 0
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def status_of(row_ts: int | None, ttl_seconds: int, now_us: int) -> str:
    """PRESENT, NOT_FOUND (no row) or OUTSIDE_MAX_AGE (older than the ttl, judged against ``now_us``)."""
    if row_ts is None:
        return NOT_FOUND
    if ttl_seconds and row_ts < now_us - ttl_seconds * 1_000_000:
        return OUTSIDE_MAX_AGE
    return PRESENT
