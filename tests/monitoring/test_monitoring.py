"""Baselines, windows over the inference log, checks, and the actions they take."""

from __future__ import annotations

import json

import numpy as np
import pytest
from drift_helpers import (
    HOUR,
    T0,
    FakeCompute,
    MemoryNotifier,
    P,
    deploy,
    log_traffic,
    make_host,
    register_model,
    traffic,
    training_data,
)

from matih_lite.monitoring.schedule import DriftSchedule
from matih_lite.errors import ConfigError, NotFound
from matih_lite.monitoring import BASELINE_TAG, HEALTH_TAG, Monitoring, Profile
from matih_lite.registry import Registry
from matih_lite.serving.deployments import Deployments


@pytest.fixture
def monitored(host):
    """Model churn v1 with a baseline, deployed as ``churn``."""
    register_model(host)
    Monitoring(host).build_baseline(P, "churn", 1, training_data(), target="y", prediction="pred")
    deploy(host)
    return host


# ---- baselines ---------------------------------------------------------------------------------------
def test_baseline_is_stored_as_an_artifact_referenced_by_the_version(host):
    register_model(host)
    profile = Monitoring(host).build_baseline(P, "churn", 1, training_data(), target="y", prediction="pred")
    mv = Registry(host).get_version(P, "churn", 1)
    assert mv.tags[BASELINE_TAG] == "_drift/churn/v1/baseline.json"
    stored = Profile.from_json(host.artifacts.get(f"default/{mv.tags[BASELINE_TAG]}"))
    assert stored.to_dict() == profile.to_dict()
    assert set(stored.features) == {"age", "income", "plan"} and stored.kinds()["plan"] == "categorical"
    age = stored.features["age"]
    assert len(age.edges) > 900 and age.coarse_counts().size == 10  # 0.1 % quantile bins, deciles for PSI
    assert stored.features["plan"].categories == ("basic", "plus", "pro")
    assert stored.task == "classification" and stored.metrics["accuracy"] == pytest.approx(
        np.mean(training_data()["y"] == training_data()["pred"]))
    assert stored.prediction is not None and stored.rows == 20_000


def test_baseline_reads_parquet_and_tracks_null_rates(host, tmp_path):
    import duckdb

    register_model(host)
    path = tmp_path / "train.parquet"
    duckdb.sql("SELECT i::DOUBLE AS x, CASE WHEN i % 4 = 0 THEN NULL ELSE 'k' || (i % 3) END AS kind "
               "FROM range(1000) t(i)").write_parquet(str(path))
    profile = Monitoring(host).build_baseline(P, "churn", 1, str(path), predict=False)
    assert profile.features["kind"].null_rate == pytest.approx(0.25)
    assert profile.features["x"].complete and profile.features["x"].n == 1000


def test_baseline_runs_the_registered_model_for_predictions_and_metrics(host):
    import pickle

    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from matih_lite.tracking import Tracking

    data = training_data(3000)
    frame = pd.DataFrame({"age": data["age"], "income": data["income"], "plan": data["plan"]})
    model = LogisticRegression().fit(frame[["age", "income"]], data["y"])
    tracking = Tracking(host)
    run = tracking.create_run("default", tracking.get_or_create_experiment("default", "drift").experiment_id)
    # MLflow's sklearn layout, as the autologger writes it.
    tracking.log_artifact("default", run.run_id, "model/model.pkl", pickle.dumps(model))
    tracking.log_artifact("default", run.run_id, "model/MLmodel", (
        "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    model_path: model.pkl\n"
        "  sklearn:\n    pickled_model: model.pkl\n    serialization_format: pickle\n").encode())
    Registry(host).register_version(P, "churn", run_id=run.run_id, path="model", flavor="sklearn")
    profile = Monitoring(host).build_baseline(P, "churn", 1, frame.assign(y=data["y"]), target="y")
    assert profile.notes == [] and profile.prediction is not None
    want = np.mean(model.predict(frame[["age", "income"]]) == data["y"])
    assert profile.metrics["accuracy"] == pytest.approx(want)


def test_missing_baseline_names_the_command_that_builds_one(host):
    register_model(host)
    with pytest.raises(NotFound, match="matih-lite models baseline churn 1 --data"):
        Monitoring(host).baseline(P, "churn", 1)


