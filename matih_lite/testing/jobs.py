"""The jobs part of the metadata-slot contract."""

from __future__ import annotations

import threading
import time

import pytest

from matih_lite.contracts.jobs import Job, JobStore, Limits, Resources
from matih_lite.errors import Conflict, InvalidInput, NotFound

T = "tenant-a"
OTHER = "tenant-b"


def _now() -> int:
    return int(time.time() * 1000)


def _job(job_id: str, tenant: str = T, *, cpus: float = 1.0, gpus: float = 0.0, created_at: int | None = None,
         **kw) -> Job:
    now = _now()
    kw.setdefault("heartbeat_at", now)
    return Job(tenant=tenant, job_id=job_id, name=kw.pop("name", job_id), kind=kw.pop("kind", "train"),
               spec=kw.pop("spec", {"entrypoint": "train:main", "framework": "custom"}),
               demand=Resources(cpus, gpus, kw.pop("memory", 0)), created_by="ann",
               created_at=created_at if created_at is not None else now, **kw)


class JobStoreContract:
    """Override the ``store`` fixture to return a fresh, empty metadata backend."""

    @pytest.fixture
    def store(self):
        raise NotImplementedError("override the 'store' fixture to build your backend")

    def test_job_protocol(self, store):
        assert isinstance(store, JobStore)

    def test_create_and_get_job_round_trips_every_field(self, store):
        job = _job("j1", cpus=1.5, gpus=0.5, memory=1 << 30, register="churn", result={"best": {"auc": 0.9}},
                   message="waiting ✓", spec={"entrypoint": "m:f", "tune": {"space": {"lr": {"uniform": [0, 1]}}}})
        store.create_job(job)
        assert store.get_job(T, "j1") == job
        with pytest.raises(Conflict):
            store.create_job(job)

    def test_jobs_are_isolated_by_tenant(self, store):
        store.create_job(_job("j1"))
        with pytest.raises(NotFound):
            store.get_job(OTHER, "j1")
        with pytest.raises(NotFound):
            store.update_job(OTHER, "j1", status="RUNNING")
        assert store.list_jobs(OTHER).items == []
        assert [j.job_id for j in store.list_jobs(None).items] == ["j1"]

    def test_list_jobs_newest_first_by_status_with_pages(self, store):
        base = _now()
        for i, status in enumerate(["QUEUED", "RUNNING", "SUCCEEDED"]):
            store.create_job(_job(f"j{i}", created_at=base + i, status=status))
        assert [j.job_id for j in store.list_jobs(T).items] == ["j2", "j1", "j0"]
        assert [j.job_id for j in store.list_jobs(T, statuses=["QUEUED", "RUNNING"]).items] == ["j1", "j0"]
        first = store.list_jobs(T, max_results=2)
        assert len(first.items) == 2 and first.next_token
        second = store.list_jobs(T, max_results=2, page_token=first.next_token)
        assert [j.job_id for j in second.items] == ["j0"] and second.next_token is None
        with pytest.raises(InvalidInput):
            store.list_jobs(T, page_token="garbage")

    def test_update_job_sets_fields_and_honours_expect(self, store):
        store.create_job(_job("j1", status="RUNNING"))
        job = store.update_job(T, "j1", status="SUCCEEDED", ended_at=5, result={"run": "r"}, message="done",
                               expect=["RUNNING"])
        assert (job.status, job.ended_at, job.result, job.message) == ("SUCCEEDED", 5, {"run": "r"}, "done")
        assert store.get_job(T, "j1") == job
        with pytest.raises(Conflict, match="SUCCEEDED"):
            store.update_job(T, "j1", status="FAILED", expect=["RUNNING", "STARTING"])
        with pytest.raises(InvalidInput):
            store.update_job(T, "j1", kind="tune")
        with pytest.raises(InvalidInput):
            store.update_job(T, "j1", status="DONE")

    def test_claim_respects_cpu_gpu_and_job_limits(self, store):
        base = _now()
        live = base - 60_000
        store.create_job(_job("run1", cpus=2, gpus=0.5, status="RUNNING", created_at=base))
        store.create_job(_job("q1", cpus=1, gpus=0.5, created_at=base + 1))
        claim = store.claim_job(T, "q1", Limits(cpus=2), live_after=live, owner="me", now=base)
        assert not claim.claimed and claim.usage.cpus == 2 and claim.usage.gpus == 0.5 and claim.usage.jobs == 1
        assert store.get_job(T, "q1").status == "QUEUED"
        assert not store.claim_job(T, "q1", Limits(gpus=0.75), live_after=live, owner="me", now=base).claimed
        assert not store.claim_job(T, "q1", Limits(jobs=1), live_after=live, owner="me", now=base).claimed
        claim = store.claim_job(T, "q1", Limits(cpus=3, gpus=1.0, jobs=2), live_after=live, owner="me", now=base + 5)
        assert claim.claimed and claim.job.status == "STARTING" and claim.job.owner == "me"
        got = store.get_job(T, "q1")
        assert (got.status, got.owner, got.heartbeat_at) == ("STARTING", "me", base + 5)
        with pytest.raises(Conflict):
            store.claim_job(T, "q1", Limits(), live_after=live, owner="me", now=base)

    def test_claim_is_first_in_first_out_and_ignores_stale_and_other_tenants(self, store):
        base = _now()
        store.create_job(_job("old", created_at=base))
        store.create_job(_job("new", created_at=base + 1))
        store.create_job(_job("theirs", OTHER, cpus=8, status="RUNNING", created_at=base))
        claim = store.claim_job(T, "new", Limits(), live_after=base - 1000, owner="me", now=base)
        assert not claim.claimed and claim.usage.ahead == 1
        # The older job's supervisor is gone (stale heartbeat): it no longer blocks, nor counts.
        store.update_job(T, "old", heartbeat_at=base - 10_000)
        store.create_job(_job("ghost", cpus=4, status="RUNNING", created_at=base, heartbeat_at=base - 10_000))
        claim = store.claim_job(T, "new", Limits(cpus=1), live_after=base - 1000, owner="me", now=base)
        assert claim.claimed and claim.usage.cpus == 0

    def test_concurrent_claims_never_exceed_the_quota(self, store):
        base = _now()
        for i in range(6):
            store.create_job(_job(f"j{i}", created_at=base))
        results: list[bool] = []

        def claim(job_id: str) -> None:
            for _ in range(3):
                try:
                    results.append(store.claim_job(T, job_id, Limits(cpus=2), live_after=base - 60_000,
                                                   owner=job_id, now=base).claimed)
                    return
                except Conflict:
                    return

        # Jobs with the same creation time are ordered by id: all race, at most two may start.
        threads = [threading.Thread(target=claim, args=(f"j{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        holding = [j for j in store.list_jobs(T).items if j.status == "STARTING"]
        assert len(holding) <= 2 and sum(results) == len(holding)
