"""One service owns a state folder: an exclusive lock on it, and ``service.json`` saying where it listens.

``matih-lite up`` :func:`claim`\\ s the folder before it listens: a second ``up`` on the same folder
is refused with one line naming the running one. Every other command run in that folder finds the
service through :func:`service_target` (as if ``MATIH_URL`` were set) and talks to it, so the
service stays the one writer of its files; with none running, commands work on the folder
themselves. A ``service.json`` whose process is gone (or no longer holds the lock) is stale:
ignored, and replaced by the next ``up``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matih_lite.errors import ConfigError

SERVICE_FILE = "service.json"
LOCK_FILE = "service.lock"


@dataclass(frozen=True)
class RunningService:
    """A service that owns a state folder, as its ``service.json`` says."""

    url: str
    pid: int
    profile: str
    started_at: int
    """Milliseconds since the epoch."""
    home: str


class FolderClaim:
    """The lock ``up`` holds on its state folder while it runs; :meth:`release` lets go (idempotent)."""

    def __init__(self, home: Path, fd: int) -> None:
        self.home = home
        self._fd: int | None = fd

    def announce(self, url: str, profile: str) -> RunningService:
        """Write where the service listens (atomically: a reader sees the old file or the new one)."""
        service = RunningService(url=url, pid=os.getpid(), profile=profile, started_at=int(time.time() * 1000),
                                 home=str(self.home))
        tmp = self.home / f".{SERVICE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(asdict(service), indent=1))
        os.replace(tmp, self.home / SERVICE_FILE)
        return service

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            found = _read(self.home)
            if found is not None and found.pid == os.getpid():
                (self.home / SERVICE_FILE).unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderClaim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def claim(home: str | Path) -> FolderClaim:
    """Take the state folder ``home`` for this process (creating it). Raises ConfigError (exit 2) naming the
    service that holds it already."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        running = _read(home)
        where = f" at {running.url} (pid {running.pid}, profile {running.profile})" if running else ""
        raise ConfigError(f"another matih-lite up already serves {home}{where}; stop it first, or use another "
                          "folder (MATIH_HOME). Commands run here talk to it on their own.") from None
    return FolderClaim(home, fd)


def running_service(home: str | Path) -> RunningService | None:
    """The service that owns ``home`` now, or None (no ``service.json``, or a stale one). Creates nothing."""
    home = Path(home)
    found = _read(home)
    if found is None or not _alive(found.pid):
        return None
    try:
        fd = os.open(home / LOCK_FILE, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return found  # held: the service is there
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)  # nobody holds it: the file is left over from a service that died
        return None
    finally:
        os.close(fd)


def service_target(config: str | None = None, *, env: Mapping[str, str] | None = None) -> tuple[str, str | None] | None:
    """``(url, token)`` of the service a command should talk to: ``MATIH_URL`` when set, else the service that
    owns this folder's state (see :func:`running_service`); None to work on the folder itself."""
    env = os.environ if env is None else env
    url = (env.get("MATIH_URL") or "").rstrip("/")
    token = env.get("MATIH_TOKEN") or None
    if url:
        return url, token
    from matih_lite.config import load_config

    try:
        home = load_config(config, env=env).home
    except ConfigError:
        return None  # a broken matih.toml is reported by whatever opens it
    found = running_service(home)
    return (found.url, token) if found is not None else None


def _read(home: Path) -> RunningService | None:
    try:
        data = json.loads((home / SERVICE_FILE).read_text())
        return RunningService(url=str(data["url"]), pid=int(data["pid"]), profile=str(data.get("profile", "")),
                              started_at=int(data.get("started_at", 0)), home=str(data.get("home", home)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_STATE_REQUIRED: ContextVar[bool] = ContextVar("matih_lite_state_required", default=False)
"""Set while a CLI command runs: opening a folder embedded then needs that folder to hold state."""


@contextmanager
def state_required() -> Iterator[None]:
    """Within this block, :func:`ensure_state` refuses a folder with neither matih.toml nor a state folder: a
    command run in the wrong folder says so instead of creating an empty ``.matih`` (the CLI runs every
    command but ``up``, ``migrate``, ``config``, ``doctor`` and ``plugins`` in it)."""
    token = _STATE_REQUIRED.set(True)
    try:
        yield
    finally:
        _STATE_REQUIRED.reset(token)


def ensure_state(config: Any) -> None:
    """Raises ConfigError (exit 2) inside :func:`state_required` when the folder holds no matih-lite state."""
    if _STATE_REQUIRED.get() and config.path is None and not Path(config.home).exists():
        raise ConfigError(f"no .matih here ({config.home}): run this where matih-lite up runs (or start it "
                          "here first), or set MATIH_URL")
