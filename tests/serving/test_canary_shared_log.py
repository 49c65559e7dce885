"""A canary is judged on what every replica logged, by the one replica that holds the judge's lease.

Another replica's requests are written here the way that replica's inference log writes them: through an
:class:`InferenceLog` of its own over the same events store. This process serves nothing of them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from matih_lite.contracts.clock import now_ms
from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.serving import flavor as flavor_of
from matih_lite.serving.deployments import Deployments
from matih_lite.serving.inference_log import InferenceLog, failure_stream, variant_outcomes
from matih_lite.serving.traffic import CANARY_DUTY, attach_traffic, detach_traffic
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

[models."*"]
production_approvers = []
"""


class Doubling:
    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64)[:, 0] * 2.0


@pytest.fixture
def host(hermetic):
    (hermetic / "matih.toml").write_text(CONFIG)
    h = Host.open()
    yield h
    detach_traffic(h)
    h.close()


def register(host, name):
    tracking = Tracking(host)
    run = tracking.create_run(T, tracking.get_or_create_experiment(T, "shared-log").experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        flavor_of(host, "pyfunc").save(Doubling(), tmp, input_example=np.array([[1.0, 2.0]]))
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                tracking.log_artifact(T, run.run_id, f"model/{f.relative_to(tmp).as_posix()}", f.read_bytes())
    registry = Registry(host)
    mv = registry.register_version(LOCAL_ADMIN, name, run_id=run.run_id, path="model", flavor="pyfunc")
    registry.promote(LOCAL_ADMIN, name, mv.version, "Staging")
    return mv


def canary_of_v2(host):
    register(host, "churn")
    register(host, "churn")
    deployments = Deployments(host)
    deployments.create(LOCAL_ADMIN, "churn-api", "churn", version=1, canary=True)
    manager = attach_traffic(host)
    d = deployments.update(LOCAL_ADMIN, "churn-api", version=2)
    manager.updated(d)
    assert d.canary.status == "running"
    return deployments, manager


def another_replica_served(host, *, ok_v1=60, ok_v2=30, failed_v2=30, at=None):
    """What a second replica's inference log writes for the requests it answered and failed."""
    at = now_ms() if at is None else at
    other = InferenceLog(host.backend("events"))
    x = np.array([[0.5, 1.0]])
    for i in range(ok_v1):
        other.record("churn-api", f"o1-{i}", "v1", 1, x, np.array([1.0]), 2.0, timestamp=at + i)
    for i in range(ok_v2):
        other.record("churn-api", f"o2-{i}", "v2", 2, x, np.array([1.0]), 2.5, timestamp=at + i)
    for i in range(failed_v2):
        other.record_failure("churn-api", f"f2-{i}", "v2", 2, 3.0, timestamp=at + i)
    other.close()


def test_failures_go_to_a_stream_of_their_own_and_come_back_with_the_answers(host):
    another_replica_served(host, ok_v1=5, ok_v2=3, failed_v2=2, at=1_000_000)
    events = host.backend("events")
    assert events.end_offset(failure_stream("churn-api")) == 2
    got = variant_outcomes(events, "churn-api", 0)
    assert sorted(zip(got.version.tolist(), got.failed.tolist())) == [(1, False)] * 5 + [(2, False)] * 3 + \
        [(2, True)] * 2
    assert variant_outcomes(events, "churn-api", 1_000_003).failed.sum() == 0  # by time, as the window asks
    assert len(variant_outcomes(events, "never-deployed", 0).timestamp) == 0


def test_a_canary_is_rolled_back_on_another_replicas_failures(host):
    deployments, manager = canary_of_v2(host)
    another_replica_served(host)
    changed = manager.step(now=now_ms() + 1000)
    d = deployments.get(LOCAL_ADMIN, "churn-api")
    assert changed and d.canary.status == "rolled_back" and "error rate" in d.canary.reason
    measured = deployments.history(LOCAL_ADMIN, "churn-api").items[-1].detail["measured"]
    assert (measured["candidate"]["requests"], measured["candidate"]["errors"]) == (60, 30)
    assert measured["primary"]["requests"] == 60
    assert manager.stats(T, "churn-api")["variants"] == {}  # this process answered none of them
    platform = manager.platform_stats(T, "churn-api", since_ms=0)["variants"]
    assert (platform["v2"]["requests"], platform["v2"]["errors"], platform["v1"]["requests"]) == (60, 30, 60)


def test_only_the_replica_holding_the_judges_lease_judges(host):
    deployments, manager = canary_of_v2(host)
    another_replica_served(host)
    assert host.metadata.acquire_lease(CANARY_DUTY, "another-replica", 60_000)
    assert manager.step(now=now_ms() + 1000) == []
    assert deployments.get(LOCAL_ADMIN, "churn-api").canary.status == "running"
    host.metadata.release_lease(CANARY_DUTY, "another-replica")  # it stopped
    assert manager.step(now=now_ms() + 1000)
    assert deployments.get(LOCAL_ADMIN, "churn-api").canary.status == "rolled_back"
    assert host.metadata.lease_holder(CANARY_DUTY) == manager.judge_duty().holder


def test_a_healthy_canary_steps_on_every_replicas_requests(host):
    deployments, manager = canary_of_v2(host)
    another_replica_served(host, ok_v1=40, ok_v2=40, failed_v2=0)
    manager.step(now=now_ms() + 61_000)
    d = deployments.get(LOCAL_ADMIN, "churn-api")
    assert d.canary.status == "running" and d.canary.percent == 60
    # The next window starts after the step: the requests judged already do not count again.
    assert manager.step(now=now_ms() + 122_000) == []
    another_replica_served(host, ok_v1=40, ok_v2=40, failed_v2=0)
    manager.step(now=now_ms() + 122_000)
    assert deployments.get(LOCAL_ADMIN, "churn-api").canary.status == "promoted"
