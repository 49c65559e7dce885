"""The ``kuberay`` backend end to end: the fake Kubernetes API server (and operator) of ``k8s_fake`` in front,
a real two-node Ray cluster behind, standing in for the one KubeRay would make (the submission path is the
same Ray Jobs API). The compute contract kit, in both modes; what is applied; status transitions; failures."""

from __future__ import annotations

import time

import msgspec
import pytest

from matih_lite.contracts import BackendContext
from matih_lite.testing.compute import ComputeBackendContract, JobPlatform, follow
from matih_lite.tracking.service import Tracking
from matih_lite.training.jobs import Jobs

pytestmark = pytest.mark.slow

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def backend(world, tmp_path, **overrides):
    from matih_kuberay.plugin import KubeRayBackend

    return KubeRayBackend(world.settings(**overrides), BackendContext(tmp_path, tmp_path, "lite"))


class TestKubeRayJob(ComputeBackendContract):
    job_timeout = 420.0

    @pytest.fixture
    def compute(self, world, tmp_path):
        found = backend(world, tmp_path)
        yield found
        found.close()

    @pytest.fixture
    def free_cpus(self, world):
        return world.cluster.available_cpus

    @pytest.fixture
    def platform(self, world):
        return JobPlatform(world.host, {"url": world.url, "token": world.token})


class TestKubeRayCluster(TestKubeRayJob):
    """``mode = "raycluster"``: a RayCluster per job, the job submitted and the cluster deleted by the backend."""

    @pytest.fixture
    def compute(self, world, tmp_path):
        found = backend(world, tmp_path, mode="raycluster")
        yield found
        found.close()


def test_a_job_becomes_a_namespace_a_quota_and_a_rayjob_followed_through_its_statuses(world, tmp_path):
    """What submit applies is what ``render`` shows; KubeRay's Initializing/Waiting/Running/Complete read as
    PENDING, RUNNING, SUCCEEDED; the job is named in the RayJob once submitted to its cluster."""
    from matih_lite.contracts.jobs import Limits

    compute = backend(world, tmp_path)
    platform = JobPlatform(world.host, {"url": world.url, "token": world.token})
    request = msgspec.structs.replace(platform.request("talkative", params={"lines": 5, "seconds": 2}),
                                      limits=Limits(cpus=4, jobs=2))
    rendered = compute.render(request)
    compute.submit(request)
    seen: list[str] = []
    final = follow(compute, request.job_id, until=lambda s: s.status in TERMINAL, timeout=420, seen=seen)
    assert final.status == "SUCCEEDED", (final, compute.logs(request.job_id)[-2000:])
    assert seen[0] == "PENDING" and "RUNNING" in seen and seen[-1] == "SUCCEEDED", seen

    applied_job = next(body for _, _, body in world.fake.calls("POST", contains="/rayjobs")
                       if body["metadata"]["labels"]["matih.io/job-id"] == request.job_id)
    assert applied_job == rendered[-1]  # `jobs manifest` shows exactly this
    quota = world.fake.quotas[("ml-default", "matih-quota")]
    assert quota["spec"]["hard"] == {"requests.cpu": "6", "count/rayjobs.ray.io": "2"}
    assert "ml-default" in world.fake.namespaces
    patched = world.fake.calls("PATCH", contains=f"/rayjobs/matih-{request.job_id}")
    assert [body for _, _, body in patched] == [{"spec": {"jobId": f"matih-{request.job_id}"}}]
    # The log outlives the cluster: kept when the job ended.
    assert "kit line 004" in compute.logs(request.job_id)
    assert (tmp_path / "jobs" / f"{request.job_id}.log").is_file()
    compute.close()


