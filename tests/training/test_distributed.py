"""Data-parallel training on Ray Train with 2 CPU workers (PyTorch with gloo, XGBoost); a killed worker resumes."""

from __future__ import annotations

import os
import signal
import time

import pytest
from job_helpers import spec, wait_for

from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry.service import Registry
from matih_lite.tracking.service import Tracking
from matih_lite.training.jobs import Jobs

pytestmark = pytest.mark.slow


def run_job(host, job_spec, timeout=600):
    jobs = Jobs(host)
    job = jobs.submit(LOCAL_ADMIN, job_spec)
    done = jobs.wait(LOCAL_ADMIN, job.job_id, timeout=timeout)
    assert done.status == "SUCCEEDED", (done, jobs.logs(LOCAL_ADMIN, job.job_id)[-3000:])
    return done


def test_torch_trainer_with_two_cpu_workers_and_gloo(open_host, ray_session):
    pytest.importorskip("torch")
    host = open_host()
    done = run_job(host, spec("jobfns:torch_ddp", framework="pytorch", resources={"cpus": 1, "num_workers": 2},
                              params={"epochs": 4}, register="linear"))
    assert done.demand.cpus == 2
    tracking = Tracking(host)
    run = tracking.get_run("default", done.run_id)
    assert run.metrics["world_size"].value == 2  # both workers joined the gloo process group
    assert [m.step for m in tracking.metric_history("default", run.run_id, "loss").items] == [0, 1, 2, 3]
    assert run.params["job.num_workers"] == "2" and run.tags["matih.framework"] == "pytorch"
    version = Registry(host).get_version(LOCAL_ADMIN, "linear", 1)
    assert (version.stage, version.flavor, version.run_id) == ("Development", "pytorch", run.run_id)
    assert done.result["registered"] == {"name": "linear", "version": 1, "stage": "Development"}


def test_xgboost_trainer_with_two_workers(open_host, ray_session):
    host = open_host()
    done = run_job(host, spec("jobfns:xgb_distributed", framework="xgboost", resources={"num_workers": 2},
                              params={"rounds": 5}))
    tracking = Tracking(host)
    history = tracking.metric_history("default", done.run_id, "train-logloss").items
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert history[-1].value < history[0].value
    files = {f.path for f in tracking.list_artifacts("default", done.run_id, "model")}
    assert files == {"model/MLmodel", "model/model.json"}
    assert done.result["model_uri"] == f"runs:/{done.run_id}/model"


def test_a_killed_worker_resumes_from_its_last_checkpoint(open_host, ray_session, hermetic):
    """SIGKILL the training worker mid-run: Ray Train restarts it (max_failures), it reads its last
    checkpoint back from the artifacts slot and finishes; the run keeps one continuous history."""
    host = open_host()
    events, pid_file = hermetic / "events.txt", hermetic / "pid.txt"
    jobs = Jobs(host)
    job = jobs.submit(LOCAL_ADMIN, spec("jobfns:checkpointed_counter", max_failures=2,
                                        params={"steps": 10, "delay": 0.4, "events": str(events),
                                                "pid_file": str(pid_file)}))
    tracking = Tracking(host)

    def reached_step_3():
        current = jobs.get(LOCAL_ADMIN, job.job_id)
        if current.status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            raise AssertionError(f"job ended before the kill: {current}")
        if not current.run_id:
            return False
        loss = tracking.get_run("default", current.run_id).metrics.get("loss")
        return loss is not None and loss.step >= 3

    wait_for(reached_step_3, timeout=300, what="step 3")
    victim = int(pid_file.read_text())
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()

    done = jobs.wait(LOCAL_ADMIN, job.job_id, timeout=600)
    assert done.status == "SUCCEEDED", (done, jobs.logs(LOCAL_ADMIN, job.job_id)[-3000:])
    starts = [line.split() for line in events.read_text().splitlines()]
    assert len(starts) == 2, starts
    (_, first_pid, first_step, _), (_, second_pid, second_step, _) = starts
    assert first_pid == f"pid={victim}" and first_step == "step=0"
    assert second_pid != first_pid and int(second_step.split("=")[1]) >= 4  # resumed, not restarted
    # One continuous history: every step once, in order, across the two workers.
    history = tracking.metric_history("default", done.run_id, "loss").items
    assert [m.step for m in history] == list(range(10))
    assert [m.value for m in history] == [1.0 / (s + 1) for s in range(10)]
    total = tracking.get_run("default", done.run_id).metrics["total"].value
    assert total == sum(range(10))  # the checkpointed state carried over exactly
    run = tracking.get_run("default", done.run_id)
    assert run.tags["matih.worker_failures"] == "1" and run.status == "FINISHED"
    # The checkpoints live in the artifacts slot, under the job's run.
    saved = tracking.list_artifacts("default", done.run_id, "checkpoints/train")
    assert len(saved) == 10 and host.artifacts.stat(
        f"default/{run.experiment_id}/{run.run_id}/artifacts/checkpoints/train/000009/state.pkl").size > 0
    logs = jobs.logs(LOCAL_ADMIN, job.job_id)
    assert "training resumes from checkpoint checkpoints/train/" in logs
    assert done.ended_at / 1000 > killed_at
