"""The online feature store copied view by view: every tenant's applied definitions applied on the target
backend, then every stored row written there with its own event time (a row newer on the target stays).
Verification reads every source key back from both stores and compares event times and values."""

from __future__ import annotations

from typing import Any

from matih_lite.contracts.features import FeatureDefinitions, HistoricalRequest, ViewSelection
from matih_lite.contracts.transfer import OnlineCatalog
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.promote.checks import Check, SlotCopy
from matih_lite.promote.tables import Progress


def catalog_of(store: Any) -> OnlineCatalog:
    if not isinstance(store, OnlineCatalog):
        raise InvalidInput(f"features: the source backend ({type(store).__name__}) cannot list its online rows; "
                           "promote copies the online store of the duckdb backend")
    return store


def applied_definitions(metadata: Any, tenants: set[str]) -> dict[str, FeatureDefinitions]:
    """Each tenant's applied definitions (tenants without any left out)."""
    found = {}
    for tenant in sorted(tenants):
        try:
            found[tenant] = FeatureDefinitions.from_document(metadata.get_feature_definitions(tenant).document)
        except NotFound:
            continue
    return found


def copy_online(source: Any, target: Any, definitions: dict[str, FeatureDefinitions], *,
                progress: Progress | None = None) -> SlotCopy:
    done = SlotCopy(slot="features")
    catalog = catalog_of(source)
    for defs in definitions.values():
        target.apply(defs, None)
        for view, spec in defs.feature_views.items():
            if not spec.online:
                continue
            rows = catalog.online_rows(defs, view)
            if rows.num_rows:
                target.write_online(defs, view, rows)
            done.items += rows.num_rows
            if progress is not None:
                progress(f"features {defs.project}.{view}", rows.num_rows, rows.num_rows, 0)
    return done


def verify_online(source: Any, target: Any, definitions: dict[str, FeatureDefinitions]) -> list[Check]:
    checks: list[Check] = []
    catalog = catalog_of(source)
    for tenant, defs in definitions.items():
        for view, spec in defs.feature_views.items():
            if not spec.online:
                continue
            rows = catalog.online_rows(defs, view)
            keys = list(zip(*(rows.column(k).to_pylist() for k in spec.join_keys))) if rows.num_rows else []
            names = [f.name for f in spec.features]
            mine = source.read_online(defs, view, keys, names)
            theirs = target.read_online(defs, view, keys, names)
            missing = sum(1 for r in theirs if r is None)
            different = sum(1 for a, b in zip(mine, theirs) if b is not None and
                            (a.event_ts, list(a.values)) != (b.event_ts, list(b.values)))
            ok = missing == 0 and different == 0
            checks.append(Check(slot="features", item=f"[{tenant}] online {view}", source=f"{len(keys)} entities",
                                target=f"{len(keys) - missing} entities", ok=ok,
                                detail="" if ok else f"{missing} missing, {different} with other values"))
            if keys:
                checks.append(_point_in_time(source, target, defs, tenant, view, rows))
    return checks


def _point_in_time(source: Any, target: Any, defs: FeatureDefinitions, tenant: str, view: str, rows: Any) -> Check:
    """The offline join of every online entity as of its online event time, asked of both backends."""
    import pyarrow as pa

    spec = defs.feature_views[view]
    src = defs.sources[spec.source]
    entities = pa.table({**{k: rows.column(k) for k in spec.join_keys},
                         "event_timestamp": rows.column(src.timestamp_field)})
    # Full names as the features domain asks every backend: a feature can never take an entity column's name
    # (both backends name the columns as asked; the contract kit holds them to it).
    request = HistoricalRequest(views=(ViewSelection(view, tuple(f.name for f in spec.features)),),
                                entities=entities, full_feature_names=True)

    def answer(store: Any) -> Any:
        try:
            table = store.historical(defs, request).read_all()
            return sorted(map(repr, table.to_pylist()))
        except Exception as exc:  # both must fail alike, or answer alike
            return f"{type(exc).__name__}: {exc}"

    mine, theirs = answer(source), answer(target)
    ok = mine == theirs
    return Check(slot="features", item=f"[{tenant}] point-in-time {view}", source=f"{entities.num_rows} rows",
                 target=f"{len(theirs) if isinstance(theirs, list) else 0} rows", ok=ok,
                 detail="" if ok else _first_difference(mine, theirs))


def _first_difference(mine: Any, theirs: Any) -> str:
    if not isinstance(mine, list) or not isinstance(theirs, list):
        return f"answers differ: {str(mine)[:200]} vs {str(theirs)[:200]}"
    for a, b in zip(mine, theirs):
        if a != b:
            return f"answers differ: {a[:200]} vs {b[:200]}"
    return f"answers differ: {len(mine)} rows vs {len(theirs)}"
