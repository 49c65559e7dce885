"""The contracts of the compute, serving, events, drift and features slots: each small, each with ``health()``.

Each says what the domain code calls and what a backend may raise; the matching kit in
:mod:`matih_lite.testing` proves a backend by behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import msgspec

from matih_lite.contracts.flavors import InputSchema, ModelLoad, TensorSpec
from matih_lite.contracts.jobs import JobRequest, JobState, Resources
from matih_lite.contracts.records import Health
from matih_lite.contracts.streams import STREAM_NAME, EventRecord, record_columns, unflatten  # noqa: F401


@runtime_checkable
class ComputeBackend(Protocol):
    """Runs training and tuning jobs somewhere (a local Ray, a KubeRay cluster).

    The domain (:mod:`matih_lite.training.jobs`) keeps job records, quotas and the queue; a
    backend only launches a :class:`~matih_lite.contracts.jobs.JobRequest` and reports on it.
    """

    def health(self) -> Health:
        """Whether jobs can be submitted; never starts a cluster just to answer, never raises."""

    def capacity(self) -> Resources | None:
        """The most one job could ever get (a local Ray's CPUs and GPUs); None when elastic or unknown."""

    def service_url(self) -> str | None:
        """The ml-service's URL as the job's processes reach it when they cannot open this platform's stores
        (a cluster): the domain then gives the job that URL and a job-scoped token. None: they open the
        stores themselves (a Ray on this machine)."""

    def render(self, request: JobRequest) -> list[dict[str, Any]]:
        """What :meth:`submit` would send for ``request`` (Kubernetes objects, a Jobs API request), sending nothing."""

    def submit(self, request: JobRequest) -> None:
        """Start the job (returns at once). Raises Conflict for a job id already submitted; StoreError when the
        cluster cannot be reached (the domain keeps the job queued and tries again)."""

    def status(self, job_id: str) -> JobState:
        """The job's state. Raises NotFound for a job this backend does not know; StoreError when the cluster
        cannot be reached now (the domain fails the job once that has lasted too long)."""

    def logs(self, job_id: str, offset: int = 0) -> str:
        """The job's output from character ``offset`` on (empty when none yet). Raises NotFound."""

    def cancel(self, job_id: str) -> None:
        """Stop the job; a finished job is left as it is. Raises NotFound."""

    def close(self) -> None:
        """Stop what the backend started (idempotent)."""


class ServedModel(msgspec.Struct):
    """A model a serving backend holds, and how it has fared since it was loaded."""

    key: str
    flavor: str
    model_dir: str
    loaded_at: int
    """Milliseconds since the epoch."""
    input_schema: InputSchema | None = None
    """What ``predict`` takes (None when nothing is known: any rows)."""
    output_names: tuple[str, ...] = ()
    output_specs: tuple[TensorSpec, ...] = ()
    """Each output's dtype and shape, when the backend knows them (Open Inference Protocol metadata)."""
    predictions: int = 0
    """Calls to ``predict`` that returned."""
    rejected: int = 0
    """Calls refused as InvalidInput (the caller's fault)."""
    errors: int = 0
    """Calls where the model itself raised."""
    last_error: str = ""


@runtime_checkable
class ServingBackend(Protocol):
    """Holds loaded model versions and answers predictions. Every method is safe to call from many threads.

    Proved by :class:`matih_lite.testing.ServingBackendContract`.
    """

    def health(self) -> Health:
        """Whether the backend can load and serve models; never raises."""

    def load(self, model: ModelLoad) -> ServedModel:
        """Load ``model.model_dir`` under ``model.key``; the same folder again is a no-op, another folder
        replaces the model. Raises InvalidInput (a model it cannot or may not load, with the reason), NotFound."""

    def predict(self, key: str, inputs: Any) -> Any:
        """Run the loaded model on a batch (see :class:`~matih_lite.contracts.flavors.Predictor`). Raises
        NotFound if ``key`` is not loaded, InvalidInput on bad inputs, StoreError when a remote server is down;
        an exception of the model itself propagates as it is."""

    def unload(self, key: str) -> None:
        """Drop a loaded model; unknown keys are ignored."""

    def loaded(self) -> dict[str, ServedModel]:
        """Every loaded model by key, with its counters (copies)."""

    def close(self) -> None:
        """Unload everything and release the backend (idempotent)."""


@runtime_checkable
class EventStore(Protocol):
    """Append-only streams (topics) of JSON records, read back by time window, by offset or as columns.

    Offsets start at 0 in each stream and grow by one per record. A consumer group commits the
    next offset it will read (Kafka's convention), so a restarted consumer resumes there.
    Stream names follow :data:`STREAM_NAME`; every method raises InvalidInput for a bad one.
    """

    def health(self) -> Health:
        """Whether the store accepts appends; never raises."""

    def append(self, stream: str, records: Sequence[Mapping[str, Any]] | Any) -> int:
        """Append records, all or none: JSON objects with an integer ``timestamp`` (ms), or a ``pyarrow.Table``
        of scalar columns named as :func:`record_columns` names them (a row reads back as
        :func:`unflatten` of it); returns the first one's offset. Raises InvalidInput, StoreError."""

    def read(self, stream: str, start: int, end: int) -> list[EventRecord]:
        """Records with ``start <= timestamp < end`` in (timestamp, offset) order. Raises StoreError."""

    def read_from(self, stream: str, offset: int, limit: int = 1000) -> list[EventRecord]:
        """At most ``limit`` records from ``offset`` on, in offset order. Raises StoreError."""

    def end_offset(self, stream: str) -> int:
        """The offset the next record appended to ``stream`` will get (0 when empty). Raises StoreError."""

    def scan(self, stream: str, start: int, end: int, columns: Sequence[str] | None = None) -> Any:
        """The window ``start <= timestamp < end`` as a ``pyarrow.Table`` in (timestamp, offset) order:
        ``_offset``, ``timestamp``, then :func:`record_columns` (or those of ``columns`` the stream has).
        Raises StoreError."""

    def commit(self, group: str, stream: str, offset: int) -> None:
        """Record ``offset`` as the next one consumer ``group`` reads from ``stream``. Raises StoreError."""

    def committed(self, group: str, stream: str) -> int | None:
        """The offset ``group`` last committed for ``stream``, None if it never did. Raises StoreError."""

    def close(self) -> None:
        """Release the store (idempotent); later calls raise StoreError."""


@dataclass(frozen=True)
class DriftWindow:
    """One tumbling window size the drift checks use (``[drift] windows``)."""

    label: str
    """As matih.toml writes it: ``1h``, ``1d``."""
    size_ms: int


@dataclass(frozen=True)
class DriftPlan:
    """What a drift runner is started with: the windows and the monitoring domain's two entry points.

    Data and callables, never the host, so a runner may live in another process (a Flink job
    computes the windows itself and hands back each result through ``record``).
    """

    windows: tuple[DriftWindow, ...]
    """The default window sizes, smallest first (a model's ``[drift.models.NAME]`` may name others)."""
    grace_ms: int
    """How long after a window ends it is checked (late inference-log writes)."""
    check_due: Callable[[int], list[dict[str, Any]]]
    """``check_due(now_ms)``: check, here, every window of every deployment that is due at ``now_ms`` and not
    checked yet (catching up after a pause, oldest first), taking the configured actions; returns the reports."""
    record: Callable[[Mapping[str, Any]], dict[str, Any] | None]
    """``record(report)``: apply a window's report computed elsewhere as a local check's is applied (history,
    alerts, health tags, retraining, rollback); None when that window was recorded already (idempotent)."""
    targets: Callable[[], list[dict[str, Any]]] | None = None
    """``targets()``, for a runner that reads the inference log itself: every active deployment of every tenant
    as ``{"tenant", "deployment", "model", "stream", "labels", "settings"}`` (its inference-log and labels
    streams, and its model's ``[drift]`` settings as plain values, windows included)."""
    token: Callable[[str], str] | None = None
    """``token(tenant)``: a job-scoped bearer token with which a remote job reads baselines over REST (the one
    given before is revoked); "" when the service requires no token."""
    kernel: str = ""
    """The module, needing nothing beyond numpy, whose functions a remote runner's job calls to compare a window
    and write its report (``matih_lite.monitoring.window``): its verdicts are the local check's by construction."""
    events: Mapping[str, Any] = field(default_factory=dict)
    """The events slot as the profile configures it (``{"backend": "kafka", "bootstrap_servers": ...}``), so a
    runner that reads the inference log itself reads the same topics."""
    held: Callable[[], bool] | None = None
    """``held()``: whether this replica holds the drift duty now (takes or renews its lease; a call costs a
    metadata round trip). A runner whose jobs run outside ``check_due`` (a Flink job) runs them only while
    it is held, so several replicas over one platform run one job; None: this process is the only one."""


@runtime_checkable
class DriftRunner(Protocol):
    """Decides where and when the windowed drift checks run (a thread in the service, or a Flink job).

    What a check is stays in :mod:`matih_lite.monitoring` (statistics in ``monitoring.stats``, numpy only);
    the monitoring domain starts whichever runner fills the slot with a :class:`DriftPlan`. Proved by
    :class:`matih_lite.testing.DriftRunnerContract`.
    """

    def health(self) -> Health:
        """Whether windows are being checked on schedule (and the last error, if any); never raises."""

    def start(self, plan: DriftPlan) -> None:
        """Begin checking on schedule (returns at once); idempotent while running."""

    def stop(self) -> None:
        """Stop scheduling, letting a check in progress finish; idempotent."""

    def close(self) -> None:
        """Stop and release what the runner holds (idempotent)."""


from matih_lite.contracts.features import FeatureStore  # noqa: E402,F401  (the features slot has its own module)
