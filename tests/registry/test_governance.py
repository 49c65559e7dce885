"""Registry governance, end to end over the lite backends: thresholds, approvals, archiving, rollback, audit."""

from __future__ import annotations

import textwrap

import pytest

from matih_lite.config import load_config
from matih_lite.contracts.registry import Approval
from matih_lite.errors import ConfigError, Conflict, Forbidden, GovernanceRefused, InvalidInput, NotFound
from matih_lite.hookspecs import hookimpl
from matih_lite.host import Host, get_plugin_manager
from matih_lite.identity import Principal
from matih_lite.registry import Registry, Transition
from matih_lite.registry.policy import parse_threshold, policy_for
from matih_lite.registry.signature import infer_signature
from matih_lite.tracking import Tracking

OWNER = Principal("default", "ann", ("editor",))
REQUESTER = Principal("default", "bob", ("editor",))
LEAD = Principal("default", "lena", ("lead",))
ADMIN = Principal("default", "root", ("admin",))
OUTSIDER = Principal("default", "otto", ("editor",))
STRANGER = Principal("other-tenant", "ann", ("admin",))

POLICY = """
[models.churn]
staging_requires = ["auc >= 0.85", "latency_ms <= 20"]
production_approvers = ["owner", "lead"]
"""


class Recorder:
    """A plugin that keeps every platform event."""

    def __init__(self) -> None:
        self.events = []

    @hookimpl
    def on_event(self, event):
        self.events.append(event)

    def types(self, prefix: str = "model.") -> list[str]:
        return [e.type for e in self.events if e.type.startswith(prefix)]


@pytest.fixture
def make_host(tmp_path):
    made = []

    def make(toml: str = POLICY, recorder: Recorder | None = None) -> Host:
        folder = tmp_path / f"platform{len(made)}"
        folder.mkdir()
        (folder / "matih.toml").write_text(textwrap.dedent(toml))
        config = load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")})
        plugins = get_plugin_manager(plugins=[("recorder", recorder)] if recorder else ())
        host = Host(config, plugins=plugins)
        made.append(host)
        return host

    yield make
    for host in made:
        host.close()


@pytest.fixture
def events():
    return Recorder()


@pytest.fixture
def host(make_host, events):
    return make_host(POLICY, events)


@pytest.fixture
def registry(host):
    return Registry(host)


def trained(host, tenant="default", **metrics) -> str:
    """A finished run with ``metrics`` and a model folder in its artifacts; returns its id."""
    tracking = Tracking(host)
    exp = tracking.get_or_create_experiment(tenant, "churn")
    run = tracking.create_run(tenant, exp.experiment_id, user_id="ann")
    tracking.log_batch(tenant, run.run_id, metrics=[{"key": k, "value": v} for k, v in metrics.items()],
                       tags={"matih.dataset.train": "s3://data/churn/2024-06.parquet",
                             "matih.dataset.eval": '{"uri": "s3://data/churn/eval.parquet", "version": "3"}'})
    tracking.log_artifact(tenant, run.run_id, "model/model.pkl", b"not really a pickle")
    tracking.end_run(tenant, run.run_id)
    return run.run_id


def good(host) -> str:
    return trained(host, auc=0.91, latency_ms=12.0)


def register(registry, host, run_id=None, who=OWNER, name="churn"):
    return registry.register_version(who, name, run_id=run_id or good(host), path="model", flavor="sklearn")


def staged(registry, host, who=OWNER):
    mv = register(registry, host, who=who)
    registry.promote(who, "churn", mv.version, "Staging", reason="good enough")
    return mv


# ---- Staging thresholds ---------------------------------------------------------------------------
def test_staging_below_threshold_is_refused_naming_each_unmet_threshold_with_its_value(registry, host):
    mv = register(registry, host, trained(host, auc=0.80))
    with pytest.raises(GovernanceRefused) as info:
        registry.promote(OWNER, "churn", mv.version, "Staging")
    message = info.value.message
    assert "auc >= 0.85 (actual: 0.8)" in message and "latency_ms <= 20 (actual: missing)" in message
    assert info.value.status == 422
    unmet = info.value.detail["unmet"]
    assert [(u["rule"], u["actual"]) for u in unmet] == [("auc >= 0.85", 0.8), ("latency_ms <= 20", "missing")]
    assert registry.get_version(OWNER, "churn", mv.version).stage == "Development"
    refused = registry.audit_log(OWNER, "churn").items[-1]
    assert (refused.action, refused.to_stage, refused.detail["unmet"][0]["rule"]) == \
        ("transition.refused", "Staging", "auc >= 0.85")