# ---- checks ----------------------------------------------------------------------------------------------
def test_check_reports_feature_data_concept_and_performance_drift(monitored):
    log_traffic(monitored, traffic(5000, age_shift=6, plan_p=(0.2, 0.3, 0.5)), start=T0, end=T0 + HOUR)
    report = Monitoring(monitored).check(P, "churn", "1h", end=T0 + HOUR, act=False)
    assert report["rows"] == 5000 and report["window"] == "1h" and report["start"] == T0
    (v,) = report["versions"]
    names = [f["feature"] for f in v["features"]]
    assert names[:2] == ["age", "plan"] or names[:2] == ["plan", "age"]  # drifting features first
    by = {f["feature"]: f for f in v["features"]}
    assert by["age"]["drifted"] and by["age"]["test"] == "wasserstein" and by["plan"]["drifted"]
    assert not by["income"]["drifted"]
    assert v["data_drift"] == {"drifted": 2, "tested": 3, "share": pytest.approx(2 / 3), "threshold": 0.5,
                               "detected": True, "drifted_features": names[:2]}
    assert v["concept_drift"]["test"] == "jensen_shannon" and v["concept_drift"]["drifted"]
    perf = v["performance"]
    assert perf["labelled"] == 5000 and perf["metric"] == "accuracy" and not perf["detected"]
    assert v["status"] == "drifting"


def test_no_drift_is_healthy(monitored):
    log_traffic(monitored, traffic(3000, seed=5), start=T0, end=T0 + HOUR)
    report = Monitoring(monitored).check(P, "churn", "1h", end=T0 + HOUR, act=False)
    assert report["status"] == "healthy"
    assert not any(f["drifted"] for f in report["versions"][0]["features"])


def test_small_windows_use_p_value_tests_and_are_not_acted_on_below_min_rows(monitored):
    log_traffic(monitored, traffic(60, age_shift=15), start=T0, end=T0 + HOUR)
    report = Monitoring(monitored).check(P, "churn", "1h", end=T0 + HOUR)
    (v,) = report["versions"]
    by = {f["feature"]: f for f in v["features"]}
    assert by["age"]["test"] == "ks" and by["age"]["p_value"] is not None and by["plan"]["test"] == "chi2"
    assert v["status"] == "unknown" and "min_rows" in v["notes"][0]
    assert report["actions"] == [] and MemoryNotifier.sent == []


def test_per_feature_tests_and_thresholds_come_from_matih_toml(hermetic):
    host = make_host(hermetic, '[notifiers.memory]\n[drift]\nthresholds = { wasserstein = 0.9 }\n'
                               '[drift.features.plan]\ntest = "psi"\nthreshold = 0.01\n[drift.features.income]\n'
                               'ignore = true\n')
    register_model(host)
    Monitoring(host).build_baseline(P, "churn", 1, training_data(), target="y", prediction="pred")
    deploy(host)
    log_traffic(host, traffic(3000, age_shift=6, plan_p=(0.45, 0.3, 0.25)), start=T0, end=T0 + HOUR)
    by = {f["feature"]: f for f in Monitoring(host).check(P, "churn", "1h", end=T0 + HOUR, act=False)
          ["versions"][0]["features"]}
    assert set(by) == {"age", "plan"}
    assert by["age"]["threshold"] == 0.9 and not by["age"]["drifted"]
    assert by["plan"]["test"] == "psi" and by["plan"]["threshold"] == 0.01 and by["plan"]["drifted"]
    host.close()


def test_bad_drift_settings_name_the_key(hermetic):
    host = make_host(hermetic, "[drift]\ndrift_share = 2\n")
    with pytest.raises(ConfigError, match="drift.drift_share"):
        Monitoring(host).settings()
    host2 = make_host(hermetic, "[drift]\nwindow = ['1h']\n")
    with pytest.raises(ConfigError, match=r"drift\.window: unknown key; did you mean 'windows'\?"):
        Monitoring(host2).settings()
    host.close()
    host2.close()


def test_a_version_without_baseline_is_reported_with_the_fix(host):
    register_model(host)
    deploy(host)
    log_traffic(host, traffic(500), start=T0, end=T0 + HOUR)
    (v,) = Monitoring(host).check(P, "churn", "1h", end=T0 + HOUR)["versions"]
    assert v["status"] == "unknown" and "models baseline" in v["notes"][0]


