"""The tansu broker for the matih-kafka tests: one per session (each test writes under a prefix of its own),
or one per test where the test stops and restarts it."""

from __future__ import annotations

import os
import uuid

import pytest
from kafka_helpers import needs_broker

from matih_lite.testing.tansu import Tansu


@pytest.fixture(scope="session")
def tansu(tmp_path_factory):
    """A broker shared by the session's tests (memory storage)."""
    needs_broker()
    broker = Tansu(tmp_path_factory.mktemp("tansu"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def own_tansu(tmp_path):
    """A broker of this test's own, to stop and start again."""
    needs_broker()
    broker = Tansu(tmp_path / "tansu")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def prefix():
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def hermetic(tmp_path, monkeypatch):
    """A temporary HOME and working folder, as the core tests have (tests/conftest.py)."""
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


os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
