"""matih-postgres: the PostgreSQL metadata backend for matih-lite (``metadata = { backend = "postgres" }``).

The queries are matih-lite's own (:mod:`matih_lite.sqlstore`); this package only says how to
connect (psycopg 3, autocommit, one schema) and registers the backend through the
``matih_lite`` entry point.
"""

from matih_postgres.plugin import PostgresSettings, create_store

__all__ = ["PostgresSettings", "create_store"]
__version__ = "0.1.0"
