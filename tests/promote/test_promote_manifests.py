"""``promote --manifests DIR``: the objects that run the cluster profile, schema-valid, no secret in them."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest

from matih_lite.errors import ConfigError
from matih_lite.promote.manifests import DRIFT_DEFAULTS, DRIFT_GROUP, render, write

RAW = {
    "profiles": {
        "lite": {"metadata": {"backend": "sqlite"}},
        "cluster": {
            "metadata": {"backend": "postgres", "dsn": "postgresql://ml:hunter2@db:5432/ml", "schema": "matih"},
            "artifacts": {"backend": "s3", "bucket": "ml-artifacts", "endpoint_url": "${S3_ENDPOINT:-}",
                          "secret_access_key": "${S3_SECRET}", "access_key_id": "AKIA"},
            "compute": {"backend": "kuberay", "namespace": "ml"},
            "serving": {"backend": "triton", "url": "http://triton:8000"},
            "events": {"backend": "kafka", "bootstrap_servers": "kafka:9092", "topic_prefix": "ml."},
            "drift": {"backend": "flink", "checkpoint_interval": "30s", "parallelism": 2},
        },
    },
    "models": {"*": {"staging_requires": ["auc >= 0.85"]}},
    "auth": {"enabled": True},
}


TARGET = {"tenant": "default", "deployment": "churn-prod", "model": "churn", "stream": "inference.default.churn-prod",
          "labels": "labels.default.churn-prod", "settings": {"windows": ["1h", "1d"], "grace": "1m"},
          "windows": [{"label": "1h", "size_ms": 3_600_000}, {"label": "1d", "size_ms": 86_400_000}]}
CUSTOM_KINDS = ("RayCluster", "FlinkDeployment")


def _objects(raw=RAW, **kw):
    return render(raw, "cluster", namespace="ml", image="registry.example/matih-lite:1.0",
                  tenants=["default", "Acme Corp"], flink_image="registry.example/matih-flink:1.0",
                  drift_targets=[TARGET], **kw)


def _with(slot, **settings):
    return {**RAW, "profiles": {**RAW["profiles"], "cluster": {**RAW["profiles"]["cluster"], slot: settings}}}


def test_every_core_object_validates_against_the_kubernetes_schemas():
    objects = _objects()
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == ["ConfigMap", "Deployment", "FlinkDeployment", "HorizontalPodAutoscaler", "Namespace",
                     "NetworkPolicy", "PersistentVolumeClaim", "RayCluster", "ResourceQuota", "Service"]
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, "1.33.0", strict=True)
    quotas = [o["metadata"]["namespace"] for o in objects if o["kind"] == "ResourceQuota"]
    assert quotas == ["ml-acme-corp", "ml-default"]
    ml = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "ml-service")
    container = ml["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_ray_cluster_matches_kuberays_crd_schema():
    validation = pytest.importorskip("matih_kuberay.validation")
    [ray] = [o for o in _objects() if o["kind"] == "RayCluster"]
    assert validation.custom_resource_problems(ray) == []
    for _, pod_template in validation.pod_templates(ray):  # each as a core PodTemplate
        kubernetes_validate.validate(pod_template, "1.33.0", strict=True)


def test_the_config_map_holds_the_cluster_profile_and_secrets_only_by_reference(tmp_path):
    objects = _objects()
    text = next(o for o in objects if o["kind"] == "ConfigMap")["data"]["matih.toml"]
    doc = tomllib.loads(text)
    assert doc["default_profile"] == "cluster" and list(doc["profiles"]) == ["cluster"]
    assert doc["profiles"]["cluster"]["metadata"]["dsn"] == "${MATIH_METADATA_DSN}"
    assert doc["profiles"]["cluster"]["artifacts"]["secret_access_key"] == "${S3_SECRET}"
    assert doc["models"]["*"]["staging_requires"] == ["auc >= 0.85"] and doc["auth"]["enabled"] is True
    files = write(objects, tmp_path / "manifests")
    everything = "".join((tmp_path / "manifests" / f).read_text() for f in files)
    assert "hunter2" not in everything
    ml = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "ml-service")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in ml["spec"]["template"]["spec"]["containers"][0]["env"]
            if "valueFrom" in e}
    assert set(refs) == {"MATIH_METADATA_DSN", "S3_ENDPOINT", "S3_SECRET"}
    assert all(r["name"] == "matih-secrets" and r["key"] in refs for r in refs.values())


def test_apply_creates_every_object_then_replaces_them_on_a_second_run(tmp_path):
    pytest.importorskip("kubernetes")
    from k8s_api import FakeKubernetesApi
    from kubernetes import client

    from matih_lite.promote.manifests import apply

    api = FakeKubernetesApi().start()
    try:
        configuration = client.Configuration()
        configuration.host = api.url
        objects = _objects()
        first = apply(objects, client.ApiClient(configuration))
        assert [action for _, action in first] == ["created"] * len(objects)
        assert "/apis/apps/v1/namespaces/ml/deployments/ml-service" in api.objects
        assert "/api/v1/namespaces/ml-acme-corp/resourcequotas/matih-tenant" in api.objects
        assert "/apis/flink.apache.org/v1beta1/namespaces/ml/flinkdeployments/matih-drift" in api.objects
        second = apply(objects, client.ApiClient(configuration))
        assert [action for _, action in second] == ["replaced"] * len(objects)
        broken = [{**objects[1], "spec": {**objects[1]["spec"], "replicas": "two"}}]
        from matih_lite.errors import StoreError

        with pytest.raises(StoreError, match="refused Deployment .*ml-service: 422"):
            apply(broken, client.ApiClient(configuration))
    finally:
        api.stop()


def _flink():
    objects = _objects()
    [job] = [o for o in objects if o["kind"] == "FlinkDeployment"]
    spec = json.loads(next(o for o in objects if o["metadata"]["name"] == "matih-drift-job")["data"]["spec.json"])
    return objects, job, spec


def test_the_drift_job_is_a_flink_deployment_that_the_operators_crd_schema_accepts():
    validation = pytest.importorskip("matih_flink.validation")
    objects, job, spec = _flink()
    assert validation.custom_resource_problems(job) == []
    for where, pod in validation.pod_templates(job):  # each as a core Pod
        kubernetes_validate.validate(pod, "1.33.0", strict=True)
    assert validation.problems(job) == []
    s = job["spec"]
    assert (s["image"], s["flinkVersion"], s["serviceAccount"]) == ("registry.example/matih-flink:1.0", "v2_3", "flink")
    assert s["job"]["jarURI"] == "local:///opt/flink/opt/flink-python-2.3.0.jar"
    assert s["job"]["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert s["job"]["args"][-3:] == ["-pym", "matih_flink.job.drift_job", "/etc/matih/drift/spec.json"]
    assert (s["job"]["upgradeMode"], s["job"]["parallelism"], s["job"]["state"]) == ("savepoint", 2, "running")
    conf = s["flinkConfiguration"]
    # The job sets its own checkpoint folders from its spec (as a file URI): the operator's are the same ones.
    assert conf["execution.checkpointing.dir"] == Path(spec["checkpoint_dir"]).resolve().as_uri()
    assert conf["execution.checkpointing.savepoint-dir"] == Path(spec["savepoint_dir"]).resolve().as_uri()
    assert conf["execution.checkpointing.interval"] == "30000 ms" and spec["checkpoint_ms"] == 30_000
    state = next(o for o in objects if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] ==
                 "matih-drift-state")
    kubernetes_validate.validate(state, "1.33.0", strict=True)
    volumes = {v["name"]: v for v in s["podTemplate"]["spec"]["volumes"]}
    assert volumes["flink-state"]["persistentVolumeClaim"]["claimName"] == "matih-drift-state"
    assert volumes["drift-spec"]["configMap"]["name"] == "matih-drift-job"
    [main] = s["podTemplate"]["spec"]["containers"]
    assert main["env"] == [{"name": "MATIH_DRIFT_TOKENS", "valueFrom": {"secretKeyRef": {
        "name": "matih-secrets", "key": "MATIH_DRIFT_TOKENS", "optional": True}}}]  # a reference, never a token
    # The spec as the local runner writes it: the profile's Kafka and topics, the watched deployments.
    assert spec["bootstrap_servers"] == "kafka:9092" and spec["group"] == "ml." + DRIFT_GROUP
    assert spec["topics"] == {"ml.inference.default.churn-prod": {"key": "default/churn-prod", "kind": "inference"},
                              "ml.labels.default.churn-prod": {"key": "default/churn-prod", "kind": "labels"}}
    assert spec["targets"]["default/churn-prod"]["windows"] == TARGET["windows"]
    assert (spec["clock_topic"], spec["results_topic"]) == ("ml.drift.clock", "ml.drift.results")
    assert spec["service_url"] == "http://ml-service.ml.svc:8000"  # the loopback default is the laptop's
    assert spec["lateness_ms"] == 10_000 and spec["kernel"] == "matih_lite.monitoring.window"


def test_a_flink_deployment_with_a_wrong_field_is_refused():
    validation = pytest.importorskip("matih_flink.validation")
    _, job, _ = _flink()

    def broken(change):
        obj = json.loads(json.dumps(job))
        change(obj["spec"])
        return validation.problems(obj)

    assert any("upgradMode" in p for p in broken(lambda s: s["job"].update(upgradMode="savepoint")))
    assert any(p.startswith("spec.flinkVersion:") for p in broken(lambda s: s.update(flinkVersion="v2.3")))
    assert any(p.startswith("spec.job.parallelism:") for p in broken(lambda s: s["job"].update(parallelism="2")))
    assert any(p.startswith("spec.job.upgradeMode:") for p in broken(lambda s: s["job"].update(upgradeMode="last")))
    assert any("savepoint directory" in p for p in broken(
        lambda s: s["flinkConfiguration"].pop("execution.checkpointing.savepoint-dir")))
    assert any("memory" in p for p in broken(lambda s: s["taskManager"]["resource"].pop("memory")))
    assert any("kubernetes.namespace" in p for p in broken(
        lambda s: s["flinkConfiguration"].update({"kubernetes.namespace": "other"})))
    assert any("podTemplate" in p for p in broken(
        lambda s: s["podTemplate"]["spec"]["containers"][0].update(volumeMount=[])))  # kubernetes-validate's
    assert any(p.startswith("spec.flinkConfiguration.") for p in broken(
        lambda s: s["flinkConfiguration"].update({"taskmanager.numberOfTaskSlots": 2})))


def test_the_drift_job_follows_the_flink_backends_settings_and_needs_kafka():
    plugin = pytest.importorskip("matih_flink.plugin")
    import msgspec

    defaults = msgspec.to_builtins(plugin.FlinkDriftSettings())
    assert {k: defaults[k] for k in DRIFT_DEFAULTS} == DRIFT_DEFAULTS
    assert pytest.importorskip("matih_flink.runner").JOB_GROUP == DRIFT_GROUP
    off = _objects(_with("drift", backend="flink", enabled=False))
    assert next(o for o in off if o["kind"] == "FlinkDeployment")["spec"]["job"]["state"] == "suspended"
    # The operator runs the job: the service's profile says so, and the flink backend accepts what it says.
    text = next(o for o in off if o["kind"] == "ConfigMap" and "matih.toml" in o["data"])["data"]["matih.toml"]
    drift = tomllib.loads(text)["profiles"]["cluster"]["drift"]
    assert drift["mode"] == "operator"
    msgspec.convert({k: v for k, v in drift.items() if k != "backend"}, plugin.FlinkDriftSettings)
    with pytest.raises(ConfigError, match="profiles.cluster.events: the flink drift job reads the Kafka"):
        _objects(_with("events", backend="duckdb"))
    with pytest.raises(ConfigError, match="profiles.cluster.drift.allowed_lateness"):
        _objects(_with("drift", backend="flink", allowed_lateness="soon"))


def _triton(raw):
    objects = _objects(raw)
    triton = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "triton")
    ml = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "ml-service")
    return objects, triton["spec"]["template"]["spec"], ml["spec"]["template"]["spec"]


def test_triton_serves_the_backends_repository_setting_and_listens_where_its_url_says():
    triton_plugin = pytest.importorskip("matih_triton.plugin")
    import msgspec

    serving = {"backend": "triton", "url": "http://models.ml.svc:8100",
               "repository": "s3://http://minio:9000/models/triton", "s3_region": "eu-west-1",
               "s3_access_key_id": "AKIA", "s3_secret_access_key": "${TRITON_S3_SECRET}"}
    # every key read here is the backend's own setting
    msgspec.convert({k: v for k, v in serving.items() if k != "backend"}, triton_plugin.TritonSettings)
    objects, pod, _ = _triton(_with("serving", **serving))
    [container] = pod["containers"]
    assert "--model-repository=s3://http://minio:9000/models/triton" in container["args"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env == {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIA",
                   "AWS_SECRET_ACCESS_KEY": {"secretKeyRef": {"name": "matih-secrets", "key": "TRITON_S3_SECRET"}}}
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "models")
    assert service["spec"]["ports"][0]["port"] == 8100
    for obj in objects:
        if obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, "1.33.0", strict=True)

    objects, pod, ml_pod = _triton(_with("serving", backend="triton", url="http://triton:8000",
                                         repository="/models/triton"))
    assert "--model-repository=/models/triton" in pod["containers"][0]["args"]
    for p in (pod, ml_pod):  # the ml-service writes the versions where Triton reads them
        [mount] = [m for m in p["containers"][0]["volumeMounts"] if m["mountPath"] == "/models/triton"]
        [volume] = [v for v in p["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"]["claimName"] == "triton-models"
    _, pod, _ = _triton(RAW)  # the backend's default: the state folder's triton-models
    assert "--model-repository=/var/lib/matih/triton-models" in pod["containers"][0]["args"]
    with pytest.raises(ConfigError, match="profiles.cluster.serving.repository: repository 'models' is a folder"):
        _triton(_with("serving", backend="triton", repository="models"))
