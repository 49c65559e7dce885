"""The auth part of the metadata contract over SQL: tenants, users, tokens (hashes only)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from matih_lite.contracts.auth import Credential, Tenant, Token, User
from matih_lite.errors import Conflict, NotFound

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
"""Schema for auth: version 3 (and 3 to 3.x by convention, e.g. 301, 302 for later changes)."""

_USER_COLUMNS = "tenant, name, roles, created_at, disabled"
_TOKEN_COLUMNS = ("token_id, tenant, user_name, created_at, name, description, expires_at, last_used_at, "
                  "revoked")


def _user(row: Sequence[Any]) -> User:
    return User(row[0], row[1], tuple(json.loads(row[2])), int(row[3]), bool(row[4]))


def _token(row: Sequence[Any]) -> Token:
    return Token(row[0], row[1], row[2], int(row[3]), row[4], row[5],
                 None if row[6] is None else int(row[6]), None if row[7] is None else int(row[7]), bool(row[8]))


class SqlAuthStore:
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
            cur.execute(self._q("SELECT 1 FROM users WHERE tenant = ? AND name = ?"), (tenant, name))
            if cur.fetchone():
                raise Conflict(f"user {name!r} already exists in tenant {tenant!r}")
            cur.execute(self._q("INSERT INTO users (tenant, name, roles, created_at, disabled) "
                                "VALUES (?, ?, ?, ?, 0)"), (tenant, name, json.dumps(list(roles)), created_at))

        self.db.write(run)
        return User(tenant, name, tuple(roles), created_at, False)

    def get_user(self, tenant: str, name: str) -> User:
        with self.db.read() as cur:
            cur.execute(self._q(f"SELECT {_USER_COLUMNS} FROM users WHERE tenant = ? AND name = ?"), (tenant, name))
            row = cur.fetchone()
        if row is None:
            raise NotFound(f"user {name!r} does not exist")
        return _user(row)

    def list_users(self, tenant: str) -> list[User]:
        with self.db.read() as cur:
            cur.execute(self._q(f"SELECT {_USER_COLUMNS} FROM users WHERE tenant = ? ORDER BY name"), (tenant,))
            return [_user(r) for r in cur.fetchall()]

    def update_user(self, tenant: str, name: str, *, roles: Sequence[str] | None = None,
                    disabled: bool | None = None) -> User:
        def run(cur: Any) -> None:
            cur.execute(self._q("SELECT 1 FROM users WHERE tenant = ? AND name = ?"), (tenant, name))
            if not cur.fetchone():
                raise NotFound(f"user {name!r} does not exist")
            if roles is not None:
                cur.execute(self._q("UPDATE users SET roles = ? WHERE tenant = ? AND name = ?"),
                            (json.dumps(list(roles)), tenant, name))
            if disabled is not None:
                cur.execute(self._q("UPDATE users SET disabled = ? WHERE tenant = ? AND name = ?"),
                            (1 if disabled else 0, tenant, name))

        self.db.write(run)
        return self.get_user(tenant, name)

    # ---- tokens -------------------------------------------------------------------------------
    def create_token(self, tenant: str, user: str, *, token_id: str, token_hash: str, created_at: int,
                     name: str = "", description: str = "", expires_at: int | None = None) -> Token:
        def run(cur: Any) -> None:
            cur.execute(self._q("SELECT 1 FROM users WHERE tenant = ? AND name = ?"), (tenant, user))
            if not cur.fetchone():
                raise NotFound(f"user {user!r} does not exist")
            cur.execute(self._q("SELECT 1 FROM tokens WHERE token_id = ? OR token_hash = ?"), (token_id, token_hash))
            if cur.fetchone():
                raise Conflict(f"token {token_id!r} already exists")
            cur.execute(self._q(
                "INSERT INTO tokens (token_id, tenant, user_name, token_hash, name, description, created_at, "
                "expires_at, last_used_at, revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 0)"),
                (token_id, tenant, user, token_hash, name, description, created_at, expires_at))

        self.db.write(run)
        return Token(token_id, tenant, user, created_at, name, description, expires_at, None, False)

    def get_token(self, tenant: str, token_id: str) -> Token:
        with self.db.read() as cur:
            cur.execute(self._q(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE tenant = ? AND token_id = ?"),
                        (tenant, token_id))
            row = cur.fetchone()
        if row is None:
            raise NotFound(f"token {token_id!r} does not exist")
        return _token(row)

    def list_tokens(self, tenant: str, *, user: str | None = None) -> list[Token]:
        where, params = "tenant = ?", [tenant]
        if user is not None:
            where += " AND user_name = ?"
            params.append(user)
        with self.db.read() as cur:
            cur.execute(self._q(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE {where} "
                                "ORDER BY created_at DESC, token_id"), tuple(params))
            return [_token(r) for r in cur.fetchall()]

    def revoke_token(self, tenant: str, token_id: str) -> Token:
        def run(cur: Any) -> None:
            cur.execute(self._q("UPDATE tokens SET revoked = 1 WHERE tenant = ? AND token_id = ?"), (tenant, token_id))
            if cur.rowcount == 0:
                raise NotFound(f"token {token_id!r} does not exist")

        self.db.write(run)
        return self.get_token(tenant, token_id)

    def find_token(self, token_hash: str) -> Credential | None:
        cols = ", ".join(f"t.{c.strip()}" for c in _TOKEN_COLUMNS.split(","))
        with self.db.read() as cur:
            cur.execute(self._q(
                f"SELECT {cols}, u.roles, u.created_at, u.disabled FROM tokens t "
                "JOIN users u ON u.tenant = t.tenant AND u.name = t.user_name WHERE t.token_hash = ?"),
                (token_hash,))
            row = cur.fetchone()
        if row is None:
            return None
        token = _token(row[:9])
        return Credential(token, _user((token.tenant, token.user, row[9], row[10], row[11])))

    def touch_token(self, token_id: str, last_used_at: int) -> None:
        def run(cur: Any) -> None:
            cur.execute(self._q("UPDATE tokens SET last_used_at = ? WHERE token_id = ?"), (last_used_at, token_id))

        self.db.write(run)
