"""``[quotas] max_artifact_mb`` and ``artifact_quota_gb``: past the per-upload limit an upload is a 413, past the
tenant's quota a 507, on the REST upload and the MLflow artifact proxy alike, and nothing of it is written."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from matih_lite.cli import main
from matih_lite.host import Host
from matih_lite.service import create_app
from matih_lite.tracking import Tracking
from matih_lite.tracking.quotas import GB, MB, artifact_quota

T = "default"
KB_IN_GB = 1024 / GB  # artifact_quota_gb for a quota of one KiB


def open_service(hermetic, quotas: str):
    (hermetic / "matih.toml").write_text(f"[quotas]\n{quotas}\n")
    host = Host.open()
    tracking = Tracking(host)
    run = tracking.create_run(T, tracking.get_or_create_experiment(T, "quotas").experiment_id)
    return host, run


def rest(run, name):
    return f"/api/v1/runs/{run.run_id}/artifacts/{name}"


def proxy(run, name):
    return f"/api/2.0/mlflow-artifacts/artifacts/{run.experiment_id}/{run.run_id}/artifacts/{name}"


def chunked(data: bytes, size: int = 1000):
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.mark.parametrize("url", [rest, proxy], ids=["rest", "mlflow-proxy"])
def test_an_upload_past_max_artifact_mb_is_a_413_and_leaves_nothing(hermetic, url):
    host, run = open_service(hermetic, "max_artifact_mb = 0.01")  # 10 KiB
    try:
        with TestClient(create_app(host)) as client:
            assert client.put(url(run, "small.bin"), content=b"x" * 10_000).status_code in (200, 201)
            refused = client.put(url(run, "big.bin"), content=b"x" * 20_000)  # Content-Length says so at once
            assert refused.status_code == 413, refused.text
            assert "max_artifact_mb" in refused.text
            streamed = client.put(url(run, "streamed.bin"), content=chunked(b"y" * 20_000))  # no Content-Length
            assert streamed.status_code == 413, streamed.text
            if url is rest:
                assert refused.headers["content-type"].startswith("application/problem+json")
                assert refused.json()["status"] == 413 and refused.json()["limit_bytes"] == int(0.01 * MB)
        names = [i.path for i in Tracking(host).list_artifacts(T, run.run_id, recursive=True)]
        assert names == ["small.bin"]
    finally:
        host.close()


@pytest.mark.parametrize("url", [rest, proxy], ids=["rest", "mlflow-proxy"])
def test_an_upload_past_the_tenants_quota_is_a_507_and_leaves_nothing(hermetic, url):
    host, run = open_service(hermetic, f"artifact_quota_gb = {KB_IN_GB!r}")
    try:
        with TestClient(create_app(host)) as client:
            assert client.put(url(run, "a.bin"), content=b"a" * 600).status_code in (200, 201)
            refused = client.put(url(run, "b.bin"), content=b"b" * 600)
            assert refused.status_code == 507, refused.text
            assert "artifact_quota_gb" in refused.text
            if url is rest:
                body = refused.json()
                assert (body["used_bytes"], body["incoming_bytes"], body["quota_bytes"]) == (600, 600, 1024)
            assert client.put(url(run, "a.bin"), content=b"c" * 900).status_code in (200, 201)  # replaces a.bin
        files = {i.path: i.size for i in Tracking(host).list_artifacts(T, run.run_id, recursive=True)}
        assert files == {"a.bin": 900}
    finally:
        host.close()


def test_a_tenants_table_overrides_the_top_level_keys():
    section = {"max_artifact_mb": 1, "artifact_quota_gb": 2, "*": {"artifact_quota_gb": 3},
               "research": {"max_artifact_mb": 64}}
    assert artifact_quota(section, "acme") == artifact_quota(section, "other")
    assert (artifact_quota(section, "acme").max_upload_bytes, artifact_quota(section, "acme").quota_bytes) == \
        (MB, 3 * GB)
    assert artifact_quota(section, "research").max_upload_bytes == 64 * MB
    assert artifact_quota({}, "acme").quota_bytes is None and artifact_quota(None, "acme").max_upload_bytes is None


@pytest.mark.parametrize("quotas, words", [
    ('max_artifact_mb = "lots"', "quotas.max_artifact_mb: expected a positive number (megabytes), got 'lots'"),
    ("artifact_quota_gb = 0", "quotas.artifact_quota_gb: expected a positive number (gigabytes), got 0"),
    ("[quotas.acme]\nartifact_quota_gb = -1", "quotas.acme.artifact_quota_gb: expected a positive number"),
])
def test_config_validate_names_a_bad_quota_with_its_key_path(hermetic, capsys, quotas, words):
    (hermetic / "matih.toml").write_text(f"[quotas]\n{quotas}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "validate"])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 2 and words in err, err


def test_artifact_keys_sit_beside_the_job_quotas_in_a_tenants_table():
    from matih_lite.training.jobs import quota_for

    section = {"jobs": 2, "research": {"cpus": 8, "artifact_quota_gb": 200, "max_artifact_mb": 64}}
    assert (quota_for(section, "research").cpus, quota_for(section, "research").jobs) == (8, 2)
    assert artifact_quota(section, "research") == artifact_quota({"research": {"artifact_quota_gb": 200,
                                                                              "max_artifact_mb": 64}}, "research")
