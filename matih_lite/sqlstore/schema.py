"""The metadata schema as numbered migrations; later work appends, never edits, entries."""

from __future__ import annotations

from typing import Any

from matih_lite.sqlstore.scope import OWNED, Child, Ownership, Shared

TRACKING: list[tuple[int, str, list[str]]] = [
    (1, "tracking", [
        """CREATE TABLE experiments (
            experiment_id {serial},
            tenant {text} NOT NULL,
            name {text} NOT NULL,
            description {text} NOT NULL DEFAULT '',
            artifact_location {text} NOT NULL DEFAULT '',
            lifecycle_stage {text} NOT NULL DEFAULT 'active',
            creation_time {bigint} NOT NULL,
            last_update_time {bigint} NOT NULL,
            UNIQUE (tenant, name))""",
        """CREATE TABLE experiment_tags (
            experiment_id {bigint} NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
            key {text} NOT NULL, value {text} NOT NULL,
            PRIMARY KEY (experiment_id, key))""",
        """CREATE TABLE runs (
            run_id {text} PRIMARY KEY,
            experiment_id {bigint} NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
            tenant {text} NOT NULL,
            name {text} NOT NULL DEFAULT '',
            status {text} NOT NULL,
            start_time {bigint} NOT NULL,
            end_time {bigint},
            lifecycle_stage {text} NOT NULL DEFAULT 'active',
            parent_run_id {text},
            artifact_uri {text} NOT NULL DEFAULT '',
            user_id {text} NOT NULL DEFAULT '')""",
        "CREATE INDEX runs_by_experiment ON runs (tenant, experiment_id, lifecycle_stage, start_time)",
        "CREATE INDEX runs_by_parent ON runs (parent_run_id)",
        """CREATE TABLE params (
            run_id {text} NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            key {text} NOT NULL, value {text} NOT NULL,
            PRIMARY KEY (run_id, key))""",
        """CREATE TABLE tags (
            run_id {text} NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            key {text} NOT NULL, value {text} NOT NULL,
            PRIMARY KEY (run_id, key))""",
        """CREATE TABLE metrics (
            run_id {text} NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            key {text} NOT NULL,
            value {double} NOT NULL,
            is_nan {bigint} NOT NULL DEFAULT 0,
            timestamp {bigint} NOT NULL,
            step {bigint} NOT NULL DEFAULT 0)""",
        "CREATE INDEX metrics_by_key ON metrics (run_id, key, step, timestamp)",
        """CREATE TABLE latest_metrics (
            run_id {text} NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            key {text} NOT NULL,
            value {double} NOT NULL,
            is_nan {bigint} NOT NULL DEFAULT 0,
            timestamp {bigint} NOT NULL,
            step {bigint} NOT NULL,
            PRIMARY KEY (run_id, key))""",
        "CREATE INDEX latest_metrics_by_key ON latest_metrics (key, value)",
    ]),
    (101, "tracking search indexes", [
        # Covering indexes for filters: key and value first, run id last, so a clause is one index range.
        "DROP INDEX latest_metrics_by_key",
        "CREATE INDEX latest_metrics_search ON latest_metrics (key, is_nan, value, run_id)",
        "CREATE INDEX params_search ON params (key, value, run_id)",
        "CREATE INDEX tags_search ON tags (key, value, run_id)",
    ]),
]


TRACKING_TABLES: dict[str, Ownership] = {
    "experiments": OWNED,
    "experiment_tags": Child("experiments"),
    "runs": OWNED,
    "params": Child("runs"),
    "tags": Child("runs"),
    "metrics": Child("runs"),
    "latest_metrics": Child("runs"),
}
"""How each table of :data:`TRACKING` belongs to a tenant (see :mod:`matih_lite.sqlstore.scope`)."""

CORE_TABLES: dict[str, Ownership] = {"_migrations": Shared("the schema's own history")}


def _modules() -> list[Any]:
    """The sqlstore modules with ``MIGRATIONS`` and ``TABLES`` of their own."""
    from matih_lite.sqlstore import (
        auth,
        deployments,
        features,
        jobs,
        leases,
        lineage,
        logged_models,
        metric_series,
        registry,
        traces,
    )

    return [registry, auth, lineage, deployments, jobs, metric_series, logged_models, features, traces, leases]


def _all() -> list[tuple[int, str, list[str]]]:
    migrations = list(TRACKING)
    for module in _modules():
        migrations += module.MIGRATIONS
    return sorted(migrations, key=lambda m: m[0])


def _tables() -> dict[str, Ownership]:
    tables = {**CORE_TABLES, **TRACKING_TABLES}
    for module in _modules():
        tables.update(getattr(module, "TABLES", {}))
    return tables


MIGRATIONS: list[tuple[int, str, list[str]]] = _all()
"""Every migration, in version order; each domain's live beside its queries."""

TABLES: dict[str, Ownership] = _tables()
"""Every table the migrations create and how its rows belong to a tenant; each domain's beside its queries."""
