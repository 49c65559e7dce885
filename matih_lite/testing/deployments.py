"""The deployments part of the metadata-slot contract."""

from __future__ import annotations

import threading
import time

import msgspec
import pytest

from matih_lite.contracts.deployments import CanaryState, Deployment, DeploymentChange, DeploymentStore, Route
from matih_lite.errors import Conflict, InvalidInput, NotFound

T = "tenant-a"
OTHER = "tenant-b"


def _now() -> int:
    return int(time.time() * 1000)


def _deployment(name: str = "churn-api", tenant: str = T, **kw) -> Deployment:
    kw.setdefault("model", "churn")
    kw.setdefault("routes", [Route("v3", 3, 90.0), Route("v4", 4, 10.0)])
    now = _now()
    return Deployment(tenant=tenant, name=name, created_by="ann", created_at=now, updated_at=now, **kw)


def _change(d: Deployment, action: str = "created", **kw) -> DeploymentChange:
    return DeploymentChange(tenant=d.tenant, deployment=d.name, action=action, actor=kw.pop("actor", "ann"),
                            timestamp=kw.pop("timestamp", _now()), **kw)


class DeploymentStoreContract:
    """Override the ``store`` fixture to return a fresh, empty metadata backend."""

    @pytest.fixture
    def store(self):
        raise NotImplementedError("override the 'store' fixture to build your backend")

    def create(self, store, d: Deployment) -> Deployment:
        return store.create_deployment(d, _change(d, detail={"routes": msgspec.to_builtins(d.routes)}))

    def test_deployment_protocol(self, store):
        assert isinstance(store, DeploymentStore)

    def test_create_and_get_deployment_round_trips_every_field(self, store):
        canary = CanaryState(candidate=4, primary=3, percent=10.0, started_at=5, stepped_at=6,
                             policy={"step_percent": 20.0, "interval_seconds": 60}, steps=1, reason="promoted")
        d = _deployment(target="stage", follows="Production", shadows=[5, 6], canary=canary, use_canary=True,
                        policy={"max_p99_ratio": 2.0}, description="churn scoring ✓")
        created = self.create(store, d)
        assert created.revision == 1
        got = store.get_deployment(T, "churn-api")
        assert got == msgspec.structs.replace(d, revision=1)
        assert got.routes[0] == Route("v3", 3, 90.0) and got.canary == canary

    def test_deployment_names_unique_per_tenant_and_isolated(self, store):
        self.create(store, _deployment())
        with pytest.raises(Conflict, match="already exists"):
            self.create(store, _deployment())
        self.create(store, _deployment(tenant=OTHER, model="other"))
        assert store.get_deployment(OTHER, "churn-api").model == "other"
        with pytest.raises(NotFound):
            store.get_deployment(T, "nope")
        assert [d.name for d in store.list_deployments(OTHER).items] == ["churn-api"]
        with pytest.raises(NotFound):
            store.delete_deployment(OTHER, "nope", _change(_deployment("nope", OTHER), "deleted"))
        assert [c.deployment for c in store.deployment_history(OTHER, "churn-api").items] == ["churn-api"]

    def test_list_deployments_by_name_and_model_with_pages(self, store):
        for name, model in (("c", "churn"), ("a", "churn"), ("b", "fraud")):
            self.create(store, _deployment(name, model=model))
        assert [d.name for d in store.list_deployments(T).items] == ["a", "b", "c"]
        assert [d.name for d in store.list_deployments(T, model="churn").items] == ["a", "c"]
        first = store.list_deployments(T, max_results=2)
        assert [d.name for d in first.items] == ["a", "b"] and first.next_token
        second = store.list_deployments(T, max_results=2, page_token=first.next_token)
        assert [d.name for d in second.items] == ["c"] and second.next_token is None
        with pytest.raises(InvalidInput):
            store.list_deployments(T, page_token="garbage")

    def test_update_is_compare_and_set(self, store):
        created = self.create(store, _deployment())
        moved = msgspec.structs.replace(created, routes=[Route("v4", 4, 100.0)], updated_at=created.updated_at + 1)
        updated = store.update_deployment(moved, _change(moved, "updated", reason="v4 wins"), revision=1)
        assert updated.revision == 2
        assert store.get_deployment(T, "churn-api") == updated
        with pytest.raises(Conflict, match="changed meanwhile"):
            store.update_deployment(moved, _change(moved, "updated"), revision=1)
        ghost = _deployment("ghost")
        with pytest.raises(NotFound):
            store.update_deployment(ghost, _change(ghost, "updated"), revision=1)
        with pytest.raises(NotFound):
            store.update_deployment(msgspec.structs.replace(updated, tenant=OTHER), _change(updated), revision=2)

    def test_concurrent_updates_one_wins(self, store):
        created = self.create(store, _deployment())
        outcomes: list[str] = []
        lock = threading.Lock()

        def step(percent: float) -> None:
            d = msgspec.structs.replace(created, routes=[Route("v3", 3, 100 - percent), Route("v4", 4, percent)])
            try:
                store.update_deployment(d, _change(d, "canary.stepped"), revision=1)
                result = "won"
            except Conflict:
                result = "lost"
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=step, args=(p,)) for p in (20.0, 30.0, 40.0, 50.0)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["lost", "lost", "lost", "won"]
        assert store.get_deployment(T, "churn-api").revision == 2
        assert len(store.deployment_history(T, "churn-api").items) == 2  # created + the one that won

    def test_history_outlives_the_deployment_and_feeds_changes(self, store):
        created = self.create(store, _deployment())
        start = store.deployment_changes(0)
        after = start[-1].change_id if start else 0
        moved = msgspec.structs.replace(created, shadows=[5])
        store.update_deployment(moved, _change(moved, "updated", reason="shadow v5",
                                               detail={"shadows": {"before": [], "after": [5]}}), revision=1)
        store.delete_deployment(T, "churn-api", _change(created, "deleted", actor="bob", reason="retired"))
        with pytest.raises(NotFound):
            store.get_deployment(T, "churn-api")
        history = store.deployment_history(T, "churn-api").items
        assert [(c.action, c.actor) for c in history] == [("created", "ann"), ("updated", "ann"), ("deleted", "bob")]
        assert history[1].detail == {"shadows": {"before": [], "after": [5]}} and history[1].reason == "shadow v5"
        assert history[0].change_id < history[1].change_id < history[2].change_id
        assert store.deployment_history(OTHER, "churn-api").items == []
        feed = store.deployment_changes(after)
        assert [(c.tenant, c.deployment, c.action) for c in feed] == [(T, "churn-api", "updated"),
                                                                      (T, "churn-api", "deleted")]
        assert store.deployment_changes(feed[-1].change_id) == []
        assert len(store.deployment_changes(after, max_results=1)) == 1
        # re-created under the same name: a new deployment, the history goes on
        self.create(store, _deployment())
        assert len(store.deployment_history(T, "churn-api").items) == 4

    def test_running_canaries_across_tenants(self, store):
        running = CanaryState(candidate=4, primary=3, percent=10.0, started_at=1, stepped_at=1)
        self.create(store, _deployment("a", canary=running))
        self.create(store, _deployment("b", tenant=OTHER, canary=running))
        done = self.create(store, _deployment("c", canary=msgspec.structs.replace(running, status="promoted")))
        self.create(store, _deployment("d"))
        assert [(d.tenant, d.name) for d in store.running_canaries()] == [(T, "a"), (OTHER, "b")]
        rolled = msgspec.structs.replace(store.get_deployment(T, "a"),
                                         canary=msgspec.structs.replace(running, status="rolled_back"))
        store.update_deployment(rolled, _change(rolled, "canary.rolled_back"), revision=1)
        assert [(d.tenant, d.name) for d in store.running_canaries()] == [(OTHER, "b")]
        assert done.canary.status == "promoted"
