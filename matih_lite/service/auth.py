"""Who is asking: the principal every controller scopes its work by.

Until tokens arrive (the registry and tenants work), the service runs as one local admin in
the ``default`` tenant, which is only allowed on a loopback bind.
"""

from __future__ import annotations

import msgspec
from litestar import Request

DEFAULT_TENANT = "default"


class Principal(msgspec.Struct, frozen=True):
    tenant: str
    user: str
    roles: tuple[str, ...] = ()


LOCAL_ADMIN = Principal(DEFAULT_TENANT, "local", ("admin",))


def principal(request: Request) -> Principal:
    """The caller (provided to handlers as ``principal``)."""
    return request.scope.get("matih_principal") or LOCAL_ADMIN  # type: ignore[return-value]
