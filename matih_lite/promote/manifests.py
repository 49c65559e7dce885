"""The Kubernetes objects that run the platform on a cluster profile, rendered as plain dicts.

The ml-service ``Deployment`` (readiness on ``/ready``, liveness on ``/health``), its ``Service`` and
``HorizontalPodAutoscaler``, a ``ConfigMap`` holding ``matih.toml`` with the cluster profile, the
``Secret`` it reads its DSNs and keys from (referenced by name and key, never holding a value), a
``ResourceQuota`` per tenant namespace, a ``NetworkPolicy`` that lets only the ml-service reach the
databases, and, when the profile names them, a Triton ``Deployment`` and a KubeRay ``RayCluster``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

APP = "ml-service"
SECRET = "matih-secrets"
CONFIG_MAP = "matih-config"
CONFIG_PATH = "/etc/matih/matih.toml"
PORT = 8000

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api_?key|credential|private)", re.IGNORECASE)
_DSN_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]+:[^@\s]+@", re.IGNORECASE)
_LABEL = re.compile(r"[^a-z0-9-]+")


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": "matih-lite"}


def _meta(name: str, namespace: str, component: str = APP) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": _labels(component)}


def externalize_secrets(profile: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The profile with every literal secret replaced by a ``${VAR}``, and every variable it reads.

    A value already written as ``${VAR}`` stays; a password, key or token written inline (or a DSN
    with a password in it) becomes ``${MATIH_<SLOT>_<KEY>}``, so the ConfigMap never holds one.
    """
    names: list[str] = []
    out: dict[str, Any] = {}
    for slot, entry in profile.items():
        if not isinstance(entry, Mapping):
            out[slot] = entry
            continue
        settings: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, str) and not _VAR.search(value) and value and (
                    _SECRET_KEY.search(key) or _DSN_PASSWORD.search(value)):
                value = "${" + f"MATIH_{slot}_{key}".upper() + "}"
            if isinstance(value, str):
                names += [m.group(1) for m in _VAR.finditer(value) if m.group(1) not in names]
            settings[key] = value
        out[slot] = settings
    return out, names


def toml_text(data: Mapping[str, Any]) -> str:
    """A TOML document for plain data: top-level scalars, then tables (nested tables inline)."""
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]

    def table(path: str, body: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in body.items() if not isinstance(v, Mapping) or path.startswith("profiles.")]
        if scalars or not body:
            lines.append(f"\n[{path}]")
            lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars)
        for k, v in body.items():
            if isinstance(v, Mapping) and not path.startswith("profiles."):
                table(f"{path}.{_key(k)}", v)

    for key, value in data.items():
        if isinstance(value, Mapping):
            table(_key(key), value)
    return "\n".join(lines).lstrip("\n") + "\n"


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def tenant_namespace(namespace: str, tenant: str) -> str:
    """``<namespace>-<tenant>`` as a DNS-1123 label (the KubeRay backend's naming)."""
    name = _LABEL.sub("-", f"{namespace}-{tenant}".lower()).strip("-")
    return name[:63].rstrip("-")


