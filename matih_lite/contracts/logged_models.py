"""MLflow 3's logged models, and what links runs to datasets and models, in the metadata slot.

A :class:`LoggedModel` is a model logged in an experiment (MLflow 3's ``log_model`` creates one,
then uploads its files and finalizes it): its status, tags, write-once params and metric
points. A run's :class:`RunIO` holds the datasets and models it consumed and the models it
produced. The store keeps them as rows, each change one atomic write, so service replicas on one
database never lose each other's updates; every rule (names, statuses, what MLflow's filters
mean) is the tracking domain's (:mod:`matih_lite.tracking.logged_models`).

Scoped by tenant like the rest of the slot; timestamps are milliseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from matih_lite.contracts.records import Page

LOGGED_MODEL_STATUSES = ("LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED")
"""PENDING while its files upload; the client finalizes it READY (or UPLOAD_FAILED)."""
DATASET_CONTEXT_TAG = "mlflow.data.context"
"""The dataset input tag saying what the dataset was for (``train``, ``eval``)."""


class LoggedModelMetric(msgspec.Struct, frozen=True):
    """A metric point of a logged model; NaN and +-inf are kept exactly."""

    key: str
    value: float
    timestamp: int
    step: int = 0
    run_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


class LoggedModel(msgspec.Struct):
    """A model logged in an experiment, with its tags, write-once params and metric points."""

    model_id: str
    tenant: str
    experiment_id: str
    name: str
    artifact_uri: str = ""
    status: str = "LOGGED_MODEL_PENDING"
    """One of :data:`LOGGED_MODEL_STATUSES`."""
    status_message: str | None = None
    model_type: str | None = None
    source_run_id: str | None = None
    creator: str = ""
    lifecycle_stage: str = "active"
    creation_time: int = 0
    last_update_time: int = 0
    """Stamped by the store on every change."""
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    params: dict[str, str] = msgspec.field(default_factory=dict)
    metrics: list[LoggedModelMetric] = msgspec.field(default_factory=list)
    """In the order they were logged."""


class Dataset(msgspec.Struct, frozen=True):
    """A dataset as MLflow describes it: name, digest, where it came from, and optionally its schema and profile."""

    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None = None
    profile: str | None = None


class DatasetInput(msgspec.Struct, frozen=True):
    """A dataset a run consumed; a run holds one per (name, digest, context tag)."""

    dataset: Dataset
    tags: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def context(self) -> str:
        """What the dataset was for (its ``mlflow.data.context`` tag), ``""`` when not said."""
        return self.tags.get(DATASET_CONTEXT_TAG, "")


class ModelOutput(msgspec.Struct, frozen=True):
    """A logged model a run produced, at a step of the run."""

    model_id: str
    step: int = 0


class RunIO(msgspec.Struct):
    """A run's inputs (datasets, logged models) and outputs (logged models), each in the order first logged."""

    datasets: list[DatasetInput] = msgspec.field(default_factory=list)
    model_inputs: list[str] = msgspec.field(default_factory=list)
    model_outputs: list[ModelOutput] = msgspec.field(default_factory=list)


@runtime_checkable
class LoggedModelStore(Protocol):
    """Methods every metadata backend provides for logged models and run inputs/outputs; scoped by tenant."""

    def create_logged_model(self, model: LoggedModel) -> LoggedModel:
        """Store a new logged model with its tags, params and metrics as given (a time of 0 means now).

        Raises NotFound for the experiment (one of ``model.tenant``'s), Conflict on a taken ``model_id``.
        """

    def get_logged_model(self, tenant: str, model_id: str, *, allow_deleted: bool = False) -> LoggedModel:
        """Raises NotFound (also for a deleted one, unless ``allow_deleted``)."""

    def search_logged_models(
        self, tenant: str, experiment_ids: Sequence[str], *, source_run_id: str | None = None,
        name: str | None = None, lifecycle: str = "active", max_results: int = 1000, page_token: str | None = None,
    ) -> Page[LoggedModel]:
        """Logged models of the experiments, newest first, then by id; ``lifecycle`` is active, deleted or all."""

    def update_logged_model(
        self, tenant: str, model_id: str, *, status: str | None = None, status_message: str | None = None,
        lifecycle_stage: str | None = None,
    ) -> LoggedModel:
        """Change the status or the message, or delete (``lifecycle_stage="deleted"``). Raises NotFound."""

    def set_logged_model_tags(self, tenant: str, model_id: str, tags: Mapping[str, str]) -> None:
        """Upsert tags. Raises NotFound."""

    def delete_logged_model_tag(self, tenant: str, model_id: str, key: str) -> None:
        """Raises NotFound for the model or the tag."""

    def log_logged_model_params(self, tenant: str, model_id: str, params: Mapping[str, str]) -> None:
        """Write params once, all or nothing. Raises NotFound; Conflict if a param holds another value."""

    def log_logged_model_metrics(self, tenant: str, model_id: str, metrics: Sequence[LoggedModelMetric]) -> None:
        """Append points; a point already there (same key, timestamp, step and run) is kept once. Raises NotFound."""

    def log_run_io(
        self, tenant: str, run_id: str, *, datasets: Sequence[DatasetInput] = (), model_inputs: Sequence[str] = (),
        model_outputs: Sequence[ModelOutput] = (),
    ) -> None:
        """Add inputs and outputs to a run, each kept once (see :class:`RunIO`), all or nothing. Raises NotFound."""

    def get_run_io(self, tenant: str, run_id: str) -> RunIO:
        """Raises NotFound for the run."""