def test_one_unmet_threshold_is_enough_to_refuse(registry, host):
    mv = register(registry, host, trained(host, auc=0.95, latency_ms=35.0))
    with pytest.raises(GovernanceRefused, match=r"1 of 2 thresholds unmet: latency_ms <= 20 \(actual: 35\)"):
        registry.promote(OWNER, "churn", mv.version, "Staging")


def test_staging_above_threshold_passes_and_development_is_free_both_ways(registry, host):
    mv = register(registry, host)
    t = registry.promote(OWNER, "churn", mv.version, "staging", reason="meets the bar")
    assert isinstance(t, Transition)
    assert (t.from_stage, t.to_stage, t.actor, t.reason) == ("Development", "Staging", "ann", "meets the bar")
    assert registry.get_version(OWNER, "churn", mv.version).stage == "Staging"
    registry.promote(OWNER, "churn", mv.version, "Development")
    with pytest.raises(Conflict, match="already in Development"):
        registry.promote(OWNER, "churn", mv.version, "Development")
    registry.promote(OWNER, "churn", mv.version, "Archived")
    assert registry.get_version(OWNER, "churn", mv.version).stage == "Archived"


def test_a_version_whose_run_lacks_the_metric_has_nothing_to_pass(registry, host):
    mv = register(registry, host, run_id=trained(host, latency_ms=12.0))
    with pytest.raises(GovernanceRefused, match="auc >= 0.85 \\(actual: missing\\)"):
        registry.promote(OWNER, "churn", mv.version, "Staging")


@pytest.mark.parametrize("source", [
    "s3://bucket/models/churn", "file:///etc/passwd", "../acme/1/r/artifacts/model", "acme/1/r/artifacts/model",
    "mlflow-artifacts:/1/models/m-0123456789abcdef0123456789abcdef/artifacts"])
def test_a_source_outside_the_tenants_runs_and_logged_models_is_refused(registry, source):
    with pytest.raises(InvalidInput, match="is not a run, logged model or artifact of tenant 'default'"):
        registry.register_version(OWNER, "churn", source)


def test_another_tenants_run_is_no_source(registry, host):
    theirs = trained(host, tenant="acme", auc=0.9)
    artifact_uri = Tracking(host).get_run("acme", theirs).artifact_uri
    for source in (f"runs:/{theirs}/model", f"{artifact_uri}/model"):
        with pytest.raises(NotFound):
            registry.register_version(OWNER, "churn", source)
    with pytest.raises(NotFound):
        registry.register_version(OWNER, "churn", f"{artifact_uri}/model", run_id=theirs)
    mine = good(host)
    resolved = f"{Tracking(host).get_run('default', mine).artifact_uri}/model"  # as the MLflow client sends it
    mv = registry.register_version(OWNER, "churn", resolved)
    assert mv.run_id == mine and mv.storage_location == resolved
    with pytest.raises(InvalidInput, match="is not a run"):  # a path out of the run's folder
        registry.register_version(OWNER, "churn", f"{resolved}/../../../{theirs}/artifacts/model", run_id=mine)


def test_a_conversion_kept_in_the_registrys_own_folder_of_the_tenant_is_a_source(registry, host):
    host.artifacts.put("default/_converted/churn/onnx-1/model.onnx", b"onnx bytes")
    mv = registry.register_version(OWNER, "churn", "mlflow-artifacts:/_converted/churn/onnx-1", flavor="onnx")
    assert mv.storage_location == "mlflow-artifacts:/_converted/churn/onnx-1"
    for missing in ("mlflow-artifacts:/_converted/churn/none", "mlflow-artifacts:/_converted/../acme/x"):
        with pytest.raises(InvalidInput, match="is not a run"):
            registry.register_version(OWNER, "churn", missing)


