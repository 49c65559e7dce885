"""The metadata contract written once over SQL, for every SQL backend (SQLite, PostgreSQL).

A backend supplies a :class:`Database` (how to connect, which dialect); the stores here
hold the queries. Filters arrive parsed (:mod:`matih_lite.contracts.search`) and every value
is bound as a parameter: no user text is ever pasted into SQL.
"""

from matih_lite.sqlstore.database import Database, Dialect
from matih_lite.sqlstore.metadata import SqlMetadataStore
from matih_lite.sqlstore.tracking import SqlTrackingStore

__all__ = ["Database", "Dialect", "SqlMetadataStore", "SqlTrackingStore"]
