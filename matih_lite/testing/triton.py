"""A real Triton Inference Server for tests and benchmarks: the ``tritonserver`` of ``nvidia-pytriton`` on loopback.

    from matih_lite.testing.triton import TritonServer, triton_env

    env = triton_env()                          # built once, then cached (see below); None if it cannot be
    with TritonServer(tmp_path, env) as triton: # started in explicit model-control mode; /v2/health/ready
        triton.url                              # "http://127.0.0.1:PORT" (HTTP; grpc_port, metrics_port too)
        triton.repository                       # the model repository folder it serves
        triton.serving_settings()               # {"backend": "triton", "url": ..., "repository": ...}
        triton.stop()                           # gone (a fault test) ...
        triton.start()                          # ... and back on the same ports and repository

**The Triton environment.** ``nvidia-pytriton`` pins ``numpy<2``, so Triton gets a virtualenv of its
own, built by :func:`triton_env` from :func:`triton_requirements` (the wheel, and the model libraries
at the versions of the Python running the tests, so a model pickled here loads there) with
``python -m venv`` and ``pip``. It lives in ``$MATIH_TRITON_ENV`` when that is set, else in
``<cache>/matih-lite/triton-env-<hash of the requirements>`` where ``<cache>`` is ``$XDG_CACHE_HOME``
or the user's ``~/.cache`` (read from the password database: the tests' temporary ``HOME`` does not
move it). A finished environment holds ``.matih-ready``; a build is locked against a concurrent
one, so a CI run builds it once (about a minute) and every later test reuses it.

The wheel keeps ``tritonserver`` under ``pytriton/tritonserver/`` with the Python backend's stubs in
``python_backend_stubs/<python>/``, where Triton does not look: the build copies the tree to
``<env>/tritonserver/`` and puts this Python's stub beside ``backends/python/libtriton_python.so``.
The server runs with ``LD_LIBRARY_PATH`` on the wheel's ``nvidia_pytriton.libs``, the environment's
``bin`` first on ``PATH`` (the stub's embedded Python finds ``python3`` there, and so its numpy,
onnxruntime, scikit-learn) and ``PYTHONPATH`` on the folder holding ``matih_lite`` (the flavors'
code that the generated ``model.py`` files load models with) plus any folders a test adds (where its
pyfunc model classes live). Every address is 127.0.0.1 on free ports; ``--exit-timeout-secs=5``;
stopped by its PID (SIGTERM, then SIGKILL of its process group, stubs included).

This wheel has the Python backend only: ONNX models run through a Python-backend ``model.py`` with
onnxruntime (``onnx_runtime = "python"``), never through the ``onnxruntime_onnx`` platform.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from matih_lite.testing.processes import LOOPBACK, EngineProcess, free_ports, wait_for

PYTRITON = "nvidia-pytriton==0.7.0"
"""The wheel that ships ``tritonserver`` 2.51 with its Python backend."""
MODEL_LIBRARIES = ("onnxruntime", "scikit-learn", "xgboost-cpu", "skops", "cloudpickle", "pandas", "pyyaml",
                   "msgspec")
"""What the generated ``model.py`` files need to load models with matih-lite's flavors, pinned to the
versions installed beside the tests when they are (so a model saved here loads there)."""
READY = ".matih-ready"
ENV_VARIABLE = "MATIH_TRITON_ENV"


def triton_requirements() -> list[str]:
    """The pip requirements of the Triton environment: the wheel, numpy < 2 and the model libraries."""
    out = [PYTRITON, "numpy<2"]
    for name in MODEL_LIBRARIES:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME`` or the real user's ``~/.cache`` (not ``$HOME``, which tests make temporary)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg)
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache"


def default_env_path(requirements: list[str] | None = None) -> Path:
    """Where :func:`triton_env` keeps the environment for these requirements."""
    if os.environ.get(ENV_VARIABLE):
        return Path(os.environ[ENV_VARIABLE])
    reqs = requirements if requirements is not None else triton_requirements()
    digest = hashlib.sha256("\n".join([f"{sys.version_info[0]}.{sys.version_info[1]}", *reqs]).encode()).hexdigest()
    return cache_dir() / "matih-lite" / f"triton-env-{digest[:12]}"


@dataclass(frozen=True)
class TritonEnv:
    """A built Triton environment: its virtualenv, the server tree and the libraries it needs."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python3"

    @property
    def site_packages(self) -> Path:
        return self.root / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"

    @property
    def server_root(self) -> Path:
        return self.root / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server_root / "bin" / "tritonserver"

    @property
    def backend_dir(self) -> Path:
        return self.server_root / "backends"

    @property
    def libraries(self) -> Path:
        return self.site_packages / "nvidia_pytriton.libs"

    @property
    def ready(self) -> bool:
        return (self.root / READY).is_file() and self.binary.is_file()


