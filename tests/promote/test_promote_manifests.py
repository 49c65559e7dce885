"""``promote --manifests DIR``: the objects that run the cluster profile, schema-valid, no secret in them."""

from __future__ import annotations

import tomllib

import kubernetes_validate
import pytest

from matih_lite.promote.manifests import render, write

RAW = {
    "profiles": {
        "lite": {"metadata": {"backend": "sqlite"}},
        "cluster": {
            "metadata": {"backend": "postgres", "dsn": "postgresql://ml:hunter2@db:5432/ml", "schema": "matih"},
            "artifacts": {"backend": "s3", "bucket": "ml-artifacts", "endpoint_url": "${S3_ENDPOINT:-}",
                          "secret_access_key": "${S3_SECRET}", "access_key_id": "AKIA"},
            "compute": {"backend": "kuberay", "namespace": "ml"},
            "serving": {"backend": "triton", "url": "http://triton:8000"},
        },
    },
    "models": {"*": {"staging_requires": ["auc >= 0.85"]}},
    "auth": {"enabled": True},
}


def _objects():
    return render(RAW, "cluster", namespace="ml", image="registry.example/matih-lite:1.0",
                  tenants=["default", "Acme Corp"])


def test_every_core_object_validates_against_the_kubernetes_schemas():
    objects = _objects()
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Namespace", "NetworkPolicy", "RayCluster",
                     "ResourceQuota", "Service"]
    for obj in objects:
        if obj["kind"] == "RayCluster":
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
        second = apply(objects, client.ApiClient(configuration))
        assert [action for _, action in second] == ["replaced"] * len(objects)
        broken = [{**objects[1], "spec": {**objects[1]["spec"], "replicas": "two"}}]
        from matih_lite.errors import StoreError

        with pytest.raises(StoreError, match="refused Deployment .*ml-service: 422"):
            apply(broken, client.ApiClient(configuration))
    finally:
        api.stop()
