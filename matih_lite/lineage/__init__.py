"""Lineage: datasets, tables, feature views, runs, model versions and deployments, and what fed what."""

from matih_lite.lineage.service import (
    CONSUMED_BY,
    DEPLOYED_AS,
    PRODUCED,
    Lineage,
    LineageGraph,
    dataset_key,
    dataset_refs,
    deployment_key,
    kind_of,
    model_key,
    run_key,
)

__all__ = [
    "CONSUMED_BY", "DEPLOYED_AS", "PRODUCED", "Lineage", "LineageGraph", "dataset_key", "dataset_refs",
    "deployment_key", "kind_of", "model_key", "run_key",
]
