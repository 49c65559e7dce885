"""``/api/v1/deployments`` over HTTP: CRUD and history, predictions in MLflow's four shapes, bad input,
a model that raises, labels, and concurrent requests that do not wait for each other."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest
from litestar.testing import TestClient
from serving_helpers import register_model

from matih_lite.host import Host
from matih_lite.service import create_app
from matih_lite.testing.service import serve

T = "default"
COLUMNS = ["age", "income", "tenure", "calls"]


class Exploding:
    """Raises on rows whose first value is 13: the model's own bug, not the caller's."""

    def predict(self, inputs):
        x = np.asarray(inputs, dtype=np.float64)
        if (x[:, 0] == 13).any():
            raise RuntimeError("unlucky row")
        return x[:, 0]


class Slow:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, inputs):
        time.sleep(self.seconds)
        return np.asarray(inputs, dtype=np.float64)[:, 0]


@pytest.fixture(scope="module")
def classifier():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 4))
    y = (X @ np.array([1.5, -2.0, 0.5, 1.0]) + rng.normal(scale=0.3, size=400) > 0).astype(np.int64)
    return LogisticRegression().fit(X, y), X


@pytest.fixture
def host(hermetic, classifier):
    h = Host.open()
    model, X = classifier
    example = {c: X[:3, i].tolist() for i, c in enumerate(COLUMNS)}
    register_model(h, "churn", model, "sklearn", example)
    register_model(h, "churn", model, "sklearn", example)
    register_model(h, "bomb", Exploding(), "pyfunc", np.array([[1.0, 2.0]]))
    yield h
    h.close()


@pytest.fixture
def client(host):
    with TestClient(create_app(host)) as c:
        yield c


def test_deployments_crud_and_history(client):
    made = client.post("/api/v1/deployments", json={"name": "churn-api", "model": "churn", "split": "1=90,2=10",
                                                    "description": "A/B"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert [(r["variant"], r["version"], r["weight"]) for r in body["routes"]] == [("v1", 1, 90.0), ("v2", 2, 10.0)]
    assert body["created_by"] == "local" and body["revision"] == 1
    assert client.post("/api/v1/deployments", json={"name": "churn-api", "model": "churn", "version": 1}
                       ).status_code == 409
    bad = client.post("/api/v1/deployments", json={"name": "x", "model": "churn", "split": "1=90,2=20"})
    assert bad.status_code == 400 and "add up to 110" in bad.json()["detail"]
    assert client.post("/api/v1/deployments", json={"name": "x", "model": "nope", "version": 1}).status_code == 404
    unknown = client.post("/api/v1/deployments", json={"name": "x", "model": "churn", "version": 1, "colour": 1})
    assert unknown.status_code == 400 and "colour" in unknown.text

    patched = client.patch("/api/v1/deployments/churn-api", json={"version": 2, "reason": "v2 won"})
    assert patched.status_code == 200 and patched.json()["routes"][0]["version"] == 2
    assert client.get("/api/v1/deployments/churn-api").json()["revision"] == 2
    assert [d["name"] for d in client.get("/api/v1/deployments", params={"model": "churn"}).json()["deployments"]] \
        == ["churn-api"]
    assert client.delete("/api/v1/deployments/churn-api", params={"reason": "retired"}).status_code == 204
    assert client.get("/api/v1/deployments/churn-api").status_code == 404
    changes = client.get("/api/v1/deployments/churn-api/history").json()["changes"]
    assert [(c["action"], c["reason"]) for c in changes] == [("created", ""), ("updated", "v2 won"),
                                                              ("deleted", "retired")]
    assert client.get("/api/v1/deployments/never/history").status_code == 404


def test_predict_in_all_four_shapes_equals_the_models_own_predict(client, classifier):
    model, X = classifier
    rows = X[:5]
    expected = model.predict(rows).tolist()
    assert client.post("/api/v1/deployments", json={"name": "churn-api", "model": "churn", "version": 2}
                       ).status_code == 201
    shapes = {
        "dataframe_split": {"columns": COLUMNS, "data": rows.tolist()},
        "dataframe_records": [dict(zip(COLUMNS, r)) for r in rows.tolist()],
        "instances": [dict(zip(COLUMNS, r)) for r in rows.tolist()],
        "inputs": {c: rows[:, i].tolist() for i, c in enumerate(COLUMNS)},
    }
    for fmt, value in shapes.items():
        resp = client.post("/api/v1/deployments/churn-api/predict", json={fmt: value})
        assert resp.status_code == 200, (fmt, resp.text)
        body = resp.json()
        assert body["predictions"] == expected, fmt
        assert (body["deployment"], body["model"], body["version"], body["variant"]) == ("churn-api", "churn", 2, "v2")
        assert len(body["request_id"]) == 32 and resp.headers["x-request-id"] == body["request_id"]
    # columns in another order are put in the model's order
    shuffled = {"dataframe_split": {"columns": COLUMNS[::-1], "data": rows[:, ::-1].tolist()}}
    assert client.post("/api/v1/deployments/churn-api/predict", json=shuffled).json()["predictions"] == expected


def test_bad_input_is_a_400_naming_the_field(client):
    client.post("/api/v1/deployments", json={"name": "churn-api", "model": "churn", "version": 1})
    url = "/api/v1/deployments/churn-api/predict"
    row = {"age": 1.0, "income": 2.0, "tenure": 3.0, "calls": 4.0}
    cases = [
        ({"dataframe_records": [{k: v for k, v in row.items() if k != "calls"}]}, "calls", "missing column"),
        ({"dataframe_records": [{**row, "zip": 1.0}]}, "zip", "extra column"),
        ({"dataframe_records": [{**row, "income": "lots"}]}, "income", "string"),
        ({"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0, 3.0]]}}, "dataframe_split", "shape 1x3"),
        ({"instances": [row], "inputs": [row]}, "inputs", "exactly one"),
        ({"dataframe_records": [row], "request_key": 7}, "request_key", "request_key"),
    ]
    for body, field, words in cases:
        resp = client.post(url, json=body)
        assert resp.status_code == 400, (body, resp.text)
        problem = resp.json()
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert words in problem["detail"], problem
        if field:
            assert problem["field"] == field, problem
    broken = client.post(url, content=b'{"dataframe_records": [', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["field"] == "body"
    assert client.post("/api/v1/deployments/nope/predict", json={"inputs": [row]}).status_code == 404
    bad_id = client.post(url, json={"dataframe_records": [row]}, headers={"X-Request-Id": "no spaces please"})
    assert bad_id.status_code == 400 and bad_id.json()["field"] == "x-request-id"
    stats = client.get("/api/v1/deployments/churn-api/stats").json()["variants"]
    assert stats.get("v1", {"errors": 0})["errors"] == 0  # the caller's mistakes are not the model's errors


def test_a_model_that_raises_is_a_500_counted_in_the_error_rate(client):
    client.post("/api/v1/deployments", json={"name": "bomb-api", "model": "bomb", "version": 1})
    url = "/api/v1/deployments/bomb-api/predict"
    ok = client.post(url, json={"inputs": [[1.0, 2.0]]})
    assert ok.status_code == 200 and ok.json()["predictions"] == [1.0]
    boom = client.post(url, json={"inputs": [[13.0, 2.0]]})
    assert boom.status_code == 500
    problem = boom.json()
    assert problem["title"] == "Model error" and "RuntimeError: unlucky row" in problem["detail"]
    assert problem["variant"] == "v1" and problem["version"] == 1 and problem["request_id"]
    assert client.post(url, json={"inputs": [[2.0, 2.0]]}).json()["predictions"] == [2.0]  # still serving
    stats = client.get("/api/v1/deployments/bomb-api/stats").json()["variants"]["v1"]
    assert (stats["requests"], stats["errors"]) == (3, 1) and stats["error_rate"] == pytest.approx(1 / 3)


def test_sticky_key_header_and_labels_by_request_id(client, host):
    client.post("/api/v1/deployments", json={"name": "churn-api", "model": "churn", "split": "1=50,2=50"})
    url = "/api/v1/deployments/churn-api/predict"
    row = {"age": 1.0, "income": 2.0, "tenure": 3.0, "calls": 4.0}
    for user in ("ann", "bob", "cyd", "dee"):
        seen = {client.post(url, json={"dataframe_records": [row]}, headers={"X-Request-Key": user}).json()["variant"]
                for _ in range(8)}
        in_body = client.post(url, json={"dataframe_records": [row], "request_key": user}).json()["variant"]
        assert len(seen) == 1 and in_body in seen
    resp = client.post(url, json={"dataframe_records": [row, row]}, headers={"X-Request-Id": "order-42"})
    assert resp.json()["request_id"] == "order-42"
    posted = client.post("/api/v1/deployments/churn-api/labels", json={"request_id": "order-42", "label": [1, 0]})
    assert posted.status_code == 202 and posted.json() == {"accepted": 1}
    assert client.post("/api/v1/deployments/churn-api/labels", json={"labels": []}).status_code == 400
    assert client.post("/api/v1/deployments/nope/labels", json={"request_id": "x", "label": 1}).status_code == 404
    from matih_lite.serving.traffic import attach_traffic

    window = attach_traffic(host).inference_log.window("churn-api", 0, 2**62)
    labelled = [r for r in window.table.to_pylist() if r["request_id"] == "order-42"]
    assert sorted((r["row"], r["label"]) for r in labelled) == [(0, 1.0), (1, 0.0)]


def test_concurrent_requests_do_not_wait_for_a_slow_model(host):
    register_model(host, "slow", Slow(1.5), "pyfunc", np.array([[1.0, 2.0]]))
    register_model(host, "fast", Slow(0.0), "pyfunc", np.array([[1.0, 2.0]]))
    with serve(host) as url:
        with httpx.Client(base_url=url, timeout=30) as c:
            for name in ("slow", "fast"):
                assert c.post("/api/v1/deployments", json={"name": f"{name}-api", "model": name, "version": 1}
                              ).status_code == 201
            c.post("/api/v1/deployments/fast-api/predict", json={"inputs": [[0.0, 0.0]]})  # loaded

        async def main():
            async with httpx.AsyncClient(base_url=url, timeout=30) as ac:
                slow = asyncio.ensure_future(ac.post("/api/v1/deployments/slow-api/predict",
                                                     json={"inputs": [[1.0, 0.0]]}))
                await asyncio.sleep(0.3)  # the slow model is loading or predicting now
                start = time.perf_counter()
                fast = await asyncio.gather(*[ac.post("/api/v1/deployments/fast-api/predict",
                                                      json={"inputs": [[float(i), 0.0]]}) for i in range(32)])
                fast_s = time.perf_counter() - start
                done_before = slow.done()
                return fast, fast_s, done_before, await slow

        fast, fast_s, slow_done_early, slow = asyncio.run(main())
    assert [r.json()["predictions"] for r in fast] == [[float(i)] for i in range(32)]
    assert fast_s < 1.0 and not slow_done_early, fast_s
    assert slow.status_code == 200 and slow.json()["predictions"] == [1.0]
