"""Faults: Triton stopped under a running ml-service, a version Triton can no longer serve under a canary,
a restarted Triton that forgot its models, and a candidate Triton refuses to load."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from serving_helpers import register_model
from triton_models import BrokenOnLoad, Linear
from triton_support import start_triton

from matih_lite.contracts.clock import now_ms
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.serving.deployments import Deployments
from matih_lite.serving.traffic import ModelFailed, ModelUnavailable, attach_traffic
from matih_lite.testing.service import serve

pytestmark = pytest.mark.slow
T = "default"
EXAMPLE = np.array([[1.0, 2.0]])
CANARY = """
[canary]
tick_seconds = 0
initial_percent = 50
interval_seconds = 60
min_requests = 10
max_error_rate_delta = 0.05
max_p99_ratio = 100
"""
ROW = {"inputs": [[3.0, 0.0]]}


@pytest.fixture
def own_triton(tmp_path, triton_install):
    """A Triton of this test's own, which it may stop and start."""
    server = start_triton(tmp_path / "triton", triton_install)
    yield server
    server.stop()


def test_triton_down_is_named_by_ready_and_predictions_get_503_with_retry_after(triton_host, own_triton):
    host = triton_host(server=own_triton)
    register_model(host, "scorer", Linear(2.0, 0.0), example=EXAMPLE)
    with serve(host) as base, httpx.Client(base_url=base, timeout=30) as c:
        assert c.post("/api/v1/deployments", json={"name": "api", "model": "scorer", "version": 1}).status_code == 201
        assert c.post("/api/v1/deployments/api/predict", json=ROW).json()["predictions"] == [6.0]
        assert c.get("/ready").status_code == 200
        own_triton.stop()
        ready = c.get("/ready")
        assert ready.status_code == 503
        serving = ready.json()["slots"]["serving"]
        assert serving["ok"] is False and f"Triton at {own_triton.url} is not reachable" in serving["detail"]
        for path, body in (("/api/v1/deployments/api/predict", ROW),
                           ("/v2/models/api/infer", {"inputs": [{"name": "input", "datatype": "FP64",
                                                                 "shape": [1, 2], "data": [3.0, 0.0]}]})):
            down = c.post(path, json=body)
            assert down.status_code == 503 and down.headers["Retry-After"] == "5", down.text
            assert f"Triton at {own_triton.url} did not answer" in down.json()["detail"]
        stats = c.get("/api/v1/deployments/api/stats").json()["variants"]["v1"]
        assert (stats["total_requests"], stats["total_errors"]) == (3, 2)
        # Back on the same ports, with nothing loaded (explicit mode): the backend loads the version again.
        own_triton.start()
        assert c.get("/ready").status_code == 200
        assert c.post("/api/v1/deployments/api/predict", json=ROW).json()["predictions"] == [6.0]


def traffic(manager, name, n):
    answered, failed = {}, {}

    async def one(i):
        variant = "not loaded"  # a version that cannot load fails in routing, before it has a target
        try:
            target = await manager.target(T, name, key=f"user-{i}")
            variant = target.route.variant
            await manager.infer(target, np.array([[float(i), 0.0]]))
        except (ModelFailed, ModelUnavailable) as exc:
            failed[variant] = failed.get(variant, 0) + 1
            return exc.message
        answered[variant] = answered.get(variant, 0) + 1

    async def main():
        return await asyncio.gather(*[one(i) for i in range(n)])

    return answered, failed, [m for m in asyncio.run(main()) if m]


