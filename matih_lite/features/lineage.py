"""What the feature store adds to lineage: source -> feature view -> feature service (-> the runs that used it).

Node keys: a file source is ``dataset:<its absolute path>``, a query source ``table:<project>.<source>``, a view
(plain or on-demand) ``feature_view:<name>``, a service ``feature_service:<name>``. ``apply`` records every
service's chain; a training job whose input names a service links the service to its run (and the joined frame
to the run as a dataset), so ``lineage show model:NAME/V --upstream`` reaches the sources.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matih_lite.contracts.features import FeatureDefinitions
from matih_lite.features import retrieval

if TYPE_CHECKING:
    from matih_lite.host import Host


FEEDS = "feeds"
"""source -> feature view, feature view -> on-demand view / feature service."""


def source_key(defs: FeatureDefinitions, source: str) -> str:
    src = defs.sources[source]
    return f"dataset:{src.location}" if src.location else f"table:{defs.project}.{src.name}"


def view_key(view: str) -> str:
    return f"feature_view:{view}"


def service_key(service: str) -> str:
    return f"feature_service:{service}"


def record_service(lineage: Any, tenant: str, defs: FeatureDefinitions, service: str | None,
                   features: Any = None) -> str | None:
    """Record source -> view -> service (or, for a bare feature list, source -> view) and return the key the
    consumer hangs off: the service's node, or None for a list (its views are then returned through
    :func:`record_views`)."""
    res = retrieval.resolve(defs, features, service)
    views = record_views(lineage, tenant, defs, res)
    if service is None:
        return None
    svc = defs.services[service]
    node = lineage.record_node(tenant, service_key(service), name=service,
                               properties={"features": list(res.refs), "owner": svc.owner,
                                           "project": defs.project})
    for key in views:
        lineage.record_edge(tenant, key, node.key, FEEDS)
    return node.key


def record_views(lineage: Any, tenant: str, defs: FeatureDefinitions, res: Any) -> list[str]:
    """The view nodes a resolution reads (each with its source upstream); on-demand views last, fed by theirs."""
    keys: dict[str, str] = {}
    for selection in res.views:
        view = defs.feature_views[selection.view]
        src_key = source_key(defs, view.source)
        src = defs.sources[view.source]
        lineage.record_node(tenant, src_key, name=src.name,
                            properties={"uri": src.location} if src.location else {"query": src.query[:1000]})
        node = lineage.record_node(tenant, view_key(view.name), name=view.name,
                                   properties={"ttl_seconds": view.ttl_seconds, "owner": view.owner,
                                               "features": [f.name for f in view.features],
                                               "entities": list(view.entities), "project": defs.project})
        lineage.record_edge(tenant, src_key, node.key, FEEDS)
        keys[view.name] = node.key
    wanted = list(keys.values())
    for odfv, _ in res.on_demand:
        node = lineage.record_node(tenant, view_key(odfv.name), name=odfv.name,
                                   properties={"on_demand": True, "function": odfv.function,
                                               "project": defs.project})
        for source_view in odfv.sources:
            if source_view in keys:
                lineage.record_edge(tenant, keys[source_view], node.key, FEEDS)
        wanted.append(node.key)
    direct = {r.partition(":")[0] for r in res.refs}
    return [k for k in wanted if k.partition(":")[2] in direct]


def record_definitions(host: Host, tenant: str, defs: FeatureDefinitions) -> None:
    """Every service's chain (called after ``apply``)."""
    from matih_lite.lineage import Lineage

    lineage = Lineage(host, attach=False)
    for name in defs.services:
        record_service(lineage, tenant, defs, name)
