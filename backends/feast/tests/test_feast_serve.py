"""``POST /get-online-features``, ``/push`` and ``/materialize`` of the ml-service against a real ``feast serve``.

Both serve the same online store: the ml-service through the ``feast`` backend, ``feast serve`` from the Feast repo
that backend generated (its ``feature_store.yaml``, registry and SQLite online store). Every answer must be the same
except where matih-lite chose otherwise on purpose, each asserted here: mistakes are 4xx problems (Feast answers
500), and the features of one view are listed in request order (Feast lists them as a Python set iterates).
"""

from __future__ import annotations

import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from matih_lite.testing.processes import EngineProcess, free_port, port_open, wait_for

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC).replace(microsecond=0)
DEFS = """
[entities.customer]
join_keys = ["customer_id"]

[entities.driver]
join_keys = ["driver_id"]

[sources.customer_stats]
path = "customer_stats.parquet"
timestamp_field = "event_timestamp"
created_timestamp_field = "created"

[sources.driver_stats]
path = "driver_stats.parquet"
timestamp_field = "event_timestamp"

[push_sources.customer_push]
batch_source = "customer_stats"

[feature_views.customer_stats]
entities = ["customer"]
source = "customer_push"
ttl = "30d"
schema = { conv_rate = "float64", trips = "int64", plan = "string" }

[feature_views.driver_stats]
entities = ["driver"]
source = "driver_stats"
ttl = "30d"
schema = { rating = "float64" }

[feature_services.churn_v1]
features = ["customer_stats:conv_rate", "customer_stats:trips", "driver_stats:rating"]
"""


def by_name(doc: dict) -> dict:
    return dict(zip(doc["metadata"]["feature_names"], doc["results"]))


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(ml-service URL, feast serve URL) over one Feast SQLite online store, materialized."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from matih_lite.config import load_config
    from matih_lite.features.service import Features
    from matih_lite.host import Host
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.testing.service import ServiceThread

    base = tmp_path_factory.mktemp("feast-serve")
    repo = base / "features"
    repo.mkdir()
    (repo / "defs.toml").write_text(textwrap.dedent(DEFS))
    (base / "matih.toml").write_text('[profiles.lite]\nfeatures = { backend = "feast", online_store = "sqlite" }\n')
    stamp = pa.timestamp("us", "UTC")
    hour = timedelta(hours=1)
    pq.write_table(pa.table({
        "customer_id": pa.array([1, 1, 2, 3], pa.int64()),
        "event_timestamp": pa.array([NOW - 3 * hour, NOW - 2 * hour, NOW - 2 * hour, NOW - hour], stamp),
        "created": pa.array([NOW - 3 * hour, NOW - 2 * hour, NOW - 2 * hour, NOW - hour], stamp),
        "conv_rate": [0.1, 0.2, None, 0.5], "trips": pa.array([1, 2, 3, None], pa.int64()),
        "plan": ["free", "pro", "pro", None]}), repo / "customer_stats.parquet")
    pq.write_table(pa.table({"driver_id": pa.array([10, 11], pa.int64()),
                             "event_timestamp": pa.array([NOW - hour, NOW - hour], stamp),
                             "rating": [4.5, 3.25]}), repo / "driver_stats.parquet")
    host = Host(load_config(base / "matih.toml", cwd=base))
    features = Features.of(host)
    features.apply(LOCAL_ADMIN)
    features.materialize(LOCAL_ADMIN, NOW - timedelta(days=2), NOW)
    feast_repo = host.backend("features").repo_path("default")
    port = free_port()
    feast = EngineProcess([Path(sys.executable).parent / "feast", "-c", str(feast_repo), "serve", "-h", "127.0.0.1",
                           "-p", str(port), "--no-access-log", "--max-requests", "1000000"], name="feast-serve",
                          log_dir=base, cwd=base)
    with feast:
        service = ServiceThread(host).start()
        try:
            wait_for(lambda: port_open(port), timeout=300, what="feast serve", proc=feast)
            yield service.url, f"http://127.0.0.1:{port}"
        finally:
            service.stop()
            host.close()


def both(servers, path: str, body: dict) -> tuple[httpx.Response, httpx.Response]:
    ours, theirs = servers
    return (httpx.post(ours + path, json=body, timeout=60), httpx.post(theirs + path, json=body, timeout=60))


@pytest.mark.parametrize("body", [
    {"features": ["customer_stats:conv_rate", "customer_stats:trips", "customer_stats:plan"],
     "entities": {"customer_id": [1, 2, 3, 404]}},
    {"feature_service": "churn_v1", "entities": {"customer_id": [3, 1], "driver_id": [10, 12]}},
    {"features": ["driver_stats:rating", "customer_stats:trips"], "entities": {"driver_id": [11], "customer_id": [2]},
     "full_feature_names": True},
    {"features": ["customer_stats:trips"], "entities": {"customer_id": [1], "unrelated": ["x"]}},
], ids=["unknown-entity-and-nulls", "service-two-entities", "full-names", "extra-entity-columns"])
def test_get_online_features_answers_as_feast_serve(servers, body):
    ours, theirs = both(servers, "/get-online-features", body)
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    a, b = ours.json(), theirs.json()
    keys = [k for k in body["entities"] if k in ("customer_id", "driver_id")]
    assert a["metadata"]["feature_names"][:len(keys)] == b["metadata"]["feature_names"][:len(keys)] == keys
    assert sorted(a["metadata"]["feature_names"]) == sorted(b["metadata"]["feature_names"])
    assert by_name(a) == by_name(b)
    assert set(a) == set(b) == {"metadata", "results"}


def test_push_then_read_both(servers):
    ours, theirs = servers
    fresh = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    r = httpx.post(ours + "/push", json={"push_source_name": "customer_push", "to": "online", "df": {
        "customer_id": [7], "event_timestamp": [fresh], "created": [fresh], "conv_rate": [0.7], "trips": [7],
        "plan": ["pro"]}}, timeout=60)
    assert r.status_code == 200 and r.content == b""
    body = {"features": ["customer_stats:trips", "customer_stats:conv_rate"], "entities": {"customer_id": [7]}}
    a, b = both(servers, "/get-online-features", body)
    assert by_name(a.json()) == by_name(b.json())
    assert by_name(a.json())["trips"]["values"] == [7]
    r = httpx.post(theirs + "/push", json={"push_source_name": "customer_push", "to": "online", "df": {
        "customer_id": [8], "event_timestamp": [fresh], "created": [fresh], "conv_rate": [0.8], "trips": [8],
        "plan": ["free"]}}, timeout=60)
    assert r.status_code == 200
    a, b = both(servers, "/get-online-features", {**body, "entities": {"customer_id": [8]}})
    assert by_name(a.json()) == by_name(b.json()) and by_name(a.json())["trips"]["values"] == [8]


def test_materialize_answers_null_on_both(servers):
    body = {"start_ts": (NOW - timedelta(days=2)).isoformat(), "end_ts": NOW.isoformat(),
            "feature_views": ["driver_stats"]}
    ours, theirs = both(servers, "/materialize", body)
    assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json()) == (200, None)


def test_mistakes_are_4xx_problems_where_feast_answers_500(servers):
    for body in ({"features": ["customer_stats:nope"], "entities": {"customer_id": [1]}},
                 {"features": ["customer_stats:trips"], "entities": {"cid": [1]}}):
        ours, theirs = both(servers, "/get-online-features", body)
        assert theirs.status_code == 500
        assert ours.status_code == 400 and ours.headers["content-type"] == "application/problem+json"
