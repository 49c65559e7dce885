"""The ``ray`` backend on a real two-node Ray cluster (head + ``ray start --address``), in a loopback-only namespace.

The compute contract kit; a 20-trial ASHA tune; a 2-worker TorchTrainer job with a worker on each node;
a SIGKILL of the worker on the second node, resumed from its checkpoint with every step logged once;
tuning trials that are 2-worker Train runs; and the faults: a head that does not answer keeps jobs
queued (saying why) until it does, and a job whose cluster is gone fails with the reason.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from ray_helpers import spec

from matih_lite.contracts import BackendContext
from matih_lite.testing.compute import ComputeBackendContract, JobPlatform
from matih_lite.tracking.service import Tracking
from matih_lite.training.jobs import Jobs

pytestmark = pytest.mark.slow


class TestRayCompute(ComputeBackendContract):
    job_timeout = 420.0

    @pytest.fixture
    def compute(self, service, tmp_path):
        from matih_ray.plugin import RayBackend, RaySettings

        backend = RayBackend(RaySettings(address=service.cluster.dashboard_url, service_url=service.url),
                             BackendContext(tmp_path, tmp_path, "lite"))
        yield backend
        backend.close()

    @pytest.fixture
    def free_cpus(self, ray_cluster):
        return ray_cluster.available_cpus

    @pytest.fixture
    def platform(self, service):  # the kit's jobs report to the module's ml-service, with a token
        return JobPlatform(service.host, {"url": service.url, "token": service.token})


def children(tracking, run):
    return tracking.search_runs("default", [run.experiment_id], filter=f"tags.`mlflow.parentRunId` = '{run.run_id}'",
                                max_results=1000).items


def run_job(service, job_spec, timeout=900):
    jobs = Jobs(service.host)
    job = jobs.submit(service.principal, job_spec)
    done = jobs.wait(service.principal, job.job_id, timeout=timeout)
    assert done.status == "SUCCEEDED", (done, jobs.logs(service.principal, job.job_id)[-4000:])
    return done


def test_the_job_reports_through_the_service_with_a_token_of_its_own(service):
    """A job on the cluster logs over HTTP with a token made for it, which stops working when it ends."""
    from matih_lite.auth.service import Accounts

    done = run_job(service, spec("quadratic", params={"x": 2.0, "iterations": 3}))
    tracking = Tracking(service.host)
    run = tracking.get_run("default", done.run_id)
    assert [m.step for m in tracking.metric_history("default", run.run_id, "loss").items] == [0, 1, 2]
    assert run.status == "FINISHED" and run.user_id == "ann"
    tokens = [t for t in Accounts(service.host).list_tokens("default", user="ann") if t.name == f"job:{done.job_id}"]
    assert len(tokens) == 1 and tokens[0].revoked and tokens[0].last_used_at is not None


def test_a_20_trial_asha_tune_runs_on_the_cluster_with_each_trial_a_child_run(service):
    tune = {"metric": "loss", "mode": "min", "num_samples": 20, "search": "random", "scheduler": "asha", "max_t": 6,
            "grace_period": 1, "reduction_factor": 2, "seed": 11, "space": {"x": {"uniform": [0.0, 6.0]}}}
    done = run_job(service, spec("quadratic", name="asha-20", tune=tune, params={"iterations": 6},
                                 resources={"cpus": 0.5}))
    tracking = Tracking(service.host)
    parent = tracking.get_run("default", done.run_id)
    trials = children(tracking, parent)
    assert len(trials) == 20 and all(t.status == "FINISHED" for t in trials)
    histories = {t.run_id: tracking.metric_history("default", t.run_id, "loss").items for t in trials}
    for points in histories.values():
        assert [p.step for p in points] == list(range(len(points))) and points  # each step once
    lengths = sorted(len(p) for p in histories.values())
    assert lengths[-1] == 6 and lengths[0] < 6  # ASHA stopped the weak trials early
    assert any(t.tags.get("matih.stopped_early") == "true" for t in trials)
    best = parent.tags["matih.best_run_id"]
    finals = {rid: points[-1].value for rid, points in histories.items()}
    assert finals[best] == min(finals.values()) and parent.tags["matih.trials"] == "20"
    overhead = parent.metrics["matih.overhead_ms_per_trial"].value
    assert overhead < 50, f"{overhead} ms of matih-lite per trial on the cluster backend"
    sending = parent.metrics["matih.tracking_ms_per_trial"].value
    print(f"per-trial overhead on the ray backend: {overhead:.1f} ms in the Tune loop; the tracking calls over "
          f"HTTP took {sending:.1f} ms per trial on their own thread (20 trials)")


def test_a_two_worker_torch_trainer_puts_a_worker_on_each_node(service):
    pytest.importorskip("torch")
    done = run_job(service, spec("torch_ddp", framework="pytorch", resources={"cpus": 1, "num_workers": 2},
                                 params={"epochs": 3}, register="linear-ddp"))
    tracking = Tracking(service.host)
    run = tracking.get_run("default", done.run_id)
    assert run.metrics["world_size"].value == 2  # both workers joined gloo, one per 1-CPU node
    assert [m.step for m in tracking.metric_history("default", run.run_id, "loss").items] == [0, 1, 2]
    assert done.result["registered"]["name"] == "linear-ddp"
    files = {f.path for f in tracking.list_artifacts("default", run.run_id, "model")}
    assert "model/MLmodel" in files  # the model came back through the service's HTTP API


def test_sigkill_of_the_worker_on_the_second_node_resumes_from_its_checkpoint(service, tmp_path):
    """Two workers, one per node; the one on the second node is SIGKILLed mid-run. Ray Train restarts the
    group (max_failures), both read the last checkpoint back through the service, and every step is
    logged exactly once."""
    cluster = service.cluster
    pids = tmp_path / "pids"
    jobs = Jobs(service.host)
    job = jobs.submit(service.principal, spec("counted_steps", max_failures=2, resources={"cpus": 1, "num_workers": 2},
                                              params={"steps": 10, "delay": 0.6, "pids": str(pids)}))
    tracking = Tracking(service.host)

    def at_step_3():
        current = jobs.get(service.principal, job.job_id)
        assert current.status not in ("SUCCEEDED", "FAILED", "CANCELLED"), current
        loss = tracking.get_run("default", current.run_id).metrics.get("loss") if current.run_id else None
        return loss is not None and loss.step >= 3

    deadline = time.monotonic() + 600
    while not at_step_3():
        assert time.monotonic() < deadline, "the job never reached step 3"
        time.sleep(0.2)
    second = cluster.node_ids()["worker"]
    started = {int(p.name.split("-")[1]): p.name for p in pids.iterdir()}
    victims = [pid for pid, name in started.items() if name.endswith(f"-{second}")]
    assert len(victims) == 1 and len(started) == 2, (started, "one worker on each node")
    os.kill(victims[0], signal.SIGKILL)

    done = jobs.wait(service.principal, job.job_id, timeout=600)
    assert done.status == "SUCCEEDED", (done, jobs.logs(service.principal, job.job_id)[-4000:])
    restarts = sorted(p.name for p in pids.iterdir() if int(p.name.split("-")[1]) not in started)
    assert len(restarts) == 2, restarts  # the whole group came back
    assert all(int((pids / name).read_text()) >= 3 for name in restarts)  # from the checkpoint, not from 0
    history = tracking.metric_history("default", done.run_id, "loss").items
    assert [m.step for m in history] == list(range(10))
    assert [m.value for m in history] == [1.0 / (s + 1) for s in range(10)]
    run = tracking.get_run("default", done.run_id)
    assert run.metrics["total"].value == sum(range(10)) and run.tags["matih.worker_failures"] == "1"
    assert len(tracking.list_artifacts("default", done.run_id, "checkpoints/train")) == 10
    assert "training resumes from checkpoint checkpoints/train/" in jobs.logs(service.principal, job.job_id)


def test_tuning_trials_can_be_two_worker_train_runs(service):
    pytest.importorskip("torch")
    tune = {"metric": "loss", "mode": "min", "search": "grid", "space": {"lr": {"grid": [0.05, 0.2]}}}
    done = run_job(service, spec("torch_ddp", framework="pytorch", tune=tune, params={"epochs": 2},
                                 resources={"cpus": 1, "num_workers": 2}))
    assert done.demand.cpus == 2  # one trial of two workers at a time fits the two 1-CPU nodes
    tracking = Tracking(service.host)
    trials = children(tracking, tracking.get_run("default", done.run_id))
    assert sorted(t.params["lr"] for t in trials) == ["0.05", "0.2"]
    for trial in trials:
        assert trial.metrics["world_size"].value == 2
        assert [m.step for m in tracking.metric_history("default", trial.run_id, "loss").items] == [0, 1]
    best = tracking.get_run("default", done.result["best_run_id"])
    assert {f.path for f in tracking.list_artifacts("default", best.run_id, "model")} >= {"model/MLmodel"}


# ---- faults ----------------------------------------------------------------------------------------------
@pytest.fixture
def cut_off(service):
    """A host on the module's state folder whose ray backend reaches the head through a link a test can cut."""
    from matih_lite.host import Host
    from matih_lite.testing.raycluster import Link
    from matih_lite.training.jobs import JobSupervisor

    link = Link(int(service.cluster.dashboard_url.rsplit(":", 1)[1]))
    path = service.folder / "cut-off.toml"
    path.write_text(service.config_text(address=link.url))
    host = Host.open(str(path))
    yield host, link
    JobSupervisor.of(host, start=False).stop()
    host.close()
    link.cut()


