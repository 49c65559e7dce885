"""The lineage part of the metadata contract over SQL."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = []
"""Schema for lineage: version 4 (and 4 to 4.x by convention, e.g. 401, 402 for later changes)."""


class SqlLineageStore:
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db`` and ``self._q``."""
