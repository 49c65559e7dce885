"""Who is asking: the principal every controller scopes its work by.

Without auth (lite on loopback) the service runs as one local admin in the ``default``
tenant; with auth, the bearer token names the principal.
"""

from __future__ import annotations

from litestar import Request

from matih_lite.identity import DEFAULT_TENANT, LOCAL_ADMIN, Principal

__all__ = ["DEFAULT_TENANT", "LOCAL_ADMIN", "Principal", "principal"]


def principal(request: Request) -> Principal:
    """The caller (provided to handlers as ``principal``)."""
    return request.scope.get("matih_principal") or LOCAL_ADMIN  # type: ignore[return-value]
