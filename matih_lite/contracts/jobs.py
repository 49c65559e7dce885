"""Training and tuning jobs: the records the metadata slot keeps, and what the compute slot is handed.

A :class:`Job` is one submitted spec with its lifecycle (:data:`JOB_STATUSES`), the resources it
holds while it runs (counted against its tenant's quota), and the tracking run it logs into.
The store keeps records and decides one thing atomically, :meth:`JobStore.claim_job`: whether a
queued job may start now under its tenant's limits. Queueing order, quotas and notifications
are written once in :mod:`matih_lite.training.jobs`.

:class:`JobRequest` and :class:`JobState` travel between the domain and a
:class:`~matih_lite.contracts.slots.ComputeBackend`. Timestamps are milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from matih_lite.contracts.records import Page

JOB_STATUSES = ("QUEUED", "STARTING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
"""QUEUED waits for quota; STARTING holds its quota while the backend launches it."""
ACTIVE_JOB_STATUSES = ("QUEUED", "STARTING", "RUNNING")
HOLDING_JOB_STATUSES = ("STARTING", "RUNNING")
"""The statuses whose resources count against the tenant's quota."""
TERMINAL_JOB_STATUSES = ("SUCCEEDED", "FAILED", "CANCELLED")
JOB_KINDS = ("train", "tune")


class Resources(msgspec.Struct, frozen=True):
    """CPUs and GPUs (fractions allowed, as Ray schedules them) and memory in bytes."""

    cpus: float = 0.0
    gpus: float = 0.0
    memory: int = 0


class Limits(msgspec.Struct, frozen=True):
    """A tenant's quota: at most this much held by its running jobs at once; None is unlimited."""

    cpus: float | None = None
    gpus: float | None = None
    jobs: int | None = None


class Job(msgspec.Struct):
    tenant: str
    job_id: str
    name: str
    kind: str
    """One of :data:`JOB_KINDS`."""
    status: str = "QUEUED"
    spec: dict[str, Any] = msgspec.field(default_factory=dict)
    """The validated job spec (:class:`matih_lite.training.spec.JobSpec` as builtins)."""
    demand: Resources = Resources()
    """What the job holds while it runs: every worker of every concurrent trial."""
    created_by: str = ""
    created_at: int = 0
    started_at: int | None = None
    ended_at: int | None = None
    heartbeat_at: int = 0
    """Refreshed by the process that supervises the job; a stale one means that process is gone."""
    owner: str = ""
    """The supervising process (host:pid:nonce)."""
    run_id: str | None = None
    """The tracking run, created when the job starts."""
    message: str = ""
    """Why it waits, why it failed, or how it ended."""
    register: str | None = None
    """A model name: the job's best model is registered there (Development) when it succeeds."""
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    cancel_requested: bool = False


class JobRequest(msgspec.Struct, frozen=True):
    """What the domain hands a compute backend to start: the spec, and where the job reports."""

    job_id: str
    tenant: str
    kind: str
    spec: dict[str, Any]
    run_id: str
    """The tracking run the job logs into (created before the job is submitted)."""
    tracking: dict[str, str]
    """How the job's processes reach tracking: ``{"url", "token"}`` for a server, or
    ``{"config", "profile", "home"}`` to open the same stores embedded."""
    limits: Limits = Limits()
    """The tenant's quota (``[quotas]``), for a backend that enforces it too (a ResourceQuota)."""


class JobState(msgspec.Struct, frozen=True):
    """A job as the compute backend sees it: PENDING, RUNNING, SUCCEEDED, FAILED or CANCELLED."""

    status: str
    message: str = ""


COMPUTE_STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")


class Usage(msgspec.Struct, frozen=True):
    """What a tenant's holding jobs use, and how many of its live jobs are queued ahead of one."""

    cpus: float = 0.0
    gpus: float = 0.0
    jobs: int = 0
    ahead: int = 0


class Claim(msgspec.Struct, frozen=True):
    """The answer of :meth:`JobStore.claim_job`: whether the job now holds its resources, and the usage seen."""

    claimed: bool
    usage: Usage
    job: Job | None = None


@runtime_checkable
class JobStore(Protocol):
    """Methods every metadata backend provides for jobs; a job of another tenant is NotFound."""

    def create_job(self, job: Job) -> Job:
        """Store a new job. Raises Conflict if its id is taken."""

    def get_job(self, tenant: str, job_id: str) -> Job:
        """Raises NotFound."""

    def list_jobs(self, tenant: str | None, *, statuses: Sequence[str] | None = None, max_results: int = 1000,
                  page_token: str | None = None) -> Page[Job]:
        """Jobs newest first (every tenant's when ``tenant`` is None). Raises InvalidInput on a bad token."""

    def update_job(self, tenant: str, job_id: str, *, expect: Sequence[str] | None = None,
                   **changes: Any) -> Job:
        """Set fields of :class:`Job` (not its id, tenant, kind or spec); returns the job as stored.

        With ``expect``, only while its status is one of them, else Conflict. Raises NotFound.
        """

    def claim_job(self, tenant: str, job_id: str, limits: Limits, *, live_after: int, owner: str,
                  now: int) -> Claim:
        """Atomically move a QUEUED job to STARTING (owned by ``owner``) if it fits, else leave it.

        It fits when no older live QUEUED job of the tenant waits ahead of it and the demand of
        the tenant's live STARTING/RUNNING jobs plus its own stays within ``limits``. A job is
        live when its ``heartbeat_at >= live_after``. Raises NotFound; Conflict if not QUEUED.
        """
