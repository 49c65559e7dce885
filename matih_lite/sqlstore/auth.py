"""The auth part of the metadata contract over SQL: tenants, users, tokens (hashes only)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from matih_lite.contracts.auth import Credential, Tenant, Token, User
from matih_lite.errors import Conflict, NotFound
from matih_lite.sqlstore.scope import EVERY_TENANT, OWNED, Join, ScopedStore, Shared

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (3, "auth", [
        """CREATE TABLE tenants (
            name {text} PRIMARY KEY,
            description {text} NOT NULL DEFAULT '',
            created_at {bigint} NOT NULL)""",
        """CREATE TABLE users (
            tenant {text} NOT NULL REFERENCES tenants (name) ON DELETE CASCADE,
            name {text} NOT NULL,
            roles {text} NOT NULL,
            created_at {bigint} NOT NULL,
            disabled {bigint} NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant, name))""",
        """CREATE TABLE tokens (
            token_id {text} PRIMARY KEY,
            tenant {text} NOT NULL,
            user_name {text} NOT NULL,
            token_hash {text} NOT NULL UNIQUE,
            name {text} NOT NULL DEFAULT '',
            description {text} NOT NULL DEFAULT '',
            created_at {bigint} NOT NULL,
            expires_at {bigint},
            last_used_at {bigint},
            revoked {bigint} NOT NULL DEFAULT 0,
            FOREIGN KEY (tenant, user_name) REFERENCES users (tenant, name) ON DELETE CASCADE)""",
        "CREATE INDEX tokens_by_user ON tokens (tenant, user_name, created_at)",
    ]),
]
"""Schema for auth: version 3. (300-349 are the logged models' now, sqlstore/logged_models.py; later auth
changes take 350-399.)"""

TABLES = {
    "tenants": Shared("the tenants themselves"),
    "users": OWNED,
    "tokens": OWNED,
}

_USER_COLUMNS = "tenant, name, roles, created_at, disabled"
_TOKEN_COLUMNS = ("token_id, tenant, user_name, created_at, name, description, expires_at, last_used_at, "
                  "revoked")
_CREDENTIAL_COLUMNS = ", ".join(f"t.{c.strip()}" for c in _TOKEN_COLUMNS.split(",")) + ", u.roles, u.created_at, u.disabled"
_TOKEN_USER = (Join("users", "u", "u.tenant = t.tenant AND u.name = t.user_name"),)


def _user(row: Sequence[Any]) -> User:
    return User(row[0], row[1], tuple(json.loads(row[2])), int(row[3]), bool(row[4]))


def _token(row: Sequence[Any]) -> Token:
    return Token(row[0], row[1], row[2], int(row[3]), row[4], row[5],
                 None if row[6] is None else int(row[6]), None if row[7] is None else int(row[7]), bool(row[8]))


class SqlAuthStore(ScopedStore):
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db`` and ``self._q``."""

    db: Any
    _q: Any

    # ---- tenants ------------------------------------------------------------------------------
    def create_tenant(self, name: str, *, created_at: int, description: str = "") -> Tenant:
        def run(cur: Any) -> None:
            cur.execute(self._q("SELECT 1 FROM tenants WHERE name = ?"), (name,))
            if cur.fetchone():
                raise Conflict(f"tenant {name!r} already exists")
            cur.execute(self._q("INSERT INTO tenants (name, description, created_at) VALUES (?, ?, ?)"),
                        (name, description, created_at))

        self.db.write(run)
        return Tenant(name, created_at, description)

    def get_tenant(self, name: str) -> Tenant:
        with self.db.read() as cur:
            cur.execute(self._q("SELECT name, created_at, description FROM tenants WHERE name = ?"), (name,))
            row = cur.fetchone()
        if row is None:
            raise NotFound(f"tenant {name!r} does not exist")
        return Tenant(row[0], int(row[1]), row[2])

    def list_tenants(self) -> list[Tenant]:
        with self.db.read() as cur:
            cur.execute("SELECT name, created_at, description FROM tenants ORDER BY name")
            return [Tenant(r[0], int(r[1]), r[2]) for r in cur.fetchall()]

    # ---- users --------------------------------------------------------------------------------
    def create_user(self, tenant: str, name: str, *, roles: Sequence[str], created_at: int) -> User:
        def run(cur: Any) -> None:
            cur.execute(self._q("SELECT 1 FROM tenants WHERE name = ?"), (tenant,))
            if not cur.fetchone():
                raise NotFound(f"tenant {tenant!r} does not exist")
            mine = self.scoped(cur, tenant)
            if mine.exists("users", "name = ?", (name,)):
                raise Conflict(f"user {name!r} already exists in tenant {tenant!r}")
            mine.insert("users", {"name": name, "roles": json.dumps(list(roles)), "created_at": created_at,
                                  "disabled": 0})

        self.db.write(run)
        return User(tenant, name, tuple(roles), created_at, False)

    def get_user(self, tenant: str, name: str) -> User:
        with self.db.read() as cur:
            row = self.scoped(cur, tenant).first("users", _USER_COLUMNS, "name = ?", (name,))
        if row is None:
            raise NotFound(f"user {name!r} does not exist")
        return _user(row)

    def list_users(self, tenant: str) -> list[User]:
        with self.db.read() as cur:
            return [_user(r) for r in self.scoped(cur, tenant).select("users", _USER_COLUMNS, order="name")]

    def update_user(self, tenant: str, name: str, *, roles: Sequence[str] | None = None,
                    disabled: bool | None = None) -> User:
        def run(cur: Any) -> None:
            mine = self.scoped(cur, tenant)
            if not mine.exists("users", "name = ?", (name,)):
                raise NotFound(f"user {name!r} does not exist")
            if roles is not None:
                mine.update("users", "roles = ?", (json.dumps(list(roles)),), "name = ?", (name,))
            if disabled is not None:
                mine.update("users", "disabled = ?", (1 if disabled else 0,), "name = ?", (name,))

        self.db.write(run)
        return self.get_user(tenant, name)

    # ---- tokens -------------------------------------------------------------------------------
    def create_token(self, tenant: str, user: str, *, token_id: str, token_hash: str, created_at: int,
                     name: str = "", description: str = "", expires_at: int | None = None) -> Token:
        def run(cur: Any) -> None:
            mine = self.scoped(cur, tenant)
            if not mine.exists("users", "name = ?", (user,)):
                raise NotFound(f"user {user!r} does not exist")
            # Ids and secrets are unique across tenants: a token is looked up by its hash alone.
            if self.scoped(cur, EVERY_TENANT).exists("tokens", "token_id = ? OR token_hash = ?", (token_id, token_hash)):
                raise Conflict(f"token {token_id!r} already exists")
            mine.insert("tokens", {"token_id": token_id, "user_name": user, "token_hash": token_hash, "name": name,
                                   "description": description, "created_at": created_at, "expires_at": expires_at,
                                   "last_used_at": None, "revoked": 0})

        self.db.write(run)
        return Token(token_id, tenant, user, created_at, name, description, expires_at, None, False)

    def get_token(self, tenant: str, token_id: str) -> Token:
        with self.db.read() as cur:
            row = self.scoped(cur, tenant).first("tokens", _TOKEN_COLUMNS, "token_id = ?", (token_id,))
        if row is None:
            raise NotFound(f"token {token_id!r} does not exist")
        return _token(row)

    def list_tokens(self, tenant: str, *, user: str | None = None) -> list[Token]:
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("tokens", _TOKEN_COLUMNS, "user_name = ?" if user is not None else "",
                                                   (user,) if user is not None else (),
                                                   order="created_at DESC, token_id")
        return [_token(r) for r in rows]

    def revoke_token(self, tenant: str, token_id: str) -> Token:
        def run(cur: Any) -> None:
            if self.scoped(cur, tenant).update("tokens", "revoked = 1", (), "token_id = ?", (token_id,)) == 0:
                raise NotFound(f"token {token_id!r} does not exist")

        self.db.write(run)
        return self.get_token(tenant, token_id)

    def find_token(self, token_hash: str) -> Credential | None:
        with self.db.read() as cur:
            # Every tenant's: the hash of the secret is what says whose token it is.
            row = self.scoped(cur, EVERY_TENANT).first("tokens", _CREDENTIAL_COLUMNS, "t.token_hash = ?", (token_hash,),
                                                       alias="t", joins=_TOKEN_USER)
        if row is None:
            return None
        token = _token(row[:9])
        return Credential(token, _user((token.tenant, token.user, row[9], row[10], row[11])))

    def touch_token(self, token_id: str, last_used_at: int) -> None:
        def run(cur: Any) -> None:
            # Called with the id a hash lookup found, of whichever tenant (token ids are unique across them).
            self.scoped(cur, EVERY_TENANT).update("tokens", "last_used_at = ?", (last_used_at,), "token_id = ?",
                                                  (token_id,))

        self.db.write(run)
