"""A second tenant sees nothing of the first, through every method of the metadata contract.

:func:`store_methods` enumerates the methods of :class:`~matih_lite.contracts.MetadataStore` (every
protocol in its union), and :data:`CASES` holds, per method, a call as the second tenant with the
first tenant's ids and names and what it must answer (NotFound, nothing listed, a record of its
own). A method with neither a case nor a reason in :data:`EVERY_TENANT_METHODS` fails
``test_every_store_method_has_an_isolation_case``: a new method cannot ship without one.

The first tenant holds one record of every kind; each case runs as a second tenant of its own (so
what one case creates, the next never lists), and the first tenant's view is compared after every
case with the one before the first: nothing of it changed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from matih_lite.contracts import MetadataStore, Metric
from matih_lite.contracts.deployments import Deployment, DeploymentChange, Route
from matih_lite.contracts.jobs import Job, Limits
from matih_lite.contracts.logged_models import (
    Dataset,
    DatasetInput,
    LoggedModel,
    LoggedModelMetric,
    ModelOutput,
)
from matih_lite.contracts.registry import ApprovalDecision, AuditEntry, StageMove
from matih_lite.contracts.traces import Assessment, TraceClause, TraceInfo
from matih_lite.errors import Conflict, NotFound

EVERY_TENANT_METHODS: dict[str, str] = {
    "health": "the store's own state, no tenant's",
    "close": "the store's own state, no tenant's",
    "create_tenant": "tenants are the scope itself",
    "get_tenant": "tenants are the scope itself",
    "list_tenants": "tenants are the scope itself",
    "find_token": "a token is found by the hash of its secret, whoever's it is; that says its tenant",
    "touch_token": "called with the id find_token returned, of whichever tenant",
    "deployment_changes": "the feed a server follows for every tenant's deployments",
    "running_canaries": "the canary controller steps every tenant's canaries",
    "acquire_lease": "a lease names a platform-wide duty (the canary judge, the drift runner), held by one replica",
    "release_lease": "a lease names a platform-wide duty, held by one replica for every tenant",
    "lease_holder": "a lease names a platform-wide duty, held by one replica for every tenant",
}
"""Methods that are deliberately not scoped to one tenant, and why."""


def store_methods(protocol: type = MetadataStore) -> list[str]:
    """The public methods of a contract protocol and of every protocol it is the union of."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls.__module__.startswith("matih_lite.contracts"):
            names |= {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
    return sorted(names)


def now() -> int:
    """Milliseconds since the epoch."""
    return int(time.time() * 1000)


@dataclass
class World:
    """Tenant ``a`` with one record of every kind; tenant ``b`` exists and holds nothing yet."""

    a: str
    b: str
    experiment_id: str = ""
    experiment: str = "churn"
    run_id: str = ""
    logged_model_id: str = ""
    model: str = "churn-model"
    approval_id: str = ""
    user: str = "ann"
    token_id: str = ""
    node: str = "dataset:s3://bucket/train.parquet"
    node2: str = ""
    deployment: str = "churn-live"
    job_id: str = ""
    view: str = "customer_stats"
    trace_id: str = ""
    assessment_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def build_world(store: Any, features: bool) -> World:
    """Two new tenants in ``store``, the first with one record of every kind (feature definitions too if asked)."""
    tag = uuid.uuid4().hex[:8]
    w = World(a=f"acme-{tag}", b=f"globex-{tag}")
    t = now()
    for tenant in (w.a, w.b):
        store.create_tenant(tenant, created_at=t)
    store.create_user(w.a, w.user, roles=["admin"], created_at=t)
    w.token_id = f"tok-{uuid.uuid4().hex}"
    store.create_token(w.a, w.user, token_id=w.token_id, token_hash=uuid.uuid4().hex, created_at=t)
    exp = store.create_experiment(w.a, w.experiment, tags={"team": "growth"})
    w.experiment_id = exp.experiment_id
    w.run_id = uuid.uuid4().hex
    store.create_run(w.a, w.experiment_id, run_id=w.run_id, name="r", start_time=t, tags={"k": "v"})
    store.log_batch(w.a, w.run_id, metrics=[Metric("auc", 0.93, t, 0)], params={"lr": "0.1"}, tags={"t": "1"})
    w.logged_model_id = f"m-{uuid.uuid4().hex}"
    store.create_logged_model(LoggedModel(w.logged_model_id, w.a, w.experiment_id, "model", tags={"q": "good"},
                                          params={"C": "1"}, metrics=[LoggedModelMetric("auc", 0.9, t)]))
    store.log_run_io(w.a, w.run_id, datasets=[DatasetInput(Dataset("iris", "d1", "code", "{}"))],
                     model_inputs=[w.logged_model_id], model_outputs=[ModelOutput(w.logged_model_id, 0)])
    store.create_registered_model(w.a, w.model, owner=w.user, tags={"a": "1"})
    store.create_model_version(w.a, w.model, source=f"runs:/{w.run_id}/model", run_id=w.run_id, tags={"v": "1"})
    store.set_alias(w.a, w.model, "champion", 1)
    w.approval_id = uuid.uuid4().hex
    store.create_approval(w.a, w.model, 1, approval_id=w.approval_id, requested_by=w.user, requested_at=t)
    store.append_audit(w.a, [AuditEntry(name=w.model, action="model.created", actor=w.user, timestamp=t)])
    w.node2 = f"run:{w.run_id}"
    store.put_lineage_node(w.a, w.node, kind="dataset", at=t, properties={"rows": 10})
    store.put_lineage_node(w.a, w.node2, kind="run", at=t)
    store.add_lineage_edge(w.a, w.node, w.node2, kind="consumed_by", at=t)
    store.create_deployment(_deployment(w.a, w.deployment, t), _change(w.a, w.deployment, t))
    w.job_id = f"job-{uuid.uuid4().hex}"
    store.create_job(Job(tenant=w.a, job_id=w.job_id, name="train", kind="train", created_at=t, heartbeat_at=t))
    w.trace_id, w.assessment_id = f"tr-{uuid.uuid4().hex}", f"a-{uuid.uuid4().hex}"
    store.start_trace(TraceInfo(w.trace_id, w.a, w.experiment_id, t, 5, tags={"mlflow.traceName": "predict"},
                                metadata={"mlflow.sourceRun": w.run_id},
                                assessments=[Assessment(w.assessment_id, w.trace_id, "quality", "feedback")]))
    if features:
        from matih_lite.contracts.features import DefinitionChange

        store.put_feature_definitions(w.a, {"feature_views": {w.view: {}}}, digest="d1", actor=w.user, at=t,
                                      changes=[DefinitionChange("created", "feature_view", w.view, {})])
        store.record_materialization(w.a, w.view, start=0, end=10, rows=3, at=t)
        store.claim_feature_alert(w.a, w.view, "conv_rate", "1h", 1, t)
    return w


def _deployment(tenant: str, name: str, t: int) -> Deployment:
    return Deployment(tenant=tenant, name=name, model="churn-model", routes=[Route("primary", 1, 100.0)],
                      created_at=t, updated_at=t)


def _change(tenant: str, name: str, t: int, action: str = "created") -> DeploymentChange:
    return DeploymentChange(tenant=tenant, deployment=name, action=action, actor="ann", timestamp=t)


def view_of_a(store: Any, w: World, features: bool) -> Any:
    """Everything tenant ``a`` holds, as plain data: it must read the same before and after ``b``'s calls."""
    a = w.a
    out: dict[str, Any] = {
        "experiment": store.get_experiment(a, w.experiment_id),
        "experiments": store.search_experiments(a, lifecycle="all").items,
        "run": store.get_run(a, w.run_id),
        "history": store.get_metric_history(a, w.run_id, "auc").items,
        "runs": store.search_runs(a, [w.experiment_id], lifecycle="all").items,
        "logged_model": store.get_logged_model(a, w.logged_model_id, allow_deleted=True),
        "run_io": store.get_run_io(a, w.run_id),
        "model": store.get_registered_model(a, w.model),
        "versions": store.search_model_versions(a).items,
        "approvals": store.search_approvals(a).items,
        "audit": store.search_audit(a).items,
        "users": store.list_users(a),
        "tokens": store.list_tokens(a),
        "nodes": store.list_lineage_nodes(a).items,
        "edges": store.lineage_edges(a, [w.node, w.node2], direction="downstream"),
        "deployments": store.list_deployments(a).items,
        "deployment_history": store.deployment_history(a, w.deployment).items,
        "jobs": store.list_jobs(a).items,
        "trace": store.get_trace(a, w.trace_id),
    }
    if features:
        out["features"] = [store.get_feature_definitions(a), store.list_feature_definition_versions(a),
                           store.feature_audit(a), store.materializations(a)]
    return msgspec.to_builtins(out)


def _not_found(call: Callable[[], Any]) -> None:
    with pytest.raises(NotFound):
        call()


def _own_experiment(s: Any, w: World) -> str:
    return s.create_experiment(w.b, f"own-{uuid.uuid4().hex[:6]}").experiment_id


def _own_run(s: Any, w: World) -> str:
    run_id = uuid.uuid4().hex
    s.create_run(w.b, _own_experiment(s, w), run_id=run_id, name="own", start_time=now())
    return run_id


def _creates_its_own_experiment(s: Any, w: World) -> None:
    exp = s.create_experiment(w.b, w.experiment)  # the same name: names are per tenant
    assert exp.tenant == w.b and exp.experiment_id != w.experiment_id and exp.tags == {}


def _creates_runs_only_in_its_own_experiments(s: Any, w: World) -> None:
    _not_found(lambda: s.create_run(w.b, w.experiment_id, run_id=uuid.uuid4().hex, name="x", start_time=now()))
    _not_found(lambda: s.create_run(w.b, _own_experiment(s, w), run_id=uuid.uuid4().hex, name="x",
                                    start_time=now(), parent_run_id=w.run_id))


def _creates_a_model_of_its_own(s: Any, w: World) -> None:
    model = s.create_registered_model(w.b, w.model)
    assert model.tenant == w.b and model.tags == {} and model.aliases == {} and model.latest_version == 0
    assert s.search_model_versions(w.b, name=w.model).items == []


def _puts_a_node_of_its_own(s: Any, w: World) -> None:
    node = s.put_lineage_node(w.b, w.node, kind="dataset", at=now(), properties={"mine": True})
    assert node.tenant == w.b and node.properties == {"mine": True}


def _creates_a_deployment_of_its_own(s: Any, w: World) -> None:
    made = s.create_deployment(_deployment(w.b, w.deployment, now()), _change(w.b, w.deployment, now()))
    assert made.tenant == w.b and made.revision == 1
    assert [c.tenant for c in s.deployment_history(w.b, w.deployment).items] == [w.b]


def _cannot_take_a_job_id(s: Any, w: World) -> None:
    # Job ids are unique across tenants (random, so they tell nothing); the first tenant's job is untouched.
    with pytest.raises(Conflict):
        s.create_job(Job(tenant=w.b, job_id=w.job_id, name="x", kind="train", created_at=now(), heartbeat_at=now()))


def _creates_a_user_of_its_own(s: Any, w: World) -> None:
    user = s.create_user(w.b, w.user, roles=["viewer"], created_at=now())
    assert user.tenant == w.b and user.roles == ("viewer",)


def _appends_its_own_audit(s: Any, w: World) -> None:
    s.append_audit(w.b, [AuditEntry(name=w.model, action="model.created", actor="mallory", timestamp=now())])
    assert [e.actor for e in s.search_audit(w.b, name=w.model).items] == ["mallory"]


def _puts_its_own_definitions(s: Any, w: World) -> None:
    version = s.put_feature_definitions(w.b, {"mine": True}, digest="d2", actor="mallory", at=now(), changes=[],
                                        expected_version=0)  # the first tenant's versions do not count
    assert version.tenant == w.b and s.get_feature_definitions(w.b).document == {"mine": True}


def _starts_no_trace_in_anothers_experiment_nor_takes_its_id(s: Any, w: World) -> None:
    _not_found(lambda: s.start_trace(TraceInfo(f"tr-{uuid.uuid4().hex}", w.b, w.experiment_id, now())))
    with pytest.raises(Conflict):  # trace ids are the client's and unique; the first tenant's trace is untouched
        s.start_trace(TraceInfo(w.trace_id, w.b, _own_experiment(s, w), now(), tags={"mlflow.traceName": "stolen"}))


def _claims_its_own_alert(s: Any, w: World) -> None:
    assert s.claim_feature_alert(w.b, w.view, "conv_rate", "1h", 1, now()) is True


CASES: dict[str, Callable[[Any, World], None]] = {
    # tracking
    "create_experiment": _creates_its_own_experiment,
    "get_experiment": lambda s, w: _not_found(lambda: s.get_experiment(w.b, w.experiment_id)),
    "get_experiment_by_name": lambda s, w: _not_found(lambda: s.get_experiment_by_name(w.b, w.experiment)),
    "search_experiments": lambda s, w: (s.search_experiments(w.b, lifecycle="all").items == [] or
                                        pytest.fail("listed another tenant's experiments")),
    "update_experiment": lambda s, w: (_not_found(lambda: s.update_experiment(w.b, w.experiment_id, name="mine")),
                                       _not_found(lambda: s.update_experiment(w.b, w.experiment_id,
                                                                              lifecycle_stage="deleted"))),
    "set_experiment_tags": lambda s, w: _not_found(lambda: s.set_experiment_tags(w.b, w.experiment_id, {"x": "y"})),
    "create_run": _creates_runs_only_in_its_own_experiments,
    "get_run": lambda s, w: _not_found(lambda: s.get_run(w.b, w.run_id)),
    "update_run": lambda s, w: _not_found(lambda: s.update_run(w.b, w.run_id, status="KILLED")),
    "log_batch": lambda s, w: _not_found(lambda: s.log_batch(w.b, w.run_id, metrics=[Metric("auc", 0.0, now())],
                                                             tags={"t": "mine"})),
    "delete_tag": lambda s, w: _not_found(lambda: s.delete_tag(w.b, w.run_id, "t")),
    "get_metric_history": lambda s, w: _not_found(lambda: s.get_metric_history(w.b, w.run_id, "auc")),
    "search_runs": lambda s, w: (s.search_runs(w.b, [w.experiment_id], lifecycle="all").items == [] or
                                 pytest.fail("listed another tenant's runs")),
    "metric_buckets": lambda s, w: _not_found(lambda: s.metric_buckets(w.b, w.run_id, "auc")),
    # logged models, run inputs and outputs
    "create_logged_model": lambda s, w: _not_found(lambda: s.create_logged_model(
        LoggedModel(f"m-{uuid.uuid4().hex}", w.b, w.experiment_id, "planted"))),
    "get_logged_model": lambda s, w: (_not_found(lambda: s.get_logged_model(w.b, w.logged_model_id)),
                                      _not_found(lambda: s.get_logged_model(w.b, w.logged_model_id,
                                                                            allow_deleted=True))),
    "search_logged_models": lambda s, w: (s.search_logged_models(w.b, [w.experiment_id], lifecycle="all").items == []
                                          or pytest.fail("listed another tenant's logged models")),
    "update_logged_model": lambda s, w: (
        _not_found(lambda: s.update_logged_model(w.b, w.logged_model_id, status="LOGGED_MODEL_UPLOAD_FAILED")),
        _not_found(lambda: s.update_logged_model(w.b, w.logged_model_id, lifecycle_stage="deleted"))),
    "set_logged_model_tags": lambda s, w: _not_found(lambda: s.set_logged_model_tags(w.b, w.logged_model_id,
                                                                                     {"q": "bad"})),
    "delete_logged_model_tag": lambda s, w: _not_found(lambda: s.delete_logged_model_tag(w.b, w.logged_model_id,
                                                                                         "q")),
    "log_logged_model_params": lambda s, w: _not_found(lambda: s.log_logged_model_params(w.b, w.logged_model_id,
                                                                                         {"planted": "1"})),
    "log_logged_model_metrics": lambda s, w: _not_found(lambda: s.log_logged_model_metrics(
        w.b, w.logged_model_id, [LoggedModelMetric("auc", 0.0, now())])),
    "log_run_io": lambda s, w: (
        _not_found(lambda: s.log_run_io(w.b, w.run_id, model_outputs=[ModelOutput("m-planted")])),
        s.log_run_io(w.b, _own_run(s, w), model_inputs=[w.logged_model_id])),  # its own run: only a name
    "get_run_io": lambda s, w: _not_found(lambda: s.get_run_io(w.b, w.run_id)),
    # registry
    "create_registered_model": _creates_a_model_of_its_own,
    "get_registered_model": lambda s, w: _not_found(lambda: s.get_registered_model(w.b, w.model)),
    "search_registered_models": lambda s, w: (s.search_registered_models(w.b).items == [] or
                                              pytest.fail("listed another tenant's models")),
    "update_registered_model": lambda s, w: (
        _not_found(lambda: s.update_registered_model(w.b, w.model, description="mine")),
        _not_found(lambda: s.update_registered_model(w.b, w.model, new_name="stolen"))),
    "set_registered_model_tags": lambda s, w: _not_found(lambda: s.set_registered_model_tags(w.b, w.model,
                                                                                             {"a": "2"})),
    "delete_registered_model_tag": lambda s, w: _not_found(lambda: s.delete_registered_model_tag(w.b, w.model, "a")),
    "delete_registered_model": lambda s, w: _not_found(lambda: s.delete_registered_model(w.b, w.model)),
    "create_model_version": lambda s, w: _not_found(lambda: s.create_model_version(w.b, w.model, source="x")),
    "get_model_version": lambda s, w: _not_found(lambda: s.get_model_version(w.b, w.model, 1)),
    "get_model_version_by_alias": lambda s, w: _not_found(lambda: s.get_model_version_by_alias(w.b, w.model,
                                                                                               "champion")),
    "search_model_versions": lambda s, w: (
        (s.search_model_versions(w.b).items, s.search_model_versions(w.b, name=w.model).items,
         s.search_model_versions(w.b, run_id=w.run_id).items) == ([], [], [])
        or pytest.fail("listed another tenant's versions")),
    "update_model_version": lambda s, w: _not_found(lambda: s.update_model_version(w.b, w.model, 1,
                                                                                   description="mine")),
    "set_model_version_tags": lambda s, w: _not_found(lambda: s.set_model_version_tags(w.b, w.model, 1, {"v": "2"})),
    "delete_model_version_tag": lambda s, w: _not_found(lambda: s.delete_model_version_tag(w.b, w.model, 1, "v")),
    "delete_model_version": lambda s, w: _not_found(lambda: s.delete_model_version(w.b, w.model, 1)),
    "set_alias": lambda s, w: _not_found(lambda: s.set_alias(w.b, w.model, "champion", 1)),
    "delete_alias": lambda s, w: _not_found(lambda: s.delete_alias(w.b, w.model, "champion")),
    "create_approval": lambda s, w: _not_found(lambda: s.create_approval(
        w.b, w.model, 1, approval_id=uuid.uuid4().hex, requested_by="mallory", requested_at=now())),
    "get_approval": lambda s, w: _not_found(lambda: s.get_approval(w.b, w.approval_id)),
    "search_approvals": lambda s, w: (s.search_approvals(w.b).items == [] or
                                      pytest.fail("listed another tenant's approvals")),
    "record_transition": lambda s, w: (
        _not_found(lambda: s.record_transition(w.b, w.model, moves=[StageMove(1, "Development", "Staging")])),
        _not_found(lambda: s.record_transition(w.b, w.model, decision=ApprovalDecision(
            w.approval_id, "approved", "mallory", now())))),
    "append_audit": _appends_its_own_audit,
    "search_audit": lambda s, w: (s.search_audit(w.b).items == [] or pytest.fail("listed another tenant's audit")),
    # tenants, users, tokens
    "create_user": _creates_a_user_of_its_own,
    "get_user": lambda s, w: _not_found(lambda: s.get_user(w.b, w.user)),
    "list_users": lambda s, w: s.list_users(w.b) == [] or pytest.fail("listed another tenant's users"),
    "update_user": lambda s, w: _not_found(lambda: s.update_user(w.b, w.user, roles=["viewer"], disabled=True)),
    "create_token": lambda s, w: _not_found(lambda: s.create_token(
        w.b, w.user, token_id=f"tok-{uuid.uuid4().hex}", token_hash=uuid.uuid4().hex, created_at=now())),
    "get_token": lambda s, w: _not_found(lambda: s.get_token(w.b, w.token_id)),
    "list_tokens": lambda s, w: ((s.list_tokens(w.b), s.list_tokens(w.b, user=w.user)) == ([], [])
                                 or pytest.fail("listed another tenant's tokens")),
    "revoke_token": lambda s, w: _not_found(lambda: s.revoke_token(w.b, w.token_id)),
    # lineage
    "put_lineage_node": _puts_a_node_of_its_own,
    "get_lineage_nodes": lambda s, w: s.get_lineage_nodes(w.b, [w.node, w.node2]) == {} or pytest.fail(
        "found another tenant's nodes"),
    "list_lineage_nodes": lambda s, w: s.list_lineage_nodes(w.b).items == [] or pytest.fail(
        "listed another tenant's nodes"),
    "add_lineage_edge": lambda s, w: _not_found(lambda: s.add_lineage_edge(w.b, w.node, w.node2, kind="consumed_by",
                                                                           at=now())),
    "lineage_edges": lambda s, w: (
        (s.lineage_edges(w.b, [w.node, w.node2], direction="upstream"),
         s.lineage_edges(w.b, [w.node, w.node2], direction="downstream")) == ([], [])
        or pytest.fail("found another tenant's edges")),
    # deployments
    "create_deployment": _creates_a_deployment_of_its_own,
    "get_deployment": lambda s, w: _not_found(lambda: s.get_deployment(w.b, w.deployment)),
    "list_deployments": lambda s, w: ((s.list_deployments(w.b).items, s.list_deployments(w.b, model=w.model).items)
                                      == ([], []) or pytest.fail("listed another tenant's deployments")),
    "update_deployment": lambda s, w: _not_found(lambda: s.update_deployment(
        _deployment(w.b, w.deployment, now()), _change(w.b, w.deployment, now(), "updated"), revision=1)),
    "delete_deployment": lambda s, w: _not_found(lambda: s.delete_deployment(
        w.b, w.deployment, _change(w.b, w.deployment, now(), "deleted"))),
    "deployment_history": lambda s, w: s.deployment_history(w.b, w.deployment).items == [] or pytest.fail(
        "listed another tenant's deployment history"),
    # jobs
    "create_job": _cannot_take_a_job_id,
    "get_job": lambda s, w: _not_found(lambda: s.get_job(w.b, w.job_id)),
    "list_jobs": lambda s, w: s.list_jobs(w.b).items == [] or pytest.fail("listed another tenant's jobs"),
    "update_job": lambda s, w: _not_found(lambda: s.update_job(w.b, w.job_id, status="CANCELLED")),
    "claim_job": lambda s, w: _not_found(lambda: s.claim_job(w.b, w.job_id, Limits(), live_after=0, owner="mallory",
                                                             now=now())),
    # feature definitions
    "put_feature_definitions": _puts_its_own_definitions,
    "get_feature_definitions": lambda s, w: (_not_found(lambda: s.get_feature_definitions(w.b)),
                                             _not_found(lambda: s.get_feature_definitions(w.b, 1))),
    "latest_feature_definition_version": lambda s, w: s.latest_feature_definition_version(w.b) == 0 or pytest.fail(
        "counted another tenant's feature definitions"),
    "list_feature_definition_versions": lambda s, w: s.list_feature_definition_versions(w.b) == [] or pytest.fail(
        "listed another tenant's feature definitions"),
    "feature_audit": lambda s, w: ((s.feature_audit(w.b), s.feature_audit(w.b, name=w.view)) == ([], [])
                                   or pytest.fail("listed another tenant's feature audit")),
    "record_materialization": lambda s, w: s.record_materialization(w.b, w.view, start=0, end=99, rows=1, at=now()),
    "materializations": lambda s, w: ((s.materializations(w.b), s.materializations(w.b, w.view)) == ([], [])
                                      or pytest.fail("listed another tenant's materializations")),
    "claim_feature_alert": _claims_its_own_alert,
    # traces and assessments
    "start_trace": _starts_no_trace_in_anothers_experiment_nor_takes_its_id,
    "get_trace": lambda s, w: _not_found(lambda: s.get_trace(w.b, w.trace_id)),
    "get_traces": lambda s, w: s.get_traces(w.b, [w.trace_id]) == [] or pytest.fail("found another tenant's traces"),
    "search_traces": lambda s, w: (
        s.search_traces(w.b, [w.experiment_id], clauses=[TraceClause("tag", "mlflow.traceName", "=", "predict")]).items
        == [] or pytest.fail("listed another tenant's traces")),
    "delete_traces": lambda s, w: (
        (s.delete_traces(w.b, w.experiment_id, trace_ids=[w.trace_id]),
         s.delete_traces(w.b, w.experiment_id, max_request_time=now() + 1)) == ([], [])
        or pytest.fail("deleted another tenant's traces")),
    "set_trace_tags": lambda s, w: _not_found(lambda: s.set_trace_tags(w.b, w.trace_id, {"mlflow.traceName": "x"})),
    "delete_trace_tag": lambda s, w: _not_found(lambda: s.delete_trace_tag(w.b, w.trace_id, "mlflow.traceName")),
    "create_assessment": lambda s, w: _not_found(lambda: s.create_assessment(
        w.b, Assessment(f"a-{uuid.uuid4().hex}", w.trace_id, "planted", "feedback", overrides=w.assessment_id))),
    "get_assessment": lambda s, w: _not_found(lambda: s.get_assessment(w.b, w.trace_id, w.assessment_id)),
    "update_assessment": lambda s, w: _not_found(lambda: s.update_assessment(
        w.b, Assessment(w.assessment_id, w.trace_id, "renamed", "feedback", valid=False))),
    "delete_assessment": lambda s, w: _not_found(lambda: s.delete_assessment(w.b, w.trace_id, w.assessment_id)),
}
"""Per store method: the second tenant's call with the first tenant's ids, and what it must see."""


class TenantIsolationContract:
    """Override the ``store`` fixture to return a fresh, empty backend (the metadata kit does)."""

    def test_every_store_method_has_an_isolation_case(self):
        missing = [m for m in store_methods() if m not in CASES and m not in EVERY_TENANT_METHODS]
        assert not missing, (f"metadata methods without a tenant-isolation case in matih_lite/testing/tenancy.py "
                             f"(CASES, or EVERY_TENANT_METHODS with the reason): {', '.join(missing)}")

    def test_a_second_tenant_sees_nothing_of_the_first_through_any_method(self, store):
        methods = set(store_methods())
        features = "put_feature_definitions" in methods
        failures = []
        w = build_world(store, features)
        before = view_of_a(store, w, features)
        for i, method in enumerate(sorted(methods & set(CASES))):
            # A tenant of its own per case: what one case made, the next never lists.
            w.b = f"{w.b.rsplit('~', 1)[0]}~{i}"
            store.create_tenant(w.b, created_at=now())
            try:
                CASES[method](store, w)
            except BaseException as exc:  # collected: one report names every method that leaks
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failures.append(f"{method}: {type(exc).__name__}: {exc}")
                continue
            if view_of_a(store, w, features) != before:
                failures.append(f"{method}: the first tenant's records changed")
        assert not failures, "tenant isolation broken:\n  " + "\n  ".join(failures)
