"""The seams are typed: mypy in strict mode over the contracts, the host, the hook specs and the config.

A backend author codes against these signatures; an ``Any`` leaking out of them, a missing type argument
or a protocol a store cannot satisfy shows here, in CI, rather than in their backend.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ["matih_lite/contracts", "matih_lite/host.py", "matih_lite/hookspecs.py", "matih_lite/config.py"]


def mypy(*args: str) -> subprocess.CompletedProcess:
    """mypy --strict in its own process (in this one it would raise the recursion limit for every later test)."""
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_contracts_and_host_pass_mypy_strict(tmp_path):
    done = mypy("--follow-imports=silent", "--ignore-missing-imports", "--cache-dir", str(tmp_path / "mypy-cache"),
                "--no-error-summary", *(str(ROOT / p) for p in CHECKED))
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_sees_a_broken_seam(tmp_path):
    """The check can fail: a contract-shaped module with an untyped function and a bad return is refused."""
    bad = tmp_path / "bad_contract.py"
    bad.write_text("from typing import Protocol\n\n\nclass Store(Protocol):\n    def get(self, key):\n        ...\n\n\n"
                   "def size() -> int:\n    return 'big'\n")
    done = mypy("--cache-dir", str(tmp_path / "mypy-cache"), str(bad))
    assert done.returncode == 1 and "no-untyped-def" in done.stdout and "Incompatible return value" in done.stdout
