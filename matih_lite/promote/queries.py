"""A fixed set of questions asked of both metadata stores through the ordinary contract.

Equal tables should answer equally; asking proves that the target's queries (its SQL dialect, its
indexes, its collation) read the copied rows as the source does. For each tenant: runs searched
with a filter, a metric's history, every model's versions and stages, and a lineage walk.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from matih_lite.contracts.metadata import MetadataStore
from matih_lite.contracts.search import parse_filter
from matih_lite.promote.checks import Check

MAX_EXPERIMENTS = 5
WALK_DEPTH = 6


def _answer(ask: Callable[[MetadataStore], Any], store: MetadataStore) -> Any:
    try:
        return msgspec.to_builtins(ask(store))
    except Exception as exc:  # an answer that fails is an answer too: the two must fail alike
        return f"{type(exc).__name__}: {exc}"


def _questions(source: MetadataStore, tenant: str) -> list[tuple[str, Callable[[MetadataStore], Any]]]:
    """The questions for one tenant, chosen from what the source holds."""
    questions: list[tuple[str, Callable[[MetadataStore], Any]]] = []
    experiments = source.search_experiments(tenant, lifecycle="all", max_results=MAX_EXPERIMENTS).items
    ids = [e.experiment_id for e in experiments]
    questions.append(("experiments", lambda s: s.search_experiments(tenant, lifecycle="all").items))
    if ids:
        runs = source.search_runs(tenant, ids, lifecycle="all", max_results=50).items
        metric = next(((r.run_id, k, m.value) for r in runs for k, m in sorted(r.metrics.items())
                           if not math.isnan(m.value)), None)
        if metric is not None:
            run_id, key, value = metric
            filter_ = parse_filter(f"metrics.`{key}` >= {float(value)!r}")
            questions.append((f"runs where metrics.{key} >= {value}",
                              lambda s: s.search_runs(tenant, ids, filter=filter_, lifecycle="all").items))
            questions.append((f"metric history {run_id[:8]}/{key}",
                              lambda s: s.get_metric_history(tenant, run_id, key).items))
        else:
            questions.append(("runs", lambda s: s.search_runs(tenant, ids, lifecycle="all").items))
    questions.append(("model versions and stages",
                      lambda s: [(v.name, v.version, v.stage, v.status)
                                 for v in s.search_model_versions(tenant).items]))
    nodes = source.list_lineage_nodes(tenant, max_results=1).items
    if nodes:
        start = nodes[0].key
        questions.append((f"lineage walk from {start}", lambda s: _walk(s, tenant, start)))
    return questions


def _walk(store: MetadataStore, tenant: str, start: str) -> list[tuple[str, str, str]]:
    """Every edge reached downstream of ``start``, then upstream, breadth first."""
    edges: list[tuple[str, str, str]] = []
    for direction in ("downstream", "upstream"):
        frontier, seen = [start], {start}
        for _ in range(WALK_DEPTH):
            found = store.lineage_edges(tenant, frontier, direction=direction)
            edges += sorted((e.source, e.target, e.kind) for e in found)
            nxt = {e.target if direction == "downstream" else e.source for e in found} - seen
            if not nxt:
                break
            seen |= nxt
            frontier = sorted(nxt)
    return edges


def compare_queries(source: MetadataStore, target: MetadataStore, tenants: Iterable[str]) -> list[Check]:
    """One check per question per tenant: the same answer from both."""
    checks: list[Check] = []
    for tenant in sorted(set(tenants)):
        for label, ask in _questions(source, tenant):
            mine, theirs = _answer(ask, source), _answer(ask, target)
            ok = mine == theirs
            size = len(mine) if isinstance(mine, list) else 1
            checks.append(Check(slot="metadata", item=f"[{tenant}] {label}", source=f"{size} answers",
                                target=f"{len(theirs) if isinstance(theirs, list) else 1} answers", ok=ok,
                                detail="" if ok else "answers differ"))
    return checks
