"""The seams are typed: mypy in strict mode over the contracts, the host, the hook specs and the config.

A backend author codes against these signatures; an ``Any`` leaking out of them, a missing type argument
or a protocol a store cannot satisfy shows here, in CI, rather than in their backend.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ["matih_lite/contracts", "matih_lite/host.py", "matih_lite/hookspecs.py", "matih_lite/config.py"]


@pytest.mark.slow
def test_contracts_and_host_pass_mypy_strict(tmp_path):
    from mypy import api

    out, err, status = api.run(["--strict", "--follow-imports=silent", "--ignore-missing-imports",
                                "--cache-dir", str(tmp_path / "mypy-cache"), "--no-error-summary",
                                *(str(ROOT / p) for p in CHECKED)])
    assert status == 0, out + err


def test_mypy_sees_a_broken_seam(tmp_path):
    """The check can fail: a contract-shaped module with an untyped function and a bad return is refused."""
    from mypy import api

    bad = tmp_path / "bad_contract.py"
    bad.write_text("from typing import Protocol\n\n\nclass Store(Protocol):\n    def get(self, key):\n        ...\n\n\n"
                   "def size() -> int:\n    return 'big'\n")
    out, _, status = api.run(["--strict", "--cache-dir", str(tmp_path / "mypy-cache"), str(bad)])
    assert status == 1 and "no-untyped-def" in out and "Incompatible return value" in out
