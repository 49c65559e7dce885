"""A stand-in for the Kubernetes API server and the KubeRay operator: the one fake in these tests.

No Kubernetes API server can run on this machine (no kube-apiserver, k3s, kind, kwok or envtest
installs here, and there is no container runtime), so this small HTTP server answers the handful of
calls ``matih-kuberay`` makes, in the shapes the Kubernetes API documents (objects with ``metadata``,
``Status`` objects for errors with ``reason`` and ``code``, ``APIResourceList`` for discovery, JSON
merge patches, ``resourceVersion`` checks on replace, ``labelSelector`` on lists):

    GET  /apis/ray.io/v1                                        discovery (is KubeRay installed?)
    GET  /apis/ray.io/v1/{rayjobs|rayclusters}?labelSelector=   across namespaces
    POST|GET /apis/ray.io/v1/namespaces/{ns}/{plural}[/{name}]  create, read
    PATCH|DELETE /apis/ray.io/v1/namespaces/{ns}/{plural}/{name}
    GET /api/v1/namespaces/{name}, POST /api/v1/namespaces
    GET|PUT /api/v1/namespaces/{ns}/resourcequotas/{name}, POST .../resourcequotas

Created RayJobs and RayClusters are checked against the backend's schema and core objects with
kubernetes-validate, as admission would (422 ``Invalid``). A thread plays the KubeRay operator for
``InteractiveMode`` RayJobs the way ``rayjob_controller.go`` (KubeRay 1.7) moves them: Initializing,
then Waiting with ``status.dashboardURL`` once "the cluster is up", Running when ``spec.jobId`` is set,
then Complete or Failed (``reason: AppFailed``) from the job's status on the Ray dashboard. The Ray side
is real: ``dashboard_url`` is a real Ray cluster's Jobs API, where the backend submits the job and where
this operator reads its status; deleting a RayJob (or RayCluster) stops its Ray job there, as deleting
the cluster's pods would.
"""

from __future__ import annotations

import copy
import json
import random
import string
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from matih_kuberay.validation import core_problems, custom_resource_problems, pod_templates

