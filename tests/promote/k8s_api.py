"""A stand-in for the Kubernetes API server (the one fake these tests allow: none can run on this machine).

It keeps objects by path and answers create (POST on a collection: 201, or 409 ``AlreadyExists``), read
(GET: 200, or 404 ``NotFound``) and replace (PUT: 200, or 409 ``Conflict`` on a stale
``resourceVersion``), in the API's shapes (``Status`` objects for errors). Core objects are checked with
kubernetes-validate on the way in, as admission would (422 ``Invalid``).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kubernetes_validate

CORE_GROUPS = ("v1", "apps/v1", "autoscaling/v2", "networking.k8s.io/v1")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class FakeKubernetesApi:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._version = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKubernetesApi:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path) -> str:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}))
        return str(path)

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.calls.append((method, path))
            if method == "GET":
                held = self.objects.get(path)
                return (200, held) if held else (404, _status(404, "NotFound", f"{path} not found"))
            problems = self._admit(body)
            if problems:
                return 422, _status(422, "Invalid", problems)
            if method == "POST":
                target = f"{path}/{body['metadata']['name']}"
                if target in self.objects:
                    return 409, _status(409, "AlreadyExists", f"{target} already exists")
            elif method == "PUT":
                target = path
                held = self.objects.get(target)
                if held is None:
                    return 404, _status(404, "NotFound", f"{path} not found")
                if body["metadata"].get("resourceVersion") != held["metadata"]["resourceVersion"]:
                    return 409, _status(409, "Conflict", "the object has been modified")
            else:
                return 405, _status(405, "MethodNotAllowed", method)
            self._version += 1
            stored = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self._version)}}
            self.objects[target] = stored
            return (201 if method == "POST" else 200), stored

    @staticmethod
    def _admit(body: Any) -> str:
        if body.get("apiVersion") not in CORE_GROUPS:
            return ""
        try:
            kubernetes_validate.validate({k: v for k, v in body.items()}, "1.33.0", strict=True)
        except kubernetes_validate.ValidationError as exc:
            return str(exc.message)
        return ""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, out = api.handle(self.command, self.path.split("?")[0], body)
                data = json.dumps(out).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