def test_archive_existing_staging_versions(registry, host):
    a = staged(registry, host)
    b = register(registry, host)
    t = registry.promote(OWNER, "churn", b.version, "Staging", archive_existing=True)
    assert t.archived == [a.version]
    assert registry.get_version(OWNER, "churn", a.version).stage == "Archived"


# ---- Production approvals -------------------------------------------------------------------------
def test_production_waits_for_an_approval_by_the_owner(registry, host):
    mv = staged(registry, host)
    pending = registry.promote(REQUESTER, "churn", mv.version, "Production", reason="Q3 launch")
    assert isinstance(pending, Approval)
    assert (pending.status, pending.requested_by, pending.version, pending.reason) == \
        ("pending", "bob", mv.version, "Q3 launch")
    assert registry.get_version(OWNER, "churn", mv.version).stage == "Staging"
    with pytest.raises(Conflict, match="already has a pending"):
        registry.promote(REQUESTER, "churn", mv.version, "Production")
    with pytest.raises(Forbidden, match="approvers: the model owner \\(ann\\), role lead"):
        registry.approve(OUTSIDER, pending.approval_id, comment="lgtm")
    done = registry.approve(OWNER, pending.approval_id, comment="numbers look right")
    assert (done.status, done.decided_by, done.comment) == ("approved", "ann", "numbers look right")
    assert registry.get_version(OWNER, "churn", mv.version).stage == "Production"
    with pytest.raises(Conflict, match="already approved"):
        registry.approve(LEAD, pending.approval_id)


def test_a_lead_may_approve_too(registry, host):
    mv = staged(registry, host)
    pending = registry.promote(OWNER, "churn", mv.version, "Production")
    assert registry.approve(LEAD, pending.approval_id).decided_by == "lena"
    assert registry.get_version(OWNER, "churn", mv.version).stage == "Production"


def test_the_requester_cannot_approve_their_own_request_even_as_owner_or_admin(registry, host):
    mv = staged(registry, host)
    own = registry.promote(OWNER, "churn", mv.version, "Production")
    with pytest.raises(Forbidden, match="you requested this promotion"):
        registry.approve(OWNER, own.approval_id)
    registry.reject(OWNER, own.approval_id, comment="withdrawn")  # the requester may withdraw it
    by_admin = registry.promote(ADMIN, "churn", mv.version, "Production")
    with pytest.raises(Forbidden):
        registry.approve(ADMIN, by_admin.approval_id)
    assert registry.approve(OWNER, by_admin.approval_id).status == "approved"


def test_rejection_needs_a_comment_and_leaves_the_version_in_staging(registry, host):
    mv = staged(registry, host)
    pending = registry.promote(REQUESTER, "churn", mv.version, "Production")
    with pytest.raises(InvalidInput, match="comment"):
        registry.reject(LEAD, pending.approval_id, comment=" ")
    with pytest.raises(Forbidden):
        registry.reject(OUTSIDER, pending.approval_id, comment="no")
    done = registry.reject(LEAD, pending.approval_id, comment="drift on the June data")
    assert (done.status, done.comment) == ("rejected", "drift on the June data")
    assert registry.get_version(OWNER, "churn", mv.version).stage == "Staging"
    assert registry.list_approvals(OWNER, status="pending").items == []


def test_production_takes_a_version_from_staging(registry, host):
    mv = register(registry, host)
    with pytest.raises(GovernanceRefused, match="promote it to Staging first"):
        registry.promote(OWNER, "churn", mv.version, "Production")


def test_approval_after_the_version_left_staging_is_refused(registry, host):
    mv = staged(registry, host)
    pending = registry.promote(REQUESTER, "churn", mv.version, "Production")
    registry.promote(OWNER, "churn", mv.version, "Development")
    with pytest.raises(Conflict, match="no longer in Staging"):
        registry.approve(LEAD, pending.approval_id)
    assert registry.get_version(OWNER, "churn", mv.version).stage == "Development"


def test_an_empty_approver_list_makes_production_immediate(make_host):
    host = make_host('[models."*"]\nproduction_approvers = []\n')
    registry = Registry(host)
    mv = register(registry, host)
    registry.promote(OWNER, "churn", mv.version, "Staging")
    t = registry.promote(OWNER, "churn", mv.version, "Production")
    assert isinstance(t, Transition) and t.to_stage == "Production"


