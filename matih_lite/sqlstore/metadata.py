"""The whole metadata contract over SQL: one class, one mixin per domain."""

from __future__ import annotations

from matih_lite.sqlstore.auth import SqlAuthStore
from matih_lite.sqlstore.deployments import SqlDeploymentStore
from matih_lite.sqlstore.jobs import SqlJobStore
from matih_lite.sqlstore.lineage import SqlLineageStore
from matih_lite.sqlstore.registry import SqlRegistryStore
from matih_lite.sqlstore.tracking import SqlTrackingStore


class SqlMetadataStore(SqlTrackingStore, SqlRegistryStore, SqlAuthStore, SqlLineageStore, SqlDeploymentStore,
                       SqlJobStore):
    """What the ``sqlite`` and ``postgres`` backends return: tracking, registry, auth, lineage, deployments, jobs."""
