"""Tuning on a real local Ray: ASHA from the CLI with registration, grid, Optuna TPE with HyperBand, PBT."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from job_helpers import HERE, spec

from matih_lite.identity import LOCAL_ADMIN
from matih_lite.tracking.service import Tracking
from matih_lite.training.jobs import Jobs

pytestmark = pytest.mark.slow

SPEC = f"""
name = "churn-xgb"
entrypoint = "jobfns:xgb_tune"
framework = "xgboost"
experiment = "churn"
base_dir = "{HERE}"

[params]
rounds = 8

[tune]
metric = "validation-logloss"
mode = "min"
num_samples = 20
search = "random"
scheduler = "asha"
max_t = 8
grace_period = 2
reduction_factor = 2
seed = 7

[tune.space]
eta = {{ loguniform = [0.02, 0.5] }}
max_depth = {{ randint = [2, 6] }}
subsample = {{ uniform = [0.6, 1.0] }}
"""


def children(tracking: Tracking, run) -> list:
    return tracking.search_runs("default", [run.experiment_id],
                                filter=f"tags.`mlflow.parentRunId` = '{run.run_id}'", max_results=1000).items


def test_cli_tunes_20_xgboost_trials_with_asha_and_registers_the_best(hermetic):
    """The acceptance run, from the CLI alone: a fresh process starts Ray lazily on the job."""
    (hermetic / "spec.toml").write_text(SPEC)
    (hermetic / "matih.toml").write_text("")  # a project folder: commands refuse one with no matih-lite state
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "matih_lite", "tune", "spec.toml", "--register", "churn"],
                       cwd=hermetic, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCEEDED" in r.stdout and "registered     churn version 1" in r.stdout

    from matih_lite.host import Host
    from matih_lite.registry.service import Registry

    host = Host.open()
    try:
        tracking = Tracking(host)
        exp = tracking.get_experiment_by_name("default", "churn")
        runs = tracking.search_runs("default", [exp.experiment_id], max_results=1000).items
        parent = next(run for run in runs if run.parent_run_id is None)
        trials = children(tracking, parent)
        assert len(trials) == 20
        assert all(t.status == "FINISHED" for t in trials)
        histories = {t.run_id: tracking.metric_history("default", t.run_id, "validation-logloss").items
                     for t in trials}
        # Per-iteration metrics: steps 0, 1, ... in every trial; ASHA stopped some before 8 rounds.
        for points in histories.values():
            assert [p.step for p in points] == list(range(len(points))) and points
        lengths = sorted(len(p) for p in histories.values())
        assert lengths[-1] == 8 and lengths[0] < 8
        assert any(t.tags.get("matih.stopped_early") == "true" for t in trials)
        assert {"eta", "max_depth", "subsample"} <= set(trials[0].params)
        assert all(2 <= int(t.params["max_depth"]) <= 6 for t in trials)

        # The best trial is marked on the parent and on itself, and has the lowest final loss.
        best_id = parent.tags["matih.best_run_id"]
        best = tracking.get_run("default", best_id)
        assert best.tags["matih.best"] == "true" and best.parent_run_id == parent.run_id
        finals = {rid: points[-1].value for rid, points in histories.items()}
        assert finals[best_id] == min(finals.values())
        assert parent.metrics["validation-logloss"].value == finals[best_id]
        assert parent.status == "FINISHED" and parent.tags["matih.trials"] == "20"
        assert parent.metrics["matih.overhead_ms_per_trial"].value < 50

        # Registered from the best trial's run as a Development version, and the model loads.
        versions = Registry(host).list_versions(LOCAL_ADMIN, "churn").items
        assert [(v.version, v.stage, v.run_id, v.flavor) for v in versions] == [(1, "Development", best_id, "xgboost")]
        import numpy as np
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(host.artifacts.get(
            f"default/{exp.experiment_id}/{best_id}/artifacts/model/model.json")))
        assert np.isfinite(booster.predict(xgb.DMatrix(np.zeros((2, 8))))).all()
    finally:
        host.close()

    listed = subprocess.run([sys.executable, "-m", "matih_lite", "jobs", "list", "--json"], cwd=hermetic, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    jobs = json.loads(listed.stdout)["jobs"]
    assert [(j["name"], j["status"], j["result"]["registered"]["version"]) for j in jobs] == [
        ("churn-xgb", "SUCCEEDED", 1)]


def tune_job(host, tune: dict, entrypoint: str = "jobfns:quadratic", **kw):
    jobs = Jobs(host)
    job = jobs.submit(LOCAL_ADMIN, spec(entrypoint, tune=tune, **kw))
    done = jobs.wait(LOCAL_ADMIN, job.job_id, timeout=600)
    logs = jobs.logs(LOCAL_ADMIN, job.job_id)
    assert done.status == "SUCCEEDED", (done, logs[-3000:])
    tracking = Tracking(host)
    return done, children(tracking, tracking.get_run("default", done.run_id)), logs


def test_grid_search_runs_every_combination_once(open_host, ray_session):
    host = open_host()
    tune = {"metric": "loss", "mode": "min", "search": "grid",
            "space": {"x": {"grid": [1.0, 3.0, 5.0]}, "y": {"choice": ["a", "b"]}}}
    done, trials, logs = tune_job(host, tune, params={"iterations": 1})
    assert sorted((t.params["x"], t.params["y"]) for t in trials) == [
        (x, y) for x in ("1.0", "3.0", "5.0") for y in ("a", "b")]
    best = Tracking(host).get_run("default", done.result["best_run_id"])
    assert best.params["x"] == "3.0"  # (x - 3)^2 is smallest there
    assert "search random/grid (BasicVariantGenerator)" in logs


def test_optuna_tpe_with_hyperband(open_host, ray_session):
    host = open_host()
    tune = {"metric": "loss", "mode": "min", "search": "optuna", "scheduler": "hyperband", "num_samples": 8,
            "max_t": 4, "seed": 3, "space": {"x": {"uniform": [0.0, 6.0]}, "k": {"randint": [1, 3]}}}
    done, trials, logs = tune_job(host, tune, params={"iterations": 4})
    assert len(trials) == 8 and all(0 <= float(t.params["x"]) <= 6 for t in trials)
    assert {int(t.params["k"]) for t in trials} <= {1, 2, 3}
    assert "search OptunaSearch, scheduler HyperBandScheduler" in logs
    assert done.result["best_value"] == min(
        Tracking(host).metric_history("default", t.run_id, "loss").items[-1].value for t in trials)


def test_population_based_training_exploits_checkpoints_from_the_artifacts_slot(open_host, ray_session):
    host = open_host()
    tune = {"metric": "score", "mode": "max", "scheduler": "pbt", "num_samples": 4, "perturbation_interval": 2,
            "space": {"lr": {"uniform": [0.001, 0.5]}}, "synch": True}
    done, trials, logs = tune_job(host, tune, "jobfns:pbt_objective", params={"iterations": 8, "delay": 0.3},
                                  resources={"cpus": 0.5})
    assert len(trials) == 4
    assert "scheduler PopulationBasedTraining" in logs
    # A trial that exploits another restarts from that trial's checkpoint, read back from the artifacts slot.
    resumed = re.findall(r"trial (\S+) resumes from checkpoint trials/(\S+)/checkpoints/", logs)
    assert any(mine != theirs for mine, theirs in resumed), logs[-3000:]
    files = Tracking(host).list_artifacts("default", done.run_id, "trials", recursive=True)
    assert any("/checkpoints/" in f.path and f.path.endswith("state.pkl") for f in files)


def test_a_server_starts_ray_on_the_first_job_submitted_over_http(hermetic):
    """``matih-lite up`` answers /ready without Ray; ``tune`` with MATIH_URL runs the job in the server."""
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "COLUMNS": "200"}
    server = subprocess.Popen([sys.executable, "-m", "matih_lite", "up", "--port", str(port)], cwd=hermetic, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline and ready is None:
            try:
                ready = httpx.get(f"{url}/ready", timeout=1).json()
            except httpx.TransportError:
                time.sleep(0.1)
        assert ready and ready["slots"]["compute"]["detail"].startswith("Ray not started")
        (hermetic / "spec.toml").write_text(
            f'entrypoint = "jobfns:quadratic"\nbase_dir = "{HERE}"\nname = "over-http"\n[params]\niterations = 2\n'
            '[tune]\nmetric = "loss"\nmode = "min"\nnum_samples = 3\n[tune.space]\nx = { uniform = [0, 6] }\n')
        r = subprocess.run([sys.executable, "-m", "matih_lite", "tune", "spec.toml", "--json"], cwd=hermetic,
                           env={**env, "MATIH_URL": url}, capture_output=True, text=True, timeout=600, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        job = json.loads(r.stdout)
        assert job["status"] == "SUCCEEDED" and job["progress"]["trials_done"] == 3
        assert httpx.get(f"{url}/ready").json()["slots"]["compute"]["detail"].startswith("Ray running")
        logs = httpx.get(f"{url}/api/v1/jobs/{job['job_id']}/logs").json()
        assert "best trial" in logs["text"] and logs["status"] == "SUCCEEDED"
        # The job supervisor's thread ends after 5 s with nothing to watch; Ray was started on another
        # thread of the backend's own, so stopping the service after that still ends cleanly (it aborted).
        time.sleep(6)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0
