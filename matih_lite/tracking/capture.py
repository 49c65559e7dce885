"""What a run records about where it ran: Python, OS, CPUs, GPUs, packages, git state and seeds.

Called by the SDK when a run starts (``start_run(capture=False)`` skips it). It must be cheap
and must never fail a run: each probe is guarded, and what goes wrong is reported in the tag
``matih.capture_error`` instead of raised. What does not change while a process lives (the
platform, the GPUs, the installed packages) is computed once per process; git is asked on
every call because the working folder may change.

Tags use the ``matih.`` prefix, plus the ``mlflow.source.*`` tags MLflow sets so that MLflow
tooling shows the same thing. The package list and the diff from HEAD are artifacts under
``environment/``, not tags.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIT_DIFF_ARTIFACT = "environment/git.diff"
MAX_DIFF_BYTES = 1 << 20
"""The diff from HEAD is cut at 1 MiB (and the run tagged ``matih.git.diff_truncated``)."""
COMMAND_TIMEOUT_S = 3.0
CAPTURE_ERROR_TAG = "matih.capture_error"
MAX_TAG_VALUE = 8000


@dataclass
class Capture:
    """Tags to set on the new run and artifacts (path -> bytes) to store with it."""

    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    environment: str | None = None
    """The installed packages (``name==version`` lines): stored once per distinct content, not per run,
    and named by the run's ``matih.environment`` tag (its sha256)."""


def capture_environment(*, seeds: Mapping[str, Any] | None = None, artifacts: bool = True,
                        cwd: str | Path | None = None) -> Capture:
    """Probe the environment; never raises. ``artifacts=False`` skips the package list and git diff."""
    out = Capture()
    probes: list[tuple[str, Callable[[Capture], None]]] = [
        ("python", _python), ("platform", _platform), ("gpu", _gpu), ("source", _source),
        ("git", lambda c: _git(c, Path(cwd) if cwd else None, artifacts)),
    ]
    if artifacts:
        probes.append(("packages", _packages))
    for name, probe in probes:
        try:
            probe(out)
        except Exception as exc:  # capture must never fail a run
            out.errors.append(f"{name}: {type(exc).__name__}: {exc}")
    for key, value in (seeds or {}).items():
        out.tags[key] = str(value)
    if out.errors:
        out.tags[CAPTURE_ERROR_TAG] = "; ".join(out.errors)[:MAX_TAG_VALUE]
    return out


# ---- probes ------------------------------------------------------------------------------------
def _python(out: Capture) -> None:
    out.tags["matih.python.version"] = platform.python_version()
    out.tags["matih.python.implementation"] = platform.python_implementation()
    out.tags["matih.python.executable"] = sys.executable[:MAX_TAG_VALUE]


def _platform(out: Capture) -> None:
    out.tags.update(_platform_tags())


@functools.cache
def _platform_tags() -> dict[str, str]:
    uname = platform.uname()
    return {
        "matih.os": f"{uname.system} {uname.release}".strip(),
        "matih.platform": platform.platform(),
        "matih.machine": uname.machine,
        "matih.cpu_count": str(os.cpu_count() or 0),
    }


def _gpu(out: Capture) -> None:
    tags = _torch_gpu_tags() if "torch" in sys.modules else {}
    out.tags.update(tags or _nvidia_smi_tags())


@functools.cache
def _nvidia_smi_tags() -> dict[str, str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    proc = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"nvidia-smi exited {proc.returncode}: {proc.stderr.strip()[:200]}")
    gpus = []
    for line in proc.stdout.splitlines():
        if line.strip():
            name, _, memory = line.rpartition(",")
            gpus.append((name.strip(), memory.strip()))
    return _gpu_tags(gpus)


