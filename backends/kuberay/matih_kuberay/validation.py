"""Checking the objects this backend applies, with no cluster to ask.

RayJob and RayCluster against ``schemas/kuberay-v1.json`` (the fields of KubeRay 1.x's CRDs that we set,
written from its published ``openAPIV3Schema``) plus the rules KubeRay's operator checks on admission
that a JSON schema cannot say (``minReplicas <= maxReplicas``...). Core objects (Namespace,
ResourceQuota, and each pod template as a PodTemplate) with ``kubernetes-validate`` against the
Kubernetes API's own schemas, when it is installed (a test dependency).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("schemas") / "kuberay-v1.json"
KUBERNETES_VERSION = "1.33.0"
"""The Kubernetes API version core objects are checked against (one kubernetes-validate ships)."""


@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def _validator(kind: str) -> Any:
    import jsonschema

    root = {**schema(), "$ref": f"#/$defs/{kind}"}
    return jsonschema.Draft202012Validator(root)


def custom_resource_problems(obj: dict[str, Any]) -> list[str]:
    """What is wrong with a RayJob or RayCluster (``path: message`` each); empty when it is sound."""
    kind = obj.get("kind")
    if kind not in ("RayJob", "RayCluster"):
        return [f"kind: expected RayJob or RayCluster, got {kind!r}"]
    problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                for e in sorted(_validator(kind).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]
    spec = obj.get("spec") or {}
    cluster = spec.get("rayClusterSpec") if kind == "RayJob" else spec
    where = "spec.rayClusterSpec" if kind == "RayJob" else "spec"
    for i, group in enumerate((cluster or {}).get("workerGroupSpecs") or []):
        low, high, replicas = group.get("minReplicas"), group.get("maxReplicas"), group.get("replicas")
        if isinstance(low, int) and isinstance(high, int) and low > high:
            problems.append(f"{where}.workerGroupSpecs.{i}: minReplicas {low} is greater than maxReplicas {high}")
        if isinstance(replicas, int) and isinstance(low, int) and isinstance(high, int) and not low <= replicas <= high:
            problems.append(f"{where}.workerGroupSpecs.{i}: replicas {replicas} is outside [{low}, {high}]")
    return problems


def pod_templates(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The pod templates inside a RayJob or RayCluster, each as a core PodTemplate object to check."""
    spec = obj.get("spec") or {}
    cluster = spec.get("rayClusterSpec") if obj.get("kind") == "RayJob" else spec
    found: list[tuple[str, dict[str, Any]]] = []
    head = ((cluster or {}).get("headGroupSpec") or {}).get("template")
    if head is not None:
        found.append(("headGroupSpec.template", head))
    for i, group in enumerate((cluster or {}).get("workerGroupSpecs") or []):
        if "template" in group:
            found.append((f"workerGroupSpecs.{i}.template", group["template"]))
    name = (obj.get("metadata") or {}).get("name", "x")
    return [(where, {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"{name}-{i}"},
                     "template": template}) for i, (where, template) in enumerate(found)]


def core_problems(obj: dict[str, Any]) -> list[str]:
    """What the Kubernetes API's schema finds wrong with a core object (kubernetes-validate, strict)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in getattr(exc, "path", []) or [])
        return [f"{obj.get('kind')} {path or '(root)'}: {exc.message if hasattr(exc, 'message') else exc}"]
    return []


def problems(objects: list[dict[str, Any]], *, core: bool = True) -> list[str]:
    """Every problem of the objects a job applies; core objects only with ``core`` (needs kubernetes-validate)."""
    out: list[str] = []
    for obj in objects:
        if obj.get("kind") in ("RayJob", "RayCluster"):
            out += custom_resource_problems(obj)
            if core:
                for where, template in pod_templates(obj):
                    out += [f"{obj['kind']} {where}: {p}" for p in core_problems(template)]
        elif core:
            out += core_problems(obj)
    return out
