"""``/api/v1/jobs``: submit training and tuning jobs, list them (with why they wait), logs, cancel. Thin."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from matih_lite.contracts.jobs import Job
from matih_lite.host import Host
from matih_lite.service.auth import Principal, principal


class JobOut(msgspec.Struct):
    job_id: str
    name: str
    kind: str
    status: str
    message: str
    """Why a queued job waits, why a job failed, or how it ended."""
    spec: dict[str, Any]
    cpus: float
    gpus: float
    memory: int
    created_by: str
    created_at: int
    started_at: int | None
    ended_at: int | None
    run_id: str | None
    register: str | None
    result: dict[str, Any]
    cancel_requested: bool
    progress: dict[str, Any] | None = None


class JobPage(msgspec.Struct):
    jobs: list[JobOut]
    next_page_token: str | None = None


class SubmitJob(msgspec.Struct, forbid_unknown_fields=True):
    spec: dict[str, Any]
    """The job spec as JSON (a TOML spec file, parsed); ``base_dir`` must be a folder the server can read."""
    kind: str | None = None
    """``train`` or ``tune`` to insist on one (a tune spec needs ``tune``); default: from the spec."""
    register: str | None = None
    """Register the best model under this name (Development) when the job succeeds."""


class LogChunk(msgspec.Struct):
    text: str
    offset: int
    """Pass back as ``offset`` to read what comes next."""
    status: str


def job_out(job: Job, progress: dict[str, Any] | None = None) -> JobOut:
    return JobOut(job.job_id, job.name, job.kind, job.status, job.message, job.spec, job.demand.cpus,
                  job.demand.gpus, job.demand.memory, job.created_by, job.created_at, job.started_at, job.ended_at,
                  job.run_id, job.register, job.result, job.cancel_requested, progress)


def provide_jobs(host: NamedDependency[Host]) -> Any:
    from matih_lite.training.jobs import Jobs  # loaded on the first jobs request, not at start-up

    return Jobs(host)


JobsDep = NamedDependency[Any]
"""A :class:`matih_lite.training.jobs.Jobs` (typed loosely so the service starts without importing it)."""
PrincipalDep = NamedDependency[Principal]


DEPENDENCIES = {"jobs": Provide(provide_jobs, sync_to_thread=False),
                "principal": Provide(principal, sync_to_thread=False)}


class JobController(Controller):
    path = "/api/v1/jobs"
    tags = ["jobs"]
    dependencies = DEPENDENCIES

    @post("/", sync_to_thread=True, status_code=202,
          summary="Submit a training or tuning job; it starts when its tenant's quota allows")
    def submit(self, data: JSONBody[SubmitJob], jobs: JobsDep, principal: PrincipalDep) -> JobOut:
        return job_out(jobs.submit(principal, data.spec, kind=data.kind, register=data.register))

    @get("/", sync_to_thread=True, summary="Jobs, newest first; a queued job's message says why it waits")
    def index(self, jobs: JobsDep, principal: PrincipalDep,
              status: FromQuery[list[str] | None] = None,
              max_results: Annotated[int, Parameter(ge=1, le=10_000)] = 100,
              page_token: FromQuery[str | None] = None) -> JobPage:
        page = jobs.list(principal, statuses=status, max_results=max_results, page_token=page_token)
        return JobPage([job_out(j) for j in page.items], page.next_token)

    @get("/{job_id:str}", sync_to_thread=True, summary="A job (by id or unique prefix), with its progress")
    def read(self, job_id: FromPath[str], jobs: JobsDep, principal: PrincipalDep,
             progress: FromQuery[bool] = True) -> JobOut:
        job = jobs.get(principal, job_id)
        return job_out(job, jobs.progress(principal, job) if progress else None)

    @get("/{job_id:str}/logs", sync_to_thread=True, summary="The job's output from a character offset on")
    def logs(self, job_id: FromPath[str], jobs: JobsDep, principal: PrincipalDep,
             offset: Annotated[int, Parameter(ge=0)] = 0) -> LogChunk:
        job = jobs.get(principal, job_id)
        text = jobs.logs(principal, job.job_id, offset)
        return LogChunk(text, offset + len(text), job.status)

    @post("/{job_id:str}/cancel", sync_to_thread=True, status_code=200,
          summary="Cancel a job (a queued one at once; a finished one is left as it is)")
    def cancel(self, job_id: FromPath[str], jobs: JobsDep, principal: PrincipalDep) -> JobOut:
        return job_out(jobs.cancel(principal, job_id))


CONTROLLERS = [JobController]