def render(raw: Mapping[str, Any], profile: str, *, namespace: str, image: str, tenants: Iterable[str] = (),
           replicas: int = 2, max_replicas: int = 10, tenant_quota: Mapping[str, str] | None = None) -> list[dict]:
    """Every object for ``profile`` of the raw (not interpolated) matih.toml ``raw``."""
    slots = dict((raw.get("profiles") or {}).get(profile) or {})
    cluster, variables = externalize_secrets(slots)
    document = {k: v for k, v in raw.items() if k not in ("profiles", "default_profile")}
    document = {"default_profile": profile, **document, "profiles": {profile: cluster}}
    objects: list[dict] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(CONFIG_MAP, namespace),
         "data": {"matih.toml": toml_text(document)}},
        _deployment(namespace, image, replicas, variables, profile),
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(APP, namespace),
         "spec": {"selector": _labels(APP), "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(APP, namespace),
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
                  "minReplicas": replicas, "maxReplicas": max(max_replicas, replicas),
                  "metrics": [{"type": "Resource", "resource": {
                      "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": _meta("databases-from-ml-service-only", namespace),
         "spec": {"podSelector": {"matchLabels": {"matih.io/role": "database"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": {"matchLabels": _labels(APP)}}]}]}},
    ]
    quota = dict(tenant_quota or {"requests.cpu": "16", "requests.memory": "64Gi", "limits.cpu": "32",
                                  "limits.memory": "128Gi", "requests.nvidia.com/gpu": "4", "pods": "100"})
    for tenant in sorted(set(tenants)):
        ns = tenant_namespace(namespace, tenant)
        objects.append({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ns, "labels": {**_labels("tenant"), "matih.io/tenant": tenant}}})
        objects.append({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": _meta("matih-tenant", ns, "tenant"),
                        "spec": {"hard": quota}})
    serving = slots.get("serving") or {}
    if isinstance(serving, Mapping) and serving.get("backend") == "triton":
        objects += _triton(namespace, serving)
    compute = slots.get("compute") or {}
    if isinstance(compute, Mapping) and compute.get("backend") == "kuberay":
        objects.append(_ray_cluster(str(compute.get("namespace") or namespace), image))
    return objects


def _deployment(namespace: str, image: str, replicas: int, variables: list[str], profile: str) -> dict:
    env = [{"name": "MATIH_PROFILE", "value": profile}, {"name": "MATIH_CONFIG", "value": CONFIG_PATH},
           {"name": "MATIH_HOME", "value": "/var/lib/matih"}]
    env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": var}}} for var in variables]
    container = {
        "name": APP, "image": image,
        "args": ["matih-lite", "up", "--host", "0.0.0.0", "--port", str(PORT), "--profile", profile,
                 "--config", CONFIG_PATH],
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": env,
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "initialDelaySeconds": 10,
                          "periodSeconds": 10},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/matih", "readOnly": True},
                         {"name": "state", "mountPath": "/var/lib/matih"}],
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(APP, namespace),
            "spec": {"replicas": replicas, "selector": {"matchLabels": _labels(APP)},
                     "template": {"metadata": {"labels": _labels(APP)},
                                  "spec": {"containers": [container],
                                           "volumes": [{"name": "config", "configMap": {"name": CONFIG_MAP}},
                                                       {"name": "state", "emptyDir": {}}]}}}}


def _triton(namespace: str, serving: Mapping[str, Any]) -> list[dict]:
    repository = str(serving.get("model_repository") or serving.get("repository") or "/models")
    container = {
        "name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
        "args": ["tritonserver", f"--model-repository={repository}", "--model-control-mode=explicit",
                 "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"],
        "ports": [{"name": "http", "containerPort": 8000}, {"name": "grpc", "containerPort": 8001},
                  {"name": "metrics", "containerPort": 8002}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}},
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
    }
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("triton", namespace, "triton"),
         "spec": {"replicas": 1, "selector": {"matchLabels": _labels("triton")},
                  "template": {"metadata": {"labels": _labels("triton")}, "spec": {"containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta("triton", namespace, "triton"),
         "spec": {"selector": _labels("triton"), "ports": [{"name": "http", "port": 8000, "targetPort": "http"},
                                                           {"name": "grpc", "port": 8001, "targetPort": "grpc"}]}},
    ]


def _ray_cluster(namespace: str, image: str) -> dict:
    def pod(name: str, cpu: str, memory: str) -> dict:
        return {"spec": {"containers": [{"name": name, "image": "rayproject/ray:2.60.0-py311",
                                         "resources": {"requests": {"cpu": cpu, "memory": memory},
                                                       "limits": {"cpu": cpu, "memory": memory}}}]}}

    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": _meta("matih-ray", namespace, "ray"),
            "spec": {"rayVersion": "2.60.0",
                     "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0"},
                                       "template": pod("ray-head", "2", "4Gi")},
                     "workerGroupSpecs": [{"groupName": "cpu", "replicas": 2, "minReplicas": 0, "maxReplicas": 8,
                                           "rayStartParams": {}, "template": pod("ray-worker", "4", "8Gi")}]}}


def write(objects: Iterable[dict], folder: Any) -> list[str]:
    """One YAML file per object (``NN-kind-name.yaml``) in ``folder``; returns the file names."""
    from pathlib import Path

    import yaml

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i, obj in enumerate(objects):
        ns = obj["metadata"].get("namespace", "")
        name = f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}{'-' + ns if ns else ''}.yaml"
        (out / name).write_text(yaml.safe_dump(obj, sort_keys=False))
        names.append(name)
    return names


_PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps", ("v1", "Service"): "services", ("v1", "Namespace"): "namespaces",
    ("v1", "ResourceQuota"): "resourcequotas", ("apps/v1", "Deployment"): "deployments",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies", ("ray.io/v1", "RayCluster"): "rayclusters",
}


def object_path(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(collection path, object path) of an object on the Kubernetes API."""
    version, kind = obj["apiVersion"], obj["kind"]
    plural = _PLURALS[(version, kind)]
    root = f"/api/{version}" if "/" not in version else f"/apis/{version}"
    ns = obj["metadata"].get("namespace")
    collection = f"{root}/namespaces/{ns}/{plural}" if ns else f"{root}/{plural}"
    return collection, f"{collection}/{obj['metadata']['name']}"


def apply(objects: Iterable[dict], api_client: Any) -> list[tuple[str, str]]:
    """Create each object, or replace it when it exists (keeping its ``resourceVersion``), through the
    kubernetes client's ``ApiClient``; returns (path, ``created`` or ``replaced``) per object. Raises
    StoreError naming the object the API server refused, and why."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    from matih_lite.errors import StoreError

    def call(method: str, path: str, body: Any = None) -> Any:
        response = api_client.call_api(path, method, body=body, auth_settings=["BearerToken"],
                                       _return_http_data_only=True, _preload_content=False,
                                       header_params={"Content-Type": "application/json",
                                                      "Accept": "application/json"})
        return json.loads(response.data or b"{}")

    done: list[tuple[str, str]] = []
    for obj in objects:
        collection, path = object_path(obj)
        try:
            try:
                held = call("GET", path)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                call("POST", collection, obj)
                done.append((path, "created"))
                continue
            body = {**obj, "metadata": {**obj["metadata"],
                                        "resourceVersion": (held.get("metadata") or {}).get("resourceVersion")}}
            call("PUT", path, body)
            done.append((path, "replaced"))
        except ApiException as exc:
            reason = exc.reason
            try:
                reason = json.loads(exc.body or "{}").get("message") or reason
            except ValueError:
                pass
            raise StoreError(f"manifests: the Kubernetes API refused {obj['kind']} {path}: {exc.status} {reason}") \
                from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise StoreError(f"manifests: cannot reach the Kubernetes API to apply {path}: {exc}") from exc
    return done
