"""The whole metadata contract over SQL: one class, one mixin per domain."""

from __future__ import annotations

from matih_lite.sqlstore.auth import SqlAuthStore
from matih_lite.sqlstore.deployments import SqlDeploymentStore
from matih_lite.sqlstore.features import SqlFeatureDefinitionStore
from matih_lite.sqlstore.jobs import SqlJobStore
from matih_lite.sqlstore.leases import SqlLeaseStore
from matih_lite.sqlstore.lineage import SqlLineageStore
from matih_lite.sqlstore.logged_models import SqlLoggedModelStore
from matih_lite.sqlstore.metric_series import SqlMetricSeries
from matih_lite.sqlstore.registry import SqlRegistryStore
from matih_lite.sqlstore.traces import SqlTraceStore
from matih_lite.sqlstore.tracking import SqlTrackingStore
from matih_lite.sqlstore.transfer import SqlTableTransfer


class SqlMetadataStore(SqlTrackingStore, SqlRegistryStore, SqlAuthStore, SqlLineageStore, SqlDeploymentStore,
                       SqlJobStore, SqlMetricSeries, SqlFeatureDefinitionStore, SqlLoggedModelStore, SqlTraceStore,
                       SqlLeaseStore, SqlTableTransfer):
    """What the ``sqlite`` and ``postgres`` backends return: tracking (MLflow 3's logged models too), registry,
    auth, lineage, deployments, jobs, feature definitions, traces, leases."""
