"""Jobs: quotas, queueing with a reason, rejection of what could never fit, cancellation, notifications."""

from __future__ import annotations

import time

import pytest
from job_helpers import spec, wait_for

from matih_lite.contracts.jobs import Job, Limits, Resources, Usage
from matih_lite.errors import ConfigError, InvalidInput
from matih_lite.hookspecs import hookimpl
from matih_lite.host import get_plugin_manager
from matih_lite.identity import LOCAL_ADMIN, Principal
from matih_lite.training.jobs import Jobs, job_demand, quota_for, waiting_reason
from matih_lite.training.spec import parse_spec


class Capture:
    """A plugin that keeps every platform event and every alert sent to its notifier."""

    def __init__(self) -> None:
        self.events: list = []
        self.alerts: list[dict] = []

    @hookimpl
    def on_event(self, event):
        if event.type.startswith("job."):
            self.events.append(event)

    @hookimpl
    def register_notifiers(self, register):
        capture = self

        class Notifier:
            def __init__(self, settings):
                self.settings = settings

            def notify(self, alert):
                capture.alerts.append({**alert, "settings": self.settings})

        register("capture", Notifier)


def plugins_with(capture: Capture):
    return get_plugin_manager(entry_points=False, plugins=[("capture", capture)])


# ---- quotas from matih.toml ---------------------------------------------------------------------------
def test_quotas_merge_defaults_star_and_tenant():
    section = {"cpus": 8, "*": {"gpus": 1, "jobs": 3}, "research": {"cpus": 16, "jobs": 5}}
    assert quota_for(section, "research") == Limits(cpus=16, gpus=1, jobs=5)
    assert quota_for(section, "default") == Limits(cpus=8, gpus=1, jobs=3)
    assert quota_for({}, "default") == Limits()


def test_bad_quotas_name_the_key():
    with pytest.raises(ConfigError, match=r"quotas.research.cpu"):
        quota_for({"research": {"cpu": 2}}, "research")
    with pytest.raises(ConfigError, match=r'quotas."\*".jobs: Expected `int \| null`, got `str`'):
        quota_for({"*": {"jobs": "two"}}, "default")


def test_tuning_runs_as_many_trials_at_once_as_fit():
    tune = {"metric": "loss", "mode": "min", "num_samples": 6, "space": {"x": {"uniform": [0, 1]}}}
    s = parse_spec(spec(tune=tune))
    assert job_demand(s, Limits(cpus=4), Resources(2, 0)) == (Resources(2, 0, 0), 2)
    assert job_demand(s, Limits(cpus=1), Resources(2, 0)) == (Resources(1, 0, 0), 1)
    assert job_demand(s, Limits(), None) == (Resources(6, 0, 0), 6)  # bounded by the trials
    s = parse_spec(spec(tune={**tune, "max_concurrent": 3}, resources={"cpus": 0.5, "gpus": 0.25}))
    assert job_demand(s, Limits(), Resources(2, 0)) == (Resources(1.5, 0.75, 0), 3)
    data_parallel = parse_spec(spec(resources={"cpus": 1, "num_workers": 2}, framework="pytorch"))
    assert job_demand(data_parallel, Limits(), None) == (Resources(2, 0, 0), 1)


def test_waiting_reason_says_what_is_full():
    job = Job(tenant="t", job_id="j", name="n", kind="train", demand=Resources(2, 0.5))
    assert waiting_reason(job, Usage(cpus=1, gpus=0.5, jobs=1), Limits(cpus=2, gpus=1, jobs=1)) == (
        "waiting for quota of tenant 't': 1 of 1 jobs running; 1 of 2 CPUs in use, needs 2")
    assert "2 earlier job(s)" in waiting_reason(job, Usage(ahead=2), Limits())


# ---- submitting -----------------------------------------------------------------------------------------
def test_a_job_that_could_never_fit_is_rejected_with_what_it_needs(open_host):
    host = open_host('[quotas."*"]\ncpus = 1\n\n[profiles.lite]\ncompute = { backend = "ray-local", num_cpus = 2 }\n')
    jobs = Jobs(host)
    with pytest.raises(InvalidInput, match=r"needs 2 CPUs but tenant 'default' may use at most 1 at once"):
        jobs.submit(LOCAL_ADMIN, spec(resources={"cpus": 2}))
    # GPUs in fractions, as Ray schedules them: there are none on this machine's ray-local.
    with pytest.raises(InvalidInput, match=r"needs 0.5 GPUs but the ray-local compute backend has 0"):
        jobs.submit(LOCAL_ADMIN, spec(resources={"cpus": 1, "gpus": 0.5}))
    with pytest.raises(InvalidInput, match=r"resources.cpus: must be more than 0"):
        jobs.submit(LOCAL_ADMIN, spec(resources={"cpus": 0}))
    assert jobs.list(LOCAL_ADMIN).items == []
    assert not host.backend("compute")._owns_ray  # refusing needed no Ray


