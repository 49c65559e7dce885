"""Deployments over Triton: the traffic manager stays in the ml-service, the triton backend loads and calls.

The same behaviour the in-process tests prove (tests/serving/test_deploy_*.py), with every model call
going to a real Triton: A/B within two points over 5,000 requests, sticky keys, shadows, a canary
that promotes a good candidate and one that rolls a failing one back, and ``tritonclient.http``
against the ml-service's ``/v2``.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest
from serving_helpers import register_model
from triton_models import FailsOnNegatives, Linear, Thresholded

from matih_lite.contracts.clock import now_ms
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.serving.deployments import Deployments
from matih_lite.serving.traffic import ModelFailed, attach_traffic

pytestmark = pytest.mark.slow
T = "default"
EXAMPLE = np.array([[1.0, 2.0]])
CANARY = """
[canary]
tick_seconds = 0
initial_percent = 20
step_percent = 40
interval_seconds = 60
min_requests = 20
max_error_rate_delta = 0.05
max_p99_ratio = 3
p99_floor_ms = 100

[models."*"]
production_approvers = []
"""


def run_requests(manager, name, rows, keys=None):
    async def main():
        out = []
        for start in range(0, len(rows), 250):
            out.extend(await asyncio.gather(*[
                manager.predict(T, name, rows[i:i + 1], key=None if keys is None else keys[i])
                for i in range(start, min(start + 250, len(rows)))]))
        return out

    return asyncio.run(main())


def test_split_routes_within_two_points_over_5000_requests_each_answered_by_triton(triton_host):
    host = triton_host()
    register_model(host, "scorer", Linear(2.0, 0.0), example=EXAMPLE)
    register_model(host, "scorer", Linear(2.0, 1000.0), example=EXAMPLE)
    Deployments(host).create(LOCAL_ADMIN, "scorer-ab", "scorer", split="1=90,2=10")
    manager = attach_traffic(host)
    rows = np.random.default_rng(0).normal(size=(5000, 2))
    for keys in (None, [f"user-{i}" for i in range(5000)]):
        answers = run_requests(manager, "scorer-ab", rows, keys)
        seen = Counter(a.variant for a in answers)
        assert abs(seen["v1"] / 5000 - 0.90) <= 0.02 and abs(seen["v2"] / 5000 - 0.10) <= 0.02, seen
        for a, row in zip(answers, rows):
            assert a.outputs.tolist() == [pytest.approx(row[0] * 2.0 + (0.0 if a.version == 1 else 1000.0))]
    stats = manager.stats(T, "scorer-ab")["variants"]
    assert stats["v1"]["requests"] + stats["v2"]["requests"] == 10_000
    assert stats["v1"]["errors"] == stats["v2"]["errors"] == 0
    served = host.backend("serving").loaded()
    assert set(served) == {"default/scorer/1", "default/scorer/2"}
    assert sum(m.predictions for m in served.values()) <= 10_000  # micro-batched: fewer Triton calls than requests
    # The same key meets the same variant every time.
    again = run_requests(manager, "scorer-ab", rows[:300], [f"user-{i}" for i in range(300)])
    assert [a.variant for a in again] == [a.variant for a in answers[:300]]


def test_shadows_get_a_copy_and_are_logged_never_returned(triton_host):
    host = triton_host()
    register_model(host, "scorer", Linear(2.0, 0.0), example=EXAMPLE)
    register_model(host, "scorer", Thresholded(), example=EXAMPLE)
    Deployments(host).create(LOCAL_ADMIN, "scorer-live", "scorer", version=1, shadows=[2])
    manager = attach_traffic(host)
    rows = np.array([[float(i), 0.0] for i in range(20)])

    async def main():
        answers = [await manager.predict(T, "scorer-live", rows[i:i + 1], request_id=f"r{i}") for i in range(20)]
        await manager.stop()  # waits for the shadows in flight
        return answers

    answers = asyncio.run(main())
    assert [a.outputs.tolist() for a in answers] == [[i * 2.0] for i in range(20)]
    shadow = manager.stats(T, "scorer-live")["shadows"]["v2"]
    assert (shadow["requests"], shadow["errors"], shadow["rows"], shadow["agreeing_rows"]) == (20, 0, 20, 10)
    table = manager.inference_log.window("scorer-live", 0, 2**62, shadow=True).table.to_pylist()
    shadowed = sorted((r["request_id"], r["prediction"]) for r in table if r["shadow"])
    assert shadowed == sorted((f"r{i}", i * 2.0 if i < 10 else -1.0) for i in range(20))
    assert host.backend("serving").loaded()["default/scorer/2"].predictions >= 1  # Triton answered the shadow


def warm(manager, host, name, version):
    """Load a candidate and give it a few calls straight to the backend (a cold Python-backend model's first
    calls are slow), so the canary judges the model and not its start; nothing here reaches the canary's stats."""
    asyncio.run(manager.target(T, name, version=version))
    key = f"{T}/{name.removesuffix('-api')}/{version}"
    for _ in range(5):
        host.backend("serving").predict(key, np.ones((1, 2)))


