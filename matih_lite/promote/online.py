"""The online feature store copied view by view: every tenant's applied definitions applied on the target
backend, then every stored row written there with its own event time (a row newer on the target stays).
Verification reads every source key back from both stores and compares event times and values."""

from __future__ import annotations

from typing import Any

from matih_lite.contracts.features import FeatureDefinitions
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
    return checks
