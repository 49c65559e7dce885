"""Checking the drift job's ``FlinkDeployment`` with no cluster (and no Flink operator) to ask.

The object against ``schemas/flink-operator-v1beta1.json`` (the fields of the Flink Kubernetes operator's
``FlinkDeployment`` CRD that the drift job sets, written from its published ``openAPIV3Schema``), plus the
rules the operator's admission webhook checks (``DefaultValidator``) that a JSON schema cannot say: the
checkpoint directory a ``savepoint`` or ``last-state`` upgrade needs, the savepoint directory a ``savepoint``
upgrade needs, the memory of each of its processes, the keys it forbids. Each pod template (the
deployment's, the JobManager's, the TaskManager's) is a core Pod, checked with ``kubernetes-validate``
against the Kubernetes API's own schemas when it is installed (a test dependency).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("schemas") / "flink-operator-v1beta1.json"
KUBERNETES_VERSION = "1.33.0"
"""The Kubernetes API version pod templates are checked against (one kubernetes-validate ships)."""
CHECKPOINTS_DIR = ("execution.checkpointing.dir", "state.checkpoints.dir")
SAVEPOINTS_DIR = ("execution.checkpointing.savepoint-dir", "state.savepoints.dir")
"""Flink 2's key first, then the 1.x key Flink still reads as its fallback."""
FORBIDDEN_KEYS = ("kubernetes.namespace", "kubernetes.cluster-id", "high-availability.cluster-id")
"""Set by the operator from the object's namespace and name; it refuses them in ``flinkConfiguration``."""


@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator({**schema(), "$ref": "#/$defs/FlinkDeployment"})


def custom_resource_problems(obj: dict[str, Any]) -> list[str]:
    """What is wrong with a FlinkDeployment (``path: message`` each); empty when it is sound."""
    if obj.get("kind") != "FlinkDeployment":
        return [f"kind: expected FlinkDeployment, got {obj.get('kind')!r}"]
    problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                for e in sorted(_validator().iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    conf = spec.get("flinkConfiguration") if isinstance(spec.get("flinkConfiguration"), dict) else {}
    problems += [f"spec.flinkConfiguration: the operator forbids {key} (it sets it itself)"
                 for key in FORBIDDEN_KEYS if key in conf]
    job = spec.get("job") if isinstance(spec.get("job"), dict) else {}
    mode = job.get("upgradeMode", "stateless")
    if mode != "stateless" and not any(str(conf.get(k) or "").strip() for k in CHECKPOINTS_DIR):
        problems.append(f"spec.flinkConfiguration: upgradeMode {mode} needs a checkpoint directory "
                        f"({CHECKPOINTS_DIR[0]})")
    if mode == "savepoint" and not any(str(conf.get(k) or "").strip() for k in SAVEPOINTS_DIR):
        problems.append(f"spec.flinkConfiguration: upgradeMode savepoint needs a savepoint directory "
                        f"({SAVEPOINTS_DIR[0]})")
    for part in ("jobManager", "taskManager"):
        side = spec.get(part) if isinstance(spec.get(part), dict) else {}
        memory = (side.get("resource") or {}).get("memory") or ((side.get("resources") or {}).get("requests")
                                                                or {}).get("memory")
        if not memory:
            problems.append(f"spec.{part}: the operator needs its memory (resource.memory)")
    return problems


def pod_templates(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The pod templates inside a FlinkDeployment, each as the core Pod object the operator merges."""
    spec = obj.get("spec") or {}
    found = [("podTemplate", spec.get("podTemplate"))]
    found += [(f"{part}.podTemplate", (spec.get(part) or {}).get("podTemplate")) for part in ("jobManager",
                                                                                               "taskManager")]
    name = (obj.get("metadata") or {}).get("name", "x")
    out = []
    for i, (where, pod) in enumerate(p for p in found if p[1] is not None):
        out.append((where, {"apiVersion": "v1", "kind": "Pod", **pod,
                            "metadata": {"name": f"{name}-{i}", **(pod.get("metadata") or {})}}))
    return out


def core_problems(obj: dict[str, Any]) -> list[str]:
    """What the Kubernetes API's schema finds wrong with a core object (kubernetes-validate, strict)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in getattr(exc, "path", []) or [])
        return [f"{obj.get('kind')} {path or '(root)'}: {getattr(exc, 'message', exc)}"]
    return []


def problems(obj: dict[str, Any], *, core: bool = True) -> list[str]:
    """Every problem of a FlinkDeployment; its pod templates too with ``core`` (needs kubernetes-validate)."""
    out = custom_resource_problems(obj)
    if core:
        for where, pod in pod_templates(obj):
            out += [f"FlinkDeployment {where}: {p}" for p in core_problems(pod)]
    return out
