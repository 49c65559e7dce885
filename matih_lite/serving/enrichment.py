"""Requests enriched from the online feature store before predict, for versions trained on a feature service.

A version registered from a run whose training data came from the feature store remembers the feature service
(the ``matih.feature_service`` tag; ``matih.features`` for a bare list of references). A deployment of it takes
requests that carry only the entity keys (``{"dataframe_records": [{"customer_id": 5}]}``): each row's features
are looked up online by its keys (one lookup per request, all rows at once) and added to the row before it is
parsed for the model; a value the request sends itself wins. Columns the model does not take (the keys, usually)
are dropped. A required feature the online store does not hold for an entity (``NOT_FOUND``, or older than its
view's ttl: ``OUTSIDE_MAX_AGE``) is a 400 naming the entity and the feature; a version whose feature service is
no longer defined answers 503. The lookup's time goes into the inference log (``feature_lookup_ms``) and the
``X-Feature-Lookup-Ms`` response header.

Only the features domain is called (never a features backend).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from matih_lite.errors import InvalidInput, NotFound
from matih_lite.features.job_inputs import FEATURE_SERVICE_TAG, FEATURES_TAG

if TYPE_CHECKING:
    from matih_lite.host import Host


RECORD_FORMATS = ("dataframe_records", "dataframe_split", "instances", "inputs")


class FeatureSource:
    """What a version is enriched with: a feature service, or a list of ``view:feature`` references."""

    __slots__ = ("features", "service")

    def __init__(self, service: str | None, features: tuple[str, ...] | None) -> None:
        self.service, self.features = service, features

    def __repr__(self) -> str:
        return f"FeatureSource(service={self.service!r}, features={self.features!r})"


def feature_source(tags: Mapping[str, str]) -> FeatureSource | None:
    """The feature source a version's tags name, or None."""
    service = (tags.get(FEATURE_SERVICE_TAG) or "").split(",")[0].strip()
    if service:
        return FeatureSource(service, None)
    refs = tuple(r.strip() for r in (tags.get(FEATURES_TAG) or "").split(",") if r.strip())
    return FeatureSource(None, refs) if refs else None


def _records(doc: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """The request's rows as records, when it is a table (None for tensors, which are sent whole)."""
    given = [k for k in RECORD_FORMATS if k in doc]
    if len(given) != 1:
        return None
    fmt, value = given[0], doc[given[0]]
    if fmt == "dataframe_split":
        if not isinstance(value, Mapping) or not isinstance(value.get("columns"), list) \
                or not isinstance(value.get("data"), list):
            return None
        columns = [str(c) for c in value["columns"]]
        rows = []
        for row in value["data"]:
            if not isinstance(row, list) or len(row) != len(columns):
                return None
            rows.append(dict(zip(columns, row)))
        return fmt, rows
    if isinstance(value, list) and value and all(isinstance(r, Mapping) for r in value):
        return fmt, [dict(r) for r in value]
    if isinstance(value, Mapping) and value and fmt != "dataframe_records":
        cols = {str(k): (v if isinstance(v, list) else [v]) for k, v in value.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) != 1:
            return None
        n = lengths.pop()
        return fmt, [{k: v[i] for k, v in cols.items()} for i in range(n)]
    return None


async def enrich(host: Host, principal: Any, served: Any, doc: Any) -> tuple[Any, float | None]:
    """The request body with each row's online features added (see the module docstring), and the lookup's
    milliseconds (None when nothing was looked up). Raises InvalidInput naming the row, key or feature."""
    source: FeatureSource | None = getattr(served, "feature_source", None)
    if source is None or not isinstance(doc, Mapping):
        return doc, None
    found = _records(doc)
    if found is None:
        return doc, None
    fmt, rows = found
    from matih_lite.features.service import Features

    features = Features.of(host)
    try:
        _, res = await asyncio.to_thread(features.resolve, principal.tenant, source.features, source.service)
    except NotFound as exc:  # the definitions changed under the version: the deployment's fault, not the caller's
        from matih_lite.serving.traffic import ModelUnavailable

        raise ModelUnavailable(f"version {served.version} of model {served.model!r} is served with features it "
                               f"cannot find: {exc.message}", detail={"model": served.model}) from exc
    wanted = res.columns
    need = [i for i, row in enumerate(rows) if any(c not in row for c in wanted)]
    if not need:
        return doc, None
    what = f"feature service {source.service!r}" if source.service else "the features the model was trained on"
    entity_cols: dict[str, list[Any]] = {}
    for key in (*res.join_keys, *res.request_columns):
        for i in need:
            if key not in rows[i]:
                raise InvalidInput(f"{fmt}[{i}] has no {key!r}: the entity key {what} is looked up by "
                                   f"(or send every feature: {', '.join(wanted)})", detail={"field": key, "row": i})
        entity_cols[key] = [rows[i][key] for i in need]
    start = time.perf_counter()
    answer = await asyncio.to_thread(features.online, principal, entity_cols, source.features, source.service)
    lookup_ms = (time.perf_counter() - start) * 1000
    schema = served.schema
    columns = list(schema.names) if schema.kind == "columns" else None
    required = {s.name for s in schema.specs if not s.optional} if columns is not None else set(wanted)
    for j, i in enumerate(need):
        row = rows[i]
        for name in answer.feature_names:
            if name in row:
                continue
            value = answer.values[name][j]
            if value is None and name in required:
                status = answer.statuses[name][j]
                keys = ", ".join(f"{k}={entity_cols[k][j]!r}" for k in res.join_keys)
                raise InvalidInput(f"{fmt}[{i}]: the online store has no {name!r} for {keys} ({status}); "
                                   "materialize the feature view, or send the value", detail={"field": name, "row": i})
            row[name] = value
    if columns is not None:
        rows = [{c: row[c] for c in columns if c in row} for row in rows]
    out = {k: v for k, v in doc.items() if k not in RECORD_FORMATS}
    out["dataframe_records"] = rows
    return out, lookup_ms
