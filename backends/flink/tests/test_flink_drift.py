"""The Flink drift job against the in-process check: same windows, same verdicts and statistics."""

from __future__ import annotations

import math

import pytest
from flink_helpers import DAY, HOUR, MemoryNotifier, P, log_requests, make_host, monitored, past_day, traffic

from matih_lite.monitoring import Monitoring
from matih_lite.testing.flink import FlinkService, wait_until

pytestmark = pytest.mark.slow


def _close(a, b, path=""):
    """Every number of ``a`` equals ``b``'s to 1e-9 (relative), everything else exactly; returns the mismatches."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in ("seconds", "checked_at", "actions", "runner"):
                continue
            out += _close(a.get(k), b.get(k), f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out += _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        if not (math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))):
            out.append(f"{path}: {a!r} != {b!r}")
    elif a != b:
        out.append(f"{path}: {a!r} != {b!r}")
    return out


def test_flink_job_and_in_process_check_agree_on_100k_logged_requests(tmp_path, kafka, flink_env):
    host = make_host(tmp_path, kafka)
    try:
        monitored(host)
        t0 = past_day()
        # 100,000 one-row requests over three hours of yesterday: age drifted by 8 years, a fifth labelled.
        log_requests(host, traffic(100_000, age_shift=8.0), start=t0, end=t0 + 3 * HOUR, labelled=20_000)
        local = Monitoring(host)
        expected = [local.check(P, "churn", "1h", end=t0 + h * HOUR, aligned=True, act=False) for h in (1, 2, 3)]
        expected.append(local.check(P, "churn", "1d", end=t0 + DAY, aligned=True, act=False))
        assert expected[0]["status"] == "drifting" and expected[0]["rows"] > 30_000

        with FlinkService(host):
            monitoring = Monitoring(host)

            def recorded():
                hours = monitoring.history(P, "churn", window="1h")
                days = monitoring.history(P, "churn", window="1d")
                return (hours, days) if len(hours) >= 3 and len(days) >= 1 else None

            runner = host.backend("drift")
            hours, days = wait_until(recorded, timeout=600, what="the Flink job's reports",
                                     describe=lambda: f"{runner.status} "
                                                      f"{runner.job.log_tail(20) if runner.job else ''}")
        got = sorted(hours, key=lambda r: r["end"]) + days
        assert [r["end"] for r in got] == [r["end"] for r in expected]
        for want, have in zip(expected, got):
            assert have["runner"] == "flink" and have["aligned"]
            assert have["rows"] == want["rows"]
            assert _close(have, want) == []
        # The drifting feature was alerted once per window, as an in-process check alerts.
        ages = [a for a in MemoryNotifier.sent if a.get("feature") == "age" or "age" in str(a.get("features", ""))]
        assert ages, MemoryNotifier.sent[:3]
    finally:
        host.close()


def test_a_killed_job_is_reported_on_ready_and_restarted_from_its_checkpoint_without_duplicates(
        tmp_path, kafka, flink_env):
    import os
    import signal
    import time

    import httpx

    # A 5 s backoff, so /ready is seen reporting the failed job before the restart.
    host = make_host(tmp_path, kafka, drift={"restart_backoff_seconds": 5.0})
    try:
        monitored(host)
        t0 = past_day()
        log_requests(host, traffic(30_000, age_shift=8.0), start=t0, end=t0 + 2 * HOUR, labelled=5_000)
        with FlinkService(host) as url:
            runner = host.backend("drift")

            def checkpointed():
                job = runner.job
                return job if job is not None and job.alive() and job.last_checkpoint() else None

            first = wait_until(checkpointed, timeout=400, what="the job's first checkpoint",
                               describe=lambda: str(runner.status))
            recorded_before = runner.status["recorded"]
            os.killpg(first.pid, signal.SIGKILL)  # the job's own process group, by the PID the runner started

            def failed_on_ready():
                answer = httpx.get(f"{url}/ready", timeout=30)
                return answer if answer.status_code == 503 and "drift job failed" in answer.text else None

            failed = wait_until(failed_on_ready, timeout=60, interval=0.2, what="/ready reporting the dead job")
            assert "restarting in" in failed.text
            wait_until(lambda: runner.job is not first and runner.job.alive() and runner.status["phase"] == "running",
                       timeout=60, what="the restart")
            assert runner.job.restored_from is not None  # from its checkpoint, not from the start

            monitoring = Monitoring(host)

            def recorded():
                hours = monitoring.history(P, "churn", window="1h")
                days = monitoring.history(P, "churn", window="1d")
                return (hours, days) if len(hours) >= 2 and len(days) >= 1 else None

            hours, days = wait_until(recorded, timeout=600, what="the reports after the restart",
                                     describe=lambda: f"{runner.status} {runner.job.log_tail(20)}")
            time.sleep(5)  # anything published twice would be read back by now
            listing = httpx.get(f"{url}/api/v1/drift/jobs", timeout=30).json()
            ready = httpx.get(f"{url}/ready", timeout=30)
            last = runner.job
        # The service's stop drained the job: stopped with a savepoint (the next start restores it), process gone.
        assert not last.alive() and runner.status["phase"] == "stopped"
        assert list(last.savepoints.glob("*/_metadata")), "no savepoint written by the stop"
        assert sorted(r["end"] for r in hours) == [t0 + HOUR, t0 + 2 * HOUR] and len(days) == 1
        assert runner.status["recorded"] == 3 and recorded_before <= 3, runner.status
        # Alerts went out once per drifting feature and window, however often the job published a result.
        keys = [(a.get("deployment"), a.get("window"), a.get("end"), a.get("feature"), a.get("features"))
                for a in MemoryNotifier.sent]
        assert keys and len(keys) == len({repr(k) for k in keys}), MemoryNotifier.sent
        assert ready.status_code == 200, ready.text
        (job,) = listing["jobs"]
        assert listing["backend"] == "flink" and job["state"] == "RUNNING" and job["restarts"] == 1
        assert job["last_window"]["end"] == t0 + DAY and job["last_checkpoint"] is not None
        assert set(job["lag"]) == set(runner.job.spec["topics"]), job["lag"]  # the inference log and labels
        assert all(isinstance(n, int) for n in job["lag"].values()), job["lag"]
    finally:
        host.close()


def test_under_the_flink_operator_the_service_records_what_the_rendered_job_publishes(tmp_path, kafka, flink_env):
    """``mode = "operator"`` (what ``promote --manifests`` sets beside its FlinkDeployment): the service starts no
    job; the job that the rendered spec describes, run as the operator would run it (here with this machine's
    folders and jars in place of the pod's), publishes the windows, and the service ticks its clock and records
    them."""
    import json

    import httpx
    from matih_flink.jobs import FlinkJob
    from matih_flink.runner import source_roots

    from matih_lite.monitoring.schedule import DriftSchedule
    from matih_lite.promote.manifests import drift_job_spec

    host = make_host(tmp_path, kafka, drift={"mode": "operator"})
    job = None
    try:
        monitored(host)
        t0 = past_day()
        log_requests(host, traffic(30_000, age_shift=8.0), start=t0, end=t0 + 2 * HOUR, labelled=5_000)
        with FlinkService(host) as url:
            runner = host.backend("drift")
            wait_until(lambda: runner.status["phase"] == "running", timeout=60, what="the runner following targets",
                       describe=lambda: str(runner.status))
            selection = host.selection()
            spec = drift_job_spec("ml", "lite", selection["drift"], selection["events"], DriftSchedule(host).targets())
            spec["service_url"] = url  # the Service's in-cluster name, on a cluster
            tokens = {"default": runner.plan.token("default")}
            job = FlinkJob("matih-drift-operated", "matih_flink.job.drift_job", flink_env, tmp_path / "operated",
                           python_path=source_roots(), environ={"MATIH_DRIFT_TOKENS": json.dumps(tokens)})
            job.start(spec)
            monitoring = Monitoring(host)

            def recorded():
                hours = monitoring.history(P, "churn", window="1h")
                days = monitoring.history(P, "churn", window="1d")
                return (hours, days) if len(hours) >= 2 and len(days) >= 1 else None

            hours, days = wait_until(recorded, timeout=600, what="the operated job's reports recorded",
                                     describe=lambda: f"{runner.status} {job.log_tail(20)}")
            assert runner.job is None  # the service never started a job of its own
            listing = httpx.get(f"{url}/api/v1/drift/jobs", timeout=30).json()
            ready = httpx.get(f"{url}/ready", timeout=30)
        assert sorted(r["end"] for r in hours) == [t0 + HOUR, t0 + 2 * HOUR] and len(days) == 1
        assert all(r["runner"] == "flink" for r in hours + days) and hours[0]["status"] == "drifting"
        (entry,) = listing["jobs"]
        assert entry["state"] == "OPERATOR" and entry["recorded"] == 3 and entry["last_window"]["end"] == t0 + DAY
        assert ready.status_code == 200, ready.text
    finally:
        if job is not None:
            job.stop(drain=False)
        host.close()