# ---- actions -------------------------------------------------------------------------------------------------
def test_drift_alerts_through_the_notifiers_once_per_model_feature_and_window(monitored):
    log_traffic(monitored, traffic(4000, age_shift=6), start=T0, end=T0 + HOUR)
    monitoring = Monitoring(monitored)
    first = monitoring.check(P, "churn", "1h", end=T0 + HOUR)
    assert [a["action"] for a in first["actions"]] == ["alert", "health"]
    (alert,) = MemoryNotifier.sent
    assert alert["type"] == "drift.detected" and alert["model"] == "churn" and alert["version"] == 1
    assert [f["feature"] for f in alert["features"]] == ["age"] and "feature" in alert["signals"]
    again = monitoring.check(P, "churn", "1h", end=T0 + HOUR - 60_000)  # same hour: nothing new to say
    assert again["actions"][0] == {"action": "alert", "sent": False, "reason": "already alerted for this window"}
    assert len(MemoryNotifier.sent) == 1
    monitoring.check(P, "churn", "1h", end=T0 + HOUR + HOUR // 2)  # ending in the next hour: another window
    assert len(MemoryNotifier.sent) == 2


def test_health_is_annotated_on_the_version_and_shown_by_its_card(monitored):
    from matih_lite.registry.cards import ModelCards

    log_traffic(monitored, traffic(4000, age_shift=6, plan_p=(0.2, 0.3, 0.5)), start=T0, end=T0 + HOUR)
    Monitoring(monitored).check(P, "churn", "1h", end=T0 + HOUR)
    mv = Registry(monitored).get_version(P, "churn", 1)
    assert mv.tags[HEALTH_TAG] == "drifting"
    detail = json.loads(mv.tags["matih.health.detail"])
    assert detail["drifted_features"][:2] and detail["window"] == "1h" and detail["deployment"] == "churn"
    card = ModelCards(monitored).card(P, "churn", 1)
    assert card["model"]["tags"][HEALTH_TAG] == "drifting"


def test_retraining_without_a_compute_backend_is_recorded_not_attempted(hermetic):
    host = make_host(hermetic, "[notifiers.memory]\n[drift]\nretrain = true\n[models.churn]\n"
                               "retrain_spec = 'train.json'\n")
    register_model(host)
    Monitoring(host).build_baseline(P, "churn", 1, training_data(), target="y", prediction="pred")
    deploy(host)
    log_traffic(host, traffic(4000, age_shift=6, plan_p=(0.2, 0.3, 0.5)), start=T0, end=T0 + HOUR)
    actions = Monitoring(host).check(P, "churn", "1h", end=T0 + HOUR)["actions"]
    (retrain,) = [a for a in actions if a["action"] == "retrain"]
    if host.active("compute") is None:
        assert not retrain["submitted"] and "no compute backend" in retrain["reason"]
    else:  # the lite compute backend is installed: then it is the missing spec file that stops it
        assert not retrain["submitted"] and "train.json" in retrain["reason"]
    host.close()


def test_retraining_submits_the_models_job_spec_through_the_compute_slot(hermetic):
    (hermetic / "train.json").write_text(json.dumps({"entrypoint": "python train.py", "resources": {"cpu": 2}}))
    host = make_host(hermetic, "[notifiers.memory]\n[profiles.lite]\ncompute = { backend = 'fake' }\n[drift]\n"
                               "retrain = true\n[models.churn]\nretrain_spec = 'train.json'\n")
    register_model(host)
    Monitoring(host).build_baseline(P, "churn", 1, training_data(), target="y", prediction="pred")
    deploy(host)
    log_traffic(host, traffic(4000, age_shift=6, plan_p=(0.2, 0.3, 0.5)), start=T0, end=T0 + HOUR)
    monitoring = Monitoring(host)
    actions = monitoring.check(P, "churn", "1h", end=T0 + HOUR)["actions"]
    (retrain,) = [a for a in actions if a["action"] == "retrain"]
    assert retrain == {"action": "retrain", "version": 1, "submitted": True, "job_id": "job-1"}
    (job,) = host.backend("compute").jobs
    assert job["entrypoint"] == "python train.py" and job["trigger"]["model"] == "churn"
    assert "data" in job["trigger"]["signals"]
    again = monitoring.check(P, "churn", "1h", end=T0 + HOUR + HOUR // 2)["actions"]  # within the cooldown
    assert not [a for a in again if a["action"] == "retrain"][0]["submitted"]
    assert isinstance(host.backend("compute"), FakeCompute) and len(host.backend("compute").jobs) == 1
    host.close()


def test_performance_drift_rolls_the_deployment_back(hermetic):
    host = make_host(hermetic, "[notifiers.memory]\n[canary]\ntick_seconds = 0\n[drift]\nrollback = true\n"
                               "min_labels = 50\n")
    register_model(host, versions=2)
    monitoring = Monitoring(host)
    for version in (1, 2):
        monitoring.build_baseline(P, "churn", version, training_data(), target="y", prediction="pred")
    deploy(host, version=1)
    deploy(host, version=2)  # v2 replaces v1; the history remembers v1
    log_traffic(host, traffic(2000), start=T0, end=T0 + HOUR, version=2, flip_labels=True)
    report = monitoring.check(P, "churn", "1h", end=T0 + HOUR)
    (v,) = report["versions"]
    assert v["status"] == "degraded" and v["performance"]["detected"]
    assert v["performance"]["metrics"]["accuracy"] < 0.5 < v["performance"]["baseline"]["accuracy"]
    (rollback,) = [a for a in report["actions"] if a["action"] == "rollback"]
    assert rollback["done"] and rollback["routes"][0]["version"] == 1
    d = Deployments(host).get(P, "churn")
    assert [(r.version, r.weight) for r in d.routes] == [(1, 100.0)]
    assert "performance drift" in Deployments(host).history(P, "churn").items[-1].reason
    assert MemoryNotifier.sent[0]["severity"] == "critical"
    host.close()


# ---- the scheduler -----------------------------------------------------------------------------------------
def test_scheduler_checks_tumbling_windows_and_merges_hours_into_the_longer_window(hermetic):
    host = make_host(hermetic, "[notifiers.memory]\n[drift]\nwindows = ['1h', '4h']\ngrace = '1m'\n")
    register_model(host)
    Monitoring(host).build_baseline(P, "churn", 1, training_data(), target="y", prediction="pred")
    deploy(host)
    for hour in range(4):
        log_traffic(host, traffic(1500, seed=hour, age_shift=3 * hour), start=T0 + hour * HOUR,
                    end=T0 + (hour + 1) * HOUR)
    schedule = DriftSchedule(host)
    reads = []
    real = schedule.monitoring.read_window
    schedule.monitoring.read_window = lambda *a: reads.append(a[2:]) or real(*a)
    for hour in range(1, 5):
        reports = schedule.run_due(T0 + hour * HOUR + 2 * 60_000)
        assert [r["window"] for r in reports][0] == "1h"
    assert [r["window"] for r in reports] == ["1h", "4h"]
    # Each hour was read once; the 4h window ending T0 + 4h was merged from them, not read (the one
    # read besides is the 4h window ending T0, the last one complete when the scheduler started).
    assert reads == [(T0, T0 + HOUR), (T0 - 4 * HOUR, T0)] + [(T0 + h * HOUR, T0 + (h + 1) * HOUR) for h in (1, 2, 3)]
    merged = reports[1]
    assert merged["start"] == T0 and merged["end"] == T0 + 4 * HOUR and merged["rows"] == 6000
    scanned = Monitoring(host).check(P, "churn", "4h", end=T0 + 4 * HOUR, act=False)
    for a, b in zip(merged["versions"][0]["features"], scanned["versions"][0]["features"]):
        assert a["feature"] == b["feature"] and a["statistic"] == pytest.approx(b["statistic"], rel=1e-9)
    assert schedule.run_due(T0 + 4 * HOUR + 3 * 60_000) == []  # nothing new is due
    assert schedule.stats["errors"] == 0
    again = DriftSchedule(host)  # a restart remembers the checks
    assert again.run_due(T0 + 4 * HOUR + 3 * 60_000) == []
    host.close()


def test_the_service_starts_and_stops_the_runner(host):
    from litestar.testing import TestClient

    from matih_lite.service import create_app

    with TestClient(create_app(host)) as client:
        body = client.get("/api/v1/drift/runner").json()
        assert body["backend"] == "inprocess" and body["ok"]
        runner = host.backend("drift")
        assert runner._thread is not None and runner._thread.is_alive()
    assert runner._thread is None


def test_a_plugin_that_replaces_the_drift_runner_gets_it_started_with_the_schedule(hermetic):
    """The monitoring domain starts whatever fills the drift slot, with data and callables, never the host."""
    import types

    from litestar.testing import TestClient

    from matih_lite.config import load_config
    from matih_lite.contracts.slots import DriftPlan
    from matih_lite.host import Host, get_plugin_manager
    from matih_lite.hookspecs import hookimpl
    from matih_lite.service import create_app

    class Runner:
        def __init__(self):
            self.plans, self.stopped = [], 0

        def health(self):
            from matih_lite.contracts import Health
            return Health(True, "custom")

        def start(self, plan):
            self.plans.append(plan)

        def stop(self):
            self.stopped += 1

        def close(self):
            pass

    runner = Runner()
    plugin = types.SimpleNamespace(register_backends=hookimpl(
        lambda register: register("drift", "custom", lambda settings, context: runner)))
    (hermetic / "matih.toml").write_text("[profiles.lite]\ndrift = { backend = 'custom' }\n[drift]\nwindows = ['30m', '1d']\n")
    pset = get_plugin_manager(entry_points=False, plugins=[("custom", plugin)])
    pset.pm.unregister(name="matih_lite.builtin.inprocess_drift")
    host = Host(load_config(), plugins=pset)
    with TestClient(create_app(host)):
        assert len(runner.plans) == 1
        plan = runner.plans[0]
        assert isinstance(plan, DriftPlan)
        assert [(w.label, w.size_ms) for w in plan.windows] == [("30m", 1_800_000), ("1d", 86_400_000)]
        assert plan.check_due(T0) == []  # nothing is deployed: nothing is due
    assert runner.stopped == 1
