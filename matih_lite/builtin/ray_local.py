"""``compute = { backend = "ray-local", num_cpus = 2 }``: jobs on a Ray started in this process.

Ray is neither imported nor started until the first job is submitted (``matih-lite up`` stays
fast; ``/ready`` only checks that Ray is installed). Then ``ray.init`` starts a local Ray
sized from the settings, without its dashboard, with its session files under
``<home>/ray`` (or a short folder under the system temp when that path is too long for Ray's
sockets). A Ray already running in the process (a notebook, a test session) is used as it is
and left running.

Each job runs as one Ray task (the driver, holding no CPU) that calls the job's runner with
the request; the runner starts the trainers or the Tune trials as Ray actors it owns, so
cancelling the task (``ray.cancel(force=True)``) stops all of them. Output goes to
``<home>/jobs/<job_id>.log``, which any process on this state folder can read.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from matih_lite.contracts import BackendContext, Health
from matih_lite.contracts.jobs import JobRequest, JobState, Resources
from matih_lite.errors import Conflict, NotFound, StoreError
from matih_lite.hookspecs import hookimpl

log = logging.getLogger("matih_lite.compute")

MAX_TEMP_DIR = 60
"""Ray puts Unix sockets under its temp dir; their paths must stay under 108 bytes."""


class RayLocalSettings(msgspec.Struct, forbid_unknown_fields=True):
    num_cpus: int | None = None
    """CPUs Ray may use; default: every core of this machine."""
    num_gpus: float | None = None
    """GPUs Ray may use; default: the ones it finds."""
    temp_dir: str | None = None
    """Ray's session folder; default ``<home>/ray`` (or a short folder under /tmp when that is too long)."""
    object_store_memory: int | None = None
    """Bytes for Ray's object store; default: Ray's choice."""


def _run_driver(runner: str, request: dict[str, Any], storage_path: str, log_path: str) -> dict[str, Any]:
    """The job's driver task: import the runner the request names and run it."""
    import importlib

    module_name, _, fn_name = runner.partition(":")
    return getattr(importlib.import_module(module_name), fn_name)(request, storage_path=storage_path,
                                                                  log_path=log_path)


class _Submitted:
    def __init__(self, ref: Any) -> None:
        self.ref = ref
        self.cancelled = False
        self.state: JobState | None = None