# ---- archiving and rollback -----------------------------------------------------------------------
def _to_production(registry, host) -> int:
    mv = staged(registry, host)
    pending = registry.promote(REQUESTER, "churn", mv.version, "Production")
    registry.approve(LEAD, pending.approval_id, comment="ok")
    return mv.version


def test_previous_production_version_ends_archived_and_rollback_restores_it(registry, host):
    v1 = _to_production(registry, host)
    v2 = _to_production(registry, host)
    stage = lambda v: registry.get_version(OWNER, "churn", v).stage  # noqa: E731
    assert (stage(v1), stage(v2)) == ("Archived", "Production")
    with pytest.raises(Forbidden):
        registry.rollback(OUTSIDER, "churn")
    back = registry.rollback(OWNER, "churn", reason="v2 mislabels new customers")
    assert (back.version, back.from_stage, back.to_stage, back.archived) == (v1, "Archived", "Production", [v2])
    assert (stage(v1), stage(v2)) == ("Production", "Archived")
    again = registry.rollback(LEAD, "churn")  # undoes the rollback
    assert (again.version, again.archived) == (v2, [v1])


def test_rollback_without_history_is_a_conflict(registry, host):
    staged(registry, host)
    with pytest.raises(Conflict, match="nothing to roll back to"):
        registry.rollback(OWNER, "churn")


def test_a_production_version_cannot_be_deleted(registry, host):
    v = _to_production(registry, host)
    with pytest.raises(Conflict, match="archive it"):
        registry.delete_version(OWNER, "churn", v)
    with pytest.raises(Conflict, match="archive it"):
        registry.delete_model(OWNER, "churn")


# ---- audit log and events -------------------------------------------------------------------------
def test_audit_log_shows_every_step(registry, host):
    v1 = _to_production(registry, host)
    low = register(registry, host, trained(host, auc=0.5, latency_ms=3.0))
    with pytest.raises(GovernanceRefused):
        registry.promote(OWNER, "churn", low.version, "Staging")
    v2 = _to_production(registry, host)
    registry.rollback(OWNER, "churn", reason="bad canary")
    registry.set_alias(OWNER, "churn", "champion", v1)
    log = registry.audit_log(OWNER, "churn").items
    steps = [(e.action, e.actor, e.version, e.from_stage, e.to_stage) for e in log]
    assert steps == [
        ("model.created", "ann", None, None, None),
        ("version.registered", "ann", v1, None, "Development"),
        ("version.transitioned", "ann", v1, "Development", "Staging"),
        ("approval.requested", "bob", v1, "Staging", "Production"),
        ("approval.approved", "lena", v1, "Staging", "Production"),
        ("version.transitioned", "lena", v1, "Staging", "Production"),
        ("version.registered", "ann", low.version, None, "Development"),
        ("transition.refused", "ann", low.version, "Development", "Staging"),
        ("version.registered", "ann", v2, None, "Development"),
        ("version.transitioned", "ann", v2, "Development", "Staging"),
        ("approval.requested", "bob", v2, "Staging", "Production"),
        ("approval.approved", "lena", v2, "Staging", "Production"),
        ("version.transitioned", "lena", v2, "Staging", "Production"),
        ("version.transitioned", "lena", v1, "Production", "Archived"),
        ("model.rolled_back", "ann", v1, "Archived", "Production"),
        ("version.transitioned", "ann", v1, "Archived", "Production"),
        ("version.transitioned", "ann", v2, "Production", "Archived"),
        ("alias.set", "ann", v1, None, None),
    ]
    assert all(e.timestamp > 0 for e in log) and log[-4].reason == "bad canary"
    approved = log[4]
    assert approved.reason == "ok" and approved.approval_id == log[3].approval_id
    assert log[13].reason == f"replaced by version {v2} in Production"


