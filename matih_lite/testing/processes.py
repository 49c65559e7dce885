"""Real engines for tests: a server process on free loopback ports, stopped by its PID afterwards.

Every engine a backend is tested against (SeaweedFS, tansu, tritonserver, Ray, llama.cpp, Flink)
is started the same way::

    from matih_lite.testing.processes import EngineProcess, free_port, wait_for

    port = free_port()
    with EngineProcess(["tansu", "broker", "--listener-url", f"tcp://127.0.0.1:{port}", ...],
                       name="tansu", log_dir=tmp_path) as proc:
        wait_for(lambda: port_open(port), timeout=10, what="tansu", proc=proc)
        ...

The process runs in its own session (process group), so stopping it stops whatever it forked
too, and nothing else on the machine: never ``pkill`` or ``ray stop``. :func:`engine_missing`
turns "the engine cannot start here" into a skip locally and a failure under ``CI=true``, where
nothing the test command installs may be skipped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port(avoid: Sequence[int] = (), *, below: int = 55535) -> int:
    """A TCP port free on 127.0.0.1 now (below ``below``: SeaweedFS also opens port + 10000)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port < below and port not in avoid:
            return port
    raise RuntimeError("no free loopback port found")


def free_ports(count: int, *, below: int = 55535) -> list[int]:
    """``count`` distinct free ports."""
    ports: list[int] = []
    while len(ports) < count:
        ports.append(free_port(ports, below=below))
    return ports


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05,
             proc: EngineProcess | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; returns it.

    Raises RuntimeError after ``timeout`` seconds, or at once when ``proc`` has exited, with the
    tail of its log so a failed start explains itself.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            found = check()
            if found:
                return found
        except Exception as exc:  # a server that is not up yet refuses in many ways
            last_exc = exc
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            tail = f"\n{proc.log_tail()}" if proc is not None else ""
            why = f" (last error: {type(last_exc).__name__}: {last_exc})" if last_exc else ""
            raise RuntimeError(f"{what} was not ready after {timeout:g} s{why}{tail}")
        time.sleep(interval)


class EngineProcess:
    """One engine process in its own process group, with its output in a log file.

    ``stop_signals`` is the sequence tried in order, each given ``grace`` seconds (SeaweedFS
    ignores SIGTERM: give it ``(signal.SIGINT, signal.SIGKILL)``). The whole group is signalled.
    """

    def __init__(self, argv: Sequence[str], *, name: str, log_dir: str | Path, env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None,
                 stop_signals: Sequence[int] = (signal.SIGTERM, signal.SIGKILL), grace: float = 10.0) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self.env = dict(os.environ if env is None else env)
        self.cwd = str(cwd) if cwd is not None else None
        self.stop_signals = tuple(stop_signals)
        self.grace = grace
        self.popen: subprocess.Popen | None = None

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> EngineProcess:
        """Start the process (returns at once; wait for readiness with :func:`wait_for`)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=self.env, cwd=self.cwd, start_new_session=True)
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.returncode

    def poll(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return None if self.popen is None else self.popen.poll()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process group (SIGKILL a worker to test recovery, SIGSTOP to freeze it)."""
        if self.popen is not None and self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> int | None:
        """Stop the process group by PID with :attr:`stop_signals`; idempotent. Returns the exit code."""
        if self.popen is None:
            return None
        for sig in self.stop_signals:
            if self.popen.poll() is not None:
                break
            self.signal(sig)
            try:
                self.popen.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                continue
        # Children the leader left behind in its group (a forked stub, a worker) go too.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            self.popen.wait(timeout=5)
        return self.popen.returncode

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the process's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> EngineProcess:
        if self.popen is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "not started" if self.popen is None else f"pid {self.popen.pid}, rc {self.popen.poll()}"
        return f"<EngineProcess {self.name} ({state})>"


def engine_missing(reason: str) -> None:
    """An engine this test needs cannot run here: skip locally, fail under ``CI=true``.

    CI installs everything the test command needs, so a missing engine there is a broken install,
    never a reason to pass.
    """
    import pytest

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: nothing the test command installs may be skipped)")
    pytest.skip(reason)
