"""Helpers shared by the training tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
"""Where ``jobfns`` lives: the ``base_dir`` of every test spec."""


def write_config(folder: Path, text: str = "") -> Path:
    path = folder / "matih.toml"
    path.write_text(text)
    return path


def spec(entrypoint: str = "jobfns:quadratic", **kw):
    """A job spec (dict) importing from this folder."""
    kw.setdefault("base_dir", str(HERE))
    kw.setdefault("experiment", "tests")
    return {"entrypoint": entrypoint, **kw}


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
