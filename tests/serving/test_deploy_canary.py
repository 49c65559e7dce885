"""Canary rollouts, both ways, driven by candidates that really fail or really are slow.

The scheduler is off (``[canary] tick_seconds = 0``) so each test steps the controller itself with
``step(now=...)``, a clock that jumps one interval per step; the requests in between are real.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from matih_lite.contracts.clock import now_ms
from matih_lite.hookspecs import hookimpl
from matih_lite.host import Host, get_plugin_manager
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.serving import flavor as flavor_of
from matih_lite.serving.deployments import Deployments
from matih_lite.serving.traffic import ModelFailed, attach_traffic, detach_traffic
from matih_lite.tracking import Tracking

T = "default"
CONFIG = """
[canary]
tick_seconds = 0
initial_percent = 20
step_percent = 40
interval_seconds = 60
min_requests = 20
max_error_rate_delta = 0.05
max_p99_ratio = 3
p99_floor_ms = 20

[models."*"]
production_approvers = []

[notifiers.capture]
"""


class Doubling:
    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64)[:, 0] * 2.0


class FailsOnNegatives:
    """Doubles like :class:`Doubling`, but raises on any negative x0: half of normal traffic."""

    def predict(self, inputs):
        x = np.asarray(inputs, dtype=np.float64)
        if (x[:, 0] < 0).any():
            raise ValueError("negative x0: this build forgot to clip its inputs")
        return x[:, 0] * 2.0


class Sleepy:
    """Right answers, 80 ms late per call."""

    def predict(self, inputs):
        time.sleep(0.08)
        return np.asarray(inputs, dtype=np.float64)[:, 0] * 2.0


class Capture:
    """A plugin that is both a notifier (alerts) and an event subscriber."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self.events: list = []

    @hookimpl
    def register_notifiers(self, register):
        register("capture", lambda settings: self)

    def notify(self, alert):
        self.alerts.append(alert)

    @hookimpl
    def on_event(self, event):
        self.events.append(event)


