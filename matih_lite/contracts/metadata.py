"""The metadata slot: experiments, runs, params, metrics and tags (tracking).

Later domains (registry, approvals, deployments, lineage, alerts, tenants and tokens)
add their own protocols here; :class:`MetadataStore` is their union. Every call is
scoped by ``tenant``: a record of another tenant is ``NotFound``, never visible.
Timestamps are integer milliseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from matih_lite.contracts.auth import AuthStore
from matih_lite.contracts.deployments import DeploymentStore
from matih_lite.contracts.features import FeatureDefinitionStore
from matih_lite.contracts.jobs import JobStore
from matih_lite.contracts.leases import LeaseStore
from matih_lite.contracts.lineage import LineageStore
from matih_lite.contracts.logged_models import LoggedModelStore
from matih_lite.contracts.records import Experiment, Health, Metric, Page, Run
from matih_lite.contracts.registry import RegistryStore
from matih_lite.contracts.search import OrderBy, RunFilter
from matih_lite.contracts.traces import TraceStore


@runtime_checkable
class TrackingStore(Protocol):
    def health(self) -> Health:
        """Whether the store answers a trivial query."""

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""

    # experiments ---------------------------------------------------------
    def create_experiment(
        self, tenant: str, name: str, *, description: str = "", artifact_location: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> Experiment:
        """A new active experiment. Raises Conflict if the tenant has one of that name (deleted ones too)."""

    def get_experiment(self, tenant: str, experiment_id: str) -> Experiment:
        """Raises NotFound."""

    def get_experiment_by_name(self, tenant: str, name: str) -> Experiment:
        """Raises NotFound."""

    def search_experiments(
        self, tenant: str, *, lifecycle: str = "active", name_like: str | None = None,
        max_results: int = 1000, page_token: str | None = None,
    ) -> Page[Experiment]:
        """Experiments by creation time, newest first; ``lifecycle`` is active, deleted or all."""

    def update_experiment(
        self, tenant: str, experiment_id: str, *, name: str | None = None, description: str | None = None,
        lifecycle_stage: str | None = None,
    ) -> Experiment:
        """Rename, describe, delete or restore. Raises NotFound, Conflict on a taken name."""

    def set_experiment_tags(self, tenant: str, experiment_id: str, tags: Mapping[str, str]) -> None:
        """Upsert tags. Raises NotFound."""

    # runs ----------------------------------------------------------------
    def create_run(
        self, tenant: str, experiment_id: str, *, run_id: str, name: str, start_time: int,
        user_id: str = "", parent_run_id: str | None = None, artifact_uri: str = "",
        tags: Mapping[str, str] | None = None, status: str = "RUNNING",
    ) -> Run:
        """A new run. Raises NotFound for the experiment (or the parent), Conflict if it is deleted."""

    def get_run(self, tenant: str, run_id: str) -> Run:
        """The run with params, tags and latest metrics. Raises NotFound."""

    def update_run(
        self, tenant: str, run_id: str, *, status: str | None = None, end_time: int | None = None,
        name: str | None = None, lifecycle_stage: str | None = None,
    ) -> Run:
        """Change status, end time, name; delete or restore. Raises NotFound."""

    def log_batch(
        self, tenant: str, run_id: str, *, metrics: Sequence[Metric] = (),
        params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None,
    ) -> None:
        """Append metrics, write params once, upsert tags; all or nothing.

        Raises NotFound; Conflict if a param already holds a different value, if the
        run is deleted, or if metrics or params are sent to a run that has ended.
        """

    def delete_tag(self, tenant: str, run_id: str, key: str) -> None:
        """Raises NotFound for the run or the tag."""

    def get_metric_history(
        self, tenant: str, run_id: str, key: str, *, max_results: int | None = None,
        page_token: str | None = None,
    ) -> Page[Metric]:
        """Every point of a metric ordered by step, then timestamp. Raises NotFound for the run."""

    def search_runs(
        self, tenant: str, experiment_ids: Sequence[str], *, filter: RunFilter | None = None,
        order_by: Sequence[OrderBy] = (), lifecycle: str = "active", max_results: int = 1000,
        page_token: str | None = None, columns: Sequence[str] | None = None,
    ) -> Page[Run]:
        """Runs matching ``filter`` in the given experiments.

        Default order: start time newest first, then run id. ``columns`` selects which
        params, metrics and tags come back (``"metrics.auc"``, ``"params.*"``, ``"tags.team"``);
        ``None`` returns all of them. Raises InvalidInput on a bad page token.
        """


@runtime_checkable
class MetadataStore(TrackingStore, LoggedModelStore, RegistryStore, AuthStore, LineageStore, DeploymentStore,
                    JobStore, FeatureDefinitionStore, TraceStore, LeaseStore, Protocol):
    """Everything the metadata slot keeps: tracking (with MLflow 3's logged models and traces), registry, tenants
    and tokens, lineage, deployments, jobs, feature definitions, and the leases of platform-wide duties."""
