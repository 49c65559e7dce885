"""The auth part of the metadata slot (filled in by the auth work)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class AuthStore(Protocol):
    """Methods every metadata backend provides for auth; scoped by tenant like tracking."""
