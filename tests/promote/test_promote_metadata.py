"""promote copies the metadata slot from SQLite to PostgreSQL, every table and tenant, and proves it equal."""

from __future__ import annotations

import pytest
from promote_kit import fill, open_host

from matih_lite.promote.promotion import promote
from matih_lite.promote.tables import held_rows

pytestmark = pytest.mark.postgres


def test_every_table_of_every_tenant_arrives_equal_and_a_second_run_copies_nothing(folder):
    lite, cluster = open_host(folder, "lite"), open_host(folder, "cluster")
    try:
        fill(lite.metadata, lite.artifacts)
        outcome = promote(lite, cluster)
        assert outcome.ok, [c for c in outcome.checks if not c.ok]
        source_rows = held_rows(lite.metadata)
        assert held_rows(cluster.metadata) == source_rows
        assert {"runs", "metrics", "tokens", "model_versions", "model_audit", "lineage_edges"} <= set(source_rows)
        tables = {c.item for c in outcome.checks if c.slot == "metadata"}
        assert "metrics" in tables and any(item.startswith("[acme] lineage walk") for item in tables)
        metadata = {c.slot: c for c in outcome.copied}["metadata"]
        assert metadata.items == sum(source_rows.values()) and metadata.skipped == 0
        again = promote(lite, cluster)
        assert again.ok and again.resumed
        assert {c.slot: c.items for c in again.copied} == {"metadata": 0, "artifacts": 0}
        # ids continue past the copied ones on the target
        exp = cluster.metadata.create_experiment("acme", "second")
        assert int(exp.experiment_id) > max(int(e.experiment_id) for e in
                                            lite.metadata.search_experiments("acme", lifecycle="all").items)
    finally:
        lite.close()
        cluster.close()


def test_verification_names_a_table_whose_rows_differ_after_the_copy(folder, pg_dsn, pg_schema):
    import psycopg

    from matih_lite.promote.tables import transfer_of, verify_tables

    lite, cluster = open_host(folder, "lite"), open_host(folder, "cluster")
    try:
        fill(lite.metadata, runs=2, points=3)
        assert promote(lite, cluster, only=["metadata"]).ok
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'UPDATE "{pg_schema}".params SET value = %s WHERE key = %s', ("0.99", "lr"))
            conn.execute(f'DELETE FROM "{pg_schema}".metrics WHERE step = 2')
        checks = {c.item: c for c in verify_tables(transfer_of(lite.metadata, "source"),
                                                   transfer_of(cluster.metadata, "target"))}
        assert not checks["params"].ok and checks["params"].detail == "same count, different values"
        assert not checks["metrics"].ok and checks["metrics"].detail == "-4 rows"
        assert checks["runs"].ok and checks["experiments"].ok
    finally:
        lite.close()
        cluster.close()
