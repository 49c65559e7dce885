"""``predict stream start --engine flink`` through the ml-service: a Flink job answering a deployment's requests
topic with a non-ONNX model (a 100-tree scikit-learn forest, loaded by the sklearn flavor from its verified files),
following a route change without a restart, listed by ``predict stream list`` and ``drift jobs``, reported on
``/ready`` when it dies and restarted from its checkpoint, stopped with a savepoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from flink_helpers import P, make_host, read_all

from matih_lite.registry import Registry
from matih_lite.serving.deployments import Deployments
from matih_lite.testing.flink import FlinkService, wait_until
from matih_lite.tracking import Tracking


def _forest(seed):
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 3))
    return RandomForestRegressor(n_estimators=100, max_depth=6, random_state=seed).fit(x, x @ [1.0, -2.0, 0.5] + seed)


def _register(host, name, model):
    from matih_lite.serving import flavor as flavor_of

    tracking = Tracking(host)
    run = tracking.create_run(P.tenant, tracking.get_or_create_experiment(P.tenant, "flink-stream").experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        flavor_of(host, "sklearn").save(model, tmp, input_example=np.zeros((1, 3)))
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                tracking.log_artifact(P.tenant, run.run_id, f"model/{f.relative_to(tmp).as_posix()}", f.read_bytes())
    version = Registry(host).register_version(P, name, run_id=run.run_id, path="model", flavor="sklearn")
    Registry(host).promote(P, name, version.version, "Staging", reason="flink stream test")


def _requests(n, start, seed):
    x = np.random.default_rng(seed).normal(size=(n, 3)).round(4)
    now = int(time.time() * 1000)
    return x, [
        {
            "timestamp": now,
            "request_id": f"r{start + i}",
            "request_key": f"user-{(start + i) % 300}",
            "inputs": [x[i].tolist()],
        }
        for i in range(n)
    ]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _cli(url, *args, cwd=None):
    """The real ``matih-lite`` command (its exit codes and error lines), against the service at ``url``."""
    env = {**os.environ, "MATIH_URL": url} if url else {k: v for k, v in os.environ.items() if k != "MATIH_URL"}
    return subprocess.run(
        [sys.executable, "-m", "matih_lite", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


@pytest.mark.slow
def test_a_flink_stream_job_through_the_service(tmp_path, kafka, flink_env, monkeypatch):
    monkeypatch.setenv("MATIH_FLINK_ENV", str(flink_env.root))
    host = make_host(tmp_path, kafka, drift={"enabled": False})  # no drift job: only the stream job runs
    first, second = _forest(0), _forest(1)
    _register(host, "forest", first)
    _register(host, "forest", second)
    Deployments(host).deploy(P, "scorer", "forest", version=1)
    events = host.backend("events")
    try:
        with FlinkService(host) as url:
            answer = httpx.post(
                f"{url}/api/v1/deployments/scorer/streams",
                json={"source": "requests", "sink": "answers", "engine": "spark"},
            )
            assert answer.status_code == 400 and "spark" in answer.json()["detail"]
            started = _cli(
                url,
                "predict",
                "stream",
                "start",
                "scorer",
                "--source",
                "requests",
                "--sink",
                "answers",
                "--engine",
                "flink",
                "--json",
            )
            assert started.returncode == 0, started.stderr
            x1, batch = _requests(2000, 0, seed=5)
            events.append("requests", batch)

            def answered(n):
                got = read_all(events, "answers")
                return got if len(got) >= n else None

            got = wait_until(lambda: answered(2000), timeout=600, interval=1.0, what="2,000 answers from the job")
            assert [a["request_id"] for a in got] == [f"r{i}" for i in range(2000)]
            assert {(a["version"], a["variant"]) for a in got} == {(1, "v1")}
            # The sklearn flavor's own predictor, from the same files: exactly the model's answers.
            np.testing.assert_allclose([a["predictions"][0] for a in got], first.predict(x1), rtol=1e-12)

            # A route change reaches the running job through the control topic: no restart. Version 1 stays on
            # as a shadow: a copy of each request, answered into the inference log only.
            pid = host.backend("drift").stream_jobs()[0]["pid"]
            Deployments(host).deploy(P, "scorer", version=2, shadows=[1])
            probe = 0

            def on_v2():
                nonlocal probe
                events.append(
                    "requests",
                    [
                        {
                            "timestamp": int(time.time() * 1000),
                            "request_id": f"probe{probe}",
                            "inputs": [[0.0, 0.0, 0.0]],
                        }
                    ],
                )
                probe += 1
                found = [a for a in read_all(events, "answers") if str(a["request_id"]).startswith("probe")]
                return bool(found) and found[-1]["version"] == 2

            wait_until(on_v2, timeout=120, interval=1.0, what="the job answering with version 2")
            x2, batch = _requests(2000, 2000, seed=6)
            events.append("requests", batch)
            got = wait_until(lambda: answered(4000 + probe), timeout=300, interval=1.0, what="the second batch")
            later = [a for a in got if a["request_id"] in {r["request_id"] for r in batch}]
            assert len(later) == 2000 and {(a["version"], a["variant"]) for a in later} == {(2, "v2")}
            np.testing.assert_allclose([a["predictions"][0] for a in later], second.predict(x2), rtol=1e-12)
            assert host.backend("drift").stream_jobs()[0]["pid"] == pid  # the same job took the new routes

            # Logged to the inference log as HTTP predictions are; the shadow's answers too, marked as a shadow's.
            ids = {r["request_id"] for r in batch}

            def shadowed():
                rows = [r for r in read_all(events, "inference.scorer") if r["request_id"] in ids]
                return rows if len(rows) >= 2 * len(ids) else None

            logged = wait_until(shadowed, timeout=60, what="the second batch and its shadow in the inference log")
            primary = [r for r in logged if not r["shadow"]]
            shadow = sorted((r for r in logged if r["shadow"]), key=lambda r: int(r["request_id"][1:]))
            assert len(primary) == len(shadow) == 2000 and {r["version"] for r in primary} == {"2"}
            assert {(r["version"], r["variant"]) for r in shadow} == {("1", "v1")}
            np.testing.assert_allclose([r["prediction"] for r in shadow], first.predict(x2), rtol=1e-12)
            assert {r["request_id"] for r in shadow} == ids
            assert len(read_all(events, "answers")) == 4000 + probe  # every request once: no shadow answer there
            assert {row["version"] for row in read_all(events, "inference.scorer")} == {"1", "2"}

            listing = _cli(url, "predict", "stream", "list", "scorer", "--json")
            assert listing.returncode == 0, listing.stderr
            [entry] = json.loads(listing.stdout)
            assert entry["engine"] == "flink" and entry["running"] is True and entry["sink"] == "answers"
            wait_until(
                lambda: (httpx.get(f"{url}/api/v1/deployments/scorer/streams").json()[0]["predicted"] or 0) >= 4000,
                timeout=60,
                what="the job's counters over Flink's REST API",
            )
            jobs = _cli(url, "drift", "jobs", "--json")
            assert jobs.returncode == 0, jobs.stderr
            [job] = [j for j in json.loads(jobs.stdout)["jobs"] if j["kind"] == "predict"]
            assert job["state"] == "RUNNING" and job["deployment"] == "scorer"
            assert job["shadows"] == [{"variant": "v1", "version": 1}]
            assert job["shadowed"] >= 2000 and job["shadow_failed"] == 0

            # A job that dies is reported on /ready and restarted from its checkpoint, answering the rest once.
            os.killpg(pid, signal.SIGKILL)
            wait_until(
                lambda: httpx.get(f"{url}/ready").status_code == 503, timeout=30, what="/ready reporting the dead job"
            )
            assert "stream job" in httpx.get(f"{url}/ready").text
            x3, batch = _requests(500, 4000, seed=7)
            events.append("requests", batch)
            wait_until(
                lambda: httpx.get(f"{url}/ready").status_code == 200,
                timeout=300,
                what="the job restarted and /ready green again",
            )
            got = wait_until(lambda: answered(4500 + probe), timeout=300, interval=1.0, what="the third batch")
            ids = [a["request_id"] for a in got]
            assert len(ids) == len(set(ids)), "a request answered twice after the restart"
            assert host.backend("drift").stream_jobs()[0]["restarts"] == 1

            # Replicas: the job runs only where the drift duty is held. Another replica takes the duty: the job
            # stops here with a savepoint (standby); given back, it starts again from there, nothing answered twice.
            from matih_lite.monitoring.plugin import drift_duty

            duty = drift_duty(host)
            duty.release()
            assert host.metadata.acquire_lease("drift-runner", "another-replica", 600_000)
            wait_until(lambda: (lambda j: j["phase"] == "standby" and not j["running"])(
                host.backend("drift").stream_jobs()[0]), timeout=120, what="the job standing by")
            standing = host.backend("drift").stream_jobs()[0]["pid"]
            assert standing is None or not _alive(standing)  # stopped by its PID, not left running
            assert httpx.get(f"{url}/ready").status_code == 200  # standing by is no failure
            x4, batch = _requests(300, 4500, seed=8)
            events.append("requests", batch)
            host.metadata.release_lease("drift-runner", "another-replica")
            got = wait_until(lambda: answered(4800 + probe), timeout=300, interval=1.0,
                             what="the job running again where the duty came back")
            ids = [a["request_id"] for a in got]
            assert len(ids) == len(set(ids)), "a request answered twice after the duty moved"

            stopped = _cli(url, "predict", "stream", "stop", "scorer")
            assert stopped.returncode == 0, stopped.stderr
            assert httpx.get(f"{url}/api/v1/deployments/scorer/streams").json() == []
            assert host.backend("drift").stream_jobs() == []
    finally:
        host.close()


def test_engine_flink_without_the_flink_drift_backend_is_one_clear_line(tmp_path, monkeypatch):
    (tmp_path / "matih.toml").write_text("[profiles.lite]\n")
    monkeypatch.chdir(tmp_path)
    from matih_lite.host import Host

    host = Host.open(str(tmp_path / "matih.toml"))
    try:
        _register(host, "forest", _forest(0))
        Deployments(host).deploy(P, "scorer", "forest", version=1)
    finally:
        host.close()
    result = _cli(
        None,
        "predict",
        "stream",
        "start",
        "scorer",
        "--source",
        "requests",
        "--sink",
        "out",
        "--engine",
        "flink",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert 'drift = { backend = "flink"' in result.stderr and "Traceback" not in result.stderr
