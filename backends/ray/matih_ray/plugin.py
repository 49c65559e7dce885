"""``compute = { backend = "ray", address = "http://head:8265", service_url = "http://ml:8000" }``: jobs on a Ray cluster.

Each job is one Ray Jobs API job with submission id ``matih-<job id>``, so any ml-service replica
(or one restarted) finds it again on the cluster. Its entrypoint is the platform's job driver
(``python -m matih_lite.training.driver``); its runtime environment carries

* the job's code: the spec's ``base_dir`` as the working dir, packaged and uploaded to the cluster;
* its settings: the request (spec, run, tenant) as ``MATIH_JOB``; ``MATIH_URL`` and ``MATIH_TOKEN``,
  the ml-service at ``service_url`` and a token made for this job alone, through which metrics,
  trial runs and checkpoints flow back (the cluster is not the service's process); and
  ``MATIH_STORAGE``, where Ray Train and Tune keep their bookkeeping.

Status, logs (from a character offset) and cancel go through the same API. A job's log is kept in
``<home>/jobs/<id>.log`` once it ends, so it can still be read after the cluster is gone. The
cluster's driver prints ``MATIH-JOB-FAILED: <reason>`` when a job fails; that line is the failure's
message. Without ``service_url`` the job's processes open the platform's stores themselves, which
works only for a cluster on the service's own machine.

This module imports httpx only when the backend is built, and Ray only to package a job's code.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Annotated, Any

import msgspec

from matih_lite.contracts import BackendContext, Health
from matih_lite.contracts.jobs import JobRequest, JobState, Resources
from matih_lite.errors import MatihError, NotFound, StoreError
from matih_lite.hookspecs import hookimpl

log = logging.getLogger("matih_ray")

DRIVER_MODULE = "matih_lite.training.driver"
"""The platform's job driver, run on the cluster as ``python -m`` (by name: a backend imports no domain code)."""
FAILED_MARKER = "MATIH-JOB-FAILED: "
"""What the driver prints before it exits 1 (:mod:`matih_lite.training.driver`); kept in step with it."""
DEFAULT_EXCLUDES = [".git", ".matih", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache", "mlruns"]


class RaySettings(msgspec.Struct, forbid_unknown_fields=True):
    address: str
    """The cluster's dashboard (Jobs API) URL, e.g. ``http://head:8265``."""
    service_url: str | None = None
    """The ml-service as the cluster's processes reach it (``http://ml-service:8000``). Unset: they open this
    folder's stores themselves, which only a cluster on the service's own machine can."""
    storage_path: str | None = None
    """Where Ray Train and Tune keep their bookkeeping, seen by every node: a shared folder or a URI
    (``s3://bucket/ray``). Default: a folder under the temp dir of the driver's node (one-machine clusters)."""
    runtime_env: dict[str, Any] = msgspec.field(default_factory=dict)
    """Added to every job's runtime environment (``pip``, ``env_vars``, ``container``...)."""
    excludes: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_EXCLUDES))
    """Paths of the job's code folder left out of the upload (``.gitignore`` is honoured too)."""
    python: str = "python"
    """The interpreter that runs the driver on the cluster (it must have matih-lite installed)."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """Sent with every Jobs API request (a proxy's ``Authorization`` in front of the dashboard)."""
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """Seconds each Jobs API request may take."""
    autoscaling: bool = False
    """The cluster grows on demand: no capacity limit is checked at submit (else: its nodes' total)."""


class RayBackend:
    """The :class:`~matih_lite.contracts.slots.ComputeBackend` contract on an existing Ray cluster."""

    def __init__(self, settings: RaySettings, context: BackendContext) -> None:
        from matih_ray.jobs_api import JobsApi

        self.settings = settings
        self.jobs_dir = context.home / "jobs"
        self.api = JobsApi(settings.address, timeout=settings.timeout, headers=settings.headers)
        self._ended: dict[str, JobState] = {}
        self._lock = threading.Lock()

    # ---- naming -------------------------------------------------------------------------------------
    @staticmethod
    def submission_id(job_id: str) -> str:
        return f"matih-{job_id}"

    def log_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.log"

    # ---- contract -----------------------------------------------------------------------------------
    def health(self) -> Health:
        try:
            version = self.api.version()
            nodes = [n for n in self.api.nodes() if n.get("state") == "ALIVE"]
        except MatihError as exc:
            return Health(False, f"Ray cluster unreachable: {exc.message}")
        cpus = sum(float(n.get("resources_total", {}).get("CPU", 0)) for n in nodes)
        gpus = sum(float(n.get("resources_total", {}).get("GPU", 0)) for n in nodes)
        return Health(True, f"Ray {version.get('ray_version', '?')} at {self.settings.address}: {len(nodes)} nodes, "
                            f"{cpus:g} CPUs, {gpus:g} GPUs")

    def capacity(self) -> Resources | None:
        if self.settings.autoscaling:
            return None
        try:
            nodes = [n for n in self.api.nodes() if n.get("state") == "ALIVE"]
        except MatihError:
            return None  # unknown now; the job waits in the queue until the cluster answers
        totals = [n.get("resources_total", {}) for n in nodes]
        return Resources(sum(float(t.get("CPU", 0)) for t in totals), sum(float(t.get("GPU", 0)) for t in totals),
                         int(sum(float(t.get("memory", 0)) for t in totals)))

    def service_url(self) -> str | None:
        return self.settings.service_url

    def submission(self, request: JobRequest) -> dict[str, Any]:
        """The Jobs API request for ``request``: entrypoint, runtime environment, metadata."""
        return submission_for(request, self.settings)

    def render(self, request: JobRequest) -> list[dict[str, Any]]:
        body = self.submission(request)
        return [{"method": "POST", "url": f"{self.api.address}/api/jobs/", "body": body,
                 "note": "runtime_env.working_dir is uploaded first as a gcs://_ray_pkg_<hash>.zip package"
                 if body["runtime_env"].get("working_dir") else "the job's code is the cluster's installed packages"}]

    def submit(self, request: JobRequest) -> None:
        body = self.submission(request)
        self.api.submit(**body)
        log.info("submitted job %s to the Ray cluster at %s", request.job_id, self.settings.address)

    def status(self, job_id: str) -> JobState:
        ended = self._ended.get(job_id)
        if ended is not None:
            return ended
        info = self.api.info(self.submission_id(job_id))
        return self._state(job_id, info)

    def _state(self, job_id: str, info: dict[str, Any]) -> JobState:
        from matih_ray.jobs_api import RAY_STATUSES

        status = RAY_STATUSES.get(str(info.get("status")), "PENDING")
        if status not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return JobState(status, str(info.get("message") or ""))
        logs = self._keep_logs(job_id)
        if status == "FAILED":
            message = failure_message(logs, str(info.get("message") or ""))
        elif status == "CANCELLED":
            message = "stopped on the Ray cluster"
        else:
            message = ""
        state = JobState(status, message)
        with self._lock:
            self._ended[job_id] = state
        return state

    def _keep_logs(self, job_id: str) -> str:
        """The ended job's whole log, saved here so it outlives the cluster."""
        logs = self.api.logs(self.submission_id(job_id))
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.log_path(job_id).with_suffix(f".{os.getpid()}.part")
        tmp.write_text(logs, encoding="utf-8")
        os.replace(tmp, self.log_path(job_id))
        return logs

    def logs(self, job_id: str, offset: int = 0) -> str:
        saved = self.log_path(job_id)
        if job_id in self._ended and saved.is_file():
            return saved.read_text(encoding="utf-8", errors="replace")[offset:]
        try:
            return self.api.logs(self.submission_id(job_id))[offset:]
        except (NotFound, StoreError):
            if saved.is_file():  # the cluster forgot it (replaced, or gone): what was kept when it ended
                return saved.read_text(encoding="utf-8", errors="replace")[offset:]
            raise

    def cancel(self, job_id: str) -> None:
        if job_id in self._ended:
            return
        self.api.stop(self.submission_id(job_id))

    def close(self) -> None:
        self.api.close()


def submission_for(request: JobRequest, settings: Any) -> dict[str, Any]:
    """The Jobs API submission for a job (shared with ``kuberay``): its driver, code and settings.

    ``settings`` has the fields of :class:`RaySettings` that shape a job: ``service_url``,
    ``storage_path``, ``runtime_env``, ``excludes``, ``python``.
    """
    tracking = dict(request.tracking)
    job = msgspec.to_builtins(request)
    job.pop("limits", None)
    env_vars = {"MATIH_JOB": json.dumps(job, sort_keys=True), "RAY_CHDIR_TO_TRIAL_DIR": "0", "PYTHONUNBUFFERED": "1"}
    if tracking.get("url"):
        env_vars["MATIH_URL"] = tracking["url"]
        if tracking.get("token"):
            env_vars["MATIH_TOKEN"] = tracking["token"]
    if settings.storage_path:
        env_vars["MATIH_STORAGE"] = settings.storage_path
    extra = dict(settings.runtime_env or {})
    runtime_env: dict[str, Any] = {**extra, "env_vars": {**dict(extra.get("env_vars") or {}), **env_vars}}
    base_dir = request.spec.get("base_dir")
    if base_dir:
        runtime_env["working_dir"] = str(base_dir)
        runtime_env["excludes"] = list(settings.excludes)
        runtime_env["env_vars"]["MATIH_WORKING_DIR"] = "1"
    return {"submission_id": f"matih-{request.job_id}", "entrypoint": f"{settings.python} -m {DRIVER_MODULE}",
            "runtime_env": runtime_env,
            "metadata": {"matih.job_id": request.job_id, "matih.tenant": request.tenant, "matih.kind": request.kind,
                         "matih.run_id": request.run_id}}


def failure_message(logs: str, ray_message: str) -> str:
    """Why a job failed: the driver's ``MATIH-JOB-FAILED`` line, else the end of Ray's own message."""
    for line in reversed(logs.splitlines()):
        at = line.find(FAILED_MARKER)
        if at >= 0:
            return line[at + len(FAILED_MARKER):].strip()
    lines = [line.strip() for line in ray_message.splitlines() if line.strip()]
    return (lines[-1] if lines else "the job's driver failed")[:2000]


def create_backend(settings: RaySettings, context: BackendContext) -> RayBackend:
    return RayBackend(settings, context)


@hookimpl
def register_backends(register):
    register("compute", "ray", create_backend, settings=RaySettings,
             summary="an existing Ray cluster, through the Ray Jobs API (each job a Jobs API job)")


__all__ = ["DRIVER_MODULE", "RayBackend", "RaySettings", "failure_message", "submission_for"]
