"""The Kubernetes objects that run the platform on a cluster profile, rendered as plain dicts.

The ml-service ``Deployment`` (readiness on ``/ready``, liveness on ``/health``), its ``Service`` and
``HorizontalPodAutoscaler``, a ``ConfigMap`` holding ``matih.toml`` with the cluster profile, the
``Secret`` it reads its DSNs and keys from (referenced by name and key, never holding a value), a
``ResourceQuota`` per tenant namespace, a ``NetworkPolicy`` that lets only the ml-service reach the
databases, and, when the profile names them, a Triton ``Deployment``, a KubeRay ``RayCluster`` and the
drift job as a ``FlinkDeployment`` of the Flink Kubernetes operator.
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
STATE_DIR = "/var/lib/matih"
TRITON_HTTP = 8000
MODEL_REPOSITORY = "triton-models"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api_?key|credential|private)", re.IGNORECASE)
_DSN_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]+:[^@\s]+@", re.IGNORECASE)
_LABEL = re.compile(r"[^a-z0-9-]+")
_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}

FLINK_VERSION = "v2_3"
"""The drift job's Flink (apache-flink 2.3, as its local environment runs it) as the operator names it."""
FLINK_PYTHON_JAR = "local:///opt/flink/opt/flink-python-2.3.0.jar"
"""The PyFlink driver every Flink image ships; the operator runs a Python job as this jar's PythonDriver."""
PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
DRIFT_JOB = "matih-drift"
DRIFT_SPEC = "matih-drift-job"
DRIFT_SPEC_DIR = "/etc/matih/drift"
DRIFT_STATE = "matih-drift-state"
FLINK_STATE_DIR = "/flink-data"
"""Where the drift job's checkpoints, savepoints and HA metadata live: a volume every Flink pod mounts."""
KAFKA_JARS = ("/opt/flink/usrlib/flink-connector-kafka.jar", "/opt/flink/usrlib/kafka-clients.jar")
DRIFT_TOKENS = "MATIH_DRIFT_TOKENS"
"""The Secret key holding the drift job's tokens (JSON ``{tenant: token}``), read by the job to fetch baselines."""
# The flink drift slot's defaults (matih_flink's FlinkDriftSettings; a test holds them equal).
DRIFT_DEFAULTS: dict[str, Any] = {
    "enabled": True, "service_url": "http://127.0.0.1:8000", "allowed_lateness": "10s", "idle_timeout": "5s",
    "micro_batch": "1s", "checkpoint_interval": "10s", "parallelism": 1, "start_from": "earliest",
    "results_topic": "drift.results", "alerts_topic": "drift.alerts", "clock_topic": "drift.clock"}
DRIFT_GROUP = "matih-flink-drift"


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
           replicas: int = 2, max_replicas: int = 10, tenant_quota: Mapping[str, str] | None = None,
           flink_image: str = "matih-flink:latest", drift_targets: Iterable[Mapping[str, Any]] = ()) -> list[dict]:
    """Every object for ``profile`` of the raw (not interpolated) matih.toml ``raw``.

    With a ``flink`` drift slot, ``flink_image`` runs the drift job (a Flink 2.3 image with Python 3.11 at
    ``/usr/bin/python3`` holding ``apache-flink==2.3.0``, matih-lite and matih-flink, and the Kafka connector
    jars in ``/opt/flink/usrlib``), watching ``drift_targets`` (the drift schedule's targets, as of rendering:
    render again when the deployments change). Its tokens come from the Secret's ``MATIH_DRIFT_TOKENS`` key.
    The ConfigMap's profile then sets the drift slot's ``mode = "operator"``: the ml-service starts no job of
    its own, it ticks the job's clock topic and records the results.
    Raises ConfigError when a slot's settings cannot run on a cluster as written."""
    slots = dict((raw.get("profiles") or {}).get(profile) or {})
    cluster, variables = externalize_secrets(slots)
    drift_slot = cluster.get("drift")
    if isinstance(drift_slot, Mapping) and drift_slot.get("backend") == "flink":
        # The FlinkDeployment below runs the drift job: the service's runner only ticks its clock and records.
        cluster = {**cluster, "drift": {**drift_slot, "mode": "operator"}}
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
    serving = cluster.get("serving") or {}
    if isinstance(serving, Mapping) and serving.get("backend") == "triton":
        triton = _triton(namespace, serving, profile)
        objects += triton
        if any(o["kind"] == "PersistentVolumeClaim" for o in triton):
            _mount_model_repository(next(o for o in objects if o["kind"] == "Deployment"), triton)
    compute = slots.get("compute") or {}
    if isinstance(compute, Mapping) and compute.get("backend") == "kuberay":
        objects.append(_ray_cluster(str(compute.get("namespace") or namespace), image))
    drift = slots.get("drift") or {}
    if isinstance(drift, Mapping) and drift.get("backend") == "flink":
        objects += _flink_drift(namespace, profile, drift, slots.get("events") or {}, flink_image,
                                list(drift_targets))
    return objects