PLURALS = {"rayjobs": "RayJob", "rayclusters": "RayCluster"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_object(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class FakeKubernetes:
    """The API server and the KubeRay operator, on 127.0.0.1 (start it in the namespace of the Ray cluster)."""

    def __init__(self, dashboard_url: str, *, cluster_ready_after: float = 1.0, validate_core: bool = True) -> None:
        self.dashboard_url = dashboard_url.rstrip("/")
        self.cluster_ready_after = cluster_ready_after
        self.validate_core = validate_core
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.quotas: dict[tuple[str, str], dict[str, Any]] = {}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self._born: dict[tuple[str, str, str], float] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._version = 100
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._threads = [threading.Thread(target=self.server.serve_forever, name="fake-k8s", daemon=True),
                         threading.Thread(target=self._operate, name="fake-kuberay", daemon=True)]

    def start(self) -> FakeKubernetes:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    # ---- what tests look at and do ----------------------------------------------------------------
    def calls(self, method: str | None = None, contains: str = "") -> list[tuple[str, str, Any]]:
        return [c for c in self.requests if (method is None or c[0] == method) and contains in c[1]]

    def get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.objects.get((plural, ns, name))
            return copy.deepcopy(found) if found else None

    def vanish(self, plural: str, ns: str, name: str) -> None:
        """Delete an object the way someone with kubectl would, behind the backend's back."""
        with self._lock:
            obj = self.objects.pop((plural, ns, name), None)
        if obj is not None:
            self._tear_down(obj)

    def fail(self, plural: str, ns: str, name: str, reason: str, message: str) -> None:
        """Make KubeRay give up on a RayJob (a deadline passed, the cluster never came up)."""
        with self._lock:
            obj = self.objects[(plural, ns, name)]
            obj["status"] = {**obj.get("status", {}), "jobDeploymentStatus": "Failed", "reason": reason,
                             "message": message, "endTime": _now()}

    # ---- the operator ----------------------------------------------------------------------------
    def _jobs_api(self) -> Any:
        from matih_ray.jobs_api import JobsApi

        return JobsApi(self.dashboard_url, timeout=5)

    def _operate(self) -> None:
        api = self._jobs_api()
        try:
            while not self._stop.wait(0.2):
                with self._lock:
                    items = list(self.objects.items())
                for key, obj in items:
                    try:
                        self._reconcile(api, key, obj)
                    except Exception as exc:  # the operator requeues, as KubeRay's does
                        obj.setdefault("status", {})["lastReconcileError"] = f"{type(exc).__name__}: {exc}"
        finally:
            api.close()

    def _reconcile(self, api: Any, key: tuple[str, str, str], obj: dict[str, Any]) -> None:
        plural = key[0]
        age = time.monotonic() - self._born.get(key, time.monotonic())
        status = obj.setdefault("status", {})
        host_port = self.dashboard_url.split("://", 1)[1]
        if plural == "rayclusters":
            if age >= self.cluster_ready_after and status.get("state") != "ready":
                with self._lock:
                    status.update({"state": "ready", "readyWorkerReplicas": 0,
                                   "head": {"serviceName": f"{obj['metadata']['name']}-head-svc",
                                            "podIP": "127.0.0.1", "serviceIP": "127.0.0.1"},
                                   "endpoints": {"dashboard": host_port.rsplit(":", 1)[1]}})
            return
        spec = obj["spec"]
        deployment = status.get("jobDeploymentStatus", "")
        if deployment in ("Complete", "Failed", "ValidationFailed"):
            return
        if deployment == "":
            if spec.get("submissionMode") != "InteractiveMode":
                with self._lock:
                    status.update({"jobDeploymentStatus": "ValidationFailed",
                                   "message": "this test operator plays InteractiveMode RayJobs only"})
                return
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            with self._lock:
                status.update({"jobDeploymentStatus": "Initializing", "jobStatus": "",
                               "rayClusterName": f"{obj['metadata']['name']}-{suffix}", "startTime": _now(),
                               "rayClusterStatus": {"state": ""}})
            return
        if deployment == "Initializing":
            if age >= self.cluster_ready_after:
                with self._lock:
                    status.update({"jobDeploymentStatus": "Waiting", "dashboardURL": host_port,
                                   "rayClusterStatus": {"state": "ready"}})
            return
        if deployment == "Waiting":
            if spec.get("jobId"):
                with self._lock:
                    status.update({"jobDeploymentStatus": "Running", "jobId": spec["jobId"]})
            return
        if deployment == "Running":
            from matih_lite.errors import NotFound

            try:
                info = api.info(status["jobId"])
            except NotFound:
                return  # KubeRay waits for the job to show up
            job_status = str(info.get("status"))
            update: dict[str, Any] = {"jobStatus": job_status, "message": info.get("message") or ""}
            if job_status in ("SUCCEEDED", "FAILED", "STOPPED"):
                update["jobDeploymentStatus"] = "Failed" if job_status == "FAILED" else "Complete"
                update["reason"] = "AppFailed" if job_status == "FAILED" else ""
                update["endTime"] = _now()
            with self._lock:
                status.update(update)

    def _tear_down(self, obj: dict[str, Any]) -> None:
        """The cluster's pods go: its Ray job stops."""
        job_id = obj["metadata"].get("labels", {}).get("matih.io/job-id")
        if not job_id:
            return
        from matih_lite.errors import MatihError

        api = self._jobs_api()
        try:
            api.stop(f"matih-{job_id}")
        except MatihError:
            pass
        finally:
            api.close()

    # ---- the API server ----------------------------------------------------------------------------
    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _admit(self, kind: str, body: dict[str, Any]) -> list[str]:
        if kind in ("RayJob", "RayCluster"):
            found = custom_resource_problems(body)
            if self.validate_core:
                for where, template in pod_templates(body):
                    found += [f"{where}: {p}" for p in core_problems(template)]
            return found
        return core_problems(body) if self.validate_core else []

    def handle(self, method: str, raw_path: str, body: Any) -> tuple[int, Any]:
        url = urlparse(raw_path)
        parts = [p for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        with self._lock:
            self.requests.append((method, url.path, copy.deepcopy(body)))
        if parts == ["apis", "ray.io", "v1"] and method == "GET":
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "ray.io/v1", "resources": [
                {"name": p, "singularName": p[:-1], "namespaced": True, "kind": k,
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]} for p, k in PLURALS.items()]}
        if parts[:3] == ["apis", "ray.io", "v1"]:
            return self._custom(method, parts[3:], query, body)
        if parts[:2] == ["api", "v1"]:
            return self._core(method, parts[2:], body)
        return 404, status_object(404, "NotFound", f"the server could not find the requested resource ({url.path})")

    def _custom(self, method: str, rest: list[str], query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        selector = (query.get("labelSelector") or [""])[0]
        if len(rest) == 1 and method == "GET":  # across namespaces
            return 200, self._list(rest[0], None, selector)
        if len(rest) < 3 or rest[0] != "namespaces" or rest[2] not in PLURALS:
            return 404, status_object(404, "NotFound", "the server could not find the requested resource")
        ns, plural = rest[1], rest[2]
        kind = PLURALS[plural]
        if len(rest) == 3:
            if method == "GET":
                return 200, self._list(plural, ns, selector)
            if method != "POST":
                return 405, status_object(405, "MethodNotAllowed", f"{method} is not allowed here")
            if ns not in self.namespaces:
                return 404, status_object(404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces")
            name = body["metadata"]["name"]
            problems = self._admit(kind, body)
            if problems:
                return 422, status_object(422, "Invalid", f'{kind}.ray.io "{name}" is invalid: ' + "; ".join(problems),
                                          name=name, group="ray.io", kind=kind)
            with self._lock:
                if (plural, ns, name) in self.objects:
                    return 409, status_object(409, "AlreadyExists", f'{plural}.ray.io "{name}" already exists',
                                              name=name, group="ray.io", kind=plural)
                obj = copy.deepcopy(body)
                obj["metadata"].update({"uid": str(uuid.uuid4()), "resourceVersion": self._next_version(),
                                        "creationTimestamp": _now(), "generation": 1})
                self.objects[(plural, ns, name)] = obj
                self._born[(plural, ns, name)] = time.monotonic()
                return 201, copy.deepcopy(obj)
        name = rest[3]
        with self._lock:
            obj = self.objects.get((plural, ns, name))
        if obj is None:
            return 404, status_object(404, "NotFound", f'{plural}.ray.io "{name}" not found', name=name,
                                      group="ray.io", kind=plural)
        if method == "GET":
            with self._lock:
                return 200, copy.deepcopy(obj)
        if method == "PATCH":
            with self._lock:
                patched = merge_patch(obj, body)
                patched["metadata"]["resourceVersion"] = self._next_version()
                obj.clear()
                obj.update(patched)
                return 200, copy.deepcopy(obj)
        if method == "DELETE":
            with self._lock:
                self.objects.pop((plural, ns, name), None)
            self._tear_down(obj)
            return 200, status_object(200, "", "deleted") | {"status": "Success"}
        return 405, status_object(405, "MethodNotAllowed", f"{method} is not allowed here")

    def _list(self, plural: str, ns: str | None, selector: str) -> dict[str, Any]:
        wanted = dict(pair.split("=", 1) for pair in selector.split(",") if "=" in pair)
        with self._lock:
            items = [copy.deepcopy(o) for (p, n, _), o in self.objects.items() if p == plural and (ns is None or n == ns)
                     and all(o["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
        return {"apiVersion": "ray.io/v1", "kind": f"{PLURALS.get(plural, plural)}List",
                "metadata": {"resourceVersion": str(self._version)}, "items": items}

    def _core(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if rest == ["namespaces"] and method == "POST":
            name = body["metadata"]["name"]
            problems = self._admit("Namespace", body)
            if problems:
                return 422, status_object(422, "Invalid", "; ".join(problems), name=name, kind="namespaces")
            with self._lock:
                if name in self.namespaces:
                    return 409, status_object(409, "AlreadyExists", f'namespaces "{name}" already exists', name=name,
                                              kind="namespaces")
                obj = merge_patch(body, {"metadata": {"uid": str(uuid.uuid4()), "resourceVersion": self._next_version(),
                                                      "creationTimestamp": _now()}, "status": {"phase": "Active"}})
                self.namespaces[name] = obj
                return 201, copy.deepcopy(obj)
        if len(rest) == 2 and rest[0] == "namespaces" and method == "GET":
            found = self.namespaces.get(rest[1])
            if found is None:
                return 404, status_object(404, "NotFound", f'namespaces "{rest[1]}" not found', name=rest[1],
                                          kind="namespaces")
            return 200, copy.deepcopy(found)
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] == "resourcequotas":
            ns = rest[1]
            if ns not in self.namespaces:
                return 404, status_object(404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces")
            if len(rest) == 3 and method == "POST":
                name = body["metadata"]["name"]
                problems = self._admit("ResourceQuota", body)
                if problems:
                    return 422, status_object(422, "Invalid", "; ".join(problems), name=name, kind="resourcequotas")
                with self._lock:
                    if (ns, name) in self.quotas:
                        return 409, status_object(409, "AlreadyExists", f'resourcequotas "{name}" already exists',
                                                  name=name, kind="resourcequotas")
                    obj = merge_patch(body, {"metadata": {"uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                                                          "resourceVersion": self._next_version()}})
                    self.quotas[(ns, name)] = obj
                    return 201, copy.deepcopy(obj)
            if len(rest) == 4:
                name = rest[3]
                with self._lock:
                    current = self.quotas.get((ns, name))
                    if current is None:
                        return 404, status_object(404, "NotFound", f'resourcequotas "{name}" not found', name=name,
                                                  kind="resourcequotas")
                    if method == "GET":
                        return 200, copy.deepcopy(current)
                    if method == "PUT":
                        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                            return 409, status_object(409, "Conflict", f'Operation cannot be fulfilled on resourcequotas '
                                                      f'"{name}": the object has been modified', name=name,
                                                      kind="resourcequotas")
                        problems = self._admit("ResourceQuota", {k: v for k, v in body.items()})
                        if problems:
                            return 422, status_object(422, "Invalid", "; ".join(problems), name=name,
                                                      kind="resourcequotas")
                        obj = copy.deepcopy(body)
                        obj["metadata"] = {**current["metadata"], **body["metadata"],
                                           "resourceVersion": self._next_version()}
                        self.quotas[(ns, name)] = obj
                        return 200, copy.deepcopy(obj)
        return 404, status_object(404, "NotFound", "the server could not find the requested resource")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                code, answer = fake.handle(self.command, self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
