"""The feature store over REST: ``/api/v1/features/...`` and Feast's feature-server API, tenant by tenant.

The answers' shape is Feast 0.67's (``backends/feast/tests/test_feast_serve.py`` checks it against a real
``feast serve``); errors are problem details with a 4xx status, never a 500.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matih_lite.testing.features import CUSTOMER, DAY, PUSHED, T0

SERVICE_BODY = {"feature_service": "churn_v1", "entities": {"customer_id": [2, 1, 99]}}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One service for the module (its startup is the slow part): customers and pushes applied, materialized.
    Tests that change state say so and leave it usable for the others."""
    from litestar.testing import TestClient

    from matih_lite.host import Host
    from matih_lite.service.app import create_app
    from matih_lite.testing.features import Platform

    folder = tmp_path_factory.mktemp("features-rest")
    (folder / "features").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("HOME", str(folder))
        for var in ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN"):
            mp.delenv(var, raising=False)
        host = Host.open()
        p = Platform(host, folder / "features")
        p.write("customer.toml", CUSTOMER)
        p.write("pushed.toml", PUSHED)
        p.customers([(1, T0 - 2 * DAY, T0 - 2 * DAY, 0.1, 1), (1, T0 - DAY, T0 - DAY, 0.2, 2),
                     (2, T0 - DAY, T0 - DAY, 0.3, 3), (2, T0 - DAY, T0 - DAY + DAY / 24, 0.4, 4)])
        p.apply()
        p.features.materialize(p.who, T0 - 30 * DAY, T0)
        # Not entered: the service's startup hooks (drift runner, job supervisor...) play no part here.
        c = TestClient(create_app(host))
        try:
            yield c
        finally:
            host.close()


