"""Promote tests: a lite folder with records in every kind of table, and a cluster profile on real servers.

PostgreSQL comes from ``MATIH_TEST_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``);
each test gets a fresh schema, dropped afterwards. Without a server the tests skip (fail under CI=true).
"""

from __future__ import annotations

import os
import uuid

import pytest

from matih_lite.testing.processes import engine_missing

DEFAULT_DSNS = ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test")



@pytest.fixture(scope="session")
def pg_dsn() -> str:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        engine_missing(f"psycopg is not installed ({exc}); pip install -e backends/postgres")
    explicit = os.environ.get("MATIH_TEST_PG_DSN")
    errors = []
    for dsn in ((explicit,) if explicit else DEFAULT_DSNS):
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
            return dsn
        except psycopg.Error as exc:
            errors.append(str(exc).strip())
    engine_missing("PostgreSQL is not reachable: " + "; ".join(errors))


@pytest.fixture
def pg_schema(pg_dsn):
    """A fresh schema name (the backend creates it), dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"matih_promote_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def folder(tmp_path, monkeypatch, pg_dsn, pg_schema):
    """A working folder whose matih.toml has the lite profile and a cluster profile on PostgreSQL."""
    for var in ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MATIH_TEST_DSN", pg_dsn)
    (tmp_path / "matih.toml").write_text(
        "[profiles.lite]\n"
        'metadata = { backend = "sqlite" }\n'
        'artifacts = { backend = "local" }\n'
        "[profiles.cluster]\n"
        f'metadata = {{ backend = "postgres", dsn = "${{MATIH_TEST_DSN}}", schema = "{pg_schema}" }}\n'
        'artifacts = { backend = "local", root = "cluster-artifacts" }\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path
