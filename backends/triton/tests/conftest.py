"""matih-triton's tests run against a real ``tritonserver`` started here on free loopback ports, stopped by its PID.

The server comes from ``nvidia-pytriton`` in a virtualenv of its own (numpy < 2), built once and
cached (:mod:`matih_lite.testing.triton` says where); one server serves the session's tests, in
explicit model-control mode over a temporary repository. Tests that stop it (the fault tests) start
their own. When the environment cannot be built the tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from matih_lite.testing.processes import engine_missing

TESTS = Path(__file__).resolve().parent


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


try:
    import tritonclient.http  # noqa: F401

    import matih_triton  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    _why = f"matih-triton or tritonclient is not installed ({exc}); pip install -e 'backends/triton[test]'"
    if _in_ci():
        raise ImportError(_why) from exc
    pytest.skip(_why, allow_module_level=True)


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """A temporary HOME and working folder, no telemetry (as the core tests have)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for var in ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


@pytest.fixture(scope="session")
def triton_install():
    """The Triton virtualenv (built on first use, about a minute; then cached)."""
    from matih_lite.testing.triton import triton_env

    try:
        return triton_env()
    except (RuntimeError, OSError) as exc:
        engine_missing(f"the Triton environment cannot be built here: {exc}")


def start_triton(workdir, install, **kwargs):
    """A started Triton in ``workdir`` whose Python also imports this folder's model classes."""
    from matih_lite.testing.triton import TritonServer

    return TritonServer(workdir, install, python_path=(TESTS,), **kwargs).start()


@pytest.fixture(scope="session")
def triton(tmp_path_factory, triton_install):
    """One Triton for the session's tests that do not stop it."""
    server = start_triton(tmp_path_factory.mktemp("triton"), triton_install)
    try:
        yield server
    finally:
        server.stop()
