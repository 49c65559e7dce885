"""A real two-node Ray cluster for tests, on this machine, inside a network namespace that has only loopback.

Ray rewrites ``127.0.0.1`` in ``--node-ip-address`` and ``--address`` to the machine's outward address
and then listens on every interface. In a network namespace whose only interface is ``lo`` there is no
outward address, so every Ray listener is 127.0.0.1 and no packet can leave the machine. The clients
that talk to the cluster must be in the same namespace, and there are two ways to put them there::

    from matih_lite.testing.raycluster import RayCluster

    with RayCluster(tmp_path).start() as cluster:        # head + a second `ray start --address` node
        cluster.run(["python", "client.py"])               # a client process in the namespace
        with cluster.namespace.entered():                  # or this thread (and threads it starts)
            JobSubmissionClient(cluster.dashboard_url).list_jobs()

:meth:`NetworkNamespace.entered` moves the calling thread into the namespace with ``setns(2)`` (threads
it starts are born there, so an ml-service started inside serves the cluster on its loopback) and moves
it back afterwards. Making a namespace needs root, as CI runs; without it :func:`namespace_problem` says
why and :meth:`RayCluster.start` calls :func:`~matih_lite.testing.processes.engine_missing` (a skip
locally, a failure under ``CI=true``).

Every process is started by us and stopped by its PID, SIGTERM then SIGKILL, never with ``ray stop``
(which stops every Ray on the machine); whatever is still alive in the namespace afterwards (a job's
driver that Ray started in a session of its own) is found by its network namespace and killed by PID.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from matih_lite.testing.processes import EngineProcess, engine_missing, wait_for

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")

# Fixed ports are safe here: the namespace has a port space of its own, and both nodes share it, so
# each node gets its own block.
HEAD_PORTS = {"port": 6379, "dashboard-port": 8265, "node-manager-port": 6380, "object-manager-port": 6381,
              "dashboard-agent-listen-port": 6382, "dashboard-agent-grpc-port": 6383,
              "runtime-env-agent-port": 6384, "metrics-export-port": 6385, "ray-client-server-port": 6386,
              "min-worker-port": 11000, "max-worker-port": 11199}
WORKER_PORTS = {"node-manager-port": 6390, "object-manager-port": 6391, "dashboard-agent-listen-port": 6392,
                "dashboard-agent-grpc-port": 6393, "runtime-env-agent-port": 6394, "metrics-export-port": 6395,
                "min-worker-port": 11200, "max-worker-port": 11399}

_libc: Any = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def namespace_problem() -> str | None:
    """Why a network namespace cannot be made here (not root, no ``ip``), or None when it can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "making a network namespace (ip netns add) needs root; CI runs as root"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed; apt-get install iproute2"
    return None


class NetworkNamespace:
    """A named network namespace (``ip netns add``) with only ``lo``, up; deleted by :meth:`delete`."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"matih-{os.getpid()}-{secrets.token_hex(3)}"
        self.created = False

    def create(self) -> NetworkNamespace:
        """Make the namespace and bring its loopback up. Raises RuntimeError saying why it could not."""
        problem = namespace_problem()
        if problem:
            raise RuntimeError(problem)
        for argv in (["ip", "netns", "add", self.name], ["ip", "netns", "exec", self.name, "ip", "link", "set", "lo",
                                                          "up"]):
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
            if done.returncode != 0:
                self.delete()
                raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")
            self.created = True
        return self

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the PID stays the command's)."""
        return ["ip", "netns", "exec", self.name, *[str(a) for a in argv]]

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Run the calling thread (and every thread it starts meanwhile) in the namespace until the block ends."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(self.path, os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)

    def inode(self) -> int | None:
        """The namespace's identity, as ``/proc/PID/ns/net`` of its processes shows it."""
        try:
            return os.stat(self.path).st_ino
        except OSError:
            return None

    def pids(self) -> list[int]:
        """Every process now running in the namespace (all of them started by us)."""
        inode = self.inode()
        found = []
        if inode is None:
            return found
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def kill_all(self) -> None:
        """SIGKILL what is left in the namespace, by PID."""
        for pid in self.pids():
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def delete(self) -> None:
        """Delete the namespace (idempotent)."""
        if self.path.exists():
            subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, check=False, timeout=30)
        self.created = False