def test_a_quota_change_replaces_the_tenant_resource_quota(world, tmp_path):
    from matih_lite.contracts.jobs import Limits

    compute = backend(world, tmp_path, namespace="quota")
    platform = JobPlatform(world.host, {"url": world.url, "token": ""})
    for limits in (Limits(cpus=2), Limits(cpus=3, gpus=1)):
        namespace, quota, _ = compute.render(msgspec.structs.replace(platform.request("talkative"), limits=limits))
        compute._ensure_namespace(namespace)
        compute._apply_quota(quota)
    assert world.fake.quotas[("quota-default", "matih-quota")]["spec"]["hard"] == {
        "requests.cpu": "4", "requests.nvidia.com/gpu": "1"}
    assert len(world.fake.calls("POST", contains="/namespaces/quota-default/resourcequotas")) == 1
    assert len(world.fake.calls("PUT", contains="/namespaces/quota-default/resourcequotas/matih-quota")) == 1
    compute.close()


def test_a_rayjob_deleted_behind_the_backends_back_fails_the_job_saying_so(world, tmp_path):
    compute = backend(world, tmp_path)
    request = JobPlatform(world.host, {"url": world.url, "token": world.token}).request("sleeping",
                                                                                      params={"seconds": 600})
    compute.submit(request)
    follow(compute, request.job_id, until=lambda s: s.status == "RUNNING", timeout=420)
    world.fake.vanish("rayjobs", "ml-default", f"matih-{request.job_id}")
    state = compute.status(request.job_id)
    assert state.status == "FAILED"
    assert state.message == (f"its RayJob ml-default/matih-{request.job_id} was deleted outside matih-lite, and its "
                             "Ray cluster with it")
    compute.close()


def test_kuberay_giving_up_on_a_job_fails_it_with_kuberays_reason(world, tmp_path):
    compute = backend(world, tmp_path)
    request = JobPlatform(world.host, {"url": world.url, "token": world.token}).request("talkative")
    compute.submit(request)
    assert compute.status(request.job_id).status == "PENDING"
    world.fake.fail("rayjobs", "ml-default", f"matih-{request.job_id}", "PreRunningDeadlineExceeded",
                    "the RayJob did not start running within 600 seconds")
    state = compute.status(request.job_id)
    assert state == type(state)("FAILED", "KubeRay failed the job (PreRunningDeadlineExceeded): the RayJob did not "
                                          "start running within 600 seconds")
    assert compute.logs(request.job_id) == ""
    compute.cancel(request.job_id)  # ended: left as it is
    assert world.fake.get("rayjobs", "ml-default", f"matih-{request.job_id}") is not None
    compute.close()


def test_the_platform_queue_stays_in_front_of_kubernetes(world):
    """Under a one-job quota the second job waits in matih-lite's queue, saying why, and no RayJob exists
    for it until the first has ended."""
    from matih_lite.host import Host
    from matih_lite.training.jobs import JobSupervisor

    path = world.folder / "quota.toml"
    path.write_text(world.config_text(quotas='[quotas."*"]\njobs = 1\n'))
    host = Host.open(str(path))
    try:
        jobs = Jobs(host)
        first = jobs.submit(world.principal, {"entrypoint": "matih_lite.testing.compute:talkative",
                                              "params": {"lines": 3, "seconds": 8}})
        second = jobs.submit(world.principal, {"entrypoint": "matih_lite.testing.compute:talkative",
                                               "params": {"lines": 3, "seconds": 1}})
        deadline = time.monotonic() + 120
        while not jobs.get(world.principal, second.job_id).message.startswith("waiting for quota"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert jobs.get(world.principal, second.job_id).message == (
            "waiting for quota of tenant 'default': 1 of 1 jobs running")
        assert world.fake.get("rayjobs", "ml-default", f"matih-{first.job_id}") is not None
        assert world.fake.get("rayjobs", "ml-default", f"matih-{second.job_id}") is None
        quota = world.fake.quotas[("ml-default", "matih-quota")]
        assert quota["spec"]["hard"] == {"count/rayjobs.ray.io": "1"}
        done_first = jobs.wait(world.principal, first.job_id, timeout=420)
        done_second = jobs.wait(world.principal, second.job_id, timeout=420)
        assert (done_first.status, done_second.status) == ("SUCCEEDED", "SUCCEEDED"), (done_first, done_second)
        assert done_second.started_at >= done_first.ended_at
        run = Tracking(host).get_run("default", done_second.run_id)
        assert run.metrics["lines"].value == 3
    finally:
        JobSupervisor.of(host, start=False).stop()
        host.close()