def traffic(manager, name, n, seed):
    rows = np.random.default_rng(seed).uniform(-1, 1, size=(n, 2))
    answered: dict[str, int] = {}
    failed: dict[str, int] = {}

    async def one(row):
        target = await manager.target(T, name)
        try:
            answer = await manager.infer(target, row)
        except ModelFailed as exc:
            assert "negative x0" in exc.message
            failed[target.route.variant] = failed.get(target.route.variant, 0) + 1
            return
        assert answer.outputs.tolist() == [pytest.approx(row[0, 0] * 2.0)]
        answered[answer.variant] = answered.get(answer.variant, 0) + 1

    async def main():
        for start in range(0, n, 100):
            await asyncio.gather(*[one(rows[i:i + 1]) for i in range(start, min(start + 100, n))])

    asyncio.run(main())
    return answered, failed


def test_a_healthy_candidate_steps_up_to_100_percent_and_into_production(triton_host):
    host = triton_host(CANARY)
    register_model(host, "churn", Linear(2.0, 0.0), example=EXAMPLE)
    register_model(host, "churn", Linear(2.0, 0.0), example=EXAMPLE)
    registry = Registry(host)
    deployments = Deployments(host)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", version=1, canary=True)
    manager = attach_traffic(host)
    d = deployments.update(LOCAL_ADMIN, "churn-api", version=2, reason="v2 retrained")
    manager.updated(d)
    warm(manager, host, "churn-api", 1)
    warm(manager, host, "churn-api", 2)
    clock = now_ms()
    percents = []
    for seed in range(4):
        answered, failed = traffic(manager, "churn-api", 300, seed)
        assert failed == {}
        clock += 61_000
        manager.step(now=clock)
        d = deployments.get(LOCAL_ADMIN, "churn-api")
        percents.append(d.canary.percent)
        if d.canary.status != "running":
            break
    assert percents == [60.0, 100.0]
    assert d.canary.status == "promoted" and [(r.version, r.weight) for r in d.routes] == [(2, 100.0)]
    assert traffic(manager, "churn-api", 50, 9)[0] == {"v2": 50}
    assert registry.get_version(LOCAL_ADMIN, "churn", 2).stage == "Production"


def test_a_failing_candidate_is_rolled_back_with_the_reason(triton_host):
    host = triton_host(CANARY)
    register_model(host, "churn", Linear(2.0, 0.0), example=EXAMPLE)
    register_model(host, "churn", FailsOnNegatives(), example=EXAMPLE)
    deployments = Deployments(host)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", version=1, canary=True)
    manager = attach_traffic(host)
    manager.updated(deployments.update(LOCAL_ADMIN, "churn-api", version=2))
    answered, failed = traffic(manager, "churn-api", 300, 1)
    assert failed.get("v2", 0) >= 10 and "v1" not in failed
    stats = manager.stats(T, "churn-api")["variants"]
    assert stats["v2"]["errors"] == failed["v2"] and stats["v1"]["errors"] == 0
    served = host.backend("serving").loaded()["default/churn/2"]
    assert served.errors >= failed["v2"] and "negative x0" in served.last_error  # Triton said why
    manager.step(now=now_ms() + 1000)
    d = deployments.get(LOCAL_ADMIN, "churn-api")
    assert d.canary.status == "rolled_back" and [(r.version, r.weight) for r in d.routes] == [(1, 100.0)]
    assert "error rate" in d.canary.reason
    assert traffic(manager, "churn-api", 100, 2) == ({"v1": 100}, {})


def test_tritonclient_talks_to_the_ml_services_v2_over_triton(triton_host):
    import httpx
    import tritonclient.http as httpclient
    from sklearn.linear_model import LinearRegression
    from tritonclient.utils import InferenceServerException

    from matih_lite.testing.service import serve

    host = triton_host()
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 6))
    regressor = LinearRegression().fit(X, X @ np.arange(1.0, 7.0))
    register_model(host, "reg", regressor, "sklearn", X[:2])
    with serve(host) as base:
        with httpx.Client(base_url=base, timeout=60) as c:
            assert c.post("/api/v1/deployments", json={"name": "reg-api", "model": "reg", "version": 1}).status_code \
                == 201
        client = httpclient.InferenceServerClient(url=base.removeprefix("http://"))
        try:
            assert client.is_server_ready() and client.is_model_ready("reg-api")
            meta = client.get_model_metadata("reg-api")
            assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 6]}]
            assert meta["outputs"] == [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]
            for binary in (True, False):
                inp = httpclient.InferInput("input", [17, 6], "FP64")
                inp.set_data_from_numpy(X[:17], binary_data=binary)
                out = httpclient.InferRequestedOutput("predictions", binary_data=binary)
                result = client.infer("reg-api", [inp], outputs=[out])
                assert np.allclose(result.as_numpy("predictions"), regressor.predict(X[:17]))
            bad = httpclient.InferInput("input", [3, 4], "FP64")
            bad.set_data_from_numpy(X[:3, :4], binary_data=True)
            with pytest.raises(InferenceServerException) as refused:
                client.infer("reg-api", [bad])
            assert refused.value.status() == "400" and "'input'" in refused.value.message()
            assert host.backend("serving").loaded()["default/reg/1"].predictions >= 2
        finally:
            client.close()
