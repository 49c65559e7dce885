"""The settings of ``compute = { backend = "kuberay", ... }``, validated without importing the kubernetes client."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

DEFAULT_IMAGE = "rayproject/ray:2.60.0-py311"
DEFAULT_EXCLUDES = [".git", ".matih", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache", "mlruns"]


class KubeRaySettings(msgspec.Struct, forbid_unknown_fields=True):
    namespace: str = "ml"
    """Where jobs run; with ``tenant_namespaces`` the prefix of each tenant's namespace."""
    tenant_namespaces: bool = True
    """Tenant T's jobs run in ``<namespace>-<T>``, where its ``[quotas]`` are a ResourceQuota. False: every job in
    ``namespace`` and the quotas are the platform's queue alone (a ResourceQuota covers a whole namespace)."""
    create_namespaces: bool = True
    """Create a tenant's namespace on its first job (needs the right to create namespaces)."""
    mode: Literal["rayjob", "raycluster"] = "rayjob"
    """``rayjob``: one RayJob per job; KubeRay makes its cluster, tracks the job and deletes the cluster after it
    (``shutdownAfterJobFinishes``, ``ttl_seconds``). ``raycluster``: one RayCluster per job, deleted by this backend
    when the job ends. Both submit the job through the cluster's Jobs API, carrying its code."""
    service_url: str | None = None
    """The ml-service as the job's pods reach it (``http://matih-lite.ml.svc:8000``); metrics and checkpoints go there."""
    image: str = DEFAULT_IMAGE
    """The Ray image of head and workers (a job's ``resources.image`` wins); it needs matih-lite installed."""
    service_account: str | None = None
    """The pods' service account (a job's ``resources.service_account`` wins)."""
    node_selector: dict[str, str] = msgspec.field(default_factory=dict)
    """Node labels every worker pod must match, merged under a job's ``resources.node_selector``."""
    tolerations: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """Tolerations of every worker pod, before a job's own."""
    head_cpus: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    """CPUs of the head pod, which runs only the job's driver (Ray schedules nothing else there)."""
    head_memory: str = "2Gi"
    worker_memory: str = "2Gi"
    """Memory of a worker pod when the job's spec asks for none."""
    ttl_seconds: Annotated[int, msgspec.Meta(ge=0)] = 300
    """Seconds a finished job's cluster stays for a look before it is deleted (``ttlSecondsAfterFinished``)."""
    autoscaling: bool = True
    """KubeRay's in-tree autoscaler: workers start at ``min_workers`` and grow to what the job needs, then shrink."""
    min_workers: Annotated[int, msgspec.Meta(ge=0)] = 0
    idle_timeout_seconds: Annotated[int, msgspec.Meta(ge=0)] = 60
    """An idle worker pod is removed after this long (autoscaling)."""
    dashboard_url: str = "http://{service}.{namespace}.svc.cluster.local:8265"
    """How this service reaches a job's Ray dashboard, in ``raycluster`` mode (``rayjob`` mode reads the RayJob's
    ``status.dashboardURL``): ``{service}`` the head service, ``{cluster}``, ``{namespace}``."""
    storage_path: str | None = None
    """Ray Train and Tune's bookkeeping, seen by every pod: a URI such as ``s3://bucket/ray`` (or a shared volume)."""
    runtime_env: dict[str, Any] = msgspec.field(default_factory=dict)
    """Added to every job's Ray runtime environment."""
    excludes: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_EXCLUDES))
    python: str = "python"
    api_server: str | None = None
    """The Kubernetes API server URL; unset: the in-cluster config, else ``kubeconfig``/``~/.kube/config``."""
    token: str | None = None
    """A bearer token for ``api_server`` (put ``${K8S_TOKEN}`` here, not the token)."""
    kubeconfig: str | None = None
    context: str | None = None
    verify_ssl: bool = True
    ca_cert: str | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """Seconds each Kubernetes or Jobs API request may take."""
    ray_version: str = "2.60.0"
