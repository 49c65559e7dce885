"""The registry part of the metadata-slot contract: models, versions, aliases, approvals, audit log."""

from __future__ import annotations

import time
import uuid

import pytest

from matih_lite.contracts.registry import (
    Approval,
    ApprovalDecision,
    AuditEntry,
    ModelVersion,
    RegisteredModel,
    RegistryStore,
    StageMove,
)
from matih_lite.errors import Conflict, InvalidInput, NotFound

T = "tenant-a"
OTHER = "tenant-b"


def _now() -> int:
    return int(time.time() * 1000)


def _entry(name: str, action: str, **kw) -> AuditEntry:
    return AuditEntry(name=name, action=action, actor=kw.pop("actor", "ann"), timestamp=kw.pop("timestamp", _now()),
                      **kw)


class RegistryStoreContract:
    """Override the ``store`` fixture to return a fresh, empty metadata backend."""

    @pytest.fixture
    def store(self):
        raise NotImplementedError("override the 'store' fixture to build your backend")

    # helpers --------------------------------------------------------------------------------
    def version(self, store, name="churn", tenant=T, **kw) -> ModelVersion:
        kw.setdefault("source", "s3://bucket/model")
        return store.create_model_version(tenant, name, **kw)

    # models -----------------------------------------------------------------------------------
    def test_registry_protocol(self, store):
        assert isinstance(store, RegistryStore)

    def test_create_and_get_model(self, store):
        model = store.create_registered_model(T, "churn", owner="ann", description="d", tags={"team": "growth"})
        assert isinstance(model, RegisteredModel)
        assert (model.name, model.owner, model.description, model.tags, model.aliases, model.latest_version) == \
            ("churn", "ann", "d", {"team": "growth"}, {}, 0)
        assert model.creation_time > 0 and model.last_update_time >= model.creation_time
        assert store.get_registered_model(T, "churn") == model

    def test_model_names_unique_per_tenant_and_isolated(self, store):
        store.create_registered_model(T, "churn", owner="ann")
        with pytest.raises(Conflict, match="already exists"):
            store.create_registered_model(T, "churn", owner="bob")
        other = store.create_registered_model(OTHER, "churn", owner="eve")
        assert other.owner == "eve" and store.get_registered_model(T, "churn").owner == "ann"
        self.version(store)
        with pytest.raises(NotFound):
            store.get_registered_model(OTHER, "missing")
        assert [v.tenant for v in store.search_model_versions(T, name="churn").items] == [T]
        assert store.search_model_versions(OTHER, name="churn").items == []
        with pytest.raises(NotFound):
            store.get_model_version(OTHER, "churn", 1)
        with pytest.raises(NotFound):
            store.create_model_version(OTHER, "nope", source="x")

    def test_search_models_by_name_with_pages(self, store):
        for i in (3, 1, 4, 0, 2):
            store.create_registered_model(T, f"model-{i}")
        store.create_registered_model(OTHER, "model-9")
        seen, token = [], None
        while True:
            page = store.search_registered_models(T, max_results=2, page_token=token)
            seen += [m.name for m in page.items]
            token = page.next_token
            if not token:
                break
        assert seen == [f"model-{i}" for i in range(5)]
        assert [m.name for m in store.search_registered_models(T, name_like="model-1%").items] == ["model-1"]
        with pytest.raises(InvalidInput):
            store.search_registered_models(T, page_token="garbage!")

    def test_update_rename_and_tags(self, store):
        store.create_registered_model(T, "a", owner="ann", tags={"k": "1"})
        store.create_registered_model(T, "taken")
        store.append_audit(T, [_entry("a", "model.created")])
        model = store.update_registered_model(T, "a", description="new", owner="bob")
        assert (model.description, model.owner) == ("new", "bob")
        with pytest.raises(Conflict):
            store.update_registered_model(T, "a", new_name="taken")
        self.version(store, "a")
        renamed = store.update_registered_model(T, "a", new_name="b")
        assert renamed.name == "b" and store.get_model_version(T, "b", 1).name == "b"
        with pytest.raises(NotFound):
            store.get_registered_model(T, "a")
        assert [e.name for e in store.search_audit(T, name="b").items] == ["b"]  # the history follows
        store.set_registered_model_tags(T, "b", {"k": "2", "j": "3"})
        assert store.get_registered_model(T, "b").tags == {"k": "2", "j": "3"}
        store.delete_registered_model_tag(T, "b", "k")
        with pytest.raises(NotFound):
            store.delete_registered_model_tag(T, "b", "k")
        assert store.get_registered_model(T, "b").tags == {"j": "3"}
        with pytest.raises(NotFound):
            store.update_registered_model(OTHER, "b", description="x")

    # versions ---------------------------------------------------------------------------------
    def test_versions_number_from_one_and_keep_what_they_were_given(self, store):
        store.create_registered_model(T, "churn", owner="ann")
        store.create_registered_model(T, "other")
        sig = {"inputs": [{"name": "age", "type": "long"}], "outputs": None}
        v1 = self.version(store, source="runs:/r1/model", storage_location="mlflow-artifacts:/1/r1/artifacts/model",
                          run_id="r1", flavor="sklearn", signature=sig,
                          training_data=[{"name": "train", "uri": "s3://d"}],
                          description="first", tags={"k": "v"}, created_by="ann", logged_model_id="m-1")
        assert (v1.version, v1.stage, v1.status, v1.run_id, v1.flavor, v1.signature, v1.created_by) == \
            (1, "Development", "READY", "r1", "sklearn", sig, "ann")
        assert v1.training_data == [{"name": "train", "uri": "s3://d"}] and v1.tags == {"k": "v"}
        assert v1.storage_location.endswith("/model") and v1.logged_model_id == "m-1"
        assert [self.version(store).version for _ in range(3)] == [2, 3, 4]
        assert self.version(store, "other").version == 1
        assert store.get_model_version(T, "churn", 1) == v1
        assert store.get_registered_model(T, "churn").latest_version == 4
        assert [v.version for v in store.search_model_versions(T, name="churn").items] == [4, 3, 2, 1]
        assert [v.version for v in store.search_model_versions(T, run_id="r1").items] == [1]
        assert store.search_model_versions(T, name="churn", stages=[]).items == []
        for bad in (0, 99, "x"):
            with pytest.raises(NotFound):
                store.get_model_version(T, "churn", bad)

    def test_deleted_version_numbers_are_not_reused(self, store):
        store.create_registered_model(T, "churn")
        self.version(store)
        self.version(store)
        store.set_alias(T, "churn", "champion", 2)
        store.delete_model_version(T, "churn", 2)
        with pytest.raises(NotFound):
            store.get_model_version(T, "churn", 2)
        assert store.get_registered_model(T, "churn").aliases == {}
        assert self.version(store).version == 3
        with pytest.raises(NotFound):
            store.delete_model_version(T, "churn", 2)

    def test_version_description_and_tags_change(self, store):
        store.create_registered_model(T, "churn")
        self.version(store, tags={"a": "1"})
        assert store.update_model_version(T, "churn", 1, description="better").description == "better"
        store.set_model_version_tags(T, "churn", 1, {"a": "2", "b": "3"})
        assert store.get_model_version(T, "churn", 1).tags == {"a": "2", "b": "3"}
        store.delete_model_version_tag(T, "churn", 1, "a")
        with pytest.raises(NotFound):
            store.delete_model_version_tag(T, "churn", 1, "a")
        with pytest.raises(NotFound):
            store.update_model_version(T, "churn", 7, description="x")
        with pytest.raises(NotFound):
            store.set_model_version_tags(OTHER, "churn", 1, {"a": "b"})

    # aliases ----------------------------------------------------------------------------------
    def test_aliases_point_at_versions_and_move(self, store):
        store.create_registered_model(T, "churn")
        self.version(store)
        self.version(store)
        store.set_alias(T, "churn", "champion", 1)
        store.set_alias(T, "churn", "challenger", 2)
        assert store.get_registered_model(T, "churn").aliases == {"challenger": 2, "champion": 1}
        assert store.get_model_version_by_alias(T, "churn", "champion").version == 1
        assert store.get_model_version(T, "churn", 1).aliases == ["champion"]
        store.set_alias(T, "churn", "champion", 2)
        assert store.get_model_version(T, "churn", 2).aliases == ["challenger", "champion"]
        store.delete_alias(T, "churn", "challenger")
        with pytest.raises(NotFound):
            store.delete_alias(T, "churn", "challenger")
        with pytest.raises(NotFound):
            store.get_model_version_by_alias(T, "churn", "challenger")
        with pytest.raises(NotFound):
            store.set_alias(T, "churn", "x", 9)
        with pytest.raises(NotFound):
            store.get_model_version_by_alias(OTHER, "churn", "champion")

    # transitions, approvals, audit ------------------------------------------------------------
    def test_transitions_compare_and_set_with_audit(self, store):
        store.create_registered_model(T, "churn")
        self.version(store)
        self.version(store)
        moved = store.record_transition(T, "churn", moves=[StageMove(1, "Development", "Production")],
                                        audit=[_entry("churn", "version.transitioned", version=1,
                                                      from_stage="Development", to_stage="Production")])
        assert [(v.version, v.stage) for v in moved] == [(1, "Production")]
        moved = store.record_transition(T, "churn", moves=[StageMove(2, "Development", "Production"),
                                                           StageMove(1, "Production", "Archived")])
        assert [(v.version, v.stage) for v in moved] == [(2, "Production"), (1, "Archived")]
        assert [v.version for v in store.search_model_versions(T, name="churn", stages=["Production"]).items] == [2]
        # A stale move changes nothing, and none of its batch is applied.
        with pytest.raises(Conflict):
            store.record_transition(T, "churn", moves=[StageMove(1, "Archived", "Staging"),
                                                       StageMove(2, "Staging", "Archived")],
                                    audit=[_entry("churn", "never")])
        assert store.get_model_version(T, "churn", 1).stage == "Archived"
        assert [e.action for e in store.search_audit(T, name="churn").items] == ["version.transitioned"]
        with pytest.raises(NotFound):
            store.record_transition(OTHER, "churn", moves=[StageMove(1, "Archived", "Staging")])

    def test_approvals_pending_once_then_decided_once(self, store):
        store.create_registered_model(T, "churn", owner="ann")
        self.version(store)
        aid = uuid.uuid4().hex
        a = store.create_approval(T, "churn", 1, approval_id=aid, requested_by="bob", requested_at=1000,
                                  reason="ship it", audit=[_entry("churn", "approval.requested", version=1,
                                                                  approval_id=aid)])
        assert isinstance(a, Approval)
        assert (a.name, a.version, a.to_stage, a.status, a.requested_by, a.reason, a.decided_by) == \
            ("churn", 1, "Production", "pending", "bob", "ship it", None)
        with pytest.raises(Conflict):
            store.create_approval(T, "churn", 1, approval_id=uuid.uuid4().hex, requested_by="bob", requested_at=1)
        assert store.get_approval(T, aid) == a
        with pytest.raises(NotFound):
            store.get_approval(OTHER, aid)
        decision = ApprovalDecision(aid, "approved", "ann", 2000, "ok")
        store.record_transition(T, "churn", moves=[StageMove(1, "Development", "Production")], decision=decision)
        done = store.get_approval(T, aid)
        assert (done.status, done.decided_by, done.decided_at, done.comment) == ("approved", "ann", 2000, "ok")
        with pytest.raises(Conflict):
            store.record_transition(T, "churn", decision=ApprovalDecision(aid, "rejected", "eve", 3000, "no"))
        assert store.get_approval(T, aid).status == "approved"
        # Decided, the version may be requested again.
        again = store.create_approval(T, "churn", 1, approval_id=uuid.uuid4().hex, requested_by="bob",
                                      requested_at=5000)
        assert [x.approval_id for x in store.search_approvals(T).items] == [again.approval_id, aid]
        assert [x.approval_id for x in store.search_approvals(T, status="pending").items] == [again.approval_id]
        assert [x.approval_id for x in store.search_approvals(T, name="churn", status="approved").items] == [aid]
        assert store.search_approvals(OTHER).items == []
        with pytest.raises(NotFound):
            store.create_approval(T, "churn", 9, approval_id=uuid.uuid4().hex, requested_by="bob", requested_at=1)

    def test_audit_log_in_order_per_model_and_tenant(self, store):
        store.append_audit(T, [_entry("churn", "model.created", timestamp=5),
                               _entry("churn", "alias.set", version=1, detail={"alias": "champion"}),
                               _entry("fraud", "model.created")])
        store.append_audit(OTHER, [_entry("churn", "model.created")])
        log = store.search_audit(T, name="churn").items
        assert [e.action for e in log] == ["model.created", "alias.set"]
        assert log[0].entry_id < log[1].entry_id and log[0].timestamp == 5 and log[0].actor == "ann"
        assert log[1].detail == {"alias": "champion"} and log[1].version == 1 and log[1].tenant == T
        assert len(store.search_audit(T).items) == 3
        first = store.search_audit(T, max_results=2)
        assert len(first.items) == 2 and first.next_token
        assert [e.name for e in store.search_audit(T, page_token=first.next_token).items] == ["fraud"]

    def test_deleting_a_model_removes_everything_but_its_history(self, store):
        store.create_registered_model(T, "churn", tags={"a": "b"})
        self.version(store, tags={"x": "y"})
        store.set_alias(T, "churn", "champion", 1)
        store.create_approval(T, "churn", 1, approval_id=uuid.uuid4().hex, requested_by="bob", requested_at=1)
        store.append_audit(T, [_entry("churn", "model.created")])
        store.delete_registered_model(T, "churn")
        with pytest.raises(NotFound):
            store.get_registered_model(T, "churn")
        with pytest.raises(NotFound):
            store.delete_registered_model(T, "churn")
        assert store.search_model_versions(T).items == [] and store.search_approvals(T).items == []
        assert [e.action for e in store.search_audit(T, name="churn").items] == ["model.created"]
        again = store.create_registered_model(T, "churn")
        assert again.tags == {} and self.version(store).version == 1
