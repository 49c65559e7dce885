"""The jobs client for the CLI and scripts: this folder's store embedded, or the ml-service.

Through the service when ``MATIH_URL`` is set or a ``matih-lite up`` serves this folder; embedded otherwise,
where jobs run under this process's supervisor. Either way a job is the dict ``/api/v1/jobs`` answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matih_lite.remote import HostOrService

if TYPE_CHECKING:
    from matih_lite.host import Host



def job_dict(job: Any, progress: dict[str, Any] | None = None) -> dict[str, Any]:
    """A job as ``/api/v1/jobs`` shows it."""
    return {"job_id": job.job_id, "name": job.name, "kind": job.kind, "status": job.status, "message": job.message,
            "spec": job.spec, "cpus": job.demand.cpus, "gpus": job.demand.gpus, "memory": job.demand.memory,
            "created_by": job.created_by, "created_at": job.created_at, "started_at": job.started_at,
            "ended_at": job.ended_at, "run_id": job.run_id, "register": job.register, "result": job.result,
            "cancel_requested": job.cancel_requested, "progress": progress}


class JobsClient(HostOrService):
    """Jobs through the service this folder has (``MATIH_URL``, or its running ``up``), else the
    :class:`~matih_lite.training.jobs.Jobs` service here."""

    def __init__(self, config: str | None = None, profile: str | None = None, *, url: str | None = None,
                 token: str | None = None, host: Host | None = None) -> None:
        super().__init__(url, token=token, config=config, profile=profile, host=host, timeout=60.0)
        if self.http is None:
            from matih_lite.training.jobs import Jobs

            self.jobs = Jobs(self.host)

    @property
    def embedded(self) -> bool:
        return self.http is None

    def submit(self, spec: dict[str, Any], kind: str, register: str | None) -> dict[str, Any]:
        if self.http is None:
            return job_dict(self.jobs.submit(self.principal, spec, kind=kind, register=register))
        return self.http.call("POST", "/api/v1/jobs/", json={"spec": spec, "kind": kind, "register": register})

    def get(self, job_id: str, progress: bool = True) -> dict[str, Any]:
        if self.http is None:
            job = self.jobs.get(self.principal, job_id)
            return job_dict(job, self.jobs.progress(self.principal, job) if progress else None)
        return self.http.call("GET", f"/api/v1/jobs/{job_id}", params={"progress": str(progress).lower()})

    def list(self, statuses: list[str], max_results: int) -> list[dict[str, Any]]:
        if self.http is None:
            return [job_dict(j) for j in self.jobs.list(self.principal, statuses=statuses or None,
                                                        max_results=max_results).items]
        params: list[tuple[str, Any]] = [("max_results", max_results)] + [("status", s) for s in statuses]
        return self.http.call("GET", "/api/v1/jobs/", params=params)["jobs"]

    def logs(self, job_id: str, offset: int) -> tuple[str, int, str]:
        """``(text from offset, the next offset, the job's status)``."""
        if self.http is None:
            job = self.jobs.get(self.principal, job_id)
            text = self.jobs.logs(self.principal, job.job_id, offset)
            return text, offset + len(text), job.status
        body = self.http.call("GET", f"/api/v1/jobs/{job_id}/logs", params={"offset": offset})
        return body["text"], body["offset"], body["status"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        if self.http is None:
            return job_dict(self.jobs.cancel(self.principal, job_id))
        return self.http.call("POST", f"/api/v1/jobs/{job_id}/cancel")
