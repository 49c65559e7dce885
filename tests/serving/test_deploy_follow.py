"""Deployments that follow a stage or an alias: promotion in the registry is deployment."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import numpy as np
import pytest

from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.serving import flavor as flavor_of
from matih_lite.serving.deployments import Deployments
from matih_lite.serving.traffic import ModelUnavailable, attach_traffic, detach_traffic
from matih_lite.tracking import Tracking

T = "default"


class Constant:
    """Answers its own version number for every row: who answered is in the output."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, inputs):
        return np.full(len(np.asarray(inputs)), self.value)


def register(host, name, model):
    tracking = Tracking(host)
    exp = tracking.get_or_create_experiment(T, "follow-tests")
    run = tracking.create_run(T, exp.experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        flavor_of(host, "pyfunc").save(model, tmp, input_example=np.array([[1.0, 2.0]]))
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                tracking.log_artifact(T, run.run_id, f"model/{f.relative_to(tmp).as_posix()}", f.read_bytes())
    return Registry(host).register_version(LOCAL_ADMIN, name, run_id=run.run_id, path="model", flavor="pyfunc")


@pytest.fixture
def host(hermetic):
    (hermetic / "matih.toml").write_text('[models."*"]\nproduction_approvers = []\n\n[canary]\ntick_seconds = 0\n')
    h = Host.open()
    for v in (1, 2, 3):
        register(h, "churn", Constant(float(v)))
    yield h
    detach_traffic(h)
    h.close()


def answer(manager, name="churn-api"):
    async def main():
        return await manager.predict(T, name, np.zeros((1, 2)))

    result = asyncio.run(main())
    assert result.outputs.tolist() == [float(result.version)]
    return result.version


def to_production(registry, version):
    registry.promote(LOCAL_ADMIN, "churn", version, "Staging")
    registry.promote(LOCAL_ADMIN, "churn", version, "Production")


def test_stage_deployment_waits_then_follows_each_promotion(host):
    registry, deployments = Registry(host), Deployments(host)
    d = deployments.create(LOCAL_ADMIN, "churn-api", "churn", stage="production")
    assert (d.target, d.follows, d.status, d.routes) == ("stage", "Production", "waiting", [])
    manager = attach_traffic(host)
    with pytest.raises(ModelUnavailable, match="follows stage 'Production'"):
        answer(manager)

    to_production(registry, 1)
    assert answer(manager) == 1
    to_production(registry, 2)  # v1 is archived, v2 is served: no restart, no redeploy
    assert answer(manager) == 2
    history = deployments.history(LOCAL_ADMIN, "churn-api").items
    assert [(c.action, c.actor) for c in history] == [("created", "local"), ("followed", "local"),
                                                      ("followed", "local")]
    assert history[2].detail["routes"]["after"] == [{"variant": "v2", "version": 2, "weight": 100.0}]
    assert "version 2 entered Production" in history[2].reason

    registry.rollback(LOCAL_ADMIN, "churn", reason="v2 misbehaves")
    assert answer(manager) == 1


def test_with_a_canary_a_promotion_starts_one_and_a_registry_rollback_is_followed_at_once(host):
    registry, deployments = Registry(host), Deployments(host)
    to_production(registry, 1)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", stage="Production", canary=True,
                       policy={"initial_percent": 5})
    manager = attach_traffic(host)
    assert answer(manager) == 1
    to_production(registry, 2)
    d = deployments.get(LOCAL_ADMIN, "churn-api")
    assert d.canary.status == "running" and [(r.version, r.weight) for r in d.routes] == [(2, 5.0), (1, 95.0)]
    registry.rollback(LOCAL_ADMIN, "churn")
    d = deployments.get(LOCAL_ADMIN, "churn-api")
    assert d.canary.status == "cancelled" and [(r.version, r.weight) for r in d.routes] == [(1, 100.0)]
    assert {answer(manager) for _ in range(20)} == {1}


def test_alias_deployment_follows_the_alias(host):
    registry, deployments = Registry(host), Deployments(host)
    registry.promote(LOCAL_ADMIN, "churn", 1, "Staging")
    registry.promote(LOCAL_ADMIN, "churn", 3, "Staging")
    registry.set_alias(LOCAL_ADMIN, "churn", "champion", 1)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", alias="champion")
    manager = attach_traffic(host)
    assert answer(manager) == 1
    registry.set_alias(LOCAL_ADMIN, "churn", "champion", 3)
    assert answer(manager) == 3
    registry.set_alias(LOCAL_ADMIN, "churn", "challenger", 2)  # another alias: not followed
    assert answer(manager) == 3
    registry.set_alias(LOCAL_ADMIN, "churn", "champion", 2)  # v2 is in Development: no live traffic for it
    assert answer(manager) == 3


def test_changes_made_by_another_process_reach_a_running_server(host):
    """A second host on the same folder stands for an embedded CLI: no event reaches the server's
    manager, yet its change feed and its reconciling pick the changes up."""
    registry, deployments = Registry(host), Deployments(host)
    to_production(registry, 1)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", stage="Production")
    deployments.create(LOCAL_ADMIN, "pinned", "churn", version=1)
    manager = attach_traffic(host)
    manager.poll_changes()
    assert answer(manager) == 1 and answer(manager, "pinned") == 1

    other = Host.open()
    try:
        to_production(Registry(other), 3)
        Registry(other).promote(LOCAL_ADMIN, "churn", 2, "Staging")
        Deployments(other).update(LOCAL_ADMIN, "pinned", version=2, reason="from the CLI")
    finally:
        other.close()
    assert answer(manager) == 1 and answer(manager, "pinned") == 1  # cached until the next poll
    assert manager.poll_changes() == 1
    assert answer(manager, "pinned") == 2
    assert [d.name for d in manager.reconcile()] == ["churn-api"]
    assert answer(manager) == 3
