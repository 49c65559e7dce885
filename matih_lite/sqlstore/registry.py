"""The registry part of the metadata contract over SQL."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = []
"""Schema for registry: version 2 (and 2 to 2.x by convention, e.g. 201, 202 for later changes)."""


class SqlRegistryStore:
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db`` and ``self._q``."""