def _torch_gpu_tags() -> dict[str, str]:
    torch = sys.modules["torch"]
    cuda = getattr(torch, "cuda", None)
    if cuda is None or not cuda.is_available():
        return {}
    gpus = []
    for i in range(cuda.device_count()):
        props = cuda.get_device_properties(i)
        gpus.append((props.name, str(props.total_memory // (1 << 20))))
    return _gpu_tags(gpus)


def _gpu_tags(gpus: list[tuple[str, str]]) -> dict[str, str]:
    """``matih.gpu``: each distinct model once ("2 x NVIDIA A100 (81920 MiB)"), and the count."""
    if not gpus:
        return {"matih.gpu_count": "0"}
    counts: dict[tuple[str, str], int] = {}
    for gpu in gpus:
        counts[gpu] = counts.get(gpu, 0) + 1
    text = ", ".join(f"{n} x {name} ({memory} MiB)" if n > 1 else f"{name} ({memory} MiB)"
                     for (name, memory), n in counts.items())
    return {"matih.gpu": text[:MAX_TAG_VALUE], "matih.gpu_count": str(len(gpus))}


def _source(out: Capture) -> None:
    main = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if main and main not in ("-c", "-m"):
        out.tags["mlflow.source.name"] = main[:MAX_TAG_VALUE]
    out.tags["mlflow.source.type"] = "LOCAL"


def _packages(out: Capture) -> None:
    text = packages_text()
    out.environment = text
    out.tags["matih.packages"] = str(text.count("\n"))


@functools.cache
def packages_text() -> str:
    """``name==version`` per installed distribution, sorted, one a line (computed once a process).

    Read from the ``*.dist-info`` folder names on ``sys.path`` (what importlib.metadata finds,
    first one winning), which is ten times faster than parsing every METADATA file.
    """
    seen: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = [e.name for e in os.scandir(entry or ".") if e.is_dir()]
        except OSError:
            continue
        for folder in names:
            if folder.endswith(".dist-info"):
                name, _, version = folder[:-len(".dist-info")].partition("-")
            elif folder.endswith(".egg-info"):
                name, _, version = folder[:-len(".egg-info")].partition("-")
                version = version.split("-")[0] or _egg_info_version(Path(entry or ".", folder))
            else:
                continue
            key = re.sub(r"[-_.]+", "-", name).lower()
            if key and version and key not in seen:
                seen[key] = f"{key}=={version}"
    return "".join(line + "\n" for _, line in sorted(seen.items()))


def _egg_info_version(folder: Path) -> str:
    try:
        with open(folder / "PKG-INFO", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    except OSError:
        pass
    return ""


# ---- git ---------------------------------------------------------------------------------------
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def _git(out: Capture, cwd: Path | None, with_diff: bool) -> None:
    if shutil.which("git") is None:
        return
    where = str(cwd or Path.cwd())
    if not _inside_repository(Path(where)):
        return  # no .git above us: skip the subprocess (5 ms a run)
    head = _run_git(where, "rev-parse", "--show-toplevel", "HEAD", "--abbrev-ref", "HEAD")
    if head.returncode != 0:
        return  # not a repository, or one without commits yet
    lines = head.stdout.split()
    if len(lines) < 3:
        raise RuntimeError(f"unexpected output from git rev-parse: {head.stdout[:200]!r}")
    commit, branch = lines[1], lines[2]
    out.tags["matih.git.commit"] = out.tags["mlflow.source.git.commit"] = commit
    if branch != "HEAD":  # "HEAD" means detached
        out.tags["matih.git.branch"] = out.tags["mlflow.source.git.branch"] = branch
    remote = _run_git(where, "config", "--get", "remote.origin.url")
    if remote.returncode == 0 and remote.stdout.strip():
        out.tags["mlflow.source.git.repoURL"] = _USERINFO.sub(r"\g<scheme>", remote.stdout.strip())
    diff, truncated = _git_diff(where)
    out.tags["matih.git.dirty"] = "true" if diff else "false"
    if diff and with_diff:
        out.artifacts[GIT_DIFF_ARTIFACT] = diff
        if truncated:
            out.tags["matih.git.diff_truncated"] = "true"


def _inside_repository(folder: Path) -> bool:
    """Whether ``folder`` or a parent holds ``.git`` (a folder, or a file for worktrees and submodules)."""
    if os.environ.get("GIT_DIR"):
        return True
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return True
    return False


def _git_env() -> dict[str, str]:
    # No optional locks: reading the diff must never take index.lock from a git running beside us.
    return {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


def _run_git(where: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", where, *args], capture_output=True, text=True, env=_git_env(),
                          timeout=COMMAND_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)


def _git_diff(where: str) -> tuple[bytes, bool]:
    """The diff of tracked files from HEAD, at most :data:`MAX_DIFF_BYTES`; and whether it was cut."""
    proc = subprocess.Popen(["git", "-C", where, "diff", "HEAD", "--no-color", "--no-ext-diff", "--binary"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env=_git_env())
    watchdog = threading.Timer(COMMAND_TIMEOUT_S, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        data = proc.stdout.read(MAX_DIFF_BYTES + 1)
        truncated = len(data) > MAX_DIFF_BYTES
        if truncated:
            proc.kill()
        proc.wait(timeout=COMMAND_TIMEOUT_S)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if not truncated and proc.returncode != 0:
        raise RuntimeError(f"git diff HEAD exited {proc.returncode}")
    return data[:MAX_DIFF_BYTES], truncated