def wait_until(check, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_an_unreachable_head_keeps_jobs_queued_saying_why_until_it_answers(service, cut_off):
    from litestar.testing import TestClient

    from matih_lite.service import create_app

    host, link = cut_off
    link.cut()
    with TestClient(create_app(host)) as client:
        ready = client.get("/ready")
    assert ready.status_code == 503
    detail = ready.json()["slots"]["compute"]["detail"]
    assert detail.startswith("Ray cluster unreachable") and link.url in detail
    jobs = Jobs(host)
    job = jobs.submit(service.principal, spec("quadratic", params={"x": 1.0, "iterations": 2}))
    waiting = wait_until(lambda: (j := jobs.get(service.principal, job.job_id)).message.startswith(
        "waiting for the compute backend") and j, 60, "the job to say why it waits")
    assert waiting.status == "QUEUED" and link.url in waiting.message
    listed = {j.job_id: j for j in jobs.list(service.principal).items}
    assert listed[job.job_id].message == waiting.message  # what `jobs list` shows
    time.sleep(3)
    assert jobs.get(service.principal, job.job_id).status == "QUEUED"  # still waiting, not failed

    link.mend()
    done = jobs.wait(service.principal, job.job_id, timeout=600)
    assert done.status == "SUCCEEDED", (done, jobs.logs(service.principal, job.job_id)[-3000:])
    assert [m.step for m in Tracking(host).metric_history("default", done.run_id, "loss").items] == [0, 1]


def test_a_job_whose_cluster_is_gone_is_failed_with_the_reason(service, cut_off, monkeypatch):
    from matih_ray.jobs_api import JobsApi

    from matih_lite.training import jobs as jobs_module

    host, link = cut_off
    monkeypatch.setattr(jobs_module, "COMPUTE_LOST_AFTER_S", 8.0)
    jobs = Jobs(host)
    job = jobs.submit(service.principal, spec("sleepy", params={"seconds": 600}))
    tracking = Tracking(host)

    def running():  # a job that fails to start fails the test at once, with its reason, not at the timeout
        current = jobs.get(service.principal, job.job_id)
        assert current.status in ("QUEUED", "STARTING", "RUNNING"), (current, jobs.logs(service.principal,
                                                                                        job.job_id)[-3000:])
        return current.run_id and "started" in tracking.get_run("default", current.run_id).metrics

    wait_until(running, 240, "the job to run")
    link.cut()
    try:
        noted = wait_until(lambda: (j := jobs.get(service.principal, job.job_id)).message.startswith(
            "running; the compute backend has not answered") and j, 30, "the job to say its cluster is silent")
        assert noted.status == "RUNNING" and link.url in noted.message
        done = jobs.wait(service.principal, job.job_id, timeout=60)
        assert done.status == "FAILED"
        assert done.message.startswith("lost: the compute backend has not answered for ") and link.url in done.message
        assert tracking.get_run("default", done.run_id).status == "FAILED"
    finally:
        api = JobsApi(service.cluster.dashboard_url)  # the job itself still runs on the cluster: stop it
        api.stop(f"matih-{job.job_id}")
        api.close()
