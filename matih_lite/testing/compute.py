"""The compute-slot contract: what every backend that runs training and tuning jobs must do, proved by behaviour.

Subclass :class:`ComputeBackendContract` and override two fixtures::

    class TestMyCompute(ComputeBackendContract):
        @pytest.fixture
        def compute(self, tmp_path):
            backend = MyCompute(...)            # a backend on a cluster that is up
            yield backend
            backend.close()

        @pytest.fixture
        def free_cpus(self):
            return lambda: my_cluster.available_cpus()   # the cluster's live resources view

and, when the backend's jobs cannot open the platform's stores themselves (a remote cluster), the
``platform`` fixture: a :class:`JobPlatform` whose ``target`` is a running ml-service's URL and token.

Every job the kit submits is a real one: the backend runs the platform's job runner with an entrypoint
of this module (:func:`sleeping`, :func:`talkative`, :func:`broken`), which logs into a tracking run.
The kit checks what a user relies on: statuses move forward only (PENDING, RUNNING, then one of
SUCCEEDED, FAILED, CANCELLED), a failure says why, logs read from any character offset, a cancelled job
gives its CPUs back to the cluster within 10 seconds (measured on the cluster's resources view, for a
training job and for a tuning job), unknown ids are NotFound, a second submit of one id is Conflict,
and ``health``, ``capacity`` and ``render`` answer without starting anything.

Tests that run jobs are marked ``slow``; the class attribute ``job_timeout`` bounds each job.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from matih_lite.contracts.jobs import COMPUTE_STATUSES, JobRequest, JobState, Resources
from matih_lite.contracts.records import Health
from matih_lite.errors import Conflict, NotFound

KIT = "matih_lite.testing.compute"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
_RANK = {"PENDING": 0, "RUNNING": 1, "SUCCEEDED": 2, "FAILED": 2, "CANCELLED": 2}
FAILURE = "the kit's data has no label column"
FREED_WITHIN_S = 10.0


# ---- the entrypoints the kit's jobs run (imported by the job's processes, wherever they are) ---------------
def talkative(config: Mapping[str, Any]) -> None:
    """Prints ``lines`` numbered lines, reports, and lingers ``seconds`` (so a poller sees it RUNNING)."""
    from matih_lite import training

    for i in range(int(config.get("lines", 20))):
        print(f"kit line {i:03d} " + "x" * 20, flush=True)
    training.report({"lines": float(config.get("lines", 20))})
    time.sleep(float(config.get("seconds", 2.0)))
    print("kit done", flush=True)


def sleeping(config: Mapping[str, Any]) -> None:
    """Reports once, then holds its CPUs for ``seconds`` (a job to cancel)."""
    from matih_lite import training

    training.report({"held": 1.0})
    print("kit holding", flush=True)
    time.sleep(float(config.get("seconds", 600.0)))


def broken(config: Mapping[str, Any]) -> None:
    """Fails the way user code does."""
    from matih_lite import training

    training.report({"loss": 1.0})
    raise ValueError(FAILURE)


# ---- where the kit's jobs log -------------------------------------------------------------------------
class JobPlatform:
    """A host whose tracking holds each kit job's run, and the ``target`` the job's processes reach it by
    (:attr:`~matih_lite.contracts.jobs.JobRequest.tracking`: this folder's stores, or a service's URL)."""

    def __init__(self, host: Any, target: Mapping[str, str]) -> None:
        self.host = host
        self.target = dict(target)

    @classmethod
    def embedded(cls, folder: Path) -> JobPlatform:
        """A host on ``folder`` (an empty matih.toml there); jobs open its stores themselves."""
        from matih_lite.host import Host

        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "matih.toml"
        config.write_text("")
        host = Host.open(str(config))
        target = {"config": str(config), "home": str(host.config.home), "cwd": str(host.config.base_dir),
                  "profile": host.profile}
        return cls(host, target)

    def request(self, entrypoint: str, *, kind: str = "train", params: Mapping[str, Any] | None = None,
                cpus: float = 1.0, job_id: str | None = None) -> JobRequest:
        """A checked request for ``entrypoint`` (a function of this module, by name), with a fresh run."""
        from matih_lite.tracking.service import Tracking
        from matih_lite.training.spec import parse_spec

        raw: dict[str, Any] = {"entrypoint": f"{KIT}:{entrypoint}", "framework": "custom", "name": f"kit-{entrypoint}",
                               "experiment": "compute-kit", "params": dict(params or {}), "resources": {"cpus": cpus}}
        if kind == "tune":
            raw["tune"] = {"metric": "held" if entrypoint == "sleeping" else "lines", "mode": "max", "num_samples": 1,
                           "max_concurrent": 1, "space": {"x": {"uniform": [0.0, 1.0]}}}
        spec = parse_spec(raw).to_dict()
        tracking = Tracking(self.host)
        experiment = tracking.get_or_create_experiment("default", "compute-kit")
        job_id = job_id or uuid.uuid4().hex
        run = tracking.create_run("default", experiment.experiment_id, name=f"kit-{entrypoint}",
                                  tags={"matih.job_id": job_id})
        return JobRequest(job_id=job_id, tenant="default", kind=kind, spec=spec, run_id=run.run_id,
                          tracking=dict(self.target))

    def close(self) -> None:
        self.host.close()


# ---- waiting ------------------------------------------------------------------------------------------
def follow(compute: Any, job_id: str, *, until: Callable[[JobState], bool], timeout: float,
           seen: list[str] | None = None) -> JobState:
    """Poll ``compute.status`` until ``until(state)``; every status seen is appended to ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        state = compute.status(job_id)
        assert isinstance(state, JobState), state
        if seen is not None and (not seen or seen[-1] != state.status):
            seen.append(state.status)
        if until(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {state.status} after {timeout:g} s ({state.message}); "
                                 f"logs: {compute.logs(job_id)[-2000:]}")
        time.sleep(0.2)


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> float:
    """Seconds until ``check()`` is truthy; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)
    return time.monotonic() - started


# ---- the suite ------------------------------------------------------------------------------------------
class ComputeBackendContract:
    """Override ``compute`` (a fresh backend) and ``free_cpus`` (the cluster's free CPUs, now); ``platform``
    when jobs must report over HTTP."""

    job_timeout: float = 300.0
    """The most one kit job may take from submit to its end on this backend (a cold cluster is slow)."""

    @pytest.fixture
    def compute(self) -> Any:
        raise NotImplementedError("override the 'compute' fixture to build your backend")

    @pytest.fixture
    def free_cpus(self) -> Callable[[], float]:
        raise NotImplementedError("override the 'free_cpus' fixture: a callable giving the cluster's free CPUs")

    @pytest.fixture
    def platform(self, tmp_path: Path) -> Any:
        platform = JobPlatform.embedded(tmp_path / "kit-platform")
        yield platform
        platform.close()

    # ---- without running anything -----------------------------------------------------------------
    def test_health_says_whether_jobs_can_be_submitted(self, compute):
        health = compute.health()
        assert isinstance(health, Health)
        assert health.ok, health.detail
        assert health.detail.strip()

    def test_capacity_is_what_one_job_could_get_or_none(self, compute):
        capacity = compute.capacity()
        assert capacity is None or (isinstance(capacity, Resources) and capacity.cpus > 0), capacity

    def test_service_url_is_none_or_an_http_url(self, compute):
        url = compute.service_url()
        assert url is None or url.startswith(("http://", "https://")), url

    def test_unknown_job_ids_are_not_found(self, compute):
        unknown = uuid.uuid4().hex
        for call in (lambda: compute.status(unknown), lambda: compute.logs(unknown), lambda: compute.cancel(unknown)):
            with pytest.raises(NotFound):
                call()

    def test_render_shows_a_submission_without_sending_it(self, compute, platform):
        request = platform.request("talkative")
        documents = compute.render(request)
        assert isinstance(documents, list) and documents and all(isinstance(d, dict) for d in documents)
        json.dumps(documents)  # printable as it is
        with pytest.raises(NotFound):
            compute.status(request.job_id)

    # ---- with real jobs -----------------------------------------------------------------------------
    @pytest.mark.slow
    def test_a_job_runs_then_succeeds_and_its_logs_read_from_any_offset(self, compute, platform):
        request = platform.request("talkative", params={"lines": 30, "seconds": 3})
        compute.submit(request)
        with pytest.raises(Conflict):
            compute.submit(request)
        seen: list[str] = []
        final = follow(compute, request.job_id, until=lambda s: s.status in TERMINAL, timeout=self.job_timeout,
                       seen=seen)
        logs = compute.logs(request.job_id)
        assert final.status == "SUCCEEDED", (final, logs[-3000:])
        assert set(seen) <= set(COMPUTE_STATUSES), seen
        assert [_RANK[s] for s in seen] == sorted(_RANK[s] for s in seen), f"went backwards: {seen}"
        assert "RUNNING" in seen, seen
        assert compute.status(request.job_id).status == "SUCCEEDED"  # stays so

        full = compute.logs(request.job_id, 0)
        lines = [f"kit line {i:03d} " for i in range(30)]
        positions = [full.find(line) for line in lines]
        assert all(p >= 0 for p in positions) and positions == sorted(positions), full[-3000:]
        for offset in (1, positions[10], positions[29], len(full) - 1):
            assert compute.logs(request.job_id, offset) == full[offset:]
        assert compute.logs(request.job_id, len(full)) == ""
        assert compute.logs(request.job_id, len(full) + 100) == ""
        compute.cancel(request.job_id)  # a finished job is left as it is
        assert compute.status(request.job_id).status == "SUCCEEDED"

    @pytest.mark.slow
    def test_a_failing_job_ends_failed_saying_why(self, compute, platform):
        request = platform.request("broken")
        compute.submit(request)
        final = follow(compute, request.job_id, until=lambda s: s.status in TERMINAL, timeout=self.job_timeout)
        assert final.status == "FAILED", (final, compute.logs(request.job_id)[-3000:])
        assert FAILURE in final.message, final.message

    @pytest.mark.slow
    @pytest.mark.parametrize("kind", ["train", "tune"])
    def test_cancelling_a_running_job_frees_its_cpus_within_10_s(self, compute, platform, free_cpus, kind,
                                                                  record_property):
        baseline = free_cpus()
        assert baseline >= 1, f"the cluster has {baseline:g} free CPUs; the kit's job needs 1"
        request = platform.request("sleeping", kind=kind, params={"seconds": 600})
        compute.submit(request)
        follow(compute, request.job_id, until=lambda s: s.status == "RUNNING", timeout=self.job_timeout)
        wait_until(lambda: "kit holding" in compute.logs(request.job_id) and free_cpus() <= baseline - 1 + 1e-9,
                   timeout=self.job_timeout, what="the job to hold its CPU")
        asked = time.monotonic()
        compute.cancel(request.job_id)
        wait_until(lambda: free_cpus() >= baseline - 1e-9, timeout=FREED_WITHIN_S * 3,
                   what="the cancelled job's CPU to be free again")
        took = time.monotonic() - asked  # from the cancel call, however long the call itself took
        record_property("cpu_free_after_cancel_s", round(took, 2))
        print(f"the cancelled {kind} job's CPU was free again {took:.2f} s after cancel")
        assert took <= FREED_WITHIN_S, f"the cancelled {kind} job's CPU was free again only after {took:.1f} s"
        final = follow(compute, request.job_id, until=lambda s: s.status in TERMINAL, timeout=60)
        assert final.status == "CANCELLED", final