def register(host, name, model):
    tracking = Tracking(host)
    exp = tracking.get_or_create_experiment(T, "canary-tests")
    run = tracking.create_run(T, exp.experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        flavor_of(host, "pyfunc").save(model, tmp, input_example=np.array([[1.0, 2.0]]))
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                tracking.log_artifact(T, run.run_id, f"model/{f.relative_to(tmp).as_posix()}", f.read_bytes())
    return Registry(host).register_version(LOCAL_ADMIN, name, run_id=run.run_id, path="model", flavor="pyfunc")


def to_staging(host, *versions):
    """Versions take live traffic from Staging on ([governance] serve_stages)."""
    for v in versions:
        Registry(host).promote(LOCAL_ADMIN, "churn", v, "Staging")


@pytest.fixture
def capture():
    return Capture()


@pytest.fixture
def host(hermetic, capture):
    (hermetic / "matih.toml").write_text(CONFIG)
    h = Host.open(plugins=get_plugin_manager(plugins=[("capture", capture)]))
    yield h
    detach_traffic(h)
    h.close()


def traffic(manager, name, n, seed):
    """``n`` requests with x0 uniform in [-1, 1]; returns (answers, failures) by variant."""
    rows = np.random.default_rng(seed).uniform(-1, 1, size=(n, 2))
    answered: dict[str, int] = {}
    failed: dict[str, int] = {}

    async def one(row):
        target = await manager.target(T, name)
        try:
            answer = await manager.infer(target, row)
        except ModelFailed as exc:
            assert exc.status == 500 and "negative x0" in exc.message
            failed[target.route.variant] = failed.get(target.route.variant, 0) + 1
            return
        assert answer.outputs.tolist() == [pytest.approx(row[0, 0] * 2.0)]
        answered[answer.variant] = answered.get(answer.variant, 0) + 1

    async def main():
        for start in range(0, n, 100):
            await asyncio.gather(*[one(rows[i:i + 1]) for i in range(start, min(start + 100, n))])

    asyncio.run(main())
    return answered, failed


def test_healthy_candidate_steps_up_to_100_percent_and_into_production(host, capture):
    register(host, "churn", Doubling())
    register(host, "churn", Doubling())
    registry = Registry(host)
    to_staging(host, 1, 2)
    deployments = Deployments(host)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", version=1, canary=True)
    manager = attach_traffic(host)
    d = deployments.update(LOCAL_ADMIN, "churn-api", version=2, reason="v2 retrained on June")
    manager.updated(d)
    assert d.canary.status == "running" and d.canary.percent == 20
    assert [(r.version, r.weight) for r in d.routes] == [(2, 20.0), (1, 80.0)]

    clock = now_ms()
    percents = []
    for seed in range(4):
        answered, failed = traffic(manager, "churn-api", 300, seed)
        assert failed == {}
        clock += 61_000
        changed = manager.step(now=clock)
        d = deployments.get(LOCAL_ADMIN, "churn-api")
        percents.append(d.canary.percent)
        if d.canary.status != "running":
            break
    assert percents == [60.0, 100.0]
    assert d.canary.status == "promoted" and [(r.version, r.weight) for r in d.routes] == [(2, 100.0)]
    assert changed and changed[0].canary.status == "promoted"
    answered, _ = traffic(manager, "churn-api", 50, 9)
    assert answered == {"v2": 50}
    # ...and the registry moved v2 to Production through governance, acting for the deployment's owner
    assert registry.get_version(LOCAL_ADMIN, "churn", 2).stage == "Production"
    history = deployments.history(LOCAL_ADMIN, "churn-api").items
    assert [c.action for c in history] == ["created", "canary.started", "canary.stepped", "canary.promoted",
                                           "canary.registry"]
    assert history[1].reason == "v2 retrained on June"
    assert history[2].detail["measured"]["candidate"]["requests"] >= 20
    assert history[4].detail["outcome"] == "promoted"
    kinds = [e.type for e in capture.events if e.type.startswith("deployment.")]
    assert "deployment.canary.promoted" in kinds and capture.alerts == []


def test_failing_candidate_is_rolled_back_with_an_alert_and_the_reason(host, capture):
    register(host, "churn", Doubling())
    register(host, "churn", FailsOnNegatives())
    registry = Registry(host)
    registry.promote(LOCAL_ADMIN, "churn", 1, "Staging")
    registry.promote(LOCAL_ADMIN, "churn", 1, "Production")
    deployments = Deployments(host)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", stage="Production", canary=True)
    manager = attach_traffic(host)
    traffic(manager, "churn-api", 20, 0)  # served and cached before the promotion

    # Promotion in the registry is deployment: v2 enters through the canary.
    registry.promote(LOCAL_ADMIN, "churn", 2, "Staging")
    registry.promote(LOCAL_ADMIN, "churn", 2, "Production")
    d = deployments.get(LOCAL_ADMIN, "churn-api")
    assert d.canary.status == "running" and (d.canary.candidate, d.canary.primary) == (2, 1)

    answered, failed = traffic(manager, "churn-api", 300, 1)
    assert failed.get("v2", 0) >= 10 and "v1" not in failed
    stats = manager.stats(T, "churn-api")["variants"]
    assert stats["v2"]["errors"] == failed["v2"] and stats["v1"]["errors"] == 0
    changed = manager.step(now=now_ms() + 1000)  # a crossed threshold does not wait for the interval
    d = deployments.get(LOCAL_ADMIN, "churn-api")
    assert changed and d.canary.status == "rolled_back" and d.canary.percent == 0
    assert [(r.version, r.weight) for r in d.routes] == [(1, 100.0)]
    assert "error rate" in d.canary.reason and "points" in d.canary.reason
    last = deployments.history(LOCAL_ADMIN, "churn-api").items[-1]
    assert (last.action, last.actor, last.reason) == ("canary.rolled_back", "canary", d.canary.reason)
    assert last.detail["measured"]["candidate"]["errors"] >= 10
    assert [a["type"] for a in capture.alerts] == ["deployment.canary.rolled_back"]
    alert = capture.alerts[0]
    assert (alert["deployment"], alert["candidate"], alert["primary"]) == ("churn-api", 2, 1)
    assert alert["reason"] == d.canary.reason
    assert any(e.type == "deployment.canary.rolled_back" for e in capture.events)
    answered, failed = traffic(manager, "churn-api", 100, 2)
    assert answered == {"v1": 100} and failed == {}
    # The registry still says v2; following does not try the rolled-back candidate again.
    assert registry.get_version(LOCAL_ADMIN, "churn", 2).stage == "Production"
    assert manager.reconcile() == [] and deployments.get(LOCAL_ADMIN, "churn-api").routes == d.routes


def test_slow_candidate_is_rolled_back_on_p99_latency(host, capture):
    register(host, "churn", Doubling())
    register(host, "churn", Sleepy())
    to_staging(host, 1, 2)
    deployments = Deployments(host)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", version=1, canary=True)
    manager = attach_traffic(host)
    manager.updated(deployments.update(LOCAL_ADMIN, "churn-api", version=2))
    answered, failed = traffic(manager, "churn-api", 200, 3)
    assert failed == {} and answered.get("v2", 0) >= 20
    manager.step(now=now_ms() + 61_000)
    d = deployments.get(LOCAL_ADMIN, "churn-api")
    assert d.canary.status == "rolled_back" and "p99 latency" in d.canary.reason
    assert [(r.version, r.weight) for r in d.routes] == [(1, 100.0)]
    assert capture.alerts and capture.alerts[0]["candidate"] == 2


def test_a_canary_waits_for_enough_requests_and_for_its_interval(host):
    register(host, "churn", Doubling())
    register(host, "churn", Doubling())
    to_staging(host, 1, 2)
    deployments = Deployments(host)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", version=1, canary=True,
                       policy={"min_requests": 1000})
    manager = attach_traffic(host)
    manager.updated(deployments.update(LOCAL_ADMIN, "churn-api", version=2))
    traffic(manager, "churn-api", 100, 4)
    assert manager.step(now=now_ms() + 1000) == []  # interval not over
    assert manager.step(now=now_ms() + 61_000) == []  # too few requests to judge
    d = deployments.get(LOCAL_ADMIN, "churn-api")
    assert d.canary.status == "running" and d.canary.percent == 20 and d.canary.policy["min_requests"] == 1000