def test_a_tenant_without_job_quota_is_refused(open_host):
    host = open_host("[quotas.default]\njobs = 0\n")
    with pytest.raises(InvalidInput, match="may not run jobs"):
        Jobs(host).submit(LOCAL_ADMIN, spec())


def test_a_queued_job_says_why_it_waits_and_cancelling_it_notifies(open_host):
    capture = Capture()
    host = open_host('[quotas."*"]\ncpus = 2\njobs = 1\n\n[notifiers.capture]\nchannel = "#ml"\n',
                     plugins=plugins_with(capture))
    jobs = Jobs(host)
    # Another process runs a job of this tenant (its supervisor is alive: a fresh heartbeat).
    now = int(time.time() * 1000)
    host.metadata.create_job(Job(tenant="default", job_id="f" * 32, name="elsewhere", kind="train",
                                 status="RUNNING", demand=Resources(1, 0), created_at=now - 10, heartbeat_at=now,
                                 owner="other-host:1:abc"))
    job = jobs.submit(LOCAL_ADMIN, spec())
    assert job.status == "QUEUED"
    waiting = wait_for(lambda: (j := jobs.get(LOCAL_ADMIN, job.job_id)).message.startswith("waiting") and j,
                       what="a waiting reason")
    assert waiting.message == "waiting for quota of tenant 'default': 1 of 1 jobs running"
    assert waiting.status == "QUEUED"
    listed = {j.job_id: j for j in jobs.list(LOCAL_ADMIN).items}
    assert listed[job.job_id].message == waiting.message
    cancelled = jobs.cancel(Principal("default", "ann", ("editor",)), job.job_id[:8])
    assert cancelled.status == "CANCELLED" and "cancelled by ann while queued" in cancelled.message
    assert [e.type for e in capture.events] == ["job.queued", "job.cancelled"]
    assert capture.alerts[0]["type"] == "job.cancelled" and capture.alerts[0]["settings"] == {"channel": "#ml"}
    # Cancelling a finished job leaves it as it is.
    assert jobs.cancel(LOCAL_ADMIN, job.job_id).message == cancelled.message


def test_jobs_of_a_process_that_died_stop_holding_quota(open_host):
    host = open_host('[quotas."*"]\njobs = 1\n')
    jobs = Jobs(host)
    old = int(time.time() * 1000) - 120_000
    host.metadata.create_job(Job(tenant="default", job_id="e" * 32, name="orphan", kind="train", status="RUNNING",
                                 demand=Resources(1, 0), created_at=old, heartbeat_at=old, owner="gone:1:x"))
    orphan = jobs.get(LOCAL_ADMIN, "e" * 32)
    assert orphan.status == "FAILED" and orphan.message.startswith("lost: the process supervising it stopped")


def test_unknown_jobs_and_statuses(open_host):
    jobs = Jobs(open_host())
    with pytest.raises(Exception, match="does not exist|no job has the id"):
        jobs.get(LOCAL_ADMIN, "nope")
    with pytest.raises(InvalidInput, match="unknown job status 'DONE'"):
        jobs.list(LOCAL_ADMIN, statuses=["DONE"])