def test_every_transition_and_decision_is_an_event(registry, host, events):
    v1 = _to_production(registry, host)
    _to_production(registry, host)
    registry.rollback(OWNER, "churn")
    types = events.types()
    assert types.count("model.approval.requested") == 2 and types.count("model.approval.decided") == 2
    assert types.count("model.rolled_back") == 1
    moves = [(e.data["version"], e.data["from"], e.data["to"]) for e in events.events
             if e.type == "model.version.transitioned"]
    assert moves[-2:] == [(v1, "Archived", "Production"), (2, "Production", "Archived")]
    decided = next(e for e in events.events if e.type == "model.approval.decided")
    assert decided.data["status"] == "approved" and decided.data["decided_by"] == "lena"
    assert decided.tenant == "default" and decided.subject == f"churn/{v1}"
    assert "model.version.registered" in types and "model.created" in types


# ---- registration -----------------------------------------------------------------------------------
def test_a_version_records_its_run_flavor_signature_and_training_data(registry, host):
    pd = pytest.importorskip("pandas")
    run_id = good(host)
    example = pd.DataFrame({"age": [31, 45], "plan": ["pro", "free"], "spend": [9.5, 0.0], "active": [True, False]})
    mv = registry.register_version(OWNER, "churn", f"runs:/{run_id}/model", input_example=example,
                                   output_example=[0.1, 0.9], description="first", tags={"team": "growth"})
    assert (mv.version, mv.run_id, mv.stage, mv.status, mv.created_by) == (1, run_id, "Development", "READY", "ann")
    assert mv.storage_location.endswith(f"/{run_id}/artifacts/model")
    assert mv.signature == {"inputs": [{"name": "age", "type": "long"}, {"name": "plan", "type": "string"},
                                       {"name": "spend", "type": "double"}, {"name": "active", "type": "boolean"}],
                            "outputs": [{"name": "0", "type": "double"}]}
    assert mv.training_data == [{"name": "eval", "uri": "s3://data/churn/eval.parquet", "version": "3"},
                                {"name": "train", "uri": "s3://data/churn/2024-06.parquet"}]
    model = registry.get_model(OWNER, "churn")
    assert model.owner == "ann" and model.latest_version == 1
    assert registry.register_version(REQUESTER, "churn", f"runs:/{run_id}/model").version == 2
    assert registry.get_model(OWNER, "churn").owner == "ann"


def test_register_refuses_what_does_not_exist(registry, host):
    run_id = good(host)
    with pytest.raises(NotFound, match="no artifacts"):
        registry.register_version(OWNER, "churn", f"runs:/{run_id}/nothing-here")
    with pytest.raises(NotFound):
        registry.register_version(OWNER, "churn", "runs:/0123456789abcdef/model")
    with pytest.raises(InvalidInput):
        registry.register_version(OWNER, "bad/name", f"runs:/{run_id}/model")
    with pytest.raises(InvalidInput):
        registry.register_version(OWNER, "churn")
    with pytest.raises(NotFound):
        registry.register_version(OWNER, "churn", "models:/m-0123456789abcdef0123456789abcdef")


def test_versions_are_immutable_but_for_description_tags_stage_and_aliases(registry, host):
    mv = register(registry, host)
    changed = registry.update_version(OWNER, "churn", mv.version, description="retrained", tags={"k": "v"})
    assert (changed.description, changed.tags, changed.source) == ("retrained", {"k": "v"}, mv.source)
    assert not hasattr(registry, "update_source")
    registry.set_alias(OWNER, "churn", "champion", mv.version)
    assert registry.get_version_by_alias(OWNER, "churn", "champion").version == mv.version
    for bad in ("latest", "v1", "has space", ""):
        with pytest.raises(InvalidInput):
            registry.set_alias(OWNER, "churn", bad, mv.version)
    registry.delete_alias(OWNER, "churn", "champion")
    with pytest.raises(NotFound):
        registry.get_version_by_alias(OWNER, "churn", "champion")


def test_another_tenant_sees_and_decides_nothing(registry, host):
    mv = staged(registry, host)
    pending = registry.promote(REQUESTER, "churn", mv.version, "Production")
    with pytest.raises(NotFound):
        registry.get_model(STRANGER, "churn")
    with pytest.raises(NotFound):
        registry.approve(STRANGER, pending.approval_id)
    with pytest.raises(NotFound):
        registry.promote(STRANGER, "churn", mv.version, "Archived")
    assert registry.list_models(STRANGER).items == [] and registry.list_approvals(STRANGER).items == []
    with pytest.raises(NotFound):
        registry.audit_log(STRANGER, "churn")


