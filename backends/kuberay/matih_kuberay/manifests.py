"""The Kubernetes objects a job becomes: a RayJob (or a RayCluster), its tenant's Namespace and ResourceQuota.

Pure functions of the :class:`~matih_lite.contracts.jobs.JobRequest` and the backend's settings; nothing
here talks to a cluster, so ``matih-lite jobs manifest`` prints exactly what :meth:`submit` applies.

The job's cluster is sized from its spec: the head pod runs only the driver (``num-cpus: 0``); the one
worker group has a pod per Ray worker (trials at once times workers per trial), each with the spec's
CPUs and memory. GPUs: a whole number per pod as Kubernetes counts them; fractional GPUs stay Ray
resources, so ``gpus = 0.5`` packs two Ray workers into a pod that has one GPU. With autoscaling the
group starts at ``min_workers`` and grows to that size (KubeRay's in-tree autoscaler).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from matih_lite.contracts.jobs import JobRequest, Limits

RAY_GROUP = "ray.io"
RAY_VERSION = "v1"
MANAGED_BY = "matih-lite"
QUOTA_NAME = "matih-quota"
GPU_RESOURCE = "nvidia.com/gpu"
DRIVER_MODULE = "matih_lite.training.driver"
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
          "Ti": 2**40}


def job_name(job_id: str) -> str:
    """The RayJob's (or RayCluster's) name: a DNS-1035 label of at most 47 characters, as KubeRay requires."""
    return f"matih-{job_id}"[:47]


def tenant_namespace(settings: Any, tenant: str) -> str:
    """The namespace of ``tenant``'s jobs: ``<namespace>-<tenant>`` as a DNS-1123 label (or ``namespace``)."""
    if not settings.tenant_namespaces:
        return settings.namespace
    name = f"{settings.namespace}-{tenant}"
    clean = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")
    if clean != name or len(clean) > 63:
        # Two tenants must never share a namespace (nor its quota): say which tenant it was.
        digest = hashlib.sha256(tenant.encode()).hexdigest()[:8]
        clean = f"{clean[:54].rstrip('-')}-{digest}"
    return clean


def memory_bytes(quantity: str | int) -> int:
    """Bytes in a Kubernetes memory quantity (``"2Gi"``, ``"512M"``, ``1073741824``)."""
    if isinstance(quantity, int):
        return quantity
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(|k|M|G|T|Ki|Mi|Gi|Ti)\s*", str(quantity))
    if not match:
        raise ValueError(f"not a memory quantity: {quantity!r} (e.g. 2Gi, 512Mi, 4G)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def cpu_quantity(cpus: float) -> str:
    """CPUs as Kubernetes writes them: ``"2"``, ``"1500m"``."""
    milli = round(cpus * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


class WorkerLayout:
    """How a job's Ray workers map onto worker pods."""

    def __init__(self, request: JobRequest, settings: Any) -> None:
        spec = request.spec
        r = spec.get("resources") or {}
        self.cpus = float(r.get("cpus", 1.0))
        self.gpus = float(r.get("gpus", 0.0))
        memory = int(r.get("memory") or 0)
        self.memory = memory or memory_bytes(settings.worker_memory)
        per_trial = int(r.get("num_workers", 1))
        at_once = int((spec.get("tune") or {}).get("max_concurrent") or 1) if spec.get("tune") else 1
        self.ray_workers = per_trial * at_once
        # A fractional GPU is shared inside one pod: k Ray workers of gpus=1/k each on one device.
        self.per_pod = max(1, math.floor(1.0 / self.gpus + 1e-9)) if 0 < self.gpus < 1 else 1
        self.pods = math.ceil(self.ray_workers / self.per_pod)
        self.pod_cpus = self.cpus * self.per_pod
        self.pod_memory = self.memory * self.per_pod
        self.pod_gpus = math.ceil(self.gpus * self.per_pod - 1e-9) if self.gpus else 0


def _labels(request: JobRequest) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": MANAGED_BY, "matih.io/job-id": request.job_id,
            "matih.io/tenant": request.tenant, "matih.io/kind": request.kind}


def _pod_template(request: JobRequest, settings: Any, *, role: str, cpus: float, memory: int | str, gpus: int,
                  node_selector: dict[str, str], tolerations: list[dict[str, Any]]) -> dict[str, Any]:
    r = request.spec.get("resources") or {}
    requests = {"cpu": cpu_quantity(cpus), "memory": str(memory)}
    limits: dict[str, str] = {"cpu": cpu_quantity(math.ceil(cpus)), "memory": str(memory)}
    if gpus:
        requests[GPU_RESOURCE] = str(gpus)
        limits[GPU_RESOURCE] = str(gpus)
    container: dict[str, Any] = {"name": f"ray-{role}", "image": r.get("image") or settings.image,
                                 "resources": {"requests": requests, "limits": limits}}
    if role == "head":
        container["ports"] = [{"containerPort": 6379, "name": "gcs-server"}, {"containerPort": 8265, "name": "dashboard"},
                              {"containerPort": 10001, "name": "client"}]
    pod: dict[str, Any] = {"containers": [container]}
    account = r.get("service_account") or settings.service_account
    if account:
        pod["serviceAccountName"] = account
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["tolerations"] = [dict(t) for t in tolerations]
    return {"metadata": {"labels": {**_labels(request), "matih.io/role": role}}, "spec": pod}


def ray_cluster_spec(request: JobRequest, settings: Any) -> dict[str, Any]:
    """The ``RayClusterSpec`` of the job's cluster (a RayJob's ``rayClusterSpec``, or a RayCluster's ``spec``)."""
    r = request.spec.get("resources") or {}
    layout = WorkerLayout(request, settings)
    node_selector = {**settings.node_selector, **(r.get("node_selector") or {})}
    tolerations = [*settings.tolerations, *(r.get("tolerations") or [])]
    head = _pod_template(request, settings, role="head", cpus=settings.head_cpus, memory=settings.head_memory, gpus=0,
                         node_selector={}, tolerations=[])
    worker = _pod_template(request, settings, role="worker", cpus=layout.pod_cpus, memory=layout.pod_memory,
                           gpus=layout.pod_gpus, node_selector=node_selector, tolerations=tolerations)
    start: dict[str, str] = {"num-cpus": str(math.ceil(layout.pod_cpus - 1e-9))}
    if layout.pod_gpus:
        start["num-gpus"] = str(layout.pod_gpus)
    low = min(settings.min_workers, layout.pods) if settings.autoscaling else layout.pods
    group = {"groupName": "workers", "replicas": low, "minReplicas": low, "maxReplicas": layout.pods,
             "rayStartParams": start, "template": worker}
    spec: dict[str, Any] = {
        "rayVersion": settings.ray_version,
        "enableInTreeAutoscaling": bool(settings.autoscaling),
        "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"}, "template": head},
        "workerGroupSpecs": [group],
    }
    if settings.autoscaling:
        spec["autoscalerOptions"] = {"idleTimeoutSeconds": settings.idle_timeout_seconds, "upscalingMode": "Default"}
    return spec


