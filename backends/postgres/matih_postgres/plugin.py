"""``metadata = { backend = "postgres", dsn = "..." }``: the metadata slot in PostgreSQL (psycopg 3).

The queries and the schema are matih-lite's (:mod:`matih_lite.sqlstore`), shared with the
SQLite backend; this module only connects. Every connection is in autocommit mode (the
:class:`~matih_lite.sqlstore.database.Database` issues ``BEGIN``/``COMMIT`` itself) with
``search_path`` set to the configured schema, which is created if missing.

psycopg is imported only when the store is built, never when settings are validated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Any

import msgspec

from matih_lite.contracts import BackendContext
from matih_lite.hookspecs import hookimpl
from matih_lite.sqlstore.database import POSTGRES, Database, Dialect

RETRYABLE_SQLSTATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected (e.g. two log_batch calls upserting the same tags in another order)
    "55P03",  # lock_not_available (lock_timeout)
})
"""Errors after which the whole write transaction may simply run again."""

UNIQUE_VIOLATION = "23505"
UNIQUE_RACE_ATTEMPTS = 3
"""A write that fails on a unique key runs this many times in all (see PostgresDatabase.write)."""


class PostgresSettings(msgspec.Struct, forbid_unknown_fields=True):
    dsn: str
    """libpq connection string or URI, e.g. ``postgresql://matih:${PGPASSWORD}@db:5432/matih``."""
    schema: Annotated[str, msgspec.Meta(min_length=1, max_length=63)] = "public"
    """Schema holding the tables (created if missing); one matih-lite installation per schema."""
    connect_timeout: Annotated[int, msgspec.Meta(ge=1)] = 10
    """Seconds to wait for a connection (overrides ``connect_timeout`` in the DSN)."""
    application_name: str = "matih-lite"
    """What ``pg_stat_activity`` shows for these connections."""
    statement_timeout_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Cancel a statement running longer than this; 0 keeps the server's setting."""
    retry_seconds: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    """How long a write is retried after a deadlock or serialization failure."""


def _is_retryable(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES


class _Deadlock(Exception):
    sqlstate = "40P01"


# matih_lite's POSTGRES.is_locked says False to everything, so Database.write would never
# retry a deadlock; until the core dialect recognises these errors, use a copy that does.
# The name stays "postgres", which is what the queries switch on (ILIKE, OFFSET).
DIALECT: Dialect = POSTGRES if POSTGRES.is_locked(_Deadlock()) else replace(POSTGRES, is_locked=_is_retryable)


def _lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory-lock key for migrating one schema."""
    digest = hashlib.sha256(f"matih_lite.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresDatabase(Database):
    """A :class:`Database` that replaces a connection the server closed, and migrates under a lock."""

    def __init__(self, connect: Any, dialect: Dialect, *, schema: str, **kwargs: Any) -> None:
        super().__init__(connect, dialect, **kwargs)
        self.schema = schema

    def connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken):
            # The server went away (restart, failover, idle kill): forget this connection so the
            # call reconnects instead of failing forever. A write that was cut off is not
            # retried here: whether its COMMIT arrived is unknown.
            self._local.conn = None
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            try:
                conn.close()
            except Exception:
                pass
        return super().connection()

    def write(self, fn: Any) -> Any:
        """``Database.write``, run again (twice at most) when it lost a race on a unique key.

        The stores check before they insert (``experiment 'x' already exists``, params are
        write-once). SQLite's ``BEGIN IMMEDIATE`` makes check and insert one step; here two
        transactions may both pass the check, and the second insert then fails on the unique
        index once the first commits. Running the transaction again repeats the check, which now
        sees the committed row and answers as the store means to (Conflict, or nothing to do).
        """
        from matih_lite.errors import StoreError

        for attempt in range(UNIQUE_RACE_ATTEMPTS):
            try:
                return super().write(fn)
            except StoreError as exc:
                lost_race = getattr(exc.__cause__, "sqlstate", None) == UNIQUE_VIOLATION
                if not lost_race or attempt == UNIQUE_RACE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def migrate(self, migrations: Sequence[tuple[int, str, Sequence[str]]]) -> list[int]:
        """Create the schema if missing and apply migrations, one process at a time.

        Two services starting against a fresh schema would otherwise both run the DDL and one
        would fail (``relation already exists`` or a duplicate key in ``pg_type``). The session
        advisory lock is taken on this thread's connection, the one ``Database.migrate`` uses.
        """
        from psycopg import sql

        from matih_lite.errors import StoreError

        conn = self.connection()
        key = _lock_key(self.schema)
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        except self._errors as exc:
            raise StoreError(f"postgres: cannot lock the schema for migration: {exc}") from exc
        try:
            try:
                found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone()
                if not found:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            except self._errors as exc:
                raise StoreError(f"postgres: cannot create schema {self.schema!r}: {exc}") from exc
            return super().migrate(migrations)
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except Exception:  # a broken connection released the lock with its session
                pass


def open_database(settings: PostgresSettings) -> PostgresDatabase:
    """A :class:`PostgresDatabase` for the settings; nothing is connected until first use."""
    import psycopg
    from psycopg import sql

    set_path = sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.schema))

    def connect() -> psycopg.Connection:
        conn = psycopg.connect(settings.dsn, autocommit=True, connect_timeout=settings.connect_timeout,
                               application_name=settings.application_name)
        try:
            conn.execute(set_path)
            if settings.statement_timeout_ms:
                conn.execute("SELECT set_config('statement_timeout', %s, false)",
                             (f"{int(settings.statement_timeout_ms)}ms",))
        except BaseException:
            conn.close()
            raise
        return conn

    return PostgresDatabase(connect, DIALECT, schema=settings.schema, driver_errors=(psycopg.Error,),
                            retry_seconds=settings.retry_seconds)


def create_store(settings: PostgresSettings, context: BackendContext):
    """The factory: connect, create the schema if missing, migrate, return the metadata store. Opened to look
    only (``context.migrate`` False: ``doctor``), it creates and changes nothing."""
    from matih_lite.sqlstore.metadata import SqlMetadataStore
    from matih_lite.sqlstore.schema import MIGRATIONS

    db = open_database(settings)
    try:
        if context.migrate:
            db.migrate(MIGRATIONS)
        info = db.connection().info
    except BaseException:
        db.close()
        raise
    store = SqlMetadataStore(db)
    # host, port and database only: the DSN's password never reaches this string.
    location = f"postgresql://{info.host}:{info.port}/{info.dbname} (schema {settings.schema})"
    store.location = location  # type: ignore[attr-defined]
    return store


@hookimpl
def register_backends(register):
    register("metadata", "postgres", create_store, settings=PostgresSettings,
             summary="PostgreSQL (psycopg 3); the cluster metadata store")