# ---- policy -----------------------------------------------------------------------------------------
def test_rules_parse_safely():
    assert str(parse_threshold("auc>=0.85", "k")) == "auc >= 0.85"
    rule = parse_threshold("  latency_ms <  2e1 ", "k")
    assert (rule.metric, rule.op, rule.value) == ("latency_ms", "<", 20.0)
    assert parse_threshold("val/auc != -1", "k").holds(0.5)
    assert not parse_threshold("auc >= 0.85", "k").holds(float("nan"))
    for bad in ("auc >= high", "auc => 0.85", "__import__('os') >= 1", "auc >= 1; drop", "auc", ">= 1",
                "auc >= nan", "auc >= inf", 0.85):
        with pytest.raises(ConfigError) as info:
            parse_threshold(bad, "models.churn.staging_requires[0]")
        assert info.value.key == "models.churn.staging_requires[0]"


def test_policy_merges_model_over_defaults_and_names_bad_keys():
    models = {"*": {"staging_requires": ["auc >= 0.8"], "production_approvers": ["lead"]},
              "churn": {"staging_requires": ["auc >= 0.9"]}}
    churn = policy_for(models, "churn")
    assert [str(t) for t in churn.staging_requires] == ["auc >= 0.9"]
    assert churn.production_approvers == ("lead",)
    assert churn.sources == {"staging_requires": "models.churn", "production_approvers": 'models."*"'}
    assert policy_for({}, "x").production_approvers == ("owner", "lead")
    with pytest.raises(ConfigError) as info:
        policy_for({"churn": {"staging_requires": ["auc >= 0.9", "loss <== 1"]}}, "churn")
    assert info.value.key == "models.churn.staging_requires[1]"
    with pytest.raises(ConfigError) as info:
        policy_for({"*": {"production_approvers": ["owner", "no spaces allowed"]}}, "churn")
    assert info.value.key == 'models."*".production_approvers[1]'
    with pytest.raises(ConfigError):
        policy_for({"churn": {"staging_requires": "auc >= 0.9"}}, "churn")


def test_a_bad_rule_in_matih_toml_surfaces_as_a_config_error_with_its_key(make_host):
    host = make_host('[models.churn]\nstaging_requires = ["auc >= lots"]\n')
    registry = Registry(host)
    mv = register(registry, host)
    with pytest.raises(ConfigError) as info:
        registry.promote(OWNER, "churn", mv.version, "Staging")
    assert info.value.key == "models.churn.staging_requires[0]" and "auc >= lots" in info.value.message


def test_user_and_role_approvers():
    policy = policy_for({"churn": {"production_approvers": ["user:carol", "role:owner"]}}, "churn")
    assert policy.may_approve(Principal("t", "carol", ()), owner="ann")
    assert policy.may_approve(Principal("t", "dan", ("owner",)), owner="ann")
    assert not policy.may_approve(Principal("t", "ann", ("editor",)), owner="ann")
    assert policy.may_approve(Principal("t", "x", ("admin",)), owner="ann")


# ---- signatures ---------------------------------------------------------------------------------------
def test_signature_inference_from_plain_json_numpy_and_records():
    np = pytest.importorskip("numpy")
    assert infer_signature({"age": [1, 2], "ratio": [0.5, 1]})["inputs"] == [
        {"name": "age", "type": "long"}, {"name": "ratio", "type": "double"}]
    assert infer_signature([{"a": 1, "b": "x"}, {"a": None, "c": b"z"}])["inputs"] == [
        {"name": "a", "type": "long"}, {"name": "b", "type": "string"}, {"name": "c", "type": "binary"}]
    assert infer_signature(np.zeros((2, 3), dtype=np.float32))["inputs"] == [
        {"name": str(i), "type": "float"} for i in range(3)]
    assert infer_signature([[1, "a"], [2, "b"]])["inputs"] == [{"name": "0", "type": "long"},
                                                               {"name": "1", "type": "string"}]
    for bad in ({}, [], object()):
        with pytest.raises(InvalidInput):
            infer_signature(bad)
