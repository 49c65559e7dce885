"""One PyFlink job as the ml-service runs it: a process of the Flink environment's Python (a local
mini-cluster in its JVM), its checkpoints, its REST status, and stopping it cleanly.

A job lives in a folder of its own (``<work_dir>/<name>/``): ``spec.json`` (what it runs on),
``checkpoints/`` (kept on cancel: ``chk-N/_metadata``), ``savepoints/`` (written by a clean stop),
``logs/`` (the JVM's and the driver's output). :meth:`FlinkJob.start` restores from the newest
savepoint or completed checkpoint there, so a job killed mid-window goes on from its last checkpoint
and one stopped cleanly from its savepoint. The process runs in its own session and is stopped by its
PID (its process group: the JVM and the Python workers), never by name.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("matih_flink.jobs")

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def latest_restore_point(folder: Path) -> str | None:
    """The newest savepoint or completed checkpoint (a folder with ``_metadata``) under ``folder``, or None."""
    found = [m.parent for m in folder.glob("**/_metadata") if m.is_file()]
    if not found:
        return None
    return str(max(found, key=lambda p: p.stat().st_mtime))


class FlinkJob:
    """A job's process and folder; ``spec`` is completed with ports, folders and the restore point at start."""

    def __init__(self, name: str, module: str, env: Any, folder: Path, *, python_path: list[str],
                 environ: dict[str, str] | None = None) -> None:
        self.name = name
        self.module = module
        self.env = env
        self.folder = Path(folder)
        self.python_path = python_path
        self.environ = dict(environ or {})
        self.process: subprocess.Popen | None = None
        self.spec: dict[str, Any] = {}
        self.started_at: float | None = None
        self.restored_from: str | None = None
        self.job_id: str | None = None

    # ---- folders ------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def savepoints(self) -> Path:
        return self.folder / "savepoints"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self, spec: dict[str, Any], *, restore: bool = True) -> None:
        """Start the job's process (returns at once), restoring from the newest checkpoint when ``restore``."""
        for folder in (self.checkpoints, self.savepoints, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        self.restored_from = latest_restore_point(self.folder) if restore else None
        self.spec = {**spec, "name": self.name, "rest_port": free_port(),
                     "checkpoint_dir": str(self.checkpoints), "savepoint_dir": str(self.savepoints),
                     "restore": self.restored_from, "jars": [str(j) for j in self.env.jars]}
        path = self.folder / "spec.json"
        path.write_text(json.dumps(self.spec, indent=1))
        environ = {**os.environ, **self.environ, "FLINK_LOG_DIR": str(self.logs),
                   # PyFlink's in-driver ("loopback") Python workers listen on every interface: run them as
                   # processes the JVM starts instead, which talk to it over 127.0.0.1.
                   "_python_worker_execution_mode": "process",
                   "PYTHONPATH": os.pathsep.join([*self.python_path, os.environ.get("PYTHONPATH", "")]).rstrip(
                       os.pathsep)}
        out = open(self.logs / "driver.log", "ab")
        try:
            self.process = subprocess.Popen([str(self.env.python), "-m", self.module, str(path)], cwd=self.folder,
                                            env=environ, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            out.close()
        self.started_at = time.time()
        self.job_id = None
        log.info("flink job %s started (pid %s)%s", self.name, self.process.pid,
                 f", restoring {self.restored_from}" if self.restored_from else "")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def stop(self, *, drain: bool = True, timeout: float = 60.0) -> str | None:
        """Stop the job: with ``drain``, through Flink's stop-with-savepoint (state and offsets kept in a
        savepoint the next start restores); then, or at once, its process group by PID. Returns the savepoint."""
        savepoint = None
        if drain and self.alive():
            try:
                savepoint = self._stop_with_savepoint(timeout)
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("flink job %s: stop with a savepoint failed (%s); stopping its process", self.name, exc)
        self.kill(grace=10.0 if savepoint else 2.0)
        return savepoint

    def kill(self, grace: float = 0.0) -> None:
        """End the process group: SIGTERM (after ``grace`` s for it to leave by itself), then SIGKILL."""
        proc = self.process
        if proc is None:
            return
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # workers the JVM left behind in the group
        except ProcessLookupError:
            pass

    # ---- REST ----------------------------------------------------------------------------------
    def rest(self, path: str, method: str = "GET", body: Any = None, timeout: float = 5.0) -> Any:
        port = self.spec.get("rest_port")
        if not port:
            raise OSError("not started")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://{LOOPBACK}:{port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def overview(self) -> dict[str, Any] | None:
        """The job as the mini-cluster reports it (``/jobs/overview``), or None while it cannot say."""
        try:
            jobs = self.rest("/jobs/overview").get("jobs") or []
        except (OSError, ValueError):
            return None
        mine = [j for j in jobs if j.get("name") == self.name] or jobs
        if not mine:
            return None
        job = max(mine, key=lambda j: j.get("start-time", 0))
        self.job_id = job.get("jid")
        return job

    def last_checkpoint(self) -> dict[str, Any] | None:
        """The latest completed checkpoint (id, when, where), from REST or else from the folder."""
        if self.job_id is None:
            self.overview()
        if self.job_id is not None:
            try:
                latest = (self.rest(f"/jobs/{self.job_id}/checkpoints").get("latest") or {}).get("completed")
                if latest:
                    return {"id": latest.get("id"), "at": latest.get("latest_ack_timestamp"),
                            "path": latest.get("external_path")}
            except (OSError, ValueError):
                pass
        found = latest_restore_point(self.folder)
        if found is None:
            return None
        return {"id": Path(found).name, "at": int(Path(found).stat().st_mtime * 1000), "path": found}

    def _stop_with_savepoint(self, timeout: float) -> str | None:
        if self.job_id is None and self.overview() is None:
            raise RuntimeError("the mini-cluster does not answer")
        answer = self.rest(f"/jobs/{self.job_id}/stop", "POST",
                           {"targetDirectory": str(self.savepoints), "drain": False, "formatType": "CANONICAL"})
        trigger = answer.get("request-id")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.rest(f"/jobs/{self.job_id}/savepoints/{trigger}")
            if (status.get("status") or {}).get("id") == "COMPLETED":
                operation = status.get("operation") or {}
                if "failure-cause" in operation:
                    raise RuntimeError(str(operation["failure-cause"].get("stack-trace", ""))[:300])
                return operation.get("location")
            time.sleep(0.2)
        raise RuntimeError(f"no savepoint within {timeout:g} s")

    def log_tail(self, lines: int = 30) -> str:
        """The end of the driver's output (where a job's Python traceback lands)."""
        path = self.logs / "driver.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if line.strip() and not line.startswith(("WARNING:", "SLF4J"))]
        return "\n".join(kept[-lines:])
