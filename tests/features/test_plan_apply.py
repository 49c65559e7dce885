"""plan shows what apply would change; apply records versions in the metadata slot, all or nothing, audited."""

from __future__ import annotations

import pytest

from matih_lite.errors import Conflict, InvalidInput, NotFound, StoreError
from matih_lite.identity import Principal
from matih_lite.testing.features import CUSTOMER, T0

OTHER = Principal("other", "bob", ("admin",))


def test_plan_lists_every_object_added(platform):
    plan = platform.features.plan(platform.who)
    assert plan.base_version == 0
    assert [(c.action, c.kind, c.name) for c in plan.changes] == [
        ("added", "entities", "customer"), ("added", "sources", "customer_stats"),
        ("added", "feature_views", "customer_stats"), ("added", "services", "churn_v1")]


def test_apply_records_a_version_with_an_audit_entry_per_change(platform):
    result = platform.apply()
    assert (result.version, result.applied, len(result.changes)) == (1, True, 4)
    stored = platform.host.metadata.get_feature_definitions(platform.who.tenant)
    assert (stored.version, stored.actor, stored.digest) == (1, "local", result.digest)
    audit = platform.features.audit(platform.who.tenant)
    assert sorted((e.change.action, e.change.name) for e in audit) == [
        ("added", "churn_v1"), ("added", "customer"), ("added", "customer_stats"), ("added", "customer_stats")]
    assert {e.version for e in audit} == {1}


def test_a_change_shows_its_diff_and_applying_again_changes_nothing(applied):
    applied.write("customer.toml", CUSTOMER.replace('ttl = "7d"', 'ttl = "14d"').replace(
        "\n[feature_services.churn_v1]\nfeatures = [\"customer_stats:conv_rate\", \"customer_stats:trips\"]\n", ""))
    plan = applied.features.plan(applied.who)
    assert [(c.action, c.name, c.diff) for c in plan.changes] == [
        ("changed", "customer_stats", {"ttl_seconds": [604800, 1209600]}), ("removed", "churn_v1", {})]
    assert applied.apply().version == 2
    again = applied.apply()
    assert (again.version, again.applied, again.changes) == (2, False, ())
    assert [e.change.action for e in applied.features.audit(applied.who.tenant, "churn_v1")] == ["removed", "added"]
    assert applied.features.definitions(applied.who.tenant).feature_views["customer_stats"].ttl_seconds == 1209600


def test_bad_definitions_change_nothing(applied):
    applied.write("customer.toml", CUSTOMER.replace('ttl = "7d"', 'ttl = "7 days"'))
    with pytest.raises(InvalidInput, match="customer.toml: feature_views.customer_stats.ttl"):
        applied.apply()
    assert applied.host.metadata.latest_feature_definition_version(applied.who.tenant) == 1
    assert len(applied.features.audit(applied.who.tenant)) == 4


def test_a_backend_that_fails_to_apply_leaves_the_applied_version(applied, monkeypatch):
    applied.write("more.toml", '[feature_services.more]\nfeatures = ["customer_stats:trips"]\n')
    backend = applied.host.backend("features")

    def broken(definitions, previous):
        raise StoreError("the online store is down")

    monkeypatch.setattr(backend, "apply", broken)
    with pytest.raises(StoreError):
        applied.apply()
    assert applied.host.metadata.latest_feature_definition_version(applied.who.tenant) == 1


def test_a_failed_recording_sets_the_backend_back(applied, monkeypatch):
    applied.write("customer.toml", CUSTOMER.replace("customer_stats]\nentities", "customer_stats]\nonline = false\n"
                                                                                    "entities"))
    calls = []
    backend = applied.host.backend("features")
    real = backend.apply
    monkeypatch.setattr(backend, "apply", lambda d, p: (calls.append(d.feature_views["customer_stats"].online),
                                                        real(d, p)))
    monkeypatch.setattr(applied.host.metadata, "put_feature_definitions",
                        lambda *a, **k: (_ for _ in ()).throw(StoreError("disk full")))
    with pytest.raises(StoreError):
        applied.apply()
    assert calls == [False, True]  # set up for the new definitions, then back to the applied ones


def test_expected_version_guards_against_a_concurrent_apply(applied):
    applied.write("more.toml", '[feature_services.more]\nfeatures = ["customer_stats:trips"]\n')
    with pytest.raises(Conflict):
        applied.features.apply(applied.who, expected_version=0)
    assert applied.features.apply(applied.who, expected_version=1).version == 2


def test_another_tenant_sees_none_of_it(applied):
    with pytest.raises(NotFound, match="features apply"):
        applied.features.definitions(OTHER.tenant)
    assert applied.features.plan(OTHER).base_version == 0
    assert applied.features.audit(OTHER.tenant) == []


def test_tenants_are_separate_projects_online(applied):
    applied.features.apply(OTHER)
    applied.features.materialize(applied.who, T0.replace(year=2024), T0)
    mine = applied.features.online(applied.who, {"customer_id": [1]}, ["customer_stats:trips"], now=0)
    theirs = applied.features.online(OTHER, {"customer_id": [1]}, ["customer_stats:trips"], now=0)
    assert mine.values["trips"] == [2] and theirs.statuses["trips"] == ["NOT_FOUND"]


def test_definitions_changed_by_another_process_are_noticed(applied, monkeypatch):
    from matih_lite.features import service
    from matih_lite.features.service import Features

    other_host = type(applied.host).open()
    try:
        applied.write("more.toml", '[feature_services.more]\nfeatures = ["customer_stats:trips"]\n')
        Features.of(other_host).apply(applied.who)
    finally:
        other_host.close()
    monkeypatch.setattr(service, "DEFINITIONS_RECHECK_S", 0.0)
    assert "more" in applied.features.definitions(applied.who.tenant).services
