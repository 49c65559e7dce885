"""What a job becomes on Kubernetes, checked without a cluster: KubeRay's CRD fields (our JSON schema) and the
core objects (kubernetes-validate, strict), sized from the job's spec."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matih_kuberay import manifests
from matih_kuberay.settings import KubeRaySettings
from matih_kuberay.validation import core_problems, custom_resource_problems, problems

from matih_lite.contracts.jobs import JobRequest, Limits
from matih_lite.training.spec import parse_spec

TUNE = {"metric": "loss", "mode": "min", "num_samples": 8, "max_concurrent": 4, "space": {"lr": {"uniform": [0, 1]}}}


def request(resources=None, *, tune=None, tenant="research", limits=Limits(), **spec):
    raw = {"entrypoint": "train:main", "framework": "pytorch", "resources": resources or {}, **spec}
    if tune:
        raw["tune"] = tune
    return JobRequest(job_id="0123456789abcdef0123456789abcdef", tenant=tenant, kind="tune" if tune else "train",
                      spec=parse_spec(raw).to_dict(), run_id="r" * 32,
                      tracking={"url": "http://matih-lite.ml.svc:8000", "token": "<token>"}, limits=limits)


def cluster_spec(objects):
    job = objects[-1]
    return job["spec"]["rayClusterSpec"] if job["kind"] == "RayJob" else job["spec"]


def test_a_tune_with_fractional_gpus_packs_trials_into_pods_with_whole_gpus():
    req = request({"cpus": 2, "gpus": 0.5, "memory": "3GiB", "node_selector": {"pool": "gpu"},
                   "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                   "image": "registry.example/ml:1.4", "service_account": "trainer"}, tune=TUNE)
    objects = manifests.manifests(req, KubeRaySettings(tolerations=[{"key": "spot", "operator": "Exists"}]))
    assert [o["kind"] for o in objects] == ["Namespace", "RayJob"]  # no limits: no ResourceQuota
    job = objects[-1]
    assert job["metadata"]["name"] == "matih-0123456789abcdef0123456789abcdef"
    assert job["metadata"]["namespace"] == "ml-research"
    assert job["spec"]["submissionMode"] == "InteractiveMode"
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["ttlSecondsAfterFinished"] == 300
    spec = cluster_spec(objects)
    (group,) = spec["workerGroupSpecs"]
    # 4 trials at once, 0.5 GPU each: 2 Ray workers share a pod with one GPU, so 2 pods.
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (0, 0, 2)
    assert group["rayStartParams"] == {"num-cpus": "4", "num-gpus": "1"}
    pod = group["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/ml:1.4"
    assert container["resources"]["requests"] == {"cpu": "4", "memory": str(2 * 3 * 2**30), "nvidia.com/gpu": "1"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["serviceAccountName"] == "trainer"
    assert [t["key"] for t in pod["tolerations"]] == ["spot", "nvidia.com/gpu"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head runs the driver only
    assert spec["enableInTreeAutoscaling"] is True and spec["autoscalerOptions"]["idleTimeoutSeconds"] == 60
    assert problems(objects) == []


def test_without_autoscaling_the_workers_are_all_there_from_the_start():
    objects = manifests.manifests(request({"cpus": 1, "num_workers": 3}),
                                  KubeRaySettings(autoscaling=False, mode="raycluster", tenant_namespaces=False))
    assert [o["kind"] for o in objects] == ["RayCluster"]
    assert objects[0]["metadata"]["namespace"] == "ml"
    spec = cluster_spec(objects)
    (group,) = spec["workerGroupSpecs"]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (3, 3, 3)
    assert "autoscalerOptions" not in spec and spec["enableInTreeAutoscaling"] is False
    assert group["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": str(2 * 2**30)}
    assert problems(objects) == []


def test_quotas_become_a_resource_quota_in_the_tenant_namespace():
    objects = manifests.manifests(request(limits=Limits(cpus=8, gpus=1.5, jobs=2)), KubeRaySettings(head_cpus=0.5))
    quota = next(o for o in objects if o["kind"] == "ResourceQuota")
    assert quota["metadata"] == {"name": "matih-quota", "namespace": "ml-research",
                                 "labels": {"app.kubernetes.io/managed-by": "matih-lite"}}
    # 8 CPUs of training plus the head pods of the 2 jobs it may run at once; GPUs as whole devices.
    assert quota["spec"]["hard"] == {"requests.cpu": "9", "requests.nvidia.com/gpu": "2", "count/rayjobs.ray.io": "2"}
    assert problems(objects) == []
    only_jobs = manifests.resource_quota("ml-x", Limits(jobs=1), KubeRaySettings(mode="raycluster"))
    assert only_jobs["spec"]["hard"] == {"count/rayclusters.ray.io": "1"}


def test_tenants_never_share_a_namespace():
    cfg = KubeRaySettings()
    names = {manifests.tenant_namespace(cfg, t) for t in ("a_b", "a-b", "ab", "x" * 63)}
    assert len(names) == 4
    assert manifests.tenant_namespace(cfg, "a-b") == "ml-a-b"
    assert all(len(n) <= 63 and n == n.lower() and "_" not in n for n in names)
    for name in names:
        assert core_problems(manifests.namespace(name)) == []


@pytest.mark.parametrize(("change", "message"), [
    (lambda o: o["spec"].__setitem__("submisionMode", "InteractiveMode"), "'submisionMode' was unexpected"),
    (lambda o: o["spec"].__setitem__("submissionMode", "Interactive"), "is not one of"),
    (lambda o: o["spec"].__setitem__("ttlSecondsAfterFinished", -1), "less than the minimum of 0"),
    (lambda o: o["spec"].__setitem__("backoffLimit", 2), "spec: "),
    (lambda o: o["metadata"].__setitem__("name", "matih-" + "a" * 50), "is too long"),
    (lambda o: o["metadata"].__setitem__("name", "Matih_Job"), "does not match"),
    (lambda o: o["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].__setitem__("minReplicas", 5),
     "minReplicas 5 is greater than maxReplicas 2"),
    (lambda o: o["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"].__setitem__("num-cpus", 4),
     "4 is not of type 'string'"),
    (lambda o: o["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"].__setitem__("containers", []),
     "should be non-empty"),
    (lambda o: o["spec"]["rayClusterSpec"]["autoscalerOptions"].__setitem__("upscalingMode", "Fast"), "is not one of"),
])
def test_the_schema_refuses_what_kuberay_would(change, message):
    obj = copy.deepcopy(manifests.rayjob(request({"gpus": 0.5}, tune=TUNE), KubeRaySettings()))
    assert custom_resource_problems(obj) == []
    change(obj)
    found = custom_resource_problems(obj)
    assert any(message in p for p in found), found


def test_pod_templates_and_quotas_are_checked_against_the_kubernetes_schema():
    objects = manifests.manifests(request(limits=Limits(cpus=2)), KubeRaySettings())
    bad = copy.deepcopy(objects)
    bad[-1]["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    assert any("workerGroupSpecs.0.template" in p for p in problems(bad)), problems(bad)
    quota = copy.deepcopy(objects[1])
    quota["spec"]["hardd"] = quota["spec"].pop("hard")
    assert core_problems(quota) and "hardd" in core_problems(quota)[0]


@settings(max_examples=60, deadline=None)
@given(cpus=st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 3.0]), gpus=st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 1.0, 2.0]),
       workers=st.integers(1, 4), at_once=st.integers(1, 6), autoscaling=st.booleans())
def test_every_layout_fits_the_job_and_validates(cpus, gpus, workers, at_once, autoscaling):
    tune = {**TUNE, "num_samples": at_once, "max_concurrent": at_once}
    req = request({"cpus": cpus, "gpus": gpus, "num_workers": workers}, tune=tune)
    cfg = KubeRaySettings(autoscaling=autoscaling)
    layout = manifests.WorkerLayout(req, cfg)
    assert layout.pods * layout.per_pod >= workers * at_once > (layout.pods - 1) * layout.per_pod
    assert layout.pod_gpus >= gpus * layout.per_pod - 1e-9 and layout.pod_gpus == int(layout.pod_gpus)
    if gpus:  # Ray on the pod can place every one of its workers
        assert layout.pod_gpus >= layout.per_pod * gpus - 1e-9
    assert problems(manifests.manifests(req, cfg), core=False) == []


def test_jobs_manifest_prints_what_would_be_applied_for_a_tenant(tmp_path, monkeypatch, capsys):
    import yaml

    from matih_lite.cli import main

    monkeypatch.chdir(tmp_path)
    for var in ("MATIH_URL", "MATIH_CONFIG", "MATIH_HOME"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "matih.toml").write_text(
        '[quotas."*"]\ncpus = 4\njobs = 2\n[quotas.research]\ngpus = 2\n\n'
        '[profiles.lite]\ncompute = { backend = "kuberay", namespace = "ml", api_server = "https://k8s.invalid:6443", '
        'service_url = "http://matih-lite.ml.svc:8000" }\n')
    (tmp_path / "spec.toml").write_text(
        'entrypoint = "train:main"\nframework = "pytorch"\n[resources]\ncpus = 1\ngpus = 0.5\nnum_workers = 2\n'
        '[tune]\nmetric = "loss"\nmode = "min"\nnum_samples = 4\n[tune.space]\nlr = { loguniform = [1e-4, 1e-1] }\n')
    with pytest.raises(SystemExit) as done:
        main(["jobs", "manifest", "spec.toml", "--tenant", "research"])
    out = capsys.readouterr().out
    assert done.value.code in (0, None), out
    documents = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in documents] == ["Namespace", "ResourceQuota", "RayJob"]
    assert documents[1]["spec"]["hard"] == {"requests.cpu": "6", "requests.nvidia.com/gpu": "2",
                                            "count/rayjobs.ray.io": "2"}
    job = documents[2]
    assert job["metadata"]["namespace"] == "ml-research"
    # Quota 4 CPUs, 2 per trial (2 workers of 1 CPU): 2 trials at once, 4 Ray workers at 0.5 GPU: 2 pods.
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["maxReplicas"] == 2 and group["rayStartParams"] == {"num-cpus": "2", "num-gpus": "1"}
    assert problems(documents) == []
    with pytest.raises(SystemExit):
        main(["jobs", "manifest", "spec.toml", "--json"])
    assert [d["kind"] for d in json.loads(capsys.readouterr().out)] == ["Namespace", "ResourceQuota", "RayJob"]


def test_settings_that_kubernetes_would_refuse_are_refused_when_the_backend_is_built(tmp_path):
    from matih_kuberay.plugin import KubeRayBackend
    from matih_lite.contracts import BackendContext
    from matih_lite.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"kuberay settings: not a memory quantity: '2 GiB' \(e.g. 2Gi"):
        KubeRayBackend(KubeRaySettings(head_memory="2 GiB", api_server="http://127.0.0.1:9"),
                       BackendContext(tmp_path, tmp_path, "lite"))
