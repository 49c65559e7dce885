"""Contracts of the slots whose domains arrive in later work: each is small and has ``health()``.

They say what the domain code will call; the issue that builds a domain fills in the
methods it needs and a built-in backend that implements them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from matih_lite.contracts.records import Health


@runtime_checkable
class ComputeBackend(Protocol):
    """Runs training and tuning jobs somewhere (a local Ray, a KubeRay cluster)."""

    def health(self) -> Health:
        """Whether jobs can be submitted; must not start a cluster just to answer."""

    def submit(self, job: Mapping[str, Any]) -> str:
        """Start a job described by a job spec; returns the backend's job id."""

    def status(self, job_id: str) -> str:
        """PENDING, RUNNING, SUCCEEDED, FAILED or CANCELLED. Raises NotFound."""

    def logs(self, job_id: str) -> str:
        """The job's output so far. Raises NotFound."""

    def cancel(self, job_id: str) -> None:
        """Stop the job; a finished job is left as it is. Raises NotFound."""


@runtime_checkable
class ServingBackend(Protocol):
    """Holds loaded model versions and answers predictions."""

    def health(self) -> Health:
        """Whether the backend can load and serve models."""

    def load(self, key: str, model_uri: str, flavor: str) -> None:
        """Load a model version under ``key`` (idempotent)."""

    def predict(self, key: str, inputs: Any) -> Any:
        """Run the loaded model. Raises NotFound if ``key`` is not loaded, InvalidInput on bad inputs."""

    def unload(self, key: str) -> None:
        """Drop a loaded model; unknown keys are ignored."""


@runtime_checkable
class EventStore(Protocol):
    """Append-only streams of records (inference logs, platform events), read back by time window."""

    def health(self) -> Health:
        """Whether the store accepts appends."""

    def append(self, stream: str, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records; each has a ``timestamp`` in milliseconds."""

    def read(self, stream: str, start: int, end: int) -> Iterable[Mapping[str, Any]]:
        """Records with ``start <= timestamp < end``, in timestamp order."""


@runtime_checkable
class DriftRunner(Protocol):
    """Runs the windowed drift job on a schedule (in the service, or as a Flink job)."""

    def health(self) -> Health:
        """Whether the runner is scheduling windows."""

    def start(self) -> None:
        """Begin scheduling; called when the service starts."""

    def stop(self) -> None:
        """Stop scheduling; called when the service stops."""


@runtime_checkable
class FeatureStore(Protocol):
    """Feature definitions, point-in-time retrieval, materialization and online lookup."""

    def health(self) -> Health:
        """Whether the offline and online stores answer."""

    def get_historical_features(self, entity_rows: Any, features: Sequence[str]) -> Any:
        """A point-in-time correct join of ``features`` onto ``entity_rows``."""

    def get_online_features(self, entity_keys: Sequence[Mapping[str, Any]], features: Sequence[str]) -> Any:
        """Latest materialized feature values for each entity."""
