"""Hermetic Feast tests: a temporary HOME and working folder, Redis databases of their own."""

from __future__ import annotations

import os

import pytest

REDIS = os.environ.get("MATIH_TEST_REDIS", "127.0.0.1:6379")


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FEAST_USAGE", "False")
    for var in ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


@pytest.fixture
def redis_db():
    """An empty database number of the Redis at ``MATIH_TEST_REDIS`` for this test, flushed afterwards."""
    import random

    from matih_lite.testing.processes import engine_missing

    try:
        import redis
    except ImportError:  # pragma: no cover - feast[redis] brings it
        engine_missing("the redis client is not installed (pip install -e backends/feast)")
    host, _, port = REDIS.partition(":")
    for db in random.sample(range(1, 16), 15):
        client = redis.Redis(host=host, port=int(port or 6379), db=db, socket_timeout=5)
        try:
            empty = client.dbsize() == 0
        except redis.RedisError as exc:
            engine_missing(f"Redis at {REDIS} does not answer ({exc}); start it or set MATIH_TEST_REDIS")
        if empty:
            break
    else:
        pytest.fail(f"no empty Redis database at {REDIS} for this test")
    yield db
    client.flushdb()
    client.close()
