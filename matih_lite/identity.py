"""Who is acting: the principal every domain call is made for (tenant, user, roles)."""

from __future__ import annotations

import msgspec

DEFAULT_TENANT = "default"
ROLES = ("viewer", "editor", "owner", "lead", "admin")
"""From least to most; ``admin`` may do everything in its tenant."""


class Principal(msgspec.Struct, frozen=True):
    tenant: str
    user: str
    roles: tuple[str, ...] = ()

    def has(self, *roles: str) -> bool:
        """Whether the principal holds any of ``roles`` (admins hold every role)."""
        return "admin" in self.roles or any(r in self.roles for r in roles)


LOCAL_ADMIN = Principal(DEFAULT_TENANT, "local", ("admin",))
"""The one user of a lite service running without auth on loopback."""
