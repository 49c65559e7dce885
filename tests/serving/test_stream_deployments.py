"""Streaming inference through a deployment: request records appended to a topic over REST come back
as predictions in another topic, through the same routes (sticky A/B) as HTTP requests, logged, and
the consumer starts again with the service, from where its group stopped."""

from __future__ import annotations

import time

import numpy as np
import pytest
from litestar.testing import TestClient
from serving_helpers import register_model

from matih_lite.host import Host
from matih_lite.service import create_app

T = "default"


class Weighted:
    """Version-specific so the answer tells which variant scored it."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64).sum(axis=1) * self.factor


@pytest.fixture
def home(hermetic):
    host = Host.open()
    register_model(host, "weighted", Weighted(1.0), example=np.array([[1.0, 2.0]]))
    register_model(host, "weighted", Weighted(10.0), example=np.array([[1.0, 2.0]]))
    host.close()


def wait_for(client, stream, count, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        page = client.get(f"/api/v1/streams/{stream}/records", params={"max_results": 10_000}).json()
        if len(page["records"]) >= count or time.monotonic() > deadline:
            return [r["data"] for r in page["records"]]
        time.sleep(0.05)


def requests(start, n):
    return [{"request_id": f"r{i}", "request_key": f"user-{i % 25}", "inputs": [[float(i), 1.0]]}
            for i in range(start, start + n)]


def test_a_topic_of_requests_is_answered_through_the_deployments_routes(home):
    with TestClient(create_app(Host.open())) as client:
        made = client.post("/api/v1/deployments", json={"name": "scorer", "model": "weighted", "split": "1=50,2=50"})
        assert made.status_code == 201, made.text
        sent = client.post("/api/v1/streams/requests/records",
                           json={"records": [*requests(0, 200), {"request_id": "bad", "colour": "red"}]})
        assert sent.status_code == 201 and sent.json() == {"stream": "requests", "first_offset": 0, "count": 201}
        started = client.post("/api/v1/deployments/scorer/streams", json={"source": "requests", "sink": "answers"})
        assert started.status_code == 201, started.text
        assert started.json()["group"] == "scorer" and started.json()["running"]

        answers = wait_for(client, "answers", 201)
        assert [a["request_id"] for a in answers] == [f"r{i}" for i in range(200)] + ["bad"]
        by_key: dict[str, set[int]] = {}
        for i, a in enumerate(answers[:200]):
            factor = {1: 1.0, 2: 10.0}[a["version"]]
            assert a["predictions"] == [(i + 1.0) * factor] and a["variant"] == f"v{a['version']}"
            by_key.setdefault(f"user-{i % 25}", set()).add(a["version"])
        assert all(len(v) == 1 for v in by_key.values()), "a request key met two variants"
        assert {v for vs in by_key.values() for v in vs} == {1, 2}
        # the same key over HTTP meets the same variant
        http = client.post("/api/v1/deployments/scorer/predict", json={"inputs": [[3.0, 1.0]]},
                           headers={"X-Request-Key": "user-3"})
        assert http.json()["version"] == answers[3]["version"]
        assert "error" in answers[200] and "inputs" in answers[200]["error"]

        listed = client.get("/api/v1/deployments/scorer/streams").json()
        assert len(listed) == 1
        assert (listed[0]["consumed"], listed[0]["predicted"], listed[0]["failed"], listed[0]["lag"]) == \
               (201, 200, 1, 0)
        stats = client.get("/api/v1/deployments/scorer/stats").json()["variants"]
        assert sum(v["requests"] for v in stats.values()) == 201  # 200 streamed + 1 over HTTP

    # The service stops; requests keep coming; the next service resumes the group where it stopped.
    host = Host.open()
    now = int(time.time() * 1000)
    host.backend("events").append("requests", [{"timestamp": now, **r} for r in requests(200, 30)])
    host.close()
    with TestClient(create_app(Host.open())) as client:
        answers = wait_for(client, "answers", 231)
        assert [a["request_id"] for a in answers[201:]] == [f"r{i}" for i in range(200, 230)]
        assert client.get("/api/v1/deployments/scorer/streams").json()[0]["lag"] == 0
        assert client.delete("/api/v1/deployments/scorer/streams/scorer").status_code == 204
        assert client.get("/api/v1/deployments/scorer/streams").json() == []
    with TestClient(create_app(Host.open())) as client:  # a stopped consumer stays stopped
        assert client.get("/api/v1/deployments/scorer/streams").json() == []


def test_bad_stream_requests_are_clear_errors(home):
    with TestClient(create_app(Host.open())) as client:
        client.post("/api/v1/deployments", json={"name": "scorer", "model": "weighted", "version": 1})
        cases = [
            ("/api/v1/deployments/nope/streams", {"source": "a", "sink": "b"}, 404),
            ("/api/v1/deployments/scorer/streams", {"source": "a", "sink": "a"}, 400),
            ("/api/v1/deployments/scorer/streams", {"source": "a b", "sink": "c"}, 400),
            ("/api/v1/deployments/scorer/streams", {"source": "matih.streaming.consumers", "sink": "c"}, 400),
            ("/api/v1/deployments/scorer/streams", {"source": "a", "sink": "b", "batch_size": 0}, 400),
            ("/api/v1/deployments/scorer/streams", {"source": "a"}, 400),
            ("/api/v1/streams/a%20b/records", {"records": [{"x": 1}]}, 400),
            ("/api/v1/streams/a/records", {"records": []}, 400),
            ("/api/v1/streams/a/records", {"records": [1, 2]}, 400),
        ]
        for path, body, status in cases:
            resp = client.post(path, json=body)
            assert resp.status_code == status, (path, body, resp.text)
            assert resp.headers["content-type"].startswith("application/problem+json")
        assert client.post("/api/v1/deployments/scorer/streams", json={"source": "a", "sink": "b"}).status_code == 201
        again = client.post("/api/v1/deployments/scorer/streams", json={"source": "a", "sink": "c"})
        assert again.status_code == 400 and "already consumes" in again.json()["detail"]
        assert client.delete("/api/v1/deployments/scorer/streams/other").status_code == 404
        assert client.get("/api/v1/streams/never/records").json()["records"] == []