def test_a_candidate_triton_can_no_longer_serve_counts_against_it_alone_and_is_rolled_back(triton_host, triton):
    host = triton_host(CANARY)
    register_model(host, "churn", Linear(2.0, 0.0), example=EXAMPLE)
    register_model(host, "churn", Linear(2.0, 0.0), example=EXAMPLE)
    deployments = Deployments(host)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", version=1, canary=True)
    manager = attach_traffic(host)
    manager.updated(deployments.update(LOCAL_ADMIN, "churn-api", version=2))
    answered, failed, _ = traffic(manager, "churn-api", 40)
    assert failed == {} and answered.get("v2", 0) >= 10
    # Triton loses the candidate behind the backend's back: unloaded, and its files gone from the repository.
    backend = host.backend("serving")
    name, _ = backend.triton_model("default/churn/2")
    client = triton.client()
    client.unload_model(name)
    backend.repository.remove(name)
    answered, failed, reasons = traffic(manager, "churn-api", 60)
    assert failed.get("v2", 0) >= 10 and "v1" not in failed and answered.get("v1", 0) >= 10
    assert all("cannot load" in r and name in r for r in reasons)
    stats = manager.stats(T, "churn-api")["variants"]
    assert stats["v1"]["errors"] == 0 and stats["v2"]["errors"] == failed["v2"]
    manager.step(now=now_ms() + 1000)
    d = deployments.get(LOCAL_ADMIN, "churn-api")
    assert d.canary.status == "rolled_back" and [(r.version, r.weight) for r in d.routes] == [(1, 100.0)]
    assert traffic(manager, "churn-api", 20)[:2] == ({"v1": 20}, {})
    client.close()


def test_a_candidate_triton_refuses_to_load_never_takes_traffic_from_the_primary(triton_host):
    host = triton_host(CANARY)
    register_model(host, "churn", Linear(2.0, 0.0), example=EXAMPLE)
    register_model(host, "churn", BrokenOnLoad(), example=EXAMPLE)
    deployments = Deployments(host)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", version=1, canary=True)
    manager = attach_traffic(host)
    manager.updated(deployments.update(LOCAL_ADMIN, "churn-api", version=2))
    answered, failed, reasons = traffic(manager, "churn-api", 40)
    assert set(answered) == {"v1"} and answered["v1"] >= 10 and set(failed) == {"not loaded"}
    assert all("Triton refused to load default/churn/2" in r and "another architecture" in r for r in reasons)
    stats = manager.stats(T, "churn-api")["variants"]
    assert stats["v1"]["errors"] == 0 and stats["v2"]["errors"] == failed["not loaded"] >= 10
    manager.step(now=now_ms() + 1000)
    d = deployments.get(LOCAL_ADMIN, "churn-api")
    assert d.canary.status == "rolled_back" and [(r.version, r.weight) for r in d.routes] == [(1, 100.0)]
    assert traffic(manager, "churn-api", 20)[:2] == ({"v1": 20}, {})


def test_a_change_to_a_version_triton_refuses_to_load_is_refused_with_its_reason_and_v1_keeps_serving(triton_host):
    """PATCH (and POST) of a deployment load the versions it would route to first: Triton's refusal refuses the
    change (422, Triton's reason), nothing of it is stored, and the routes served now keep answering."""
    host = triton_host()
    register_model(host, "churn", Linear(2.0, 0.0), example=EXAMPLE)
    register_model(host, "churn", BrokenOnLoad(), example=EXAMPLE)
    with serve(host) as base, httpx.Client(base_url=base, timeout=60) as c:
        assert c.post("/api/v1/deployments", json={"name": "api", "model": "churn", "version": 1}).status_code == 201
        assert c.post("/api/v1/deployments/api/predict", json=ROW).json()["predictions"] == [6.0]
        before = c.get("/api/v1/deployments/api").json()
        for change in ({"version": 2}, {"split": "1=50,2=50"}, {"shadows": [2]}):
            refused = c.patch("/api/v1/deployments/api", json=change)
            assert refused.status_code == 422, (change, refused.text)
            problem = refused.json()
            assert "Triton refused to load default/churn/2" in problem["detail"], problem
            assert "another architecture" in problem["detail"] and problem["title"] == "Model refused"
            assert c.get("/api/v1/deployments/api").json() == before  # nothing of the change was stored
            assert c.post("/api/v1/deployments/api/predict", json=ROW).json()["predictions"] == [6.0]
        history = c.get("/api/v1/deployments/api/history").json()
        assert [h["action"] for h in history["changes"]] == ["created"], history
        created = c.post("/api/v1/deployments", json={"name": "api-2", "model": "churn", "version": 2})
        assert created.status_code == 422 and "Triton refused to load" in created.json()["detail"]
        assert c.get("/api/v1/deployments/api-2").status_code == 404
        stats = c.get("/api/v1/deployments/api/stats").json()["variants"]
        assert set(stats) == {"v1"} and stats["v1"]["total_errors"] == 0
