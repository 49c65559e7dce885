"""The Ray Jobs API of one cluster (its dashboard, ``http://head:8265``), over HTTP with timeouts.

This is the REST interface that ``ray.job_submission.JobSubmissionClient`` wraps (``/api/jobs/``,
``/api/packages/``, ``/api/version``), spoken with httpx so that every call has a timeout: the SDK
sends its requests without one, and a head that stops answering would hang the job supervisor with
it. The working dir is packaged and uploaded exactly as the SDK does it, with Ray's own functions
(a content-addressed ``gcs://_ray_pkg_<hash>.zip``, ``.gitignore`` and ``excludes`` honoured).

Errors: a cluster that does not answer, or answers 5xx, raises StoreError naming the address; an
unknown submission id NotFound; a submission id already used Conflict.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matih_lite.errors import Conflict, InvalidInput, NotFound, StoreError

log = logging.getLogger("matih_ray")

RAY_STATUSES = {"PENDING": "PENDING", "RUNNING": "RUNNING", "SUCCEEDED": "SUCCEEDED", "FAILED": "FAILED",
                "STOPPED": "CANCELLED"}
"""Ray job statuses as the compute contract names them."""


class JobsApi:
    """One Ray cluster's Jobs API at ``address`` (the dashboard URL). Thread-safe (httpx's client is)."""

    def __init__(self, address: str, *, timeout: float = 10.0, headers: Mapping[str, str] | None = None,
                 verify: bool | str = True, upload_timeout: float = 300.0) -> None:
        import httpx

        self._httpx = httpx
        self.address = address.rstrip("/")
        self.upload_timeout = upload_timeout
        self.http = httpx.Client(base_url=self.address, headers=dict(headers or {}), verify=verify,
                                 timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))

    def close(self) -> None:
        self.http.close()

    # ---- HTTP ---------------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, what: str = "", **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except self._httpx.HTTPError as exc:
            raise StoreError(f"the Ray cluster at {self.address} does not answer ({method} {path}): "
                             f"{type(exc).__name__}: {exc or 'no detail'}") from exc
        if resp.status_code == 404:
            raise NotFound(f"the Ray cluster at {self.address} has no {what or path}")
        if resp.status_code >= 500:
            text = resp.text
            if "already exists" in text:
                raise Conflict(f"the Ray cluster at {self.address} already has {what or 'this job'}")
            raise StoreError(f"the Ray cluster at {self.address} failed {method} {path} "
                             f"({resp.status_code}): {_last_line(text)}")
        if resp.status_code >= 400:
            text = resp.text
            if "already exists" in text:
                raise Conflict(f"the Ray cluster at {self.address} already has {what or 'this job'}")
            raise InvalidInput(f"the Ray cluster at {self.address} refused {method} {path} "
                               f"({resp.status_code}): {_last_line(text)}")
        return resp

    def version(self) -> dict[str, Any]:
        """``{"ray_version", "session_name", ...}`` of the cluster."""
        return self._call("GET", "/api/version").json()

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes as Ray's state API lists them (``state``, ``resources_total``, ...)."""
        body = self._call("GET", "/api/v0/nodes", params={"limit": 10_000}).json()
        return list(body.get("data", {}).get("result", {}).get("result", []))

    # ---- jobs ---------------------------------------------------------------------------------
    def submit(self, *, submission_id: str, entrypoint: str, runtime_env: Mapping[str, Any],
               metadata: Mapping[str, str] | None = None, entrypoint_num_cpus: float | None = None,
               entrypoint_num_gpus: float | None = None, entrypoint_resources: Mapping[str, float] | None = None,
               ) -> None:
        """Submit a job under ``submission_id``, uploading a local ``working_dir`` first. Raises Conflict."""
        try:
            self.info(submission_id)
        except NotFound:
            pass
        else:
            raise Conflict(f"the Ray cluster at {self.address} already has job {submission_id}")
        env = self.upload_working_dir(runtime_env)
        body: dict[str, Any] = {"entrypoint": entrypoint, "submission_id": submission_id, "runtime_env": env,
                                "metadata": dict(metadata or {})}
        for key, value in (("entrypoint_num_cpus", entrypoint_num_cpus), ("entrypoint_num_gpus", entrypoint_num_gpus),
                           ("entrypoint_resources", dict(entrypoint_resources) if entrypoint_resources else None)):
            if value:
                body[key] = value
        self._call("POST", "/api/jobs/", json=body, what=f"job {submission_id}")

    def info(self, submission_id: str) -> dict[str, Any]:
        """The job's details: ``status`` (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED), ``message``, times."""
        return self._call("GET", f"/api/jobs/{submission_id}", what=f"job {submission_id}").json()

    def logs(self, submission_id: str) -> str:
        """Everything the job's driver printed so far (its workers' output included, as Ray forwards it)."""
        return self._call("GET", f"/api/jobs/{submission_id}/logs", what=f"job {submission_id}").json().get("logs", "")

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the job (SIGTERM to its driver, then its tasks and actors); False if it had ended."""
        body = self._call("POST", f"/api/jobs/{submission_id}/stop", what=f"job {submission_id}").json()
        return bool(body.get("stopped"))

    # ---- the job's code -------------------------------------------------------------------------
    def upload_working_dir(self, runtime_env: Mapping[str, Any]) -> dict[str, Any]:
        """``runtime_env`` with a local ``working_dir`` replaced by the URI of its package on the cluster."""
        env = copy.deepcopy(dict(runtime_env))
        if not env.get("working_dir") or "://" in str(env["working_dir"]):
            return env
        from ray._private.runtime_env.packaging import create_package, get_uri_for_directory
        from ray.dashboard.modules.job.common import uri_to_http_components

        folder = str(Path(env["working_dir"]).resolve())
        excludes = list(env.get("excludes") or [])
        if not Path(folder).is_dir():
            raise InvalidInput(f"the job's code folder {folder} does not exist (the spec's base_dir)")
        uri = get_uri_for_directory(folder, include_gitignore=True, excludes=excludes)
        protocol, name = uri_to_http_components(uri)
        path = f"/api/packages/{protocol}/{name}"
        try:
            self._call("GET", path, what=f"package {uri}")
        except NotFound:
            with tempfile.TemporaryDirectory(prefix="matih-pkg-") as tmp:
                package = Path(tmp) / name
                create_package(folder, package, include_gitignore=True, excludes=excludes)
                self._call("PUT", path, content=package.read_bytes(), what=f"package {uri}",
                           timeout=self.upload_timeout)
                log.info("uploaded the job's code %s (%d bytes) to %s", folder, package.stat().st_size, self.address)
        env["working_dir"] = uri
        env.pop("excludes", None)
        return env


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:500]
