"""The lineage part of the metadata slot (filled in by the lineage work)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class LineageStore(Protocol):
    """Methods every metadata backend provides for lineage; scoped by tenant like tracking."""
