"""Hermetic tests: a temporary HOME and working folder, no telemetry, no Ray token files.

Under ``CI=true`` a skipped test fails (:mod:`matih_lite.testing.skips`): CI installs everything the
test command needs, so nothing it installs may be skipped there.
"""

from __future__ import annotations

import os

import pytest

from matih_lite.testing.skips import register


def pytest_configure(config):
    register(config)


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    for var in ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
