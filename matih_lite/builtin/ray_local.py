"""``compute = { backend = "ray-local", num_cpus = 2 }``: jobs on a Ray started in this process.

Ray is neither imported nor started until the first job is submitted (``matih-lite up`` stays
fast; ``/ready`` only checks that Ray is installed). Then ``ray.init`` starts a local Ray
sized from the settings, without its dashboard, with its session files under
``<home>/ray`` (or a short folder under the system temp when that path is too long for Ray's
sockets), on 127.0.0.1 alone (see :func:`_loopback_only`). A Ray already running in the process
(a notebook, a test session) is used as it is and left running.

Each job is a Ray job of its own: a driver process (``python -m matih_lite.training.driver``)
connected to that Ray, which runs the job's runner with the request; the trainers and Tune trials
are its actors. Cancelling stops that process (SIGTERM, then SIGKILL after a grace), and Ray
frees everything the job held, placement groups included: their lifetime is the driver's job.
(A driver that was a task of this process's own Ray job left its trials' placement groups, and
so their CPUs, held after a cancel; the compute contract kit measures that they come back.)
Output goes to ``<home>/jobs/<job_id>.log``, which any process on this state folder can read.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
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
DRIVER_MODULE = "matih_lite.training.driver"
"""The platform's job driver, run as ``python -m`` (by name: a backend imports no domain code)."""
FAILED_MARKER = "MATIH-JOB-FAILED: "
"""What the driver prints before it exits 1 (kept in step with :mod:`matih_lite.training.driver`)."""
STOP_GRACE_S = 3.0
"""Seconds a cancelled job's driver gets after SIGTERM before SIGKILL."""
LOOPBACK = "127.0.0.1"
SINGLE_NODE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Ray's own switch for a node that will never have peers: it then takes the loopback address as its own."""


class RayLocalSettings(msgspec.Struct, forbid_unknown_fields=True):
    num_cpus: int | None = None
    """CPUs Ray may use; default: every core of this machine."""
    num_gpus: float | None = None
    """GPUs Ray may use; default: the ones it finds."""
    temp_dir: str | None = None
    """Ray's session folder; default ``<home>/ray`` (or a short folder under /tmp when that is too long)."""
    object_store_memory: int | None = None
    """Bytes for Ray's object store; default: Ray's choice."""


class _Submitted:
    def __init__(self, process: subprocess.Popen, driver_log: Path) -> None:
        self.process = process
        self.driver_log = driver_log
        self.cancelled = False
        self.state: JobState | None = None