def test_get_online_features_answers_as_feast(client):
    r = client.post("/get-online-features", json={"features": ["customer_stats:trips", "customer_stats:conv_rate"],
                                                  "entities": {"customer_id": [2, 99]}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["metadata"]["feature_names"] == ["customer_id", "trips", "conv_rate"]
    key, trips, conv = doc["results"]
    assert key == {"values": [2, 99], "statuses": ["PRESENT", "PRESENT"],
                   "event_timestamps": ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"]}
    # the clock is well past the 7d ttl of these rows: null and OUTSIDE_MAX_AGE, not Feast SQLite's PRESENT
    assert trips["statuses"] == ["OUTSIDE_MAX_AGE", "NOT_FOUND"] and trips["values"] == [None, None]
    assert trips["event_timestamps"] == ["2025-01-09T00:00:00Z", "1970-01-01T00:00:00Z"]
    assert conv["statuses"] == trips["statuses"]


def test_a_feature_service_and_full_feature_names(client):
    doc = client.post("/get-online-features", json={**SERVICE_BODY, "full_feature_names": True}).json()
    assert doc["metadata"]["feature_names"] == ["customer_id", "customer_stats__conv_rate", "customer_stats__trips"]
    assert [len(r["values"]) for r in doc["results"]] == [3, 3, 3]


def test_push_then_online_through_feasts_api(client):
    fresh = "2099-01-01T00:00:00Z"
    r = client.post("/push", json={"push_source_name": "customer_push", "to": "online",
                                   "df": {"customer_id": [5], "event_timestamp": [fresh], "conv_rate": [0.5],
                                          "trips": [5]}})
    assert r.status_code == 200 and r.content == b""
    doc = client.post("/get-online-features", json={"features": ["customer_live:trips"],
                                                    "entities": {"customer_id": [5]}}).json()
    assert doc["results"][1] == {"values": [5], "statuses": ["PRESENT"], "event_timestamps": [fresh]}


def test_materialize_through_feasts_api(client):
    r = client.post("/materialize", json={"start_ts": "2024-12-01T00:00:00", "end_ts": "2025-01-10T00:00:00",
                                          "feature_views": ["customer_stats"]})
    assert r.status_code == 200 and r.json() is None
    r = client.post("/materialize-incremental", json={"end_ts": "2025-01-10T00:00:00"})
    assert r.status_code == 200 and r.json() is None
    r = client.post("/api/v1/features/materialize", json={"start_ts": "2024-12-01T00:00:00",
                                                          "end_ts": "2025-01-10T00:00:00"})
    assert r.json()["feature_views"] == {"customer_live": 2, "customer_stats": 2}


@pytest.mark.parametrize("body, status, detail", [
    ({"features": ["customer_stats:nope"], "entities": {"customer_id": [1]}}, 400, "unknown feature 'nope'"),
    ({"features": ["nope:trips"], "entities": {"customer_id": [1]}}, 400, "unknown feature view 'nope'"),
    ({"feature_service": "churn", "entities": {"customer_id": [1]}}, 404, "did you mean 'churn_v1'"),
    ({"features": ["customer_stats:trips"], "entities": {"cid": [1]}}, 400, "no join key 'customer_id'"),
    ({"features": ["customer_stats:trips"], "entities": {"customer_id": ["x"]}}, 400, "not an integer"),
    ({"features": ["customer_stats:trips"], "entities": {"customer_id": [1, 2], "bonus": [1]}}, 400,
     "different lengths"),
    ({"features": ["customer_stats:trips"]}, 400, "entities"),
])
def test_mistakes_are_4xx_problems(client, body, status, detail):
    r = client.post("/get-online-features", json=body)
    assert r.status_code == status and r.headers["content-type"] == "application/problem+json"
    assert detail in r.json()["detail"]


def test_historical_json_and_parquet(client):
    r = client.post("/api/v1/features/historical", json={
        "entities": {"customer_id": [1, 2], "event_timestamp": ["2025-01-10T00:00:00Z"] * 2, "label": [1, 0]},
        "feature_service": "churn_v1"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["columns"] == ["customer_id", "event_timestamp", "label", "conv_rate", "trips"]
    assert doc["data"]["trips"] == [2, 4]
    sink = io.BytesIO()
    pq.write_table(pa.table({"customer_id": [2], "event_timestamp": pa.array([T0], pa.timestamp("us", "UTC"))}), sink)
    r = client.post("/api/v1/features/historical?features=customer_stats:conv_rate", content=sink.getvalue(),
                    headers={"content-type": "application/vnd.apache.parquet"})
    assert r.status_code == 200 and pq.read_table(pa.BufferReader(r.content)).column("conv_rate").to_pylist() == [0.4]
    r = client.post("/api/v1/features/historical?features=customer_stats:conv_rate", content=b"not parquet",
                    headers={"content-type": "application/vnd.apache.parquet"})
    assert r.status_code == 400 and "not a parquet file" in r.json()["detail"]


def test_plan_and_apply_uploaded_files(client):
    files = {"customer.toml": CUSTOMER.replace('ttl = "7d"', 'ttl = "8d"'), "pushed.toml": PUSHED}
    plan = client.post("/api/v1/features/plan", json={"files": files}).json()
    assert [(c["action"], c["name"], c["diff"]) for c in plan["changes"]] == [
        ("changed", "customer_stats", {"ttl_seconds": [604800, 691200]})]
    bad = client.post("/api/v1/features/apply", json={"files": {"customer.toml": "[entities.x]\njoin_keys = 3\n"}})
    assert bad.status_code == 400 and bad.json()["problems"][0]["key"] == "entities.x.join_keys"
    now = plan["base_version"]
    stale = client.post("/api/v1/features/apply", json={"files": files, "expected_version": now - 1})
    assert stale.status_code == 409
    done = client.post("/api/v1/features/apply", json={"files": files, "expected_version": now}).json()
    assert done["version"] == now + 1 and done["applied"]
    assert [v["version"] for v in client.get("/api/v1/features/versions").json()["versions"]][:2] == [now + 1, now]
    audit = client.get("/api/v1/features/audit", params={"name": "customer_stats"}).json()["entries"]
    assert audit[0]["change"]["action"] == "changed" and audit[0]["version"] == now + 1
    back = client.post("/api/v1/features/apply", json={}).json()  # the folder's own files again, for the others
    assert back["version"] == now + 2


def test_overview_show_and_monitoring(client):
    doc = client.get("/api/v1/features").json()
    assert doc["version"] >= 1 and {v["name"] for v in doc["feature_views"]} == {"customer_stats", "customer_live"}
    view = client.get("/api/v1/features/objects/customer_stats").json()
    assert view["used_by"] == ["churn_v1"] and view["monitoring"]["freshness"]["stale"]
    assert client.get("/api/v1/features/objects/churn_v1").json()["kind"] == "services"
    assert client.get("/api/v1/features/objects/nope").status_code == 404
    report = client.get("/api/v1/features/views/customer_stats/monitoring").json()
    assert report["view"] == "customer_stats" and "quality_score" in report
    assert len(client.post("/api/v1/features/monitoring").json()["views"]) == 2


@pytest.mark.slow  # 60 bodies x 4 routes
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(max_size=64),
    st.dictionaries(st.sampled_from(["features", "entities", "feature_service", "full_feature_names", "x"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=8), st.lists(st.text(max_size=20), max_size=3),
                              st.dictionaries(st.text(max_size=12), st.lists(st.one_of(st.integers(), st.text(
                                  max_size=4), st.none()), max_size=3), max_size=2)), max_size=4).map(
        lambda d: json.dumps(d).encode())))
def test_never_a_500(client, body):
    for path in ("/get-online-features", "/push", "/materialize", "/api/v1/features/historical"):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code < 500, (path, body, r.text)


@pytest.mark.slow  # a service with auth, its own lifespan
def test_tenants_see_only_their_own_features(hermetic, repo):
    from litestar.testing import TestClient

    from matih_lite.auth import Accounts
    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.service.app import create_app
    from matih_lite.testing.features import Platform

    (hermetic / "matih.toml").write_text("[auth]\nenabled = true\ncache_seconds = 1\n")
    host = Host(load_config())
    Platform(host, repo).customers([(1, T0 - DAY, T0 - DAY, 0.2, 2)])
    accounts = Accounts(host)
    tokens = {}
    for tenant, user, roles in (("acme", "ann", ["admin"]), ("acme", "vic", ["viewer"]), ("globex", "gus", ["admin"])):
        try:
            accounts.create_tenant(tenant)
        except Exception:
            pass
        accounts.create_user(tenant, user, roles)
        tokens[user] = {"Authorization": f"Bearer {accounts.create_token(tenant, user).secret}"}
    try:
        with TestClient(create_app(host)) as c:  # with the lifespan: the token cache starts there
            assert c.post("/api/v1/features/apply", json={}, headers=tokens["ann"]).json()["version"] == 1
            assert c.post("/api/v1/features/apply", json={}, headers=tokens["vic"]).status_code == 403
            body = {"features": ["customer_stats:trips"], "entities": {"customer_id": [1]}}
            assert c.post("/get-online-features", json=body, headers=tokens["vic"]).status_code == 200
            assert c.post("/get-online-features", json=body).status_code == 401
            other = c.post("/get-online-features", json=body, headers=tokens["gus"])
            assert other.status_code == 404 and "no feature definitions are applied" in other.json()["detail"]
            assert c.get("/api/v1/features", headers=tokens["gus"]).status_code == 404
    finally:
        host.close()
