"""``matih-lite promote`` from the terminal: the verified table, and one line with exit 2 for each bad start."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from promote_kit import fill, open_host

from matih_lite.promote.journal import read_journal, target_id
from matih_lite.promote.promotion import promote
from matih_lite.promote.tables import held_rows

pytestmark = pytest.mark.postgres


def cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "matih_lite", *args], cwd=cwd, capture_output=True, text=True,
                          env=env or os.environ.copy(), timeout=300)


def _filled(folder):
    lite = open_host(folder, "lite")
    try:
        fill(lite.metadata, lite.artifacts, runs=3, points=10)
    finally:
        lite.close()


def test_promote_prints_what_it_verified_and_a_second_run_copies_nothing(folder):
    _filled(folder)
    r = cli("promote", "--to", "cluster", cwd=folder)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verified lite -> cluster" in r.stdout and "metrics" in r.stdout and "differs" not in r.stdout
    r = cli("promote", "--to", "cluster", "--json", cwd=folder)
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["ok"] and body["resumed"] and {c["slot"]: c["items"] for c in body["copied"]} == {
        "metadata": 0, "artifacts": 0}
    assert {c["slot"] for c in body["checks"]} == {"metadata", "artifacts"}


def test_a_target_holding_other_data_is_refused_and_merge_stops_at_an_id_that_differs(folder):
    _filled(folder)
    cluster = open_host(folder, "cluster")
    try:
        cluster.metadata.create_tenant("default", created_at=1)
        cluster.metadata.create_experiment("default", "theirs")
    finally:
        cluster.close()
    r = cli("promote", "--to", "cluster", cwd=folder)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "metadata: the target profile cluster holds data already" in r.stderr and "--merge" in r.stderr
    r = cli("promote", "--to", "cluster", "--merge", cwd=folder)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "metadata: table experiments in the target holds other values for experiment_id 1" in r.stderr


def test_an_unreachable_target_and_a_missing_secret_each_get_one_line(folder, monkeypatch):
    _filled(folder)
    text = (folder / "matih.toml").read_text()
    env = {k: v for k, v in os.environ.items() if k != "MATIH_TEST_DSN"}
    r = cli("promote", "--to", "cluster", cwd=folder, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "profiles.cluster.metadata" in r.stderr and "MATIH_TEST_DSN is not set" in r.stderr
    (folder / "matih.toml").write_text(text.replace("${MATIH_TEST_DSN}", "postgresql://nobody@127.0.0.1:1/x"))
    r = cli("promote", "--to", "cluster", cwd=folder)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("metadata (target profile cluster)") or "metadata (target profile cluster)" in r.stderr
    assert "doctor --profile cluster" in r.stderr
    r = cli("promote", "--to", "cluster", "--only", "drift", cwd=folder)
    assert r.returncode == 2 and "no such slot to promote" in r.stderr
    r = cli("promote", "--to", "cluster", "--only", "events", cwd=folder)
    assert r.returncode == 2 and "the same backend and settings" in r.stderr


def test_a_promote_killed_half_way_continues_to_the_same_result(folder):
    lite, cluster = open_host(folder, "lite"), open_host(folder, "cluster")
    try:
        fill(lite.metadata, lite.artifacts, runs=8, points=50)
        seen = []

        def die_in_metrics(item, advanced, total, size):
            seen.append(item)
            if item == "metrics":
                raise KeyboardInterrupt

        import matih_lite.promote.tables as tables

        monkey = pytest.MonkeyPatch()
        monkey.setattr(tables, "PAGE_ROWS", 100)
        try:
            with pytest.raises(KeyboardInterrupt):
                promote(lite, cluster, progress=die_in_metrics)
        finally:
            monkey.undo()
        half = held_rows(cluster.metadata)
        assert 0 < half["metrics"] < held_rows(lite.metadata)["metrics"]
        ident = target_id("cluster", {s: cluster.selection().get(s) for s in ("metadata", "artifacts")})
        assert read_journal(lite.config.home, ident).state == "copying"  # not left looking complete
        outcome = promote(lite, cluster)
        assert outcome.ok and outcome.resumed
        assert held_rows(cluster.metadata) == held_rows(lite.metadata)
        assert read_journal(lite.config.home, ident).state == "verified"
    finally:
        lite.close()
        cluster.close()


def test_dry_run_with_manifests_writes_the_objects_and_copies_nothing(folder):
    _filled(folder)
    r = cli("promote", "--to", "cluster", "--dry-run", "--manifests", "k8s", "--json", cwd=folder)
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["dry_run"] and body["held"]["metadata"]["runs"] == 6 and body["copied"] == []
    names = body["manifests"]
    assert any("resourcequota-matih-tenant-ml-acme" in n for n in names)
    assert any(n.endswith("configmap-matih-config-ml.yaml") for n in names)
    assert (folder / "k8s" / names[0]).exists()
    cluster = open_host(folder, "cluster")
    try:
        assert held_rows(cluster.metadata) == {}
    finally:
        cluster.close()


def test_manifests_of_a_flink_drift_slot_hold_the_drift_job_on_the_flink_image(folder):
    import yaml

    from matih_lite.contracts.deployments import Deployment, DeploymentChange, Route

    _filled(folder)
    lite = open_host(folder, "lite")
    try:  # a deployment to watch: the drift job's spec names its streams
        lite.metadata.create_deployment(
            Deployment(tenant="default", name="churn-prod", model="churn", routes=[Route("v1", 1, 1.0)]),
            DeploymentChange(tenant="default", deployment="churn-prod", action="create", actor="ada", timestamp=1))
    finally:
        lite.close()
    with (folder / "matih.toml").open("a") as f:
        f.write('events = { backend = "kafka", bootstrap_servers = "kafka.ml.svc:9092" }\n'
                'drift = { backend = "flink", parallelism = 2 }\n')
    r = cli("promote", "--to", "cluster", "--dry-run", "--only", "metadata", "--manifests", "k8s", "--flink-image",
            "registry.example/matih-flink:2", "--json", cwd=folder)
    assert r.returncode == 0, r.stderr
    names = json.loads(r.stdout)["manifests"]
    [job] = [yaml.safe_load((folder / "k8s" / n).read_text()) for n in names if "flinkdeployment-matih-drift" in n]
    assert job["spec"]["image"] == "registry.example/matih-flink:2" and job["spec"]["job"]["parallelism"] == 2
    [config] = [yaml.safe_load((folder / "k8s" / n).read_text()) for n in names if "configmap-matih-drift-job" in n]
    spec = json.loads(config["data"]["spec.json"])
    assert spec["bootstrap_servers"] == "kafka.ml.svc:9092" and list(spec["targets"]) == ["default/churn-prod"]
    assert spec["targets"]["default/churn-prod"]["windows"] == [{"label": "1h", "size_ms": 3_600_000},
                                                                {"label": "1d", "size_ms": 86_400_000}]
    assert sorted(info["kind"] for info in spec["topics"].values()) == ["inference", "labels"]


def test_apply_sends_the_objects_to_the_kubernetes_api_of_the_kubeconfig(folder, tmp_path):
    from k8s_api import FakeKubernetesApi

    _filled(folder)
    api = FakeKubernetesApi().start()
    try:
        env = {**os.environ, "KUBECONFIG": api.kubeconfig(tmp_path / "kubeconfig")}
        r = cli("promote", "--to", "cluster", "--dry-run", "--apply", "--namespace", "ml-prod", "--json", cwd=folder,
                env=env)
        assert r.returncode == 0, r.stderr
        applied = {a["path"]: a["action"] for a in json.loads(r.stdout)["applied"]}
        assert applied["/apis/apps/v1/namespaces/ml-prod/deployments/ml-service"] == "created"
        assert applied["/api/v1/namespaces/ml-prod-acme/resourcequotas/matih-tenant"] == "created"
        assert set(applied) == set(api.objects)
    finally:
        api.stop()
    r = cli("promote", "--to", "cluster", "--dry-run", "--apply", cwd=folder, env=env)  # the API is gone now
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "cannot reach the Kubernetes API" in r.stderr


def test_promote_refuses_while_a_service_owns_the_folder(folder):
    import fcntl

    from matih_lite.ownership import LOCK_FILE

    _filled(folder)
    home = folder / ".matih"
    # this test's own process stands for a live service: it holds the folder's lock and names itself
    (home / "service.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": os.getpid(),
                                                   "profile": "lite", "started_at": 0, "home": str(home)}))
    with open(home / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = cli("promote", "--to", "cluster", cwd=folder)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"pid {os.getpid()}); stop it first" in r.stderr
