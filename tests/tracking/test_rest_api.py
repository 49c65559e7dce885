"""/api/v1 tracking as a client uses it, and bad input: a clear 4xx, never a 500, nothing damaged."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from matih_lite.config import load_config
from matih_lite.host import Host
from matih_lite.service import create_app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rest")
    with TestClient(create_app(Host(load_config(cwd=folder)))) as c:
        yield c


@pytest.fixture
def run(client):
    r = client.post("/api/v1/runs", json={"experiment_name": "rest", "name": "r"})
    assert r.status_code == 201
    return r.json()


def batch(client, run_id, **body):
    return client.post(f"/api/v1/runs/{run_id}/batch", json=body)


def test_experiment_lifecycle(client):
    e = client.post("/api/v1/experiments", json={"name": "life", "tags": {"team": "growth"}}).json()
    assert client.get(f"/api/v1/experiments/{e['experiment_id']}").json()["tags"] == {"team": "growth"}
    assert client.post("/api/v1/experiments", json={"name": "life"}).status_code == 409
    assert client.patch(f"/api/v1/experiments/{e['experiment_id']}", json={"description": "d"}).json()[
        "description"] == "d"
    assert client.delete(f"/api/v1/experiments/{e['experiment_id']}").json()["lifecycle_stage"] == "deleted"
    names = [x["name"] for x in client.get("/api/v1/experiments").json()["experiments"]]
    assert "life" not in names
    client.post(f"/api/v1/experiments/{e['experiment_id']}/restore")
    assert client.get("/api/v1/experiments/by-name/life").json()["lifecycle_stage"] == "active"


def test_run_lifecycle_and_history(client, run):
    rid = run["run_id"]
    assert batch(client, rid, metrics=[{"key": "loss", "value": 1 / (s + 1), "step": s} for s in range(100)],
                 params={"lr": 0.1, "deep": True}, tags={"team": "growth"}).status_code == 200
    got = client.get(f"/api/v1/runs/{rid}").json()
    assert got["params"] == {"lr": "0.1", "deep": "True"} and got["metrics"]["loss"]["step"] == 99
    hist = client.get(f"/api/v1/runs/{rid}/metrics/history", params={"key": "loss", "max_results": 60}).json()
    rest = client.get(f"/api/v1/runs/{rid}/metrics/history",
                      params={"key": "loss", "page_token": hist["next_page_token"]}).json()
    assert [m["step"] for m in hist["metrics"] + rest["metrics"]] == list(range(100))
    assert client.patch(f"/api/v1/runs/{rid}", json={"status": "FINISHED"}).json()["end_time"] is not None
    assert client.delete(f"/api/v1/runs/{rid}/tags/team").status_code == 204


def test_nan_and_infinity_round_trip(client, run):
    rid = run["run_id"]
    assert batch(client, rid, metrics=[{"key": "a", "value": "NaN"}, {"key": "b", "value": "Infinity"},
                                       {"key": "c", "value": "-Infinity"}]).status_code == 200
    m = client.get(f"/api/v1/runs/{rid}").json()["metrics"]
    assert (m["a"]["value"], m["b"]["value"], m["c"]["value"]) == ("NaN", "Infinity", "-Infinity")


def test_search_and_compare(client):
    exp = client.post("/api/v1/experiments", json={"name": "cmp"}).json()["experiment_id"]
    ids = []
    for i, (model, auc) in enumerate([("xgboost", 0.91), ("sklearn", 0.88), ("xgboost", 0.86)]):
        r = client.post("/api/v1/runs", json={"experiment_id": exp}).json()
        batch(client, r["run_id"], metrics=[{"key": "auc", "value": auc}, {"key": "loss", "value": 1 - auc}],
              params={"model": model, "seed": "1"})
        ids.append(r["run_id"])
    found = client.post("/api/v1/runs/search", json={
        "experiment_ids": [exp], "filter": "metrics.auc > 0.87 and params.model = 'xgboost'",
        "order_by": ["metrics.auc DESC"], "columns": ["metrics.auc"]}).json()["runs"]
    assert [r["run_id"] for r in found] == [ids[0]]
    assert found[0]["params"] == {} and set(found[0]["metrics"]) == {"auc"}
    cmp = client.get("/api/v1/runs/compare", params={"run_ids": ids}).json()
    assert cmp["params"]["model"]["differs"] and not cmp["params"]["seed"]["differs"]
    assert cmp["metrics"]["auc"]["best"] == ids[0] and cmp["metrics"]["loss"]["best"] == ids[0]
    assert cmp["metrics"]["loss"]["goal"] == "min"


def test_artifacts_round_trip_with_sha256(client, run):
    rid = run["run_id"]
    data = bytes(range(256)) * 100
    up = client.put(f"/api/v1/runs/{rid}/artifacts/model/weights.bin", content=data).json()
    assert up["size"] == len(data)
    down = client.get(f"/api/v1/runs/{rid}/artifacts/model/weights.bin")
    assert down.content == data and down.headers["x-sha256"] == up["sha256"]
    listing = client.get(f"/api/v1/runs/{rid}/artifacts").json()
    assert listing["files"] == [{"path": "model", "is_dir": True, "size": None, "sha256": None}]


BAD_REQUESTS = [
    ("post", "/api/v1/runs/{rid}/batch", {"params": {"big": "x" * 6001}}, 400, "limit is 6000"),
    ("post", "/api/v1/runs/{rid}/batch", {"metrics": [{"key": "m", "value": "abc"}]}, 400, "must be a number"),
    ("post", "/api/v1/runs/{rid}/batch", {"metrics": [{"key": "../x", "value": 1}]}, 400, "invalid metric key"),
    ("post", "/api/v1/runs/{rid}/batch", {"metrics": [{"key": "m", "value": 1, "step": 2**70}]}, 400, None),
    ("post", "/api/v1/runs/{rid}/batch", {"metrics": [{"key": "m", "value": 1}] * 1001}, 400, "at most 1000"),
    ("post", "/api/v1/runs/{rid}/batch", {"nonsense": 1}, 400, None),
    ("post", "/api/v1/runs/nope/batch", {"metrics": [{"key": "m", "value": 1}]}, 404, "does not exist"),
    ("get", "/api/v1/runs/nope", None, 404, None),
    ("get", "/api/v1/experiments/abc", None, 404, None),
    ("get", "/api/v1/experiments/99999999999999999999999", None, 404, None),
    ("post", "/api/v1/runs/search", {"experiment_names": ["rest"], "filter": "metrics.auc >> 1"}, 400, "position"),
    ("post", "/api/v1/runs/search", {"experiment_names": ["rest"], "page_token": "zzz"}, 400, "page token"),
    ("post", "/api/v1/runs/search", {"experiment_names": ["rest"], "max_results": 0}, 400, None),
    ("post", "/api/v1/runs/search", {"experiment_names": ["rest"], "columns": ["bogus.x"]}, 400, "unknown column"),
    ("put", "/api/v1/runs/{rid}/artifacts/..%2F..%2Fescape", b"x", 400, "'..'"),
    ("get", "/api/v1/runs/{rid}/artifacts/missing.bin", None, 404, None),
    ("patch", "/api/v1/runs/{rid}", {"status": "DANCING"}, 400, "status must be"),
    ("post", "/api/v1/runs", {}, 400, "experiment_id or experiment_name"),
    ("post", "/api/v1/runs", {"experiment_id": "424242"}, 404, None),
    ("post", "/api/v1/experiments", {"name": ""}, 400, None),
]


@pytest.mark.parametrize("method,path,body,status,text", BAD_REQUESTS)
def test_bad_input_is_a_clear_4xx(client, run, method, path, body, status, text):
    path = path.format(rid=run["run_id"])
    kwargs = {"content": body} if isinstance(body, bytes) else ({"json": body} if body is not None else {})
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    if text:
        assert text in r.json()["detail"]


def test_malformed_json_body_is_400(client, run):
    r = client.post(f"/api/v1/runs/{run['run_id']}/batch", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_writes_to_a_finished_run_are_refused_and_nothing_changes(client, run):
    rid = run["run_id"]
    batch(client, rid, params={"a": "1"}, metrics=[{"key": "m", "value": 1}])
    client.patch(f"/api/v1/runs/{rid}", json={"status": "FINISHED"})
    before = client.get(f"/api/v1/runs/{rid}").json()
    r = batch(client, rid, metrics=[{"key": "m", "value": 2}], params={"b": "2"})
    assert r.status_code == 409 and "has ended" in r.json()["detail"]
    assert client.get(f"/api/v1/runs/{rid}").json() == before


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                     max_size=3), max_leaves=10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(["metrics", "params", "tags", "x"]), json_values, max_size=3))
def test_arbitrary_batch_bodies_never_500(client, run, body):
    r = client.post(f"/api/v1/runs/{run['run_id']}/batch", content=json.dumps(body),
                    headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40))
def test_arbitrary_filters_never_500(client, text):
    r = client.post("/api/v1/runs/search", json={"experiment_names": ["rest"], "filter": text})
    assert r.status_code in (200, 400), r.text


def test_artifact_names_are_never_silently_rewritten(tmp_path, monkeypatch):
    """Not UTF-8, absolute, or with an empty segment: a 400 naming the problem; nothing is written."""
    from litestar.testing import TestClient

    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.service import create_app

    monkeypatch.chdir(tmp_path)
    host = Host(load_config())
    with TestClient(create_app(host)) as client:
        exp = client.post("/api/v1/experiments/", json={"name": "paths"}).json()
        run = client.post("/api/v1/runs", json={"experiment_id": exp["experiment_id"]}).json()["run_id"]
        for bad, why in (("caf%FF.txt", "not valid UTF-8"), ("/etc/passwd", "absolute"), ("a//b.txt", "empty segment")):
            r = client.put(f"/api/v1/runs/{run}/artifacts/{bad}", content=b"x")
            assert r.status_code == 400 and why in r.json()["detail"], (bad, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        r = client.put(f"/api/2.0/mlflow-artifacts/artifacts/{exp['experiment_id']}/{run}/artifacts/caf%FF",
                       content=b"x")
        assert r.status_code == 400 and "not valid UTF-8" in r.text  # MLflow-shaped error on the MLflow API
        listing = client.get(f"/api/v1/runs/{run}/artifacts").json()
        assert listing["files"] == []
        ok = client.put(f"/api/v1/runs/{run}/artifacts/caf%C3%A9.txt", content=b"x")
        assert ok.status_code == 200 and ok.json()["path"] == "café.txt"
