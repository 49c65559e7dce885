"""The JSON shapes of the feature store's answers, one place for the REST API and the embedded client."""

from __future__ import annotations

from typing import Any

import msgspec

from matih_lite.features.definitions import format_duration
from matih_lite.features.plan import Plan, describe
from matih_lite.identity import Principal


def change_view(change: Any) -> dict[str, Any]:
    return {"action": change.action, "kind": change.kind, "what": describe(change.kind), "name": change.name,
            "diff": change.diff}


def plan_view(plan: Plan) -> dict[str, Any]:
    return {"base_version": plan.base_version, "digest": plan.digest, "counts": plan.counts(),
            "changes": [change_view(c) for c in plan.changes]}


def apply_view(result: Any) -> dict[str, Any]:
    return {"version": result.version, "digest": result.digest, "applied": result.applied,
            "changes": [change_view(c) for c in result.changes]}


def view_summary(view: Any) -> dict[str, Any]:
    out = msgspec.to_builtins(view)
    out["ttl"] = format_duration(view.ttl_seconds)
    return out


def overview(features: Any, tenant: str) -> dict[str, Any]:
    """Everything applied for ``tenant``, with the version. Raises NotFound when nothing is applied."""
    version = features.version(tenant)
    defs = features.definitions(tenant)
    return {
        "version": version.version, "digest": version.digest, "applied_by": version.actor,
        "applied_at": version.created_at, "project": defs.project, "repo": defs.root,
        "entities": [msgspec.to_builtins(e) for e in defs.entities.values()],
        "sources": [msgspec.to_builtins(s) for s in defs.sources.values()],
        "push_sources": [msgspec.to_builtins(p) for p in defs.push_sources.values()],
        "feature_views": [view_summary(v) for v in defs.feature_views.values()],
        "on_demand_views": [msgspec.to_builtins(o) for o in defs.on_demand_views.values()],
        "services": [msgspec.to_builtins(s) for s in defs.services.values()],
    }


def show(features: Any, principal: Principal, name: str, *, monitor: bool = True) -> dict[str, Any]:
    """One object by name, where it was declared, its audit; a feature view also its materializations and
    (``monitor``) its monitoring report, alerts sent. Raises NotFound with a did-you-mean."""
    kind, obj = features.find(principal.tenant, name)
    defs = features.definitions(principal.tenant)
    out: dict[str, Any] = {"kind": kind, "what": describe(kind), "name": name,
                           "definition": view_summary(obj) if kind == "feature_views" else msgspec.to_builtins(obj),
                           "file": defs.files.get(f"{kind}.{name}", ""),
                           "audit": [msgspec.to_builtins(e) for e in features.audit(principal.tenant, name, 20)]}
    if kind == "feature_views":
        out["materializations"] = [msgspec.to_builtins(m) for m in
                                   features.metadata.materializations(principal.tenant, name, max_results=10)]
        out["used_by"] = sorted({s.name for s in defs.services.values()
                                 if any(r.partition(":")[0] == name for r in s.features)}
                                | {o.name for o in defs.on_demand_views.values() if name in o.sources})
        if monitor:
            from matih_lite.features.monitoring import monitor_view

            out["monitoring"] = monitor_view(features, principal, name)
    return out
