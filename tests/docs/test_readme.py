"""The README's examples run: every shell and Python block, in order, in a fresh folder (docs that cannot rot).

How each fenced block of README.md is taken:

- ``bash``: run by ``bash -euo pipefail`` in the tour folder, one block after another; a variable a block assigns
  at the start of a line (``RUN_ID=$(...)``) is there for the blocks after it. Three kinds of line are checked
  instead of run, because running them here would install into, or recurse into, the environment running this
  test: ``pip install -e X`` (every requirement of X's extras must be installed here, at a version it allows),
  the Run-it line's foreground ``matih-lite up`` (started on a free port in a folder of its own, must answer
  ``/ready`` and stop cleanly on Ctrl-C) and ``scripts/test`` (must be what ``.ci/run`` calls).
- ``python``: a block whose first line is ``# FILE`` is written to FILE (a later bash block must use it); one whose
  first line is ``# from PATH`` is an excerpt and must appear verbatim in PATH of this checkout; any other runs as
  a script in the tour folder.
- ``toml``: ``# FILE`` blocks are written to FILE; every other block must parse, and one with no label at all is
  a ``matih.toml`` that must pass ``matih-lite config validate`` (label a fragment of another file: ``# in a job
  spec``).

The service the tour starts listens on 127.0.0.1:8000 in the README; here every ``127.0.0.1:8000`` and
``--port 8000`` is moved to a free port, so the test runs beside anything. Whatever the tour started is stopped
at the end, by the PID in its ``.matih/service.json``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
BLOCK_TIMEOUT_S = 900


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    line: int

    @property
    def label(self) -> str:
        first = self.body.split("\n", 1)[0].strip()
        return first[2:].strip() if first.startswith("# ") else ""

    @property
    def rest(self) -> str:
        return self.body.split("\n", 1)[1] if "\n" in self.body else ""


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tour_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATIH_", "MLFLOW_TRACKING"))}
    env.update(HOME=str(home), COLUMNS="160", RAY_AUTH_MODE="disabled", MLFLOW_DISABLE_TELEMETRY="true",
               PYTHONUNBUFFERED="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


# ---- lines checked instead of run ---------------------------------------------------------------------------
def check_installed(target: str) -> None:
    """``pip install -e TARGET`` was done here: the core's requirements and those of TARGET's extras."""
    match = re.fullmatch(r"\.(?:\[([\w,\-]+)\])?", target.strip("'\""))
    assert match, f"README installs {target!r}: the test knows only '.' and '.[extra,...]' of this checkout"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in (match.group(1) or "").split(","):
        if extra:
            assert extra in project["optional-dependencies"], f"README names extra {extra!r}, pyproject has none"
            wanted += project["optional-dependencies"][extra]
    for line in wanted:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            got = version(req.name)
        except PackageNotFoundError:
            pytest.fail(f"README's 'pip install -e {target}' brings {req.name}, which is not installed here")
        assert req.specifier.contains(got.split("+")[0], prereleases=True), f"{req.name} {got} is not {req}"


def check_up_starts(port: int, folder: Path, env: dict[str, str]) -> None:
    """The Run-it line's ``matih-lite up``: ready on the embedded defaults in an empty folder, stopped by Ctrl-C."""
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "matih_lite", "up", "--port", str(port)], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "matih-lite up did not get ready in 120 s"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in out, out


def check_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert os.access(ROOT / "scripts" / "test", os.X_OK)
    assert re.search(r"^scripts/test\b", ci, re.M), ".ci/run must call the README's test command, scripts/test"
    assert re.search(r"^pip install --quiet -e \.$", ci, re.M), ".ci/run must do the README's install"


