"""A job's driver on a Ray cluster: ``python -m matih_lite.training.driver``, the entrypoint of a Ray Jobs API job.

A compute backend starts this command as a Ray job of its own: a cluster backend (``ray``,
``kuberay``) submits it through the Ray Jobs API with a runtime environment that carries the job's
code (the spec's ``base_dir`` as the working dir); ``ray-local`` runs it as a process on this
machine's Ray (``RAY_ADDRESS``). Being its own Ray job matters: when it stops, Ray frees whatever
the job held (actors, placement groups). It reads these variables:

``MATIH_JOB``
    The :class:`~matih_lite.contracts.jobs.JobRequest` as JSON: the spec, the run to log into, and
    ``tracking = {"url", "token"}``, the ml-service and a token made for this job alone. Metrics,
    trial runs and checkpoints go there over HTTP, since the cluster is not the service's process.
``MATIH_STORAGE``
    Where Ray Train and Tune keep their bookkeeping (a folder every node sees, or a URI such as
    ``s3://bucket/prefix``); the checkpoints themselves go to the artifacts slot.
``MATIH_WORKING_DIR``
    ``1`` when the job's code came as Ray's working dir (its ``base_dir`` then means nothing here).
``MATIH_LOG``
    A file to write the job's output to (ray-local, where the workers write there too); unset, the
    output is this process's, which the Jobs API keeps, with the workers' forwarded by Ray.

The driver connects to the cluster it runs on, runs :func:`matih_lite.training.runner.run_job` and
exits 0, or prints one ``MATIH-JOB-FAILED: <reason>`` line and exits 1, so the backend can say why
a job failed in the user's words rather than Ray's.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

FAILED_MARKER = "MATIH-JOB-FAILED: "
JOB_VARIABLE = "MATIH_JOB"
STORAGE_VARIABLE = "MATIH_STORAGE"


def failure_reason(exc: BaseException) -> str:
    """The user's error in one line: the innermost cause Ray and Tune wrapped, with its type."""
    seen = set()
    cause: BaseException = exc
    while id(cause) not in seen:
        seen.add(id(cause))
        inner = getattr(cause, "cause", None) or cause.__cause__
        if not isinstance(inner, BaseException):
            break
        cause = inner
    text = str(cause).strip().splitlines()
    line = text[-1] if text else ""
    if isinstance(exc, RuntimeError) and "every trial failed" in str(exc):
        line, cause = str(exc).strip().splitlines()[0], exc
    return " ".join(f"{type(cause).__name__}: {line}".split())[:2000]


def request_from_environment(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The job request from ``MATIH_JOB``; its ``base_dir`` dropped, the code being Ray's working dir here."""
    env = os.environ if environ is None else environ
    raw = env.get(JOB_VARIABLE)
    if not raw:
        raise SystemExit(f"{JOB_VARIABLE} is not set: this command is the driver of a job a matih-lite compute "
                         "backend submits, not one to run by hand")
    request = json.loads(raw)
    spec = dict(request["spec"])
    # The job's code is the working dir: Ray unpacks it on every node, makes it the cwd of the driver and of
    # every worker (trials too: RAY_CHDIR_TO_TRIAL_DIR=0) and puts it on their path. The folder it came from
    # on the service's machine means nothing here, and relative paths resolve against the cwd.
    if env.get("MATIH_WORKING_DIR") == "1":
        spec["base_dir"] = None
    request["spec"] = spec
    return request


def _stopped(signum: int, frame: object) -> None:
    """Stopped (a cancel): go at once; Ray frees what the job held when its driver is gone."""
    print("matih: the job was stopped", flush=True)
    os._exit(128 + signum)


def main() -> int:
    """Run the job in ``MATIH_JOB`` on the Ray cluster this process is a driver of; the exit code says how it ended."""
    request = request_from_environment()
    storage = os.environ.get(STORAGE_VARIABLE) or str(Path(tempfile.gettempdir()) / "matih-ray-storage")
    if "://" not in storage:
        Path(storage).mkdir(parents=True, exist_ok=True)
    log_path = os.environ.get("MATIH_LOG") or None
    import ray

    from matih_lite.training.runner import run_job

    ray.init(log_to_driver=log_path is None, configure_logging=False)
    import signal

    signal.signal(signal.SIGTERM, _stopped)  # after ray.init, which installs a handler of its own
    try:
        summary = run_job(request, storage_path=storage.rstrip("/") + "/" + request["job_id"], log_path=log_path)
    except BaseException as exc:  # the reason goes to the backend, whatever failed
        print(FAILED_MARKER + failure_reason(exc), flush=True)
        return 1
    print(json.dumps({"matih_job": request["job_id"], "summary": summary}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