class RayLocalBackend:
    """The :class:`~matih_lite.contracts.slots.ComputeBackend` contract on a local Ray."""

    RUNNER = "matih_lite.training.runner:run_job"

    def __init__(self, settings: RayLocalSettings, context: BackendContext) -> None:
        self.settings = settings
        self.home = context.home
        self.jobs_dir = self.home / "jobs"
        self.storage_dir = self.home / "ray-storage"
        self._jobs: dict[str, _Submitted] = {}
        self._lock = threading.RLock()
        self._owns_ray = False
        self._driver: Any = None
        self._home_thread: Any = None
        """The thread ``ray.init`` ran on, kept alive until ``ray.shutdown`` runs on it too: Ray's core
        worker belongs to the thread that started it, and shutting it down from another thread after that
        one has ended aborts the process (a job's supervisor thread ends when it has nothing to watch)."""

    # ---- Ray, lazily -------------------------------------------------------------------------------
    def temp_dir(self) -> Path:
        if self.settings.temp_dir:
            return Path(self.settings.temp_dir)
        preferred = self.home / "ray"
        if len(str(preferred)) <= MAX_TEMP_DIR:
            return preferred
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"matih-ray-{digest}"

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise StoreError("the ray-local compute backend needs Ray: pip install 'matih-lite[train]'") from exc
        with self._lock:
            if not ray.is_initialized():
                temp = self.temp_dir()
                temp.mkdir(parents=True, exist_ok=True)
                started = time.monotonic()
                kwargs: dict[str, Any] = {"include_dashboard": False, "_temp_dir": str(temp), "log_to_driver": False,
                                          "configure_logging": False, "namespace": "matih-lite"}
                for key in ("num_cpus", "num_gpus", "object_store_memory"):
                    if getattr(self.settings, key) is not None:
                        kwargs[key] = getattr(self.settings, key)
                from concurrent.futures import ThreadPoolExecutor

                self._home_thread = ThreadPoolExecutor(1, thread_name_prefix="matih-ray")
                self._home_thread.submit(ray.init, **kwargs).result()
                self._owns_ray = True
                log.info("started a local Ray in %.1fs (%s)", time.monotonic() - started, temp)
            if self._driver is None:
                self._driver = ray.remote(num_cpus=0, max_retries=0)(_run_driver)
        return ray

    def _ray_running(self) -> Any:
        ray = sys.modules.get("ray")
        return ray if ray is not None and ray.is_initialized() else None

    # ---- contract ----------------------------------------------------------------------------------
    def health(self) -> Health:
        if importlib.util.find_spec("ray") is None:
            # Ready all the same: tracking and the registry work without Ray.
            return Health(True, "Ray is not installed; training jobs need pip install 'matih-lite[train]'")
        ray = self._ray_running()
        if ray is None:
            cpus = self.settings.num_cpus or os.cpu_count()
            return Health(True, f"Ray not started; starts on the first job ({cpus} CPUs)")
        try:
            res = ray.cluster_resources()
        except Exception as exc:
            return Health(False, f"Ray is not answering: {type(exc).__name__}: {exc}")
        return Health(True, f"Ray running: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs, "
                            f"{len(self._jobs)} jobs submitted here")

    def capacity(self) -> Resources:
        ray = self._ray_running()
        if ray is not None:
            res = ray.cluster_resources()
            return Resources(float(res.get("CPU", 0)), float(res.get("GPU", 0)), int(res.get("memory", 0)))
        cpus = float(self.settings.num_cpus or os.cpu_count() or 1)
        if self.settings.num_gpus is not None:
            gpus = float(self.settings.num_gpus)
        else:
            # What Ray would find, without importing it: NVIDIA devices, narrowed by CUDA_VISIBLE_DEVICES.
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            found = len(glob.glob("/dev/nvidia[0-9]*"))
            gpus = float(found if visible is None else min(found, len([d for d in visible.split(",") if d.strip()])))
        return Resources(cpus, gpus, 0)

    def log_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.log"

    def submit(self, request: JobRequest) -> None:
        with self._lock:
            if request.job_id in self._jobs:
                raise Conflict(f"job {request.job_id!r} was already submitted")
            ray = self._ray()
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_path(request.job_id)
            log_path.touch()
            storage = self.storage_dir / request.job_id
            storage.mkdir(parents=True, exist_ok=True)
            payload = msgspec.to_builtins(request)
            ref = self._driver.options(name=f"matih-job-{request.job_id}").remote(
                self.RUNNER, payload, str(storage), str(log_path))
            self._jobs[request.job_id] = _Submitted(ref)
            del ray

    def _entry(self, job_id: str) -> _Submitted:
        entry = self._jobs.get(job_id)
        if entry is None:
            raise NotFound(f"job {job_id!r} was not submitted to this process's Ray")
        return entry

    def status(self, job_id: str) -> JobState:
        with self._lock:
            entry = self._entry(job_id)
            if entry.state is not None:
                return entry.state
            ray = self._ray_running()
            if ray is None:
                entry.state = JobState("FAILED", "Ray stopped while the job ran")
                return entry.state
            ready, _ = ray.wait([entry.ref], timeout=0)
            if not ready:
                return JobState("RUNNING")
            try:
                ray.get(entry.ref)
                entry.state = JobState("SUCCEEDED")
            except (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError) as exc:
                entry.state = JobState("CANCELLED", "cancelled") if entry.cancelled else JobState(
                    "FAILED", f"the job's driver process died: {type(exc).__name__}")
            except ray.exceptions.RayTaskError as exc:
                entry.state = JobState("CANCELLED", "cancelled") if entry.cancelled else JobState(
                    "FAILED", _cause(exc))
            except Exception as exc:  # Ray's own failures (object lost, ...)
                entry.state = JobState("CANCELLED", "cancelled") if entry.cancelled else JobState(
                    "FAILED", f"{type(exc).__name__}: {exc}")
            return entry.state

    def logs(self, job_id: str, offset: int = 0) -> str:
        path = self.log_path(job_id)
        if not path.is_file():
            if job_id in self._jobs:
                return ""
            raise NotFound(f"no log for job {job_id!r} in {self.jobs_dir}")
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            handle.seek(0)
            text = handle.read()
        return text[offset:]

    def cancel(self, job_id: str) -> None:
        with self._lock:
            entry = self._entry(job_id)
            if entry.state is not None:
                return
            entry.cancelled = True
            ray = self._ray_running()
            if ray is not None:
                ray.cancel(entry.ref, force=True)

    def close(self) -> None:
        with self._lock:
            ray = self._ray_running()
            if ray is not None:
                for entry in self._jobs.values():
                    if entry.state is None:
                        entry.cancelled = True
                        try:
                            ray.cancel(entry.ref, force=True)
                        except Exception:
                            pass
                if self._owns_ray:
                    if self._home_thread is not None:
                        self._home_thread.submit(ray.shutdown).result()
                    else:
                        ray.shutdown()
            if self._home_thread is not None:
                self._home_thread.shutdown(wait=True)
                self._home_thread = None
            self._owns_ray = False
            self._driver = None


def _cause(exc: Any) -> str:
    """The user's exception from a RayTaskError, in one line, with its last traceback frame."""
    cause = getattr(exc, "cause", None)
    text = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).strip().splitlines()[-1]
    return " ".join(text.split())[:2000]


def create_backend(settings: RayLocalSettings, context: BackendContext) -> RayLocalBackend:
    return RayLocalBackend(settings, context)


@hookimpl
def register_backends(register):
    register("compute", "ray-local", create_backend, settings=RayLocalSettings,
             summary="a Ray started in this process on the first job; the lite default")
