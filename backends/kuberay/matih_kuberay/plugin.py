"""``compute = { backend = "kuberay", namespace = "ml", service_url = "http://matih-lite.ml.svc:8000" }``.

Each job becomes a RayJob (or, with ``mode = "raycluster"``, a RayCluster) in its tenant's namespace,
created through ``CustomObjectsApi``; the tenant's ``[quotas]`` become a ResourceQuota there, with the
platform's own queue still in front (a job waits in matih-lite's queue, saying why, before any pod
asks Kubernetes for room). The objects are :mod:`matih_kuberay.manifests`' (what ``matih-lite jobs
manifest`` prints).

The RayJob runs in KubeRay's ``InteractiveMode``: KubeRay makes the job's cluster and waits; once it is
up (``jobDeploymentStatus: Waiting``, ``status.dashboardURL`` set) this backend submits the job to that
cluster's Jobs API exactly as the ``ray`` backend does (the job's code uploaded as its working dir, its
settings and a job-scoped token in the runtime environment), then names the submission in
``spec.jobId``. From there KubeRay tracks it: the status comes from the RayJob's ``status``
(``jobDeploymentStatus``, ``jobStatus``, ``reason``, ``message``), and KubeRay deletes the cluster
``ttl_seconds`` after the job ends (``shutdownAfterJobFinishes``). Logs come from the cluster's
dashboard job API, and are kept in ``<home>/jobs/<id>.log`` when the job ends, before the cluster goes.
Cancel deletes the RayJob (its cluster with it). A RayJob deleted by someone else, or failed by
KubeRay (a deadline, a cluster that never came up), fails the job with KubeRay's reason.

The kubernetes client is imported when the backend is built, never to validate its settings.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import msgspec

from matih_kuberay import manifests
from matih_kuberay.settings import KubeRaySettings
from matih_lite.contracts import BackendContext, Health
from matih_lite.contracts.jobs import JobRequest, JobState, Resources
from matih_lite.errors import Conflict, InvalidInput, MatihError, NotFound, StoreError
from matih_lite.hookspecs import hookimpl

log = logging.getLogger("matih_kuberay")

GROUP, VERSION = manifests.RAY_GROUP, manifests.RAY_VERSION
_PLURAL = {"rayjob": "rayjobs", "raycluster": "rayclusters"}
_JOB_STATUS = {"": "PENDING", "PENDING": "PENDING", "RUNNING": "RUNNING", "SUCCEEDED": "SUCCEEDED",
               "FAILED": "FAILED", "STOPPED": "CANCELLED"}


class Kubernetes:
    """The few Kubernetes API calls the backend makes, each with a timeout; errors as matih_lite's."""

    def __init__(self, settings: KubeRaySettings) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        if settings.api_server:
            cfg.host = settings.api_server.rstrip("/")
            if settings.token:
                cfg.api_key = {"authorization": settings.token}
                cfg.api_key_prefix = {"authorization": "Bearer"}
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                try:
                    config.load_kube_config(config_file=settings.kubeconfig, context=settings.context,
                                            client_configuration=cfg)
                except (config.ConfigException, OSError) as exc:
                    raise StoreError(f"no Kubernetes API to talk to: not in a cluster, and no kubeconfig "
                                     f"({exc}); set api_server and token, or kubeconfig") from exc
        cfg.verify_ssl = settings.verify_ssl
        if settings.ca_cert:
            cfg.ssl_ca_cert = settings.ca_cert
        cfg.retries = 1
        self.host = cfg.host
        self.timeout = settings.timeout
        self.api_client = client.ApiClient(cfg)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self._api_exception = client.exceptions.ApiException

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with the timeout; 404 NotFound, 409 Conflict, 422 InvalidInput, else StoreError."""
        import urllib3

        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except self._api_exception as exc:
            message = _status_message(exc)
            if exc.status == 404:
                raise NotFound(f"{what}: not found ({message})") from None
            if exc.status == 409:
                raise Conflict(f"{what}: {message}") from None
            if exc.status == 422:
                raise InvalidInput(f"{what}: the Kubernetes API refused it: {message}") from None
            if exc.status in (401, 403):
                raise StoreError(f"{what}: the Kubernetes API said {exc.status} {exc.reason}: {message}; give the "
                                 "service's account the rights on rayjobs/rayclusters.ray.io, namespaces and "
                                 "resourcequotas") from None
            raise StoreError(f"{what}: the Kubernetes API failed ({exc.status} {exc.reason}): {message}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreError(f"{what}: the Kubernetes API at {self.host} does not answer: "
                             f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self.api_client.close()


def _status_message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason or exc.status)


class _Tracked(msgspec.Struct):
    namespace: str
    name: str
    request: JobRequest | None = None
    """Kept until the job is submitted to its cluster's Jobs API (it holds the job's token)."""
    submitted: bool = False
    dashboard: str | None = None
    cancelled: bool = False


class KubeRayBackend:
    """The :class:`~matih_lite.contracts.slots.ComputeBackend` contract on KubeRay."""

    def __init__(self, settings: KubeRaySettings, context: BackendContext) -> None:
        try:
            manifests.memory_bytes(settings.worker_memory)
            manifests.memory_bytes(settings.head_memory)
        except ValueError as exc:
            raise InvalidInput(f"kuberay settings: {exc}") from None
        self.settings = settings
        self.jobs_dir = context.home / "jobs"
        self.kube = Kubernetes(settings)
        self.plural = _PLURAL[settings.mode]
        self.kind = "RayJob" if settings.mode == "rayjob" else "RayCluster"
        self._jobs: dict[str, _Tracked] = {}
        self._ended: dict[str, JobState] = {}
        self._dashboards: dict[str, Any] = {}
        self._lock = threading.RLock()

    # ---- contract: without a job -----------------------------------------------------------------
    def health(self) -> Health:
        try:
            found = self.kube.call("the ray.io/v1 API", self.kube.custom.get_api_resources, GROUP, VERSION)
        except NotFound:
            return Health(False, f"KubeRay is not installed in the cluster at {self.kube.host} (no ray.io/v1 API); "
                                 "install the KubeRay operator")
        except MatihError as exc:
            return Health(False, f"Kubernetes API unreachable: {exc.message}")
        names = {r.name for r in (found.resources or [])}
        if self.plural not in names:
            return Health(False, f"the cluster's ray.io/v1 API has no {self.plural}; upgrade KubeRay to 1.x")
        where = f"{self.settings.namespace}-<tenant>" if self.settings.tenant_namespaces else self.settings.namespace
        return Health(True, f"KubeRay at {self.kube.host}: a {self.kind} per job in namespace {where}")

    def capacity(self) -> Resources | None:
        return None  # KubeRay clusters are made per job and sized to it

    def service_url(self) -> str | None:
        return self.settings.service_url

    def render(self, request: JobRequest) -> list[dict[str, Any]]:
        return manifests.manifests(request, self.settings)

    # ---- submitting ---------------------------------------------------------------------------
    def submit(self, request: JobRequest) -> None:
        objects = self.render(request)
        target = objects[-1]
        ns, name = target["metadata"]["namespace"], target["metadata"]["name"]
        with self._lock:
            if request.job_id in self._jobs:
                raise Conflict(f"job {request.job_id!r} was already submitted ({self.kind} {ns}/{name})")
            for obj in objects[:-1]:
                if obj["kind"] == "Namespace":
                    self._ensure_namespace(obj)
                elif obj["kind"] == "ResourceQuota":
                    self._apply_quota(obj)
            self.kube.call(f"create {self.kind} {ns}/{name}", self.kube.custom.create_namespaced_custom_object,
                           GROUP, VERSION, ns, self.plural, target)
            self._jobs[request.job_id] = _Tracked(ns, name, request)
        log.info("created %s %s/%s for job %s", self.kind, ns, name, request.job_id)

    def _ensure_namespace(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        try:
            self.kube.call(f"namespace {name}", self.kube.core.read_namespace, name)
        except NotFound:
            if not self.settings.create_namespaces:
                raise StoreError(f"namespace {name} does not exist; create it (or set create_namespaces = true)")
            try:
                self.kube.call(f"create namespace {name}", self.kube.core.create_namespace, obj)
            except Conflict:
                pass  # made meanwhile

    def _apply_quota(self, obj: dict[str, Any]) -> None:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        try:
            current = self.kube.call(f"ResourceQuota {ns}/{name}", self.kube.core.read_namespaced_resource_quota,
                                     name, ns)
        except NotFound:
            self.kube.call(f"create ResourceQuota {ns}/{name}", self.kube.core.create_namespaced_resource_quota, ns, obj)
            return
        if dict(current.spec.hard or {}) != obj["spec"]["hard"]:
            body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": current.metadata.resource_version}}
            self.kube.call(f"replace ResourceQuota {ns}/{name}", self.kube.core.replace_namespaced_resource_quota,
                           name, ns, body)

    # ---- following ----------------------------------------------------------------------------
    def _tracked(self, job_id: str) -> _Tracked:
        with self._lock:
            found = self._jobs.get(job_id)
        if found is not None:
            return found
        # Not submitted from this process (another replica, or before a restart): find it by its label.
        selector = f"matih.io/job-id={job_id}"
        if self.settings.tenant_namespaces:
            listed = self.kube.call(f"{self.plural} labelled {selector}", self.kube.custom.list_cluster_custom_object,
                                    GROUP, VERSION, self.plural, label_selector=selector)
        else:
            listed = self.kube.call(f"{self.plural} labelled {selector}",
                                    self.kube.custom.list_namespaced_custom_object, GROUP, VERSION,
                                    self.settings.namespace, self.plural, label_selector=selector)
        items = listed.get("items") or []
        if not items:
            raise NotFound(f"no {self.kind} of job {job_id!r} in the cluster at {self.kube.host}")
        meta = items[0]["metadata"]
        found = _Tracked(meta["namespace"], meta["name"], None, submitted=True)
        with self._lock:
            return self._jobs.setdefault(job_id, found)

    def _object(self, tracked: _Tracked) -> dict[str, Any] | None:
        try:
            return self.kube.call(f"{self.kind} {tracked.namespace}/{tracked.name}",
                                  self.kube.custom.get_namespaced_custom_object, GROUP, VERSION, tracked.namespace,
                                  self.plural, tracked.name)
        except NotFound:
            return None

    def status(self, job_id: str) -> JobState:
        ended = self._ended.get(job_id)
        if ended is not None:
            return ended
        tracked = self._tracked(job_id)
        obj = self._object(tracked)
        if obj is None or obj.get("metadata", {}).get("deletionTimestamp"):
            if tracked.cancelled:
                return self._end(job_id, tracked, JobState("CANCELLED", f"its {self.kind} was deleted"), logs=False)
            return self._end(job_id, tracked, JobState(
                "FAILED", f"its {self.kind} {tracked.namespace}/{tracked.name} was deleted outside matih-lite, "
                          "and its Ray cluster with it"), logs=False)
        if self.settings.mode == "rayjob":
            return self._rayjob_state(job_id, tracked, obj)
        return self._raycluster_state(job_id, tracked, obj)

    def _rayjob_state(self, job_id: str, tracked: _Tracked, obj: dict[str, Any]) -> JobState:
        status = obj.get("status") or {}
        deployment = status.get("jobDeploymentStatus") or ""
        if deployment in ("", "Initializing"):
            cluster = (status.get("rayClusterStatus") or {}).get("state") or "not ready"
            return JobState("PENDING", f"KubeRay is making the job's Ray cluster ({cluster})")
        if deployment == "Waiting":
            if status.get("dashboardURL"):
                tracked.dashboard = _http(status["dashboardURL"])
            return self._submit_to_cluster(job_id, tracked)
        if status.get("dashboardURL"):
            tracked.dashboard = _http(status["dashboardURL"])
        if deployment == "ValidationFailed":
            return self._end(job_id, tracked, JobState("FAILED", f"KubeRay refused the RayJob: {status.get('message')}"),
                             logs=False)
        if deployment == "Failed":
            reason, message = status.get("reason") or "", status.get("message") or ""
            if reason == "AppFailed" or (status.get("jobStatus") == "FAILED"):
                return self._end(job_id, tracked, JobState("FAILED", message), failed=True)
            return self._end(job_id, tracked, JobState("FAILED", f"KubeRay failed the job ({reason or 'no reason'}): "
                                                                 f"{message}"), logs=bool(tracked.dashboard))
        job_status = _JOB_STATUS.get(status.get("jobStatus") or "", "PENDING")
        if deployment == "Complete" or job_status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            if job_status not in ("SUCCEEDED", "FAILED", "CANCELLED"):
                job_status = "SUCCEEDED"
            message = {"CANCELLED": "stopped on its Ray cluster", "FAILED": status.get("message") or ""}.get(job_status,
                                                                                                            "")
            return self._end(job_id, tracked, JobState(job_status, message), failed=job_status == "FAILED")
        return JobState(job_status, status.get("message") or "")

    def _raycluster_state(self, job_id: str, tracked: _Tracked, obj: dict[str, Any]) -> JobState:
        status = obj.get("status") or {}
        state = status.get("state") or ""
        if state == "failed":
            return self._end(job_id, tracked, JobState("FAILED", f"the job's RayCluster failed: "
                                                                 f"{status.get('reason') or 'no reason given'}"),
                             logs=False, delete=True)
        if not tracked.submitted:
            if state != "ready":
                return JobState("PENDING", f"KubeRay is making the job's Ray cluster ({state or 'not ready'})")
            head = status.get("head") or {}
            tracked.dashboard = self.settings.dashboard_url.format(
                service=head.get("serviceName") or f"{tracked.name}-head-svc", cluster=tracked.name,
                namespace=tracked.namespace)
            return self._submit_to_cluster(job_id, tracked)
        from matih_ray.jobs_api import RAY_STATUSES

        info = self._jobs_api(tracked).info(f"matih-{job_id}")
        job_status = RAY_STATUSES.get(str(info.get("status")), "PENDING")
        if job_status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            message = {"CANCELLED": "stopped on its Ray cluster", "FAILED": str(info.get("message") or "")}.get(
                job_status, "")
            return self._end(job_id, tracked, JobState(job_status, message), failed=job_status == "FAILED", delete=True)
        return JobState(job_status, str(info.get("message") or ""))

    def _submit_to_cluster(self, job_id: str, tracked: _Tracked) -> JobState:
        """The job's cluster is up: submit the job to its Jobs API (once), then name it in the RayJob."""
        from matih_ray.plugin import submission_for

        if tracked.submitted:
            return JobState("PENDING", "submitted to its Ray cluster")
        if tracked.request is None:
            return self._end(job_id, tracked, JobState(
                "FAILED", "the job's submission was lost: the service that created its cluster stopped before the "
                          "cluster was ready"), logs=False, delete=True)
        if not tracked.dashboard:
            return JobState("PENDING", "waiting for the Ray cluster's dashboard address")
        body = submission_for(tracked.request, self.settings)
        try:
            self._jobs_api(tracked).submit(**body)
        except Conflict:
            pass  # an earlier try got through before its answer was lost
        if self.settings.mode == "rayjob":
            self.kube.call(f"RayJob {tracked.namespace}/{tracked.name}", self.kube.custom.patch_namespaced_custom_object,
                           GROUP, VERSION, tracked.namespace, self.plural, tracked.name,
                           {"spec": {"jobId": body["submission_id"]}})
        tracked.submitted = True
        tracked.request = None  # the token it carries now lives only in the cluster
        log.info("job %s submitted to its Ray cluster at %s", job_id, tracked.dashboard)
        return JobState("PENDING", "submitted to its Ray cluster")

    def _jobs_api(self, tracked: _Tracked) -> Any:
        from matih_ray.jobs_api import JobsApi

        url = tracked.dashboard
        if not url:
            raise StoreError("the job's Ray cluster has no dashboard address yet")
        with self._lock:
            api = self._dashboards.get(url)
            if api is None:
                api = self._dashboards[url] = JobsApi(url, timeout=self.settings.timeout)
        return api

    def _end(self, job_id: str, tracked: _Tracked, state: JobState, *, failed: bool = False, logs: bool = True,
             delete: bool = False) -> JobState:
        """Record a job's end: keep its log (the cluster goes soon), say why it failed, tidy a RayCluster."""
        from matih_ray.plugin import failure_message

        text = None
        if logs and tracked.dashboard:
            try:
                text = self._jobs_api(tracked).logs(f"matih-{job_id}")
            except MatihError as exc:
                log.warning("job %s: could not keep its log: %s", job_id, exc.message)
        if text is not None:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            part = self._log_path(job_id).with_suffix(f".{os.getpid()}.part")
            part.write_text(text, encoding="utf-8")
            os.replace(part, self._log_path(job_id))
        if failed:
            state = JobState("FAILED", failure_message(text or "", state.message))
        if delete and self.settings.mode == "raycluster":
            if self.settings.ttl_seconds and not tracked.cancelled:
                # Left for a look, as a RayJob's cluster is; a restart of this process forgets the timer
                # (the RayCluster then stays until deleted by hand).
                timer = threading.Timer(self.settings.ttl_seconds, self._delete, (tracked,))
                timer.daemon = True
                timer.start()
            else:
                self._delete(tracked)
        with self._lock:
            self._ended[job_id] = state
        return state

    def _log_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.log"

    def logs(self, job_id: str, offset: int = 0) -> str:
        saved = self._log_path(job_id)
        if job_id in self._ended:
            return saved.read_text(encoding="utf-8", errors="replace")[offset:] if saved.is_file() else ""
        tracked = self._tracked(job_id)
        if not tracked.submitted or not tracked.dashboard:
            return ""  # its cluster is still being made: nothing has run
        try:
            return self._jobs_api(tracked).logs(f"matih-{job_id}")[offset:]
        except NotFound:
            return ""

    def cancel(self, job_id: str) -> None:
        if job_id in self._ended:
            return
        tracked = self._tracked(job_id)
        tracked.cancelled = True
        if self.settings.mode == "raycluster" and tracked.submitted and tracked.dashboard:
            try:
                self._jobs_api(tracked).stop(f"matih-{job_id}")
            except MatihError as exc:
                log.warning("job %s: could not stop it on its cluster before deleting that: %s", job_id, exc.message)
        self._delete(tracked)

    def _delete(self, tracked: _Tracked) -> None:
        from kubernetes import client

        try:
            self.kube.call(f"delete {self.kind} {tracked.namespace}/{tracked.name}",
                           self.kube.custom.delete_namespaced_custom_object, GROUP, VERSION, tracked.namespace,
                           self.plural, tracked.name, body=client.V1DeleteOptions(propagation_policy="Foreground"))
        except NotFound:
            pass

    def close(self) -> None:
        for api in self._dashboards.values():
            api.close()
        self._dashboards.clear()
        self.kube.close()


def _http(address: str) -> str:
    return address if "://" in address else f"http://{address}"


def create_backend(settings: KubeRaySettings, context: BackendContext) -> KubeRayBackend:
    return KubeRayBackend(settings, context)


@hookimpl
def register_backends(register):
    register("compute", "kuberay", create_backend, settings=KubeRaySettings,
             summary="a RayJob (or RayCluster) per job on Kubernetes through KubeRay; quotas as ResourceQuotas")
