"""Connections, transactions and migrations, the same calls over sqlite3 and psycopg."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from matih_lite.errors import StoreError

log = logging.getLogger("matih_lite.sqlstore")


@dataclass(frozen=True)
class Dialect:
    """What differs between SQL engines, as far as our queries go."""

    name: str
    placeholder: str  # "?" (sqlite3) or "%s" (psycopg)
    types: dict[str, str]  # names used in DDL templates -> the engine's types
    is_locked: Callable[[BaseException], bool] = lambda exc: False

    def sql(self, text: str) -> str:
        """Our queries are written with ``?``; this swaps in the engine's placeholder."""
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def ddl(self, text: str) -> str:
        return text.format(**self.types)


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    types={"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "bigint": "INTEGER", "double": "REAL", "text": "TEXT"},
    is_locked=lambda exc: "locked" in str(exc) or "busy" in str(exc),
)

POSTGRES = Dialect(
    name="postgres",
    placeholder="%s",
    # COLLATE "C": text sorts by code point and ILIKE folds ASCII only, as on SQLite, whatever
    # the database's default collation is.
    types={"serial": "BIGSERIAL PRIMARY KEY", "bigint": "BIGINT", "double": "DOUBLE PRECISION",
           "text": 'TEXT COLLATE "C"'},
    # serialization_failure, deadlock_detected, lock_not_available: run the transaction again.
    is_locked=lambda exc: getattr(exc, "sqlstate", None) in ("40001", "40P01", "55P03"),
)


class Database:
    """Per-thread connections from ``connect()`` plus read and write transactions.

    ``connect`` must return a DB-API connection in autocommit mode; writes run inside
    ``BEGIN`` (``BEGIN IMMEDIATE`` on SQLite, so a writer waits for the lock up front
    instead of failing on upgrade) and are retried when the engine reports a lock.
    """

    def __init__(self, connect: Callable[[], Any], dialect: Dialect, *, driver_errors: tuple[type, ...] = (),
                 retry_seconds: float = 60.0) -> None:
        self._connect = connect
        self.dialect = dialect
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._errors = driver_errors
        self._retry_seconds = retry_seconds

    def connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and (getattr(conn, "closed", False) or getattr(conn, "broken", False)):
            # The server dropped it (restart, failover): forget it and connect again.
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            conn = self._local.conn = None
        if conn is None:
            try:
                conn = self._connect()
            except self._errors as exc:
                raise StoreError(f"cannot connect to the {self.dialect.name} metadata store: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A cursor for queries; each statement sees committed data."""
        cur = self.connection().cursor()
        try:
            yield cur
        except self._errors as exc:
            raise StoreError(f"{self.dialect.name} query failed: {exc}") from exc
        finally:
            cur.close()

    def write(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(cursor)`` in one transaction, retrying on lock contention; returns its result."""
        begin = "BEGIN IMMEDIATE" if self.dialect.name == "sqlite" else "BEGIN"
        deadline = time.monotonic() + self._retry_seconds
        delay = 0.005
        races = 0
        while True:
            conn = self.connection()
            cur = conn.cursor()
            try:
                cur.execute(begin)
                result = fn(cur)
                cur.execute("COMMIT")
                return result
            except BaseException as exc:
                try:
                    cur.execute("ROLLBACK")
                except Exception:  # the transaction may never have begun
                    pass
                if isinstance(exc, self._errors) and self.dialect.is_locked(exc) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.25)
                    continue
                if isinstance(exc, self._errors) and getattr(exc, "sqlstate", None) == "23505" and races < 2:
                    # Lost a check-then-insert race (PostgreSQL does not serialize writers as
                    # BEGIN IMMEDIATE does): run again, and the check now sees the winner's row.
                    races += 1
                    continue
                if isinstance(exc, self._errors):
                    raise StoreError(f"{self.dialect.name} write failed: {exc}") from exc
                raise
            finally:
                cur.close()

    def schema_applied(self) -> int | None:
        """The newest migration recorded in ``_migrations``, or None for an empty database (no such table).
        Reads only: what ``doctor`` and the health check report."""
        with self.read() as cur:
            if self.dialect.name == "sqlite":
                cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'")
            else:  # search_path names the store's schema; a schema that does not exist holds nothing
                cur.execute("SELECT 1 FROM pg_tables WHERE schemaname = current_schema() "
                            "AND tablename = '_migrations'")
            if cur.fetchone() is None:
                return None
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM _migrations")
            return int(cur.fetchone()[0])

    def migrate(self, migrations: Sequence[tuple[int, str, Sequence[str]]]) -> list[int]:
        """Apply the migrations not yet recorded in ``_migrations``; returns the versions applied."""
        d = self.dialect

        def run(cur: Any) -> list[int]:
            if d.name == "postgres":
                # One migrator at a time: concurrent CREATE TABLEs collide in the catalog.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('matih_lite.migrate'))")
            cur.execute(d.ddl("CREATE TABLE IF NOT EXISTS _migrations (version {bigint} PRIMARY KEY, "
                              "name {text} NOT NULL, applied_at {bigint} NOT NULL)"))
            cur.execute("SELECT version FROM _migrations")
            done = {row[0] for row in cur.fetchall()}
            applied = []
            for version, name, statements in migrations:
                if version in done:
                    continue
                for statement in statements:
                    cur.execute(d.ddl(statement))
                cur.execute(d.sql("INSERT INTO _migrations (version, name, applied_at) VALUES (?, ?, ?)"),
                            (version, name, int(time.time() * 1000)))
                applied.append(version)
            return applied

        applied = self.write(run)
        if applied:
            log.info("metadata schema migrated to version %s", applied[-1])
        return applied

    def close(self) -> None:
        """Close this thread's connection and let go of the others.

        Another thread's connection is never closed from here: closing a SQLite connection while
        its thread runs a query crashes the process. Dropped, it closes itself once no cursor of
        that thread holds it any more.
        """
        mine = getattr(self._local, "conn", None)
        with self._lock:
            self._all.clear()
        self._local = threading.local()
        if mine is not None:
            try:
                mine.close()
            except Exception:
                pass
