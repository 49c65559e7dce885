"""The leases part of the metadata contract over SQL: one row per lease, taken with one upsert.

``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE`` (PostgreSQL, and SQLite since 3.24) takes a
free or expired lease, or renews the caller's own, in one statement that the engine makes atomic;
the row count says whether it did.
"""

from __future__ import annotations

from typing import Any

from matih_lite.contracts.clock import now_ms
from matih_lite.errors import InvalidInput
from matih_lite.sqlstore.scope import Shared

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (500, "leases", [
        """CREATE TABLE leases (
            name {text} PRIMARY KEY,
            holder {text} NOT NULL,
            expires_at {bigint} NOT NULL,
            acquired_at {bigint} NOT NULL)""",
    ]),
]
"""Schema for leases: version 500."""

TABLES = {"leases": Shared("platform-wide duties, not one tenant's data")}

_TAKE = ("INSERT INTO leases (name, holder, expires_at, acquired_at) VALUES (?, ?, ?, ?) "
         "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, "
         "acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at "
         "ELSE excluded.acquired_at END "
         "WHERE leases.holder = excluded.holder OR leases.expires_at <= ?")


def _check(name: Any, holder: Any) -> None:
    for what, value in (("lease name", name), ("lease holder", holder)):
        if not isinstance(value, str) or not value or len(value) > 200:
            raise InvalidInput(f"{what} must be a non-empty string of at most 200 characters, got {value!r}")


class SqlLeaseStore:
    """The :class:`~matih_lite.contracts.leases.LeaseStore` contract (mixed into the SQL metadata store)."""

    db: Any
    _q: Any

    def acquire_lease(self, name: str, holder: str, ttl_ms: int, *, now: int | None = None) -> bool:
        _check(name, holder)
        if not isinstance(ttl_ms, int) or isinstance(ttl_ms, bool) or ttl_ms <= 0:
            raise InvalidInput(f"lease ttl_ms must be a positive integer, got {ttl_ms!r}")
        at = now_ms() if now is None else int(now)
        sql = self._q(_TAKE)

        def run(cur: Any) -> bool:
            cur.execute(sql, (name, holder, at + ttl_ms, at, at))
            return cur.rowcount == 1

        return self.db.write(run)

    def release_lease(self, name: str, holder: str) -> None:
        _check(name, holder)
        sql = self._q("DELETE FROM leases WHERE name = ? AND holder = ?")
        self.db.write(lambda cur: cur.execute(sql, (name, holder)))

    def lease_holder(self, name: str, *, now: int | None = None) -> str | None:
        at = now_ms() if now is None else int(now)
        with self.db.read() as cur:
            cur.execute(self._q("SELECT holder FROM leases WHERE name = ? AND expires_at > ?"), (name, at))
            row = cur.fetchone()
        return row[0] if row else None
