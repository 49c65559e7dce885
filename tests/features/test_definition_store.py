"""The metadata slot's feature records on SQLite and on the real PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

import os
import uuid

import pytest

from matih_lite.contracts import BackendContext
from matih_lite.testing.features import FeatureDefinitionStoreContract

PG_DSNS = ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test")


class TestSqliteFeatureRecords(FeatureDefinitionStoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        from matih_lite.builtin.sqlite_store import SqliteSettings, create_store

        store = create_store(SqliteSettings(path=str(tmp_path / "m.db")),
                             BackendContext(home=tmp_path, base_dir=tmp_path, profile="lite"))
        yield store
        store.close()


@pytest.fixture(scope="module")
def pg_dsn():
    from matih_lite.testing.processes import engine_missing

    try:
        import matih_postgres  # noqa: F401
        import psycopg
    except ImportError as exc:
        engine_missing(f"matih-postgres is not installed ({exc}); pip install -e backends/postgres")
    explicit = os.environ.get("MATIH_TEST_PG_DSN")
    for dsn in (explicit,) if explicit else PG_DSNS:
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
            return dsn
        except psycopg.Error:
            continue
    engine_missing("PostgreSQL is not reachable at 127.0.0.1:5432 (or MATIH_TEST_PG_DSN)")


@pytest.mark.postgres
class TestPostgresFeatureRecords(FeatureDefinitionStoreContract):
    @pytest.fixture
    def store(self, pg_dsn, tmp_path):
        import psycopg
        from matih_postgres.plugin import PostgresSettings, create_store
        from psycopg import sql

        schema = f"matih_test_{uuid.uuid4().hex[:8]}"
        store = create_store(PostgresSettings(dsn=pg_dsn, schema=schema),
                             BackendContext(home=tmp_path, base_dir=tmp_path, profile="cluster"))
        yield store
        store.close()
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
