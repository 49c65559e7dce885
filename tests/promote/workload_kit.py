"""What the workload test needs besides the engines: a relay into the Ray cluster's namespace, a served profile.

The two-node Ray cluster lives in a network namespace that has only loopback (see
:mod:`matih_lite.testing.raycluster`); PostgreSQL, Redis, SeaweedFS, tansu, Triton and the ml-service
live on this machine's own loopback. A :class:`NamespaceRelay` joins the two loopbacks (a listener on
one, the connections it accepts carried to a port on the other), so the ml-service reaches the
cluster's Jobs API and the cluster's job drivers reach the ml-service: no packet leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"
CLEARED = ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN", "RAY_ADDRESS")


def _inside(namespace: Any):
    return namespace.entered() if namespace is not None else contextlib.nullcontext()


class NamespaceRelay:
    """Listens on ``127.0.0.1:port`` of ``listen_ns`` and carries each connection to ``127.0.0.1:target_port``
    of ``target_ns`` (None: this process's own namespace). ``port`` 0 picks a free one.

    Create it from a thread in this process's own namespace: the accepting thread starts there and
    enters ``target_ns`` only to open each upstream connection.
    """

    def __init__(self, target_port: int, *, listen_ns: Any = None, target_ns: Any = None, port: int = 0) -> None:
        self.target_port = target_port
        self.target_ns = target_ns
        with _inside(listen_ns):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((LOOPBACK, port))
            listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener: socket.socket | None = listener
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, args=(listener,), name="matih-relay", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                with _inside(self.target_ns):
                    upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is None:
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)

    def close(self) -> None:
        """Stop listening and close every open connection (idempotent)."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._open = self._open, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that points a matih-lite command elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(extra)
    return env


class Service:
    """``matih-lite up --profile PROFILE`` in ``folder`` as a subprocess on ``port``, stopped by its PID."""

    def __init__(self, folder: Path, profile: str, port: int, env: dict[str, str]) -> None:
        self.folder, self.profile, self.port = folder, profile, port
        self.log = folder / f"up-{profile}-{port}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "matih_lite", "up", "--port", str(port), "--profile", profile],
                cwd=folder, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"matih-lite up --profile {profile} exited:\n{self.log_tail()}")
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the {profile} service was not ready in 120 s:\n{self.log_tail()}")

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 30 s; idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