# ---- running the blocks ---------------------------------------------------------------------------------------
def run_bash(block: Block, text: str, folder: Path, env: dict[str, str], saved: Path, port: int) -> None:
    lines = []
    for line in text.splitlines():
        command = line.split("#", 1)[0].strip()
        if command.startswith("python3 -m venv") and "matih-lite up" in command:  # Run it
            for part in command.split("&&"):
                words = shlex.split(part)
                if words[:3] == ["pip", "install", "-e"]:
                    check_installed(words[3])
            check_up_starts(free_port(), folder.parent / "run-it", env)
            continue
        if command.endswith("scripts/test"):  # Test it
            check_test_command()
            continue
        if command.startswith("pip install -e"):
            check_installed(shlex.split(command)[3])
            continue
        lines.append(line)
    names = re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", "\n".join(lines), re.M)
    keep = "".join(f'printf "%s=%q\\n" {n} "${{{n}}}" >> {shlex.quote(str(saved))}\n' for n in names)
    script = f"set -euo pipefail\nif [ -f {shlex.quote(str(saved))} ]; then . {shlex.quote(str(saved))}; fi\n" \
             + "\n".join(lines) + "\n" + keep
    done = subprocess.run(["bash", "-c", script], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (f"README.md:{block.line}: the bash block failed (exit {done.returncode})\n"
                                  f"{text}\n--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-6000:]}")


def run_python(block: Block, text: str, folder: Path, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-"], input=text, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, (f"README.md:{block.line}: the Python block failed\n{text}\n--- stdout\n"
                                  f"{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-6000:]}")


def check_excerpt(block: Block) -> None:
    path = ROOT / block.label[len("from "):]
    assert path.is_file(), f"README.md:{block.line}: {path} does not exist"
    assert block.rest.strip() in path.read_text(), f"README.md:{block.line}: the excerpt is no longer in {path}"


def check_config(block: Block, folder: Path, env: dict[str, str]) -> None:
    tomllib.loads(block.body)
    if block.label:  # "# pyproject.toml of the plugin", "# in a job spec": a fragment of another file
        return
    scratch = folder.parent / f"config-{block.line}"
    scratch.mkdir()
    (scratch / "matih.toml").write_text(block.body)
    done = subprocess.run([sys.executable, "-m", "matih_lite", "config", "validate"], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"README.md:{block.line}: config validate says\n{done.stdout}{done.stderr}"


def stop_services(*folders: Path) -> None:
    for folder in folders:
        info = folder / ".matih" / "service.json"
        if info.exists():
            try:
                os.kill(json.loads(info.read_text())["pid"], signal.SIGTERM)
            except (ProcessLookupError, ValueError, KeyError):
                pass


@pytest.mark.slow
def test_every_shell_and_python_block_of_the_readme_runs_in_order(tmp_path):
    folder, home = tmp_path / "tour", tmp_path / "tour-home"
    folder.mkdir()
    home.mkdir()
    env, saved, port = tour_env(home), tmp_path / "variables.sh", free_port()
    written: dict[str, int] = {}
    ran = 0
    try:
        for block in readme_blocks():
            text = block.body.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("--port 8000", f"--port {port}")
            for name in list(written):  # a later block names the file (a script run, a module an entrypoint takes)
                if block.label != name and (name in text or f'"{name[:-3]}:' in text):
                    written.pop(name)
            if block.lang == "bash":
                run_bash(block, text, folder, env, saved, port)
                ran += 1
            elif block.lang == "python" and block.label.startswith("from "):
                check_excerpt(block)
            elif block.lang in ("python", "toml") and block.label.endswith((".py", ".toml")) \
                    and " " not in block.label:
                target = folder / block.label
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text.split("\n", 1)[1])
                if block.label.endswith(".py"):
                    written[block.label] = block.line
            elif block.lang == "python":
                run_python(block, text, folder, env)
                ran += 1
            elif block.lang == "toml":
                check_config(block, folder, env)
    finally:
        stop_services(folder, tmp_path / "run-it")
    assert not written, f"README files written but never used by a later shell block: {written}"
    assert ran >= 15, f"only {ran} blocks ran: is README.md's fence syntax still ```bash / ```python?"


def test_the_readme_says_the_install_and_test_commands_ci_runs():
    """Quick: the two commands a newcomer needs are the ones .ci/run performs, and every block is of a known kind."""
    blocks = readme_blocks()
    assert blocks[0].lang == "bash" and "pip install -e . && matih-lite up" in blocks[0].body
    assert blocks[1].lang == "bash" and blocks[1].body.strip().endswith("scripts/test")
    check_test_command()
    assert {b.lang for b in blocks} <= {"bash", "python", "toml", ""}, {b.lang for b in blocks}
