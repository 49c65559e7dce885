"""Triton's own protocol on the ml-service, per deployment, on either backend: tritonclient's
``get_model_config``, ``get_inference_statistics`` and ``get_model_repository_index`` work against matih-lite."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from serving_helpers import register_model
from triton_models import Linear

from matih_lite.host import Host
from matih_lite.serving.traffic import detach_traffic
from matih_lite.testing.service import serve

pytestmark = pytest.mark.slow  # each starts an ml-service
EXAMPLE = np.array([[1.0, 2.0]])


def exercise(host):
    """Deploy two versions of a pyfunc model A/B, answer a few requests, and read Triton's protocol back."""
    import tritonclient.http as httpclient

    register_model(host, "scorer", Linear(2.0, 0.0), example=EXAMPLE)
    register_model(host, "scorer", Linear(2.0, 1000.0), example=EXAMPLE)
    with serve(host) as base:
        with httpx.Client(base_url=base, timeout=60) as c:
            assert c.post("/api/v1/deployments", json={"name": "ab", "model": "scorer", "split": "1=50,2=50"}
                          ).status_code == 201
            assert c.post("/api/v1/deployments", json={"name": "idle", "model": "scorer", "version": 2}
                          ).status_code == 201
            paths = c.get("/schema/openapi.json").json()["paths"]
        client = httpclient.InferenceServerClient(url=base.removeprefix("http://"))
        try:
            for i in range(12):
                inp = httpclient.InferInput("input", [1, 2], "FP64")
                inp.set_data_from_numpy(np.array([[float(i), 0.0]]), binary_data=True)
                client.infer("ab", [inp], headers={"X-Request-Key": f"user-{i}"})
            return {"config": client.get_model_config("ab"), "config_v2": client.get_model_config("ab", "2"),
                    "stats": client.get_inference_statistics("ab"),
                    "all_stats": client.get_inference_statistics(),
                    "index": client.get_model_repository_index(), "paths": paths}
        finally:
            client.close()


def check_common(seen):
    assert {"/v2/models/{name}/config", "/v2/models/{name}/stats", "/v2/repository/index",
            "/v2/models/{name}/versions/{version}/config"} <= set(seen["paths"])
    cfg = seen["config"]
    assert cfg["name"] == "ab" and [int(v) for v in cfg["version_policy"]["specific"]["versions"]] == [1, 2]
    assert [int(v) for v in seen["config_v2"]["version_policy"]["specific"]["versions"]] == [2]
    assert [(i["name"], i["data_type"]) for i in cfg["input"]] == [("input", "TYPE_FP64")]
    assert [int(d) for d in cfg["input"][0]["dims"]] == [2]
    assert [o["name"] for o in cfg["output"]] == ["predictions"]
    stats = {s["version"]: s for s in seen["stats"]["model_stats"]}
    assert set(stats) == {"1", "2"} and all(s["name"] == "ab" for s in stats.values())
    assert sum(int(s["inference_stats"]["success"]["count"]) for s in stats.values()) == 12
    assert {s["name"] for s in seen["all_stats"]["model_stats"]} == {"ab", "idle"}
    index = {(m["name"], m["version"]): m["state"] for m in seen["index"]}
    assert index[("ab", "1")] == index[("ab", "2")] == "READY"
    assert ("idle", "2") in index
    return cfg, stats


def test_on_the_inprocess_backend_the_ml_service_answers_as_triton_would(hermetic):
    host = Host.open()
    try:
        cfg, stats = check_common(exercise(host))
        assert cfg["platform"] == "python" and cfg["max_batch_size"] == 64
        assert cfg["parameters"]["matih_backend"]["string_value"] == "inprocess"
        assert all(int(s["execution_count"]) >= 1 for s in stats.values())
    finally:
        detach_traffic(host)
        host.close()


def test_on_the_triton_backend_triton_itself_answers_for_the_deployment(triton_host):
    cfg, stats = check_common(exercise(triton_host()))
    assert cfg["backend"] == "python"  # Triton's own config of the version's model
    assert cfg["parameters"]["matih_flavor_class"]["string_value"] == "matih_lite.serving.flavors.pyfunc:PyfuncFlavor"
    # Triton's own statistics: time measured inside Triton, model calls (batched) fewer or equal to requests
    for s in stats.values():
        assert int(s["inference_stats"]["compute_infer"]["count"]) >= 1
        assert int(s["inference_stats"]["compute_infer"]["ns"]) > 0
