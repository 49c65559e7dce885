"""``metadata = { backend = "sqlite" }``: the metadata slot in one SQLite file (WAL, migrations).

The SQL is shared with the PostgreSQL backend (:mod:`matih_lite.sqlstore`), so this module talks
DB-API through the standard ``sqlite3`` driver and only sets SQLite's pragmas.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from matih_lite.contracts import BackendContext
from matih_lite.hookspecs import hookimpl


class SqliteSettings(msgspec.Struct, forbid_unknown_fields=True):
    path: str | None = None
    """Database file; default ``<home>/matih.db``. Relative paths resolve against matih.toml's folder."""
    busy_timeout_ms: int = 30_000
    """How long a writer waits for another process's lock before retrying."""


def open_database(path: Path, busy_timeout_ms: int = 30_000):
    """A :class:`~matih_lite.sqlstore.Database` over a SQLite file, migrated to the current schema."""
    from matih_lite.sqlstore.database import SQLITE, Database

    path.parent.mkdir(parents=True, exist_ok=True)

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               timeout=busy_timeout_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes in WAL mode
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA case_sensitive_like = ON")  # LIKE as MLflow (and PostgreSQL) mean it
        return conn

    first = connect()
    # WAL lets readers run beside one writer, and survives a killed process without losing
    # committed writes. (sqlite-utils' enable_wal does the same, but importing sqlite_utils
    # pulls in pandas: 0.8 s on every start.)
    mode = first.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    first.close()
    if mode.lower() != "wal":
        from matih_lite.errors import StoreError

        raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r}); is the file on a network share?")
    db = Database(connect, SQLITE, driver_errors=(sqlite3.Error,))
    return db


def _nothing_yet():
    """An empty database in memory, standing for a file that does not exist yet: it reports an empty schema."""
    from matih_lite.sqlstore.database import SQLITE, Database

    return Database(lambda: sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False), SQLITE,
                    driver_errors=(sqlite3.Error,))


def create_store(settings: SqliteSettings, context: BackendContext):
    from matih_lite.sqlstore.metadata import SqlMetadataStore
    from matih_lite.sqlstore.schema import MIGRATIONS

    path = context.resolve(settings.path) if settings.path else context.home / "matih.db"
    if not context.migrate and not path.exists():
        db = _nothing_yet()  # looking only (doctor): no file is made where none is
    else:
        db = open_database(path, settings.busy_timeout_ms)
    if context.migrate:
        db.migrate(MIGRATIONS)
    store = SqlMetadataStore(db)
    store.location = str(path)  # type: ignore[attr-defined]
    return store


@hookimpl
def register_backends(register):
    register("metadata", "sqlite", create_store, settings=SqliteSettings,
             summary="one SQLite file (WAL); the lite default")
