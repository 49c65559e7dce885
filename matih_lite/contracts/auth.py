"""The auth part of the metadata slot: tenants, their users and the users' API tokens.

A token is stored as the SHA-256 of its secret, never the secret; :meth:`AuthStore.find_token`
looks one up by that hash (one indexed query, the hot path of every authenticated request).
Roles are stored as given; which roles exist and what they allow is the auth domain's
business (:mod:`matih_lite.auth`), not the store's. Timestamps are milliseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec


class Tenant(msgspec.Struct, frozen=True):
    name: str
    created_at: int
    description: str = ""


class User(msgspec.Struct, frozen=True):
    tenant: str
    name: str
    roles: tuple[str, ...]
    created_at: int
    disabled: bool = False


class Token(msgspec.Struct, frozen=True):
    """A token's record: everything but the secret, which is shown once and never kept."""

    token_id: str
    tenant: str
    user: str
    created_at: int
    name: str = ""
    description: str = ""
    expires_at: int | None = None
    last_used_at: int | None = None
    revoked: bool = False


class Credential(msgspec.Struct, frozen=True):
    """What a token hash resolves to: the token and its user, read together."""

    token: Token
    user: User


@runtime_checkable
class AuthStore(Protocol):
    """Methods every metadata backend provides for auth; users and tokens are scoped by tenant."""

    def create_tenant(self, name: str, *, created_at: int, description: str = "") -> Tenant:
        """A new tenant. Raises Conflict if the name is taken."""

    def get_tenant(self, name: str) -> Tenant:
        """Raises NotFound."""

    def list_tenants(self) -> list[Tenant]:
        """Every tenant, by name."""

    def create_user(self, tenant: str, name: str, *, roles: Sequence[str], created_at: int) -> User:
        """A new enabled user. Raises NotFound for the tenant, Conflict if the tenant has that user."""

    def get_user(self, tenant: str, name: str) -> User:
        """Raises NotFound (also for a user of another tenant)."""

    def list_users(self, tenant: str) -> list[User]:
        """The tenant's users, by name (an unknown tenant has none)."""

    def update_user(self, tenant: str, name: str, *, roles: Sequence[str] | None = None,
                    disabled: bool | None = None) -> User:
        """Change roles or the disabled flag. Raises NotFound."""

    def create_token(self, tenant: str, user: str, *, token_id: str, token_hash: str, created_at: int,
                     name: str = "", description: str = "", expires_at: int | None = None) -> Token:
        """Record a token by the hash of its secret. Raises NotFound for the user, Conflict on a reused id or hash."""

    def get_token(self, tenant: str, token_id: str) -> Token:
        """Raises NotFound (also for a token of another tenant)."""

    def list_tokens(self, tenant: str, *, user: str | None = None) -> list[Token]:
        """The tenant's tokens (revoked ones too), newest first; only ``user``'s when given."""

    def revoke_token(self, tenant: str, token_id: str) -> Token:
        """Mark a token revoked (revoking twice is harmless). Raises NotFound."""

    def find_token(self, token_hash: str) -> Credential | None:
        """The token with this secret hash and its user, in any tenant; None when there is none."""

    def touch_token(self, token_id: str, last_used_at: int) -> None:
        """Record when a token was last used (an unknown id is ignored)."""