class _ResourcesProbe:
    """A Ray driver in the namespace answering the cluster's live resources view (``ray.available_resources``)."""

    CODE = ("import json, sys, ray\n"
            "ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR', configure_logging=False)\n"
            "print('ready', flush=True)\n"
            "for _ in sys.stdin:\n"
            "    print(json.dumps({'available': ray.available_resources(), 'total': ray.cluster_resources()}),"
            " flush=True)\n")

    def __init__(self, cluster: RayCluster) -> None:
        self.popen = subprocess.Popen(cluster.namespace.argv([sys.executable, "-c", self.CODE, cluster.gcs_address]),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True, env=cluster.env, start_new_session=True)
        self._lock = threading.Lock()
        line = self.popen.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError("the resources probe could not connect to the Ray cluster")

    def read(self) -> dict[str, dict[str, float]]:
        with self._lock:
            self.popen.stdin.write("\n")  # type: ignore[union-attr]
            self.popen.stdin.flush()  # type: ignore[union-attr]
            return json.loads(self.popen.stdout.readline())  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)


class RayCluster:
    """A Ray head and one more node (``ray start --address``) in a loopback-only network namespace.

    ``head_cpus`` and ``worker_cpus`` size the two nodes; the second node also has the custom
    resource ``second_node: 1`` so a test can place work there. Session files go under a short
    temporary folder (Ray's socket paths must stay under 108 bytes); logs under ``log_dir``.
    """

    def __init__(self, log_dir: str | Path, *, head_cpus: int = 1, worker_cpus: int = 1,
                 object_store_memory: int = 150_000_000, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.head_cpus = head_cpus
        self.worker_cpus = worker_cpus
        self.object_store_memory = object_store_memory
        self.namespace = NetworkNamespace()
        self.temp_dir = Path(tempfile.mkdtemp(prefix="mrc-", dir="/tmp"))
        venv_bin = str(Path(sys.executable).parent)
        base = dict(os.environ)
        base.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                     "PATH": f"{venv_bin}{os.pathsep}{base.get('PATH', '')}"})
        # A cluster of its own: nothing the test process set for another Ray may leak into it.
        for var in ("RAY_ADDRESS", "MATIH_URL", "MATIH_TOKEN", "MATIH_CONFIG", "MATIH_HOME"):
            base.pop(var, None)
        base.update(env or {})
        self.env = base
        self.head: EngineProcess | None = None
        self.worker: EngineProcess | None = None
        self._probe: _ResourcesProbe | None = None

    # ---- addresses --------------------------------------------------------------------------------
    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{HEAD_PORTS['port']}"

    @property
    def dashboard_url(self) -> str:
        """The Ray dashboard (Jobs API) URL, reachable from inside the namespace."""
        return f"http://127.0.0.1:{HEAD_PORTS['dashboard-port']}"

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> RayCluster:
        """Make the namespace and start both nodes; returns once the cluster has two live nodes.

        Where no namespace can be made, :func:`engine_missing` (skip locally, fail under CI=true).
        """
        try:
            self.namespace.create()
        except RuntimeError as exc:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            engine_missing(f"a two-node Ray cluster needs a loopback-only network namespace: {exc}")
        try:
            self._start_nodes(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _ray_start(self, ports: Mapping[str, int], temp_dir: Path, *extra: str) -> list[str]:
        argv = ["ray", "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
                f"--object-store-memory={self.object_store_memory}", "--disable-usage-stats", *extra]
        argv += [f"--{key}={value}" for key, value in ports.items()]
        return self.namespace.argv(argv)

    def _start_nodes(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        head_argv = self._ray_start(HEAD_PORTS, self.temp_dir, "--head", "--dashboard-host=127.0.0.1",
                                    "--include-dashboard=true", f"--num-cpus={self.head_cpus}", "--num-gpus=0")
        self.head = self._start_node(head_argv, "ray-head", 1, deadline, "the Ray head's dashboard")
        # A folder of its own, as a second machine has: in the head's, the second node's runtime-env agent
        # deleted a job's unpacked working dir (the head driver's cwd) once its own trials there had ended.
        worker_argv = self._ray_start(WORKER_PORTS, self.temp_dir / "n2", f"--address={self.gcs_address}",
                                      f"--num-cpus={self.worker_cpus}", "--num-gpus=0",
                                      '--resources={"second_node": 1}')
        self.worker = self._start_node(worker_argv, "ray-worker", 2, deadline, "the second Ray node to join")

    def _start_node(self, argv: list[str], name: str, nodes: int, deadline: float, what: str) -> EngineProcess:
        """Start one node and wait until the cluster has ``nodes`` live nodes.

        ``ray start`` gives its raylet a fixed 30 s to register; on a machine under heavy load that can
        pass, and the node exits. It is then started again (three tries in all), as an operator would.
        """
        for attempt in (1, 2, 3):
            proc = EngineProcess(argv, name=f"{name}-{attempt}", log_dir=self.log_dir, env=self.env, grace=5.0).start()
            try:
                wait_for(lambda: self._dashboard_nodes() >= nodes, timeout=max(1.0, deadline - time.monotonic()),
                         what=what, interval=0.25, proc=proc)
                return proc
            except RuntimeError:
                proc.stop()
                if attempt == 3 or time.monotonic() > deadline:
                    raise
        raise AssertionError("unreachable")

    def _dashboard_nodes(self) -> int:
        """Live nodes as the dashboard's state API lists them (0 while it does not answer)."""
        import httpx

        with self.namespace.entered():
            try:
                body = httpx.get(f"{self.dashboard_url}/api/v0/nodes", timeout=2).json()
            except (httpx.HTTPError, ValueError):
                return 0
        nodes = body.get("data", {}).get("result", {}).get("result", [])
        return sum(1 for n in nodes if n.get("state") == "ALIVE")

    def stop(self) -> None:
        """Stop the probe, both nodes (by PID: SIGTERM, then SIGKILL) and what is left in the namespace;
        delete the namespace and the session files. Idempotent."""
        if self._probe is not None:
            self._probe.stop()
            self._probe = None
        for node in (self.worker, self.head):
            if node is not None:
                node.stop()
        self.namespace.kill_all()
        deadline = time.monotonic() + 10
        while self.namespace.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.namespace.delete()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- looking at it ----------------------------------------------------------------------------
    def resources(self) -> dict[str, dict[str, float]]:
        """``{"available": ..., "total": ...}``: the cluster's live resources view, as Ray's scheduler sees it."""
        if self._probe is None:
            self._probe = _ResourcesProbe(self)
        return self._probe.read()

    def available_cpus(self) -> float:
        """CPUs free in the cluster now."""
        return float(self.resources()["available"].get("CPU", 0.0))

    def total_cpus(self) -> float:
        return float(self.resources()["total"].get("CPU", 0.0))

    def node_ids(self) -> dict[str, str]:
        """Ray's id of each live node: ``{"head": ..., "worker": ...}`` (a worker's process knows its own from
        ``ray.get_runtime_context().get_node_id()``)."""
        import httpx

        with self.namespace.entered():
            body = httpx.get(f"{self.dashboard_url}/api/v0/nodes", timeout=10).json()
        found: dict[str, str] = {}
        for node in body["data"]["result"]["result"]:
            if node.get("state") == "ALIVE":
                found["head" if node.get("is_head_node") else "worker"] = node["node_id"]
        return found

    def run(self, argv: Sequence[str], *, timeout: float = 300.0, env: Mapping[str, str] | None = None,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
        """Run a client command in the namespace with the cluster's environment; returns when it ends."""
        return subprocess.run(self.namespace.argv(argv), env={**self.env, **(env or {})}, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout, check=False)


class Link:
    """A TCP relay on a free loopback port to ``target_port``: a client pointed at it loses the target when
    the link is :meth:`cut` (connections refused, open ones closed) and finds it again when :meth:`mend`\\ed.

    It plays a Ray head that became unreachable and came back, without touching the head itself.
    Start it inside the namespace that holds the target (:meth:`NetworkNamespace.entered`).
    """

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        import socket

        self._socket = socket
        self.target = (host, target_port)
        probe = socket.socket()
        probe.bind((host, 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.host = host
        self._listener: Any = None
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        self.mend()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def mend(self) -> None:
        """Accept connections again (idempotent)."""
        with self._lock:
            if self._listener is not None:
                return
            listener = self._socket.socket()
            listener.setsockopt(self._socket.SOL_SOCKET, self._socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="matih-link", daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and close the open ones (idempotent)."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._open = self._open, set()
        if listener is not None:
            try:
                listener.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for conn in conns:
            try:
                conn.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    close = cut

    def _accept(self, listener: Any) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: Any, dst: Any) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(self._socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
