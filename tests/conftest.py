"""Hermetic tests: a temporary HOME and working folder, no telemetry, no Ray token files."""

from __future__ import annotations

import os

import pytest


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
