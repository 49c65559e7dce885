"""Contracts of the slots whose domains arrive in later work: each is small and has ``health()``.

They say what the domain code will call; the issue that builds a domain fills in the
methods it needs and a built-in backend that implements them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

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

    def submit(self, request: JobRequest) -> None:
        """Start the job (returns at once). Raises Conflict for a job id already submitted, StoreError."""

    def status(self, job_id: str) -> JobState:
        """The job's state. Raises NotFound for a job this backend does not know."""

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
    input_schema: Any = None
    """What ``predict`` takes (a :class:`matih_lite.serving.flavors.InputSchema` for the built-ins)."""
    output_names: tuple[str, ...] = ()
    predictions: int = 0
    """Calls to ``predict`` that returned."""
    rejected: int = 0
    """Calls refused as InvalidInput (the caller's fault)."""
    errors: int = 0
    """Calls where the model itself raised."""
    last_error: str = ""


@runtime_checkable
class ServingBackend(Protocol):
    """Holds loaded model versions and answers predictions. Every method is safe to call from many threads."""

    def health(self) -> Health:
        """Whether the backend can load and serve models."""

    def load(self, key: str, model_dir: str, flavor: Any) -> ServedModel:
        """Load the model saved in ``model_dir`` under ``key`` with ``flavor`` (a flavor from the
        ``register_flavors`` hook; remote backends use its ``name``). Loading the same folder again is a
        no-op; another folder replaces the model. Raises InvalidInput, NotFound."""

    def predict(self, key: str, inputs: Any) -> Any:
        """Run the loaded model. Raises NotFound if ``key`` is not loaded, InvalidInput on bad inputs;
        an exception of the model itself propagates as it is."""

    def unload(self, key: str) -> None:
        """Drop a loaded model; unknown keys are ignored."""

    def loaded(self) -> dict[str, ServedModel]:
        """Every loaded model by key, with its counters."""


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


@runtime_checkable
class DriftRunner(Protocol):
    """Runs the windowed drift checks on a schedule (a thread in the service, or a Flink job).

    Whatever runs them, the statistics are :mod:`matih_lite.monitoring.stats` (numpy only) and a
    window's result is what :meth:`matih_lite.monitoring.Monitoring.check` reports; the runner
    decides only where and when. The ``startup`` hook calls :meth:`start`, ``shutdown`` :meth:`stop`.
    """

    def health(self) -> Health:
        """Whether windows are being checked on schedule (and the last error, if any); never raises."""

    def start(self, host: Any) -> None:
        """Begin checking the deployments of ``host`` (a :class:`~matih_lite.host.Host`); idempotent."""

    def stop(self) -> None:
        """Stop scheduling, letting a check in progress finish; idempotent."""


@runtime_checkable
class FeatureStore(Protocol):
    """Feature definitions, point-in-time retrieval, materialization and online lookup."""

    def health(self) -> Health:
        """Whether the offline and online stores answer."""

    def get_historical_features(self, entity_rows: Any, features: Sequence[str]) -> Any:
        """A point-in-time correct join of ``features`` onto ``entity_rows``."""

    def get_online_features(self, entity_keys: Sequence[Mapping[str, Any]], features: Sequence[str]) -> Any:
        """Latest materialized feature values for each entity."""