def triton_env(path: str | Path | None = None, *, build: bool = True, timeout: float = 900.0) -> TritonEnv:
    """The Triton environment at ``path`` (default :func:`default_env_path`), built first when missing.

    Raises RuntimeError (with pip's output) when it cannot be built (no network to PyPI, a Python
    without a stub in the wheel).
    """
    requirements = triton_requirements()
    env = TritonEnv(Path(path) if path is not None else default_env_path(requirements))
    if env.ready or not build:
        return env
    env.root.parent.mkdir(parents=True, exist_ok=True)
    with open(env.root.parent / f".{env.root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same environment
        if not env.ready:
            _build(env, requirements, timeout)
    return env


def _build(env: TritonEnv, requirements: list[str], timeout: float) -> None:
    shutil.rmtree(env.root, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    log = env.root.parent / f"{env.root.name}.build.log"

    def run(argv: list[str]) -> None:
        with log.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout, check=False)
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"building the Triton environment in {env.root} failed ({argv[0]} exited with "
                               f"{done.returncode}):\n{tail}")

    log.write_text("")
    run([base, "-m", "venv", str(env.root)])
    run([str(env.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements])
    source = env.site_packages / "pytriton" / "tritonserver"
    stub = source / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / \
        "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton has no Python-backend stub for Python {sys.version_info[0]}."
                           f"{sys.version_info[1]} ({stub} is missing)")
    shutil.copytree(source, env.server_root, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
    shutil.copy2(stub, env.backend_dir / "python" / "triton_python_backend_stub")
    (env.root / READY).write_text("\n".join(requirements) + "\n")


def matih_source_root() -> Path:
    """The folder holding the ``matih_lite`` package (a checkout's root, or site-packages)."""
    import matih_lite

    return Path(matih_lite.__file__).resolve().parent.parent


class TritonServer:
    """One ``tritonserver`` in explicit model-control mode over ``repository`` (default ``workdir/models``).

    ``start()`` waits until ``/v2/health/ready`` answers 200; ``stop()`` ends it by PID; ``start()``
    again brings it back on the same ports and repository (with no model loaded: explicit mode).
    """

    def __init__(self, workdir: str | Path, env: TritonEnv, *, repository: str | Path | None = None,
                 python_path: tuple[str | Path, ...] = (), extra_args: tuple[str, ...] = (),
                 start_timeout: float = 60.0) -> None:
        self.workdir = Path(workdir)
        self.env = env
        self.repository = str(repository) if repository is not None else str(self.workdir / "models")
        self.python_path = tuple(str(p) for p in python_path)
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.process: EngineProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def serving_settings(self, **extra: Any) -> dict[str, Any]:
        """The ``serving`` table of a profile using this server (the Python backend for ONNX, as here)."""
        return {"backend": "triton", "url": self.url, "repository": self.repository, "onnx_runtime": "python",
                **extra}

    def argv(self) -> list[str]:
        return [str(self.env.binary), f"--model-repository={self.repository}", "--model-control-mode=explicit",
                f"--http-address={LOOPBACK}", f"--http-port={self.http_port}",
                f"--grpc-address={LOOPBACK}", f"--grpc-port={self.grpc_port}",
                f"--metrics-address={LOOPBACK}", f"--metrics-port={self.metrics_port}",
                f"--backend-directory={self.env.backend_dir}", "--exit-timeout-secs=5", *self.extra_args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.env.bin}{os.pathsep}{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.env.libraries), env.get("LD_LIBRARY_PATH"))
                                                 if p)
        env["PYTHONPATH"] = os.pathsep.join([str(matih_source_root()), *self.python_path])
        env["PYTHONNOUSERSITE"] = "1"
        env.pop("VIRTUAL_ENV", None)
        # One thread per model call in every stub: Triton runs instances side by side.
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start(self) -> TritonServer:
        """Start the server (again) and wait until it is ready. Raises RuntimeError with its log if not."""
        if self.running:
            return self
        if not self.env.ready:
            raise FileNotFoundError(f"the Triton environment {self.env.root} is not built; call triton_env()")
        if "://" not in self.repository:
            Path(self.repository).mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = EngineProcess(self.argv(), name="tritonserver", log_dir=self.workdir, env=self.environment(),
                                     cwd=self.workdir, grace=10.0).start()
        try:
            wait_for(self._ready, timeout=self.start_timeout, what="tritonserver", interval=0.1, proc=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM: it waits ``--exit-timeout-secs``; then SIGKILL); idempotent."""
        if self.process is not None:
            self.process.stop()

    def client(self, **kwargs: Any) -> Any:
        """A ``tritonclient.http.InferenceServerClient`` on this server."""
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(f"{LOOPBACK}:{self.http_port}", **kwargs)

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process is not None else "(not started)"

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<TritonServer {self.url} ({'running' if self.running else 'stopped'})>"