class RayLocalBackend:
    """The :class:`~matih_lite.contracts.slots.ComputeBackend` contract on a local Ray."""

    def __init__(self, settings: RayLocalSettings, context: BackendContext) -> None:
        self.settings = settings
        self.home = context.home
        self.jobs_dir = self.home / "jobs"
        self.storage_dir = self.home / "ray-storage"
        self._jobs: dict[str, _Submitted] = {}
        self._lock = threading.RLock()
        self._owns_ray = False
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

                _loopback_only(ray)
                kwargs["_node_ip_address"] = LOOPBACK
                _no_crash_handler_here(ray)
                self._home_thread = ThreadPoolExecutor(1, thread_name_prefix="matih-ray")
                self._home_thread.submit(ray.init, **kwargs).result()
                self._owns_ray = True
                log.info("started a local Ray in %.1fs (%s)", time.monotonic() - started, temp)
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

    def service_url(self) -> None:
        """None: the job's Ray workers run on this machine and open the platform's stores themselves."""
        return

    def render(self, request: JobRequest) -> list[dict[str, Any]]:
        """The driver process :meth:`submit` would start on this machine's Ray, and what it is given."""
        env = self._driver_env(request, "<the local Ray's address>")
        return [{"backend": "ray-local", "command": [sys.executable, "-m", DRIVER_MODULE],
                 "environment": {k: v for k, v in env.items() if k.startswith(("MATIH_", "RAY_ADDRESS"))},
                 "ray_temp_dir": str(self.temp_dir()), "log": str(self.log_path(request.job_id))}]

    def _driver_env(self, request: JobRequest, address: str) -> dict[str, str]:
        job = msgspec.to_builtins(request)
        job.pop("limits", None)
        env = dict(os.environ)
        env.update({"MATIH_JOB": json.dumps(job, sort_keys=True), "RAY_ADDRESS": address,
                    "MATIH_STORAGE": str(self.storage_dir), "MATIH_LOG": str(self.log_path(request.job_id)),
                    "PYTHONUNBUFFERED": "1"})
        return env

    def log_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.log"

    def submit(self, request: JobRequest) -> None:
        with self._lock:
            if request.job_id in self._jobs:
                raise Conflict(f"job {request.job_id!r} was already submitted")
            ray = self._ray()
            address = ray.get_runtime_context().gcs_address
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            self.log_path(request.job_id).touch()
            self.storage_dir.mkdir(parents=True, exist_ok=True)
            driver_log = self.jobs_dir / f"{request.job_id}.driver.log"
            with driver_log.open("ab") as out:
                process = subprocess.Popen([sys.executable, "-m", DRIVER_MODULE], stdin=subprocess.DEVNULL,
                                           stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                           env=self._driver_env(request, address))
            self._jobs[request.job_id] = _Submitted(process, driver_log)

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
            code = entry.process.poll()
            if code is None:
                return JobState("RUNNING")
            if entry.cancelled:
                entry.state = JobState("CANCELLED", "cancelled")
            elif code == 0:
                entry.state = JobState("SUCCEEDED")
            else:
                entry.state = JobState("FAILED", _failure(entry.driver_log, code))
            return entry.state

    def logs(self, job_id: str, offset: int = 0) -> str:
        path = self.log_path(job_id)
        if not path.is_file():
            if job_id in self._jobs:
                return ""
            raise NotFound(f"no log for job {job_id!r} in {self.jobs_dir}")
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        return text[offset:]

    def cancel(self, job_id: str) -> None:
        with self._lock:
            entry = self._entry(job_id)
            if entry.state is not None or entry.process.poll() is not None:
                return
            entry.cancelled = True
        _stop(entry.process)

    def close(self) -> None:
        with self._lock:
            running = [e for e in self._jobs.values() if e.state is None and e.process.poll() is None]
            for entry in running:
                entry.cancelled = True
        for entry in running:
            _stop(entry.process)
        with self._lock:
            ray = self._ray_running()
            if ray is not None and self._owns_ray:
                if self._home_thread is not None:
                    self._home_thread.submit(ray.shutdown).result()
                else:
                    ray.shutdown()
            if self._home_thread is not None:
                self._home_thread.shutdown(wait=True)
                self._home_thread = None
            self._owns_ray = False


def _loopback_only(ray: Any) -> None:
    """Make the Ray this process starts use 127.0.0.1 for every listener and address it advertises.

    On Linux Ray takes the host's outward address as the node's (``192.0.2.2``, say) even when given
    ``_node_ip_address="127.0.0.1"`` (it "resolves" loopback to that address) and then listens on every
    interface. A local Ray has no other node to talk to, so this turns on Ray's single-node behaviour
    (what it does on macOS and Windows): the node's address is the loopback one and it listens there only.
    Ray reads the switch when it is called, so this works after ``import ray`` too.
    """
    os.environ.update(SINGLE_NODE_ENV)  # for the processes Ray starts, and the jobs' drivers, which connect
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False


def _no_crash_handler_here(ray: Any) -> None:
    """Keep Ray's crash handler (absl's) out of this process's core worker, which ``ray.init`` starts.

    That handler takes SIGTERM too: stopping ``matih-lite up`` after a job had started Ray printed
    "*** SIGTERM received ... epoll_pwait" and the process then died by SIGABRT (exit 134) instead of
    shutting down. Without it the service's own SIGTERM handler runs, which closes the backends and so
    shuts Ray down cleanly. Ray's other processes (raylet, workers, the jobs' drivers) keep theirs.
    """
    ray._private.ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True


def _stop(process: subprocess.Popen) -> None:
    """Stop a job's driver and whatever it forked: SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def _failure(driver_log: Path, code: int) -> str:
    """Why a driver exited non-zero: its ``MATIH-JOB-FAILED`` line, else the end of its output."""
    try:
        text = driver_log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in reversed(text.splitlines()):
        at = line.find(FAILED_MARKER)
        if at >= 0:
            return line[at + len(FAILED_MARKER):].strip()
    tail = [line.strip() for line in text.splitlines() if line.strip()][-1:]
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return f"the job's driver {how}" + (f": {tail[0][:1500]}" if tail else "")


def create_backend(settings: RayLocalSettings, context: BackendContext) -> RayLocalBackend:
    return RayLocalBackend(settings, context)


@hookimpl
def register_backends(register):
    register("compute", "ray-local", create_backend, settings=RayLocalSettings,
             summary="a Ray started in this process on the first job; the lite default")