def _metadata(request: JobRequest, settings: Any) -> dict[str, Any]:
    return {"name": job_name(request.job_id), "namespace": tenant_namespace(settings, request.tenant),
            "labels": _labels(request),
            "annotations": {"matih.io/run-id": request.run_id, "matih.io/entrypoint": str(request.spec.get(
                "entrypoint", ""))}}


def rayjob(request: JobRequest, settings: Any) -> dict[str, Any]:
    """The RayJob: KubeRay makes the cluster, waits for our submission (InteractiveMode), tracks the job,
    and deletes the cluster ``ttl_seconds`` after it ends."""
    return {
        "apiVersion": f"{RAY_GROUP}/{RAY_VERSION}",
        "kind": "RayJob",
        "metadata": _metadata(request, settings),
        "spec": {
            "submissionMode": "InteractiveMode",
            "entrypoint": f"{settings.python} -m {DRIVER_MODULE}",
            "metadata": {"matih.job_id": request.job_id, "matih.tenant": request.tenant},
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": settings.ttl_seconds,
            "rayClusterSpec": ray_cluster_spec(request, settings),
        },
    }


def raycluster(request: JobRequest, settings: Any) -> dict[str, Any]:
    """The RayCluster of ``raycluster`` mode (this backend submits the job and deletes the cluster after)."""
    return {"apiVersion": f"{RAY_GROUP}/{RAY_VERSION}", "kind": "RayCluster", "metadata": _metadata(request, settings),
            "spec": ray_cluster_spec(request, settings)}


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}}}


def resource_quota(namespace_name: str, limits: Limits, settings: Any) -> dict[str, Any] | None:
    """The tenant's ``[quotas]`` as a ResourceQuota of its namespace; None when it has no limit.

    CPUs: the quota's CPUs plus a head pod for each job it may run at once (each job's cluster
    has one); GPUs as whole devices; jobs as a count of RayJobs (or RayClusters).
    """
    hard: dict[str, str] = {}
    heads = limits.jobs if limits.jobs is not None else 1
    if limits.cpus is not None:
        hard["requests.cpu"] = cpu_quantity(limits.cpus + heads * settings.head_cpus)
    if limits.gpus is not None:
        hard[f"requests.{GPU_RESOURCE}"] = str(math.ceil(limits.gpus - 1e-9))
    if limits.jobs is not None:
        plural = "rayjobs" if settings.mode == "rayjob" else "rayclusters"
        hard[f"count/{plural}.{RAY_GROUP}"] = str(limits.jobs)
    if not hard:
        return None
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": QUOTA_NAME, "namespace": namespace_name,
                         "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
            "spec": {"hard": hard}}


def manifests(request: JobRequest, settings: Any) -> list[dict[str, Any]]:
    """Everything submitting ``request`` applies, in order: Namespace, ResourceQuota, then the RayJob or RayCluster."""
    ns = tenant_namespace(settings, request.tenant)
    out: list[dict[str, Any]] = []
    if settings.tenant_namespaces:
        out.append(namespace(ns))
        quota = resource_quota(ns, request.limits, settings)
        if quota is not None:
            out.append(quota)
    out.append(rayjob(request, settings) if settings.mode == "rayjob" else raycluster(request, settings))
    return out
