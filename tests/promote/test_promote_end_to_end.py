"""A lite folder promoted to an empty cluster profile, then served there: the unchanged ``mlflow`` client sees the
same experiments, runs, metric histories and model versions on both, and the lite token works on the cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from promote_kit import fill, open_host
from test_promote_cli import cli

from matih_lite.testing.processes import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _serve(folder, profile, port, env):
    proc = subprocess.Popen([sys.executable, "-m", "matih_lite", "up", "--port", str(port), "--profile", profile],
                            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{profile} service was not ready")


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def _answers(url, token=None):
    """What the unchanged mlflow client says about the workload."""
    from mlflow.tracking import MlflowClient

    os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    experiments = sorted((e.experiment_id, e.name) for e in client.search_experiments())
    ids = [e for e, _ in experiments]
    runs = client.search_runs(ids, filter_string="metrics.auc >= 0.52", order_by=["attributes.start_time ASC"])
    history = client.get_metric_history(runs[0].info.run_id, "auc")
    versions = client.search_model_versions("name = 'churn'")
    return {
        "experiments": experiments,
        "runs": [(r.info.run_id, r.info.status, r.data.params, {k: repr(v) for k, v in r.data.metrics.items()},
                  r.data.tags.get("seed")) for r in runs],  # repr: NaN equals NaN
        "history": [(m.step, m.value, m.timestamp) for m in history],
        "versions": sorted((v.version, v.current_stage, v.run_id) for v in versions),
    }


def test_the_cluster_serves_what_the_lite_folder_held(folder, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    r = cli("users", "create", "ada", "-r", "owner", "-r", "admin", "--json", cwd=folder)
    assert r.returncode == 0, r.stderr
    r = cli("tokens", "create", "--user", "ada", "--json", cwd=folder)
    assert r.returncode == 0, r.stderr
    secret = json.loads(r.stdout)["secret"]
    lite = open_host(folder, "lite")
    try:
        fill(lite.metadata, lite.artifacts, tenants=("default",), runs=5, points=20, accounts=False)
    finally:
        lite.close()
    env = {**os.environ}
    port = free_port()
    proc = _serve(folder, "lite", port, env)
    try:
        before = _answers(f"http://127.0.0.1:{port}")
    finally:
        _stop(proc)
    assert len(before["runs"]) == 3 and before["versions"] and before["history"]
    r = cli("promote", "--to", "cluster", cwd=folder)
    assert r.returncode == 0, r.stdout + r.stderr
    port = free_port()
    proc = _serve(folder, "cluster", port, env)
    try:
        anonymous = httpx.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10")
        assert anonymous.status_code == 401  # the cluster profile requires tokens ...
        after = _answers(f"http://127.0.0.1:{port}", token=secret)  # ... and the lite one was copied
    finally:
        _stop(proc)
    assert after == before
