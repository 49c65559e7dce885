"""promote copies the online feature store from the lite SQLite table to Feast's Redis, each entity's row equal."""

from __future__ import annotations

import os

import pytest
from promote_kit import open_host

from matih_lite.promote.promotion import promote
from matih_lite.testing.features import CUSTOMER, DAY, T0, Platform
from matih_lite.testing.processes import engine_missing

pytestmark = [pytest.mark.postgres, pytest.mark.slow]  # feast apply takes ~8 s


@pytest.fixture
def redis_db():
    """An empty Redis database number of 127.0.0.1:6379 (or MATIH_TEST_REDIS), flushed afterwards."""
    import random

    try:
        import redis
    except ImportError:
        engine_missing("the redis client is not installed (pip install -e backends/feast)")
    host, _, port = os.environ.get("MATIH_TEST_REDIS", "127.0.0.1:6379").partition(":")
    for db in random.sample(range(1, 16), 15):
        client = redis.Redis(host=host, port=int(port or 6379), db=db, socket_timeout=5)
        try:
            if client.dbsize() == 0:
                break
        except redis.RedisError as exc:
            engine_missing(f"Redis does not answer ({exc}); start it or set MATIH_TEST_REDIS")
    else:
        pytest.fail("no empty Redis database for this test")
    yield db
    client.flushdb()
    client.close()


def test_online_rows_reach_redis_with_their_event_times(folder, redis_db, monkeypatch):
    pytest.importorskip("matih_feast")
    monkeypatch.setenv("FEAST_USAGE", "False")
    repo = folder / "features"
    repo.mkdir()
    (repo / "customer.toml").write_text(CUSTOMER)
    with (folder / "matih.toml").open("a") as f:
        f.write(f'features = {{ backend = "feast", repo = "features", db = {redis_db} }}\n')
    lite = open_host(folder, "lite")
    cluster = open_host(folder, "cluster")
    try:
        platform = Platform(lite, repo)
        platform.customers([(1, T0 - 2 * DAY, T0 - 2 * DAY, 0.1, 1), (1, T0 - DAY, T0 - DAY, 0.2, 2),
                            (2, T0 - DAY, T0 - DAY, 0.3, 3), (3, T0 - DAY, T0 - DAY, 0.5, 7)])
        platform.apply()
        assert sum(platform.features.materialize(platform.who, T0 - 3 * DAY, T0).values()) == 3
        outcome = promote(lite, cluster, only=["metadata", "features"])
        assert outcome.ok, [c for c in outcome.checks if not c.ok]
        checks = {c.item: c for c in outcome.checks if c.slot == "features"}
        assert checks["[default] online customer_stats"].target == "3 entities"
        assert checks["[default] point-in-time customer_stats"].target == "3 rows"
        defs = platform.features.definitions("default")
        [row] = cluster.backend("features").read_online(defs, "customer_stats", [(1,)], ["conv_rate", "trips"])
        assert row.values == (0.2, 2)
    finally:
        lite.close()
        cluster.close()
