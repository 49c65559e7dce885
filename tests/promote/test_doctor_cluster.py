"""``doctor --profile cluster``: each slot installed, configured, reachable, and the schema version found (doctor never
migrates); exit 2 if not."""

from __future__ import annotations

import json
import os

import pytest
from test_promote_cli import cli

from matih_lite.sqlstore.schema import MIGRATIONS

pytestmark = pytest.mark.postgres


def _tables(pg_dsn, schema):
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]


def test_doctor_only_looks_it_reports_an_empty_schema_and_migrate_makes_it(folder, pg_dsn, pg_schema):
    r = cli("doctor", "--profile", "cluster", "--json", cwd=folder)
    assert r.returncode == 0, r.stdout + r.stderr
    metadata = {row["slot"]: row for row in json.loads(r.stdout)["slots"]}["metadata"]
    assert metadata["status"] == "ok" and metadata["backend"] == "postgres"
    assert "schema empty" in metadata["detail"] and metadata["schema"]["applied"] == 0
    assert _tables(pg_dsn, pg_schema) == []  # doctor created nothing
    r = cli("doctor", "--profile", "cluster", cwd=folder)
    assert r.returncode == 0 and "schema empty" in r.stdout and _tables(pg_dsn, pg_schema) == []

    r = cli("migrate", "--profile", "cluster", cwd=folder)
    assert r.returncode == 0, r.stderr
    current = max(v for v, _, _ in MIGRATIONS)
    assert f"schema version {current}" in r.stdout
    assert "_migrations" in _tables(pg_dsn, pg_schema)
    r = cli("doctor", "--profile", "cluster", "--json", cwd=folder)
    metadata = {row["slot"]: row for row in json.loads(r.stdout)["slots"]}["metadata"]
    assert r.returncode == 0 and metadata["schema"] == {"applied": current, "current": current}
    assert f"postgres, schema version {current}" in metadata["detail"]  # the newest migration, as the log says


def test_doctor_exits_2_naming_the_slot_that_is_unreachable_misspelt_or_missing_its_secret(folder):
    text = (folder / "matih.toml").read_text()
    (folder / "matih.toml").write_text(text.replace("${MATIH_TEST_DSN}", "postgresql://nobody@127.0.0.1:1/x"))
    r = cli("doctor", "--profile", "cluster", "--json", cwd=folder)
    assert r.returncode == 2, r.stdout + r.stderr
    metadata = {row["slot"]: row for row in json.loads(r.stdout)["slots"]}["metadata"]
    assert metadata["status"] == "failed" and "127.0.0.1" in metadata["detail"]
    (folder / "matih.toml").write_text(text.replace('backend = "postgres"', 'backend = "postgress"'))
    r = cli("doctor", "--profile", "cluster", cwd=folder)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown backend 'postgress'" in r.stdout + r.stderr
    env = {k: v for k, v in os.environ.items() if k != "MATIH_TEST_DSN"}
    (folder / "matih.toml").write_text(text)
    r = cli("doctor", "--profile", "cluster", "--json", cwd=folder, env=env)
    assert r.returncode == 2
    problems = json.loads(r.stdout)["problems"]
    assert any(p["key"].startswith("profiles.cluster.metadata") and "MATIH_TEST_DSN" in p["message"]
               for p in problems)