def _deployment(namespace: str, image: str, replicas: int, variables: list[str], profile: str) -> dict:
    env = [{"name": "MATIH_PROFILE", "value": profile}, {"name": "MATIH_CONFIG", "value": CONFIG_PATH},
           {"name": "MATIH_HOME", "value": STATE_DIR}]
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
                         {"name": "state", "mountPath": STATE_DIR}],
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(APP, namespace),
            "spec": {"replicas": replicas, "selector": {"matchLabels": _labels(APP)},
                     "template": {"metadata": {"labels": _labels(APP)},
                                  "spec": {"containers": [container],
                                           "volumes": [{"name": "config", "configMap": {"name": CONFIG_MAP}},
                                                       {"name": "state", "emptyDir": {}}]}}}}


def _triton(namespace: str, serving: Mapping[str, Any], profile: str) -> list[dict]:
    """Triton serving the backend's ``repository`` (matih_triton's setting; its default, the state folder's
    ``triton-models``), behind a Service at the host and port of the backend's ``url``.

    An ``s3://`` repository is read by Triton as written, with the backend's ``s3_*`` settings as its AWS
    variables (a secret by reference); a folder is a volume both the ml-service (it writes the versions)
    and Triton (it reads them) mount: a ``PersistentVolumeClaim`` that must be ``ReadWriteMany``."""
    import os
    from urllib.parse import urlsplit

    from matih_lite.config import interpolate
    from matih_lite.errors import ConfigError

    key = f"profiles.{profile}.serving"
    # Where Triton reads is written into its arguments and objects, so a ${VAR} in either is read now.
    repository = str(interpolate(serving.get("repository") or f"{STATE_DIR}/triton-models", os.environ,
                                 key=f"{key}.repository"))
    url = urlsplit(str(interpolate(serving.get("url") or "http://127.0.0.1:8000", os.environ, key=f"{key}.url")))
    host = (url.hostname or "triton").split(".")[0]
    service = host if re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", host) else "triton"
    port = url.port or (443 if url.scheme == "https" else 80)
    env: list[dict] = []
    claims: list[dict] = []
    mounts: list[dict] = []
    volumes: list[dict] = []
    if repository.startswith("s3://"):
        for setting, var in (("s3_region", "AWS_DEFAULT_REGION"), ("s3_access_key_id", "AWS_ACCESS_KEY_ID"),
                             ("s3_secret_access_key", "AWS_SECRET_ACCESS_KEY")):
            value = serving.get(setting)
            if not isinstance(value, str) or not value:
                continue
            ref = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}", value)
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": ref.group(1)}}} if ref
                       else {"name": var, "value": value})
    elif not repository.startswith("/"):
        raise ConfigError(f"repository {repository!r} is a folder relative to matih.toml, which the ml-service "
                          "reads from a ConfigMap on a cluster; give an s3:// location, or an absolute folder (a "
                          "volume the ml-service and Triton share)", key=f"{key}.repository")
    else:
        claims.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": _meta(MODEL_REPOSITORY, namespace, "triton"),
                       "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "50Gi"}}}})
        mounts.append({"name": "models", "mountPath": repository})
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": MODEL_REPOSITORY}})
    container = {
        "name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
        "args": ["tritonserver", f"--model-repository={repository}", "--model-control-mode=explicit",
                 f"--http-port={TRITON_HTTP}", f"--grpc-port={TRITON_HTTP + 1}", f"--metrics-port={TRITON_HTTP + 2}"],
        "ports": [{"name": "http", "containerPort": TRITON_HTTP}, {"name": "grpc", "containerPort": TRITON_HTTP + 1},
                  {"name": "metrics", "containerPort": TRITON_HTTP + 2}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}},
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
    }
    if env:
        container["env"] = env
    if mounts:
        container["volumeMounts"] = mounts
    pod: dict[str, Any] = {"containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    return [
        *claims,
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("triton", namespace, "triton"),
         "spec": {"replicas": 1, "selector": {"matchLabels": _labels("triton")},
                  "template": {"metadata": {"labels": _labels("triton")}, "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(service, namespace, "triton"),
         "spec": {"selector": _labels("triton"), "ports": [{"name": "http", "port": port, "targetPort": "http"},
                                                           {"name": "grpc", "port": TRITON_HTTP + 1,
                                                            "targetPort": "grpc"}]}},
    ]


def _mount_model_repository(ml_service: dict, triton: list[dict]) -> None:
    """The ml-service writes the versions into the folder Triton reads: the same claim, at the same path."""
    pod = next(o for o in triton if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    ml_pod = ml_service["spec"]["template"]["spec"]
    ml_pod["containers"][0]["volumeMounts"].append(dict(pod["containers"][0]["volumeMounts"][0]))
    ml_pod["volumes"].append(dict(pod["volumes"][0]))


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


def _ms(text: Any, key: str) -> int:
    from matih_lite.errors import ConfigError

    match = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h)\s*", str(text))
    if not match:
        raise ConfigError(f"expected a duration like 500ms, 10s or 2m, not {text!r}", key=key)
    return int(match.group(1)) * _MS[match.group(2)]


def drift_job_spec(namespace: str, profile: str, drift: Mapping[str, Any], events: Mapping[str, Any],
                   targets: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The drift job's spec (what ``python -m matih_flink.job.drift_job SPEC.json`` reads), as the flink drift
    runner writes it for its local job, for the job the operator runs: its topics on the profile's Kafka,
    ``targets`` as the deployments it watches (each with its model's ``[drift]`` windows), its folders on the
    Flink pods' state volume. Raises ConfigError naming the key when the profile cannot run it."""
    import os

    from matih_lite.config import interpolate
    from matih_lite.errors import ConfigError

    key = f"profiles.{profile}"
    if not isinstance(events, Mapping) or events.get("backend") != "kafka":
        raise ConfigError("the flink drift job reads the Kafka events backend's topics; give the profile "
                          "events = { backend = \"kafka\", bootstrap_servers = \"...\" }", key=f"{key}.events")
    settings = {**DRIFT_DEFAULTS, **{k: v for k, v in drift.items() if k != "backend"}}
    prefix = str(interpolate(events.get("topic_prefix", ""), os.environ, key=f"{key}.events.topic_prefix"))
    servers = interpolate(events.get("bootstrap_servers", ""), os.environ, key=f"{key}.events.bootstrap_servers")
    service_url = str(settings["service_url"])
    if re.match(r"https?://(127\.0\.0\.1|localhost|\[::1\])(:|/|$)", service_url):
        service_url = f"http://{APP}.{namespace}.svc:{PORT}"  # loopback is the laptop's; here it is the Service
    topics: dict[str, dict[str, str]] = {}
    watched: dict[str, Any] = {}
    for t in targets:
        name = f"{t['tenant']}/{t['deployment']}"
        watched[name] = dict(t)
        topics[prefix + str(t["stream"])] = {"key": name, "kind": "inference"}
        topics[prefix + str(t["labels"])] = {"key": name, "kind": "labels"}
    return {
        "kind": "drift", "name": DRIFT_JOB, "bootstrap_servers": servers, "topics": topics, "targets": watched,
        "clock_topic": prefix + str(settings["clock_topic"]), "results_topic": prefix + str(settings["results_topic"]),
        "alerts_topic": prefix + str(settings["alerts_topic"]), "group": prefix + DRIFT_GROUP,
        "lateness_ms": _ms(settings["allowed_lateness"], f"{key}.drift.allowed_lateness"),
        "idle_ms": _ms(settings["idle_timeout"], f"{key}.drift.idle_timeout"),
        "micro_batch_ms": _ms(settings["micro_batch"], f"{key}.drift.micro_batch"),
        "checkpoint_ms": _ms(settings["checkpoint_interval"], f"{key}.drift.checkpoint_interval"),
        "service_url": service_url, "kernel": "matih_lite.monitoring.window", "skip_keys": [],
        "parallelism": int(settings["parallelism"]), "start_from": str(settings["start_from"]),
        "rest_port": 8081, "checkpoint_dir": f"{FLINK_STATE_DIR}/checkpoints",
        "savepoint_dir": f"{FLINK_STATE_DIR}/savepoints", "restore": None, "jars": list(KAFKA_JARS)}


def _flink_drift(namespace: str, profile: str, drift: Mapping[str, Any], events: Mapping[str, Any],
                 image: str, targets: list[Mapping[str, Any]]) -> list[dict]:
    """The drift job for the Flink Kubernetes operator: its spec in a ConfigMap, a claim for its state, and a
    ``FlinkDeployment`` running ``matih_flink.job.drift_job`` as a PyFlink application (upgraded through a
    savepoint, restarted by the operator when it fails, as the local runner restarts it from its checkpoint)."""
    spec = drift_job_spec(namespace, profile, drift, events, targets)
    parallelism = max(int(spec["parallelism"]), 1)
    state = FLINK_STATE_DIR
    main = {"name": "flink-main-container",
            "env": [{"name": DRIFT_TOKENS, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": DRIFT_TOKENS,
                                                                          "optional": True}}}],
            "volumeMounts": [{"name": "drift-spec", "mountPath": DRIFT_SPEC_DIR, "readOnly": True},
                             {"name": "flink-state", "mountPath": state}]}
    labels = _labels("flink")
    deployment = {
        "apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment", "metadata": _meta(DRIFT_JOB, namespace,
                                                                                                "flink"),
        "spec": {
            "image": image, "flinkVersion": FLINK_VERSION, "serviceAccount": "flink", "mode": "native",
            "flinkConfiguration": {
                "taskmanager.numberOfTaskSlots": str(parallelism),
                "state.backend.type": "hashmap",
                "execution.checkpointing.interval": f"{spec['checkpoint_ms']} ms",
                "execution.checkpointing.mode": "EXACTLY_ONCE",
                "execution.checkpointing.dir": f"file://{spec['checkpoint_dir']}",
                "execution.checkpointing.savepoint-dir": f"file://{spec['savepoint_dir']}",
                "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
                "execution.checkpointing.num-retained": "3",
                "high-availability.type": "kubernetes",
                "high-availability.storageDir": f"file://{state}/ha",
                # The job itself sets no restart strategy (a failure ends it): the operator redeploys a
                # failed job from its latest checkpoint, as the ml-service's runner does for a local one.
                "kubernetes.operator.job.restart.failed": "true",
                "kubernetes.operator.savepoint.history.max.count": "5",
            },
            "podTemplate": {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": labels},
                            "spec": {"containers": [main], "volumes": [
                                {"name": "drift-spec", "configMap": {"name": DRIFT_SPEC}},
                                {"name": "flink-state", "persistentVolumeClaim": {"claimName": DRIFT_STATE}}]}},
            "jobManager": {"replicas": 1, "resource": {"cpu": 1, "memory": "2048m"}},
            "taskManager": {"resource": {"cpu": 1, "memory": "2048m"}},
            "job": {"jarURI": FLINK_PYTHON_JAR, "entryClass": PYTHON_DRIVER,
                    "args": ["-pyclientexec", "/usr/bin/python3", "-pym", "matih_flink.job.drift_job",
                             f"{DRIFT_SPEC_DIR}/spec.json"],
                    "parallelism": parallelism, "upgradeMode": "savepoint",
                    "state": "running" if drift.get("enabled", True) else "suspended"},
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(DRIFT_SPEC, namespace, "flink"),
         "data": {"spec.json": json.dumps(spec, indent=1, sort_keys=True, default=str)}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(DRIFT_STATE, namespace, "flink"),
         "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "20Gi"}}}},
        deployment,
    ]


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
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("flink.apache.org/v1beta1", "FlinkDeployment"): "flinkdeployments",
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
