"""matih-triton's tests run against a real ``tritonserver`` started here on free loopback ports, stopped by its PID.

The server comes from ``nvidia-pytriton`` in a virtualenv of its own (numpy < 2), built once and
cached (:mod:`matih_lite.testing.triton` says where); one server serves the session's tests, in
explicit model-control mode over a temporary repository. Tests that stop it (the fault tests) start
their own. When the environment cannot be built the tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import os

import pytest
from triton_support import TESTS, start_triton

from matih_lite.testing.processes import engine_missing


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


try:
    import matih_triton  # noqa: F401
    import tritonclient.http  # noqa: F401
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


@pytest.fixture(scope="session")
def triton(tmp_path_factory, triton_install):
    """One Triton for the session's tests that do not stop it."""
    server = start_triton(tmp_path_factory.mktemp("triton"), triton_install)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def triton_host(hermetic, triton):
    """``triton_host(config="", plugins=(), server=triton)``: a Host whose serving slot is that Triton (ONNX
    through the Python backend), closed with its traffic manager afterwards."""
    import json

    from matih_lite.host import Host, get_plugin_manager
    from matih_lite.serving.traffic import detach_traffic

    opened = []

    def make(config: str = "", plugins=(), server=None):
        settings = (server or triton).serving_settings()
        table = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in settings.items()) + " }"
        (hermetic / "matih.toml").write_text(f"[profiles.lite]\nserving = {table}\n{config}")
        host = Host.open(plugins=get_plugin_manager(plugins=list(plugins))) if plugins else Host.open()
        opened.append(host)
        return host

    yield make
    for host in opened:
        detach_traffic(host)
        host.close()


def pytest_configure(config):
    """The core serving tests' helpers (register_model) are reused here."""
    import sys

    helpers = TESTS.parents[2] / "tests" / "serving"
    if helpers.is_dir() and str(helpers) not in sys.path:
        sys.path.append(str(helpers))
