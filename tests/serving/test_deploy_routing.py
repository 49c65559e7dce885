"""Deployments route traffic: A/B weights within two points over 5,000 requests, sticky keys, shadows.

Real models all the way: pyfunc classes of this module, saved, logged to a run, registered,
materialized and loaded by the in-process serving backend; requests go through the traffic
manager's micro-batchers; the inference log writes to the DuckDB events slot.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path

import msgspec
import numpy as np
import pytest

from matih_lite.errors import Conflict, InvalidInput, NotFound
from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.serving import flavor as flavor_of
from matih_lite.serving.deployments import Deployments
from matih_lite.serving.routing import BUCKETS, TrafficSplit, bucket_of, parse_split
from matih_lite.serving.traffic import attach_traffic, detach_traffic
from matih_lite.tracking import Tracking

T = "default"


class Linear:
    """``y = scale * x0 + offset``; two versions with different offsets tell who answered."""

    def __init__(self, scale: float = 2.0, offset: float = 0.0) -> None:
        self.scale = scale
        self.offset = offset

    def predict(self, inputs):
        x = np.asarray(inputs, dtype=np.float64)
        return x[:, 0] * self.scale + self.offset


class Thresholded:
    """Agrees with ``Linear(2, 0)`` below x0 = 10 and says -1 above: a shadow that half agrees."""

    def predict(self, inputs):
        x = np.asarray(inputs, dtype=np.float64)
        return np.where(x[:, 0] < 10, x[:, 0] * 2.0, -1.0)


def register(host: Host, name: str, model, flavor: str = "pyfunc", example=None, stage: str | None = "Staging"):
    """Save ``model`` with its flavor, log it to a run, register it: a version as a user makes one; then promote
    it to ``stage`` (live traffic goes only to Staging or Production versions; None leaves it in Development)."""
    tracking = Tracking(host)
    exp = tracking.get_or_create_experiment(T, "deploy-tests")
    run = tracking.create_run(T, exp.experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        flavor_of(host, flavor).save(model, tmp, input_example=np.array([[1.0, 2.0]]) if example is None else example)
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                tracking.log_artifact(T, run.run_id, f"model/{f.relative_to(tmp).as_posix()}", f.read_bytes())
    registry = Registry(host)
    version = registry.register_version(LOCAL_ADMIN, name, run_id=run.run_id, path="model", flavor=flavor)
    if stage is not None:
        registry.promote(LOCAL_ADMIN, name, version.version, stage)
    return version


@pytest.fixture
def host(hermetic):
    h = Host.open()
    yield h
    detach_traffic(h)
    h.close()


@pytest.fixture
def two_versions(host):
    register(host, "scorer", Linear(2.0, 0.0))
    register(host, "scorer", Linear(2.0, 1000.0))
    return host


def run_requests(manager, name, rows, keys=None):
    async def main():
        out = []
        for start in range(0, len(rows), 250):
            out.extend(await asyncio.gather(*[
                manager.predict(T, name, rows[i:i + 1], key=None if keys is None else keys[i])
                for i in range(start, min(start + 250, len(rows)))]))
        return out

    return asyncio.run(main())


def test_split_routes_within_two_points_of_the_weights_over_5000_requests(two_versions):
    host = two_versions
    Deployments(host).create(LOCAL_ADMIN, "scorer-ab", "scorer", split="1=90,2=10")
    manager = attach_traffic(host)
    rows = np.random.default_rng(0).normal(size=(5000, 2))
    for keys in (None, [f"user-{i}" for i in range(5000)]):
        answers = run_requests(manager, "scorer-ab", rows, keys)
        seen = Counter(a.variant for a in answers)
        assert abs(seen["v1"] / 5000 - 0.90) <= 0.02 and abs(seen["v2"] / 5000 - 0.10) <= 0.02, seen
        for a, row in zip(answers, rows):  # each answer is the routed version's own prediction
            expected = row[0] * 2.0 + (0.0 if a.version == 1 else 1000.0)
            assert a.outputs.tolist() == [pytest.approx(expected)]
    stats = manager.stats(T, "scorer-ab")["variants"]
    assert stats["v1"]["requests"] + stats["v2"]["requests"] == 10_000
    assert stats["v1"]["errors"] == stats["v2"]["errors"] == 0
    assert (stats["v1"]["total_requests"], stats["v2"]["total_requests"]) == \
           (stats["v1"]["requests"], stats["v2"]["requests"])


def test_the_same_request_key_always_meets_the_same_variant(two_versions):
    host = two_versions
    Deployments(host).create(LOCAL_ADMIN, "scorer-ab", "scorer", split="1=50,2=50")
    manager = attach_traffic(host)
    keys = [f"user-{i % 40}" for i in range(400)]
    answers = run_requests(manager, "scorer-ab", np.ones((400, 2)), keys)
    by_key: dict[str, set[str]] = {}
    for key, a in zip(keys, answers):
        by_key.setdefault(key, set()).add(a.variant)
    assert all(len(v) == 1 for v in by_key.values())
    assert {next(iter(v)) for v in by_key.values()} == {"v1", "v2"}  # 40 users do not all land on one side


def test_growing_a_route_only_moves_keys_towards_it():
    keys = [f"user-{i}" for i in range(3000)]
    small = TrafficSplit("d", parse_split("2=10,1=90"))
    big = TrafficSplit("d", parse_split("2=40,1=60"))
    before = {k: small.choose(k).version for k in keys}
    after = {k: big.choose(k).version for k in keys}
    assert all(after[k] == 2 for k in keys if before[k] == 2)
    assert all(0 <= bucket_of("d", k) < BUCKETS for k in keys[:10])
    assert len({bucket_of(name, "alice") for name in ("a", "b", "c", "d", "e")}) > 1  # salted by deployment


def test_split_is_checked(two_versions):
    deployments = Deployments(two_versions)
    for split, words in (("1=90,2=20", "add up to 110"), ("1=90;2=10", "is not VERSION=PERCENT"),
                         ("1=50,1=50", "listed twice"), ("1=100,2=-1", "is not VERSION=PERCENT")):
        with pytest.raises(InvalidInput, match=words):
            deployments.create(LOCAL_ADMIN, "bad", "scorer", split=split)
    with pytest.raises(NotFound, match="version"):
        deployments.create(LOCAL_ADMIN, "bad", "scorer", split="1=50,9=50")
    with pytest.raises(InvalidInput, match="exactly one of"):
        deployments.create(LOCAL_ADMIN, "bad", "scorer", version=1, stage="Production")
    with pytest.raises(InvalidInput, match="invalid deployment name"):
        deployments.create(LOCAL_ADMIN, "bad/name", "scorer", version=1)
    deployments.create(LOCAL_ADMIN, "good", "scorer", version=1)
    with pytest.raises(Conflict):
        deployments.create(LOCAL_ADMIN, "good", "scorer", version=2)


def test_shadows_get_a_copy_off_the_response_path_and_are_logged_never_returned(host):
    register(host, "scorer", Linear(2.0, 0.0))
    register(host, "scorer", Thresholded(), stage=None)  # a shadow may be any version: its answers are not returned
    Deployments(host).create(LOCAL_ADMIN, "scorer-live", "scorer", version=1, shadows=[2])
    manager = attach_traffic(host)
    rows = np.array([[float(i), 0.0] for i in range(20)])  # x0 < 10 for half of them

    async def main():
        answers = [await manager.predict(T, "scorer-live", rows[i:i + 1], request_id=f"r{i}") for i in range(20)]
        await manager.stop()  # waits for the shadows in flight
        return answers

    answers = asyncio.run(main())
    assert {a.variant for a in answers} == {"v1"}
    assert [a.outputs.tolist() for a in answers] == [[i * 2.0] for i in range(20)]  # never the shadow's -1
    shadow = manager.stats(T, "scorer-live")["shadows"]["v2"]
    assert (shadow["requests"], shadow["errors"], shadow["rows"], shadow["agreeing_rows"]) == (20, 0, 20, 10)
    assert shadow["agreement_rate"] == 0.5 and shadow["latency_p99_ms"] is not None
    assert manager.stats(T, "scorer-live")["variants"]["v1"]["requests"] == 20
    window = manager.inference_log.window("scorer-live", 0, 2**62, shadow=True)
    table = window.table.to_pylist()
    live = sorted((r["request_id"], r["prediction"]) for r in table if not r["shadow"])
    shadowed = sorted((r["request_id"], r["prediction"]) for r in table if r["shadow"])
    assert live == sorted((f"r{i}", i * 2.0) for i in range(20))
    assert shadowed == sorted((f"r{i}", i * 2.0 if i < 10 else -1.0) for i in range(20))
    assert {r["version"] for r in table if r["shadow"]} == {"2"}
    assert len(manager.inference_log.window("scorer-live", 0, 2**62)) == 20  # primary answers only by default


def test_every_change_is_in_the_history_with_who_and_why(two_versions):
    register(two_versions, "scorer", Linear(1.0, 0.0), stage=None)  # v3, a Development version, only shadows
    deployments = Deployments(two_versions)
    deployments.create(LOCAL_ADMIN, "scorer-live", "scorer", version=1, description="first")
    ann = msgspec.structs.replace(LOCAL_ADMIN, user="ann")
    deployments.update(ann, "scorer-live", split="1=80,2=20", reason="try v2 on a fifth")
    deployments.update(ann, "scorer-live", shadows=[3], reason="watch v3")
    assert deployments.update(ann, "scorer-live", shadows=[3]).revision == 3  # no change, no history
    deployments.delete(ann, "scorer-live", reason="done")
    history = deployments.history(LOCAL_ADMIN, "scorer-live").items
    assert [(c.action, c.actor, c.reason) for c in history] == [
        ("created", "local", ""), ("updated", "ann", "try v2 on a fifth"), ("updated", "ann", "watch v3"),
        ("deleted", "ann", "done")]
    assert history[1].detail["routes"] == {
        "before": [{"variant": "v1", "version": 1, "weight": 100.0}],
        "after": [{"variant": "v1", "version": 1, "weight": 80.0}, {"variant": "v2", "version": 2, "weight": 20.0}]}
    assert history[2].detail == {"shadows": {"before": [], "after": [3]}}
    with pytest.raises(NotFound):
        deployments.get(LOCAL_ADMIN, "scorer-live")


def test_totals_outlive_the_window_of_kept_samples():
    from matih_lite.serving.canary import VariantStats

    st = VariantStats(capacity=100)
    for i in range(250):
        st.add(1_000 + i, 1.0, failed=(i % 10 == 0))
    assert st.window().requests == 100 and (st.seq, st.errors) == (250, 25)
