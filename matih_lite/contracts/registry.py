"""The registry part of the metadata slot (filled in by the registry work)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class RegistryStore(Protocol):
    """Methods every metadata backend provides for registry; scoped by tenant like tracking."""