# ---- with a real Ray ------------------------------------------------------------------------------------
def test_a_job_over_quota_waits_then_runs_and_endings_are_notified(open_host, ray_session, hermetic):
    """Two tuning jobs under a one-job quota: the second waits (saying why) while the first runs and
    fails; then it runs and succeeds. Each ending is a platform event and a notification."""
    capture = Capture()
    host = open_host('[quotas."*"]\njobs = 1\n\n[notifiers.capture]\n', plugins=plugins_with(capture))
    jobs = Jobs(host)
    from matih_lite.tracking.service import Tracking

    tracking = Tracking(host)
    data_run = tracking.create_run("default", tracking.get_or_create_experiment("default", "data").experiment_id)
    tracking.log_artifact("default", data_run.run_id, "data/numbers.txt", b"1 2\n")
    (hermetic / "offset.txt").write_text("0.5")
    inputs = {"numbers": f"runs:/{data_run.run_id}/artifacts/data/numbers.txt", "offset": str(hermetic / "offset.txt")}
    tune = {"metric": "loss", "mode": "min", "num_samples": 1, "space": {"x": {"uniform": [0, 1]}}}
    first = jobs.submit(LOCAL_ADMIN, spec("jobfns:failing", tune=tune))
    second = jobs.submit(LOCAL_ADMIN, spec("jobfns:with_inputs", tune={**tune, "num_samples": 2}, inputs=inputs))
    waiting = wait_for(lambda: (j := jobs.get(LOCAL_ADMIN, second.job_id)).message.startswith("waiting") and j,
                       what="the second job to wait")
    assert waiting.status == "QUEUED" and "1 of 1 jobs running" in waiting.message
    assert jobs.get(LOCAL_ADMIN, first.job_id).status in ("STARTING", "RUNNING")

    done_first = jobs.wait(LOCAL_ADMIN, first.job_id, timeout=240)
    assert done_first.status == "FAILED", done_first
    assert "the data has no label column" in done_first.message
    done_second = jobs.wait(LOCAL_ADMIN, second.job_id, timeout=240)
    assert done_second.status == "SUCCEEDED", (done_second, jobs.logs(LOCAL_ADMIN, second.job_id))
    assert done_second.started_at >= done_first.ended_at

    ends = [(e.type, e.subject) for e in capture.events if e.type in ("job.succeeded", "job.failed")]
    assert ends == [("job.failed", first.job_id), ("job.succeeded", second.job_id)]
    assert [a["type"] for a in capture.alerts] == ["job.failed", "job.succeeded"]
    assert capture.alerts[0]["severity"] == "warning" and "no label column" in capture.alerts[0]["message"]
    # The job's run was created when it started, its trials are nested runs, and it is finished.
    run = tracking.get_run("default", done_second.run_id)
    assert run.status == "FINISHED" and run.tags["matih.job_id"] == second.job_id
    assert done_second.result["best_run_id"] and done_second.result["trials"] == "2"
    # The trials read both inputs: loss = (x - (1 + 2))^2 + 0.5.
    best = tracking.get_run("default", done_second.result["best_run_id"])
    assert best.metrics["loss"].value == pytest.approx((float(best.params["x"]) - 3.0) ** 2 + 0.5)
    assert tracking.get_run("default", done_first.run_id).status == "FAILED"
    assert "trial" in jobs.logs(LOCAL_ADMIN, second.job_id)


def test_cancelling_a_running_job_from_another_process_stops_it(open_host, ray_session, hermetic):
    """``jobs cancel`` in another process only records the request; the supervising process stops the
    job on Ray, and the job's run and its trial runs end KILLED."""
    capture = Capture()
    host = open_host("[notifiers.capture]\n", plugins=plugins_with(capture))
    jobs = Jobs(host)
    marker = hermetic / "started.txt"
    tune = {"metric": "done", "mode": "max", "num_samples": 1, "space": {"x": {"uniform": [0, 1]}}}
    job = jobs.submit(LOCAL_ADMIN, spec("jobfns:sleepy", tune=tune, params={"seconds": 120, "marker": str(marker)}))
    wait_for(marker.exists, timeout=120, what="the trial to start")

    from matih_lite.host import Host
    from matih_lite.tracking.service import Tracking

    elsewhere = Host.open(str(hermetic / "matih.toml"))  # another process's view of the same folder
    try:
        requested = Jobs(elsewhere).cancel(Principal("default", "bob", ("editor",)), job.job_id)
        assert requested.status == "RUNNING" and requested.cancel_requested
    finally:
        elsewhere.close()
    done = jobs.wait(LOCAL_ADMIN, job.job_id, timeout=60)
    assert done.status == "CANCELLED" and done.message == "cancelled by bob"
    tracking = Tracking(host)
    run = tracking.get_run("default", done.run_id)
    assert run.status == "KILLED"
    trials = tracking.search_runs("default", [run.experiment_id],
                                  filter=f"tags.`mlflow.parentRunId` = '{run.run_id}'").items
    assert [t.status for t in trials] == ["KILLED"]
    assert [a["type"] for a in capture.alerts] == ["job.cancelled"]
