"""The auth part of the metadata contract over SQL."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = []
"""Schema for auth: version 3 (and 3 to 3.x by convention, e.g. 301, 302 for later changes)."""


class SqlAuthStore:
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db`` and ``self._q``."""
