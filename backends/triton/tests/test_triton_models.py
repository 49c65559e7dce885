"""Every flavor runs in Triton with its own flavor code; the trust rule holds; Triton reads the configs we write.

Versions are registered as users register them (saved, logged to a run, registered) and loaded
with ``matih_lite.serving.load_version`` (the serving cache, then the triton backend).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from matih_triton.backend import TritonServing
from matih_triton.plugin import TritonSettings
from serving_helpers import register_model
from triton_models import BrokenOnLoad, Linear

from matih_lite.contracts.flavors import MANIFEST, ModelLoad
from matih_lite.errors import InvalidInput
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.serving import load_version, model_load
from matih_lite.testing.serving import write_linear_onnx

pytestmark = pytest.mark.slow
T = LOCAL_ADMIN.tenant


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] + X[:, 2] > 0).astype(np.int64)
    return X, y


def test_sklearn_xgboost_and_pyfunc_versions_answer_as_in_process(triton_host, data):
    import xgboost
    from sklearn.ensemble import RandomForestClassifier

    X, y = data
    host = triton_host()
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    booster = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(X, y)
    models = {"forest": (forest, "sklearn"), "boost": (booster, "xgboost"), "lin": (Linear(3.0, 1.0), "pyfunc")}
    backend = host.backend("serving")
    for name, (model, flavor) in models.items():
        mv = register_model(host, name, model, flavor, X[:2])
        info = load_version(host, T, mv)
        assert info.flavor == flavor and info.input_schema.width == 4
        got = backend.predict(f"{T}/{name}/1", X[:50])
        assert np.allclose(np.asarray(got, dtype=np.float64), np.asarray(model.predict(X[:50]), dtype=np.float64))
        files = backend.repository.listing(f"{T}--{name}--1")
        assert f"{T}--{name}--1/1/model.py" in files and f"{T}--{name}--1/1/model/MLmodel" in files
        assert f"{T}--{name}--1/1/model/{MANIFEST}" in files  # the serving cache's manifest travels along
    forest_info = backend.loaded()[f"{T}/forest/1"]
    assert forest_info.output_names == ("predictions",) and forest_info.output_specs[0].dtype == "int64"


def test_triton_reads_the_generated_python_backend_config_as_written(triton, hermetic, data):
    X, _ = data
    cache = hermetic / "serving-cache"
    cache.mkdir()
    backend = TritonServing(TritonSettings(url=triton.url, instances=2, max_batch_size=16, max_queue_delay_us=250,
                                           onnx_runtime="python"), repository=triton.repository, model_cache=cache)
    try:
        folder = write_linear_onnx(hermetic / "m", [1.0, 2.0, 3.0], 0.5)
        backend.load(ModelLoad(key="acme/lin/4", model_dir=str(folder), flavor="onnx", needs_trusted_source=False,
                               loader=__import__("matih_lite.serving.flavors.onnx", fromlist=["OnnxFlavor"])
                               .OnnxFlavor()))
        cfg = backend.model_config("acme/lin/4")  # Triton's own get_model_config
        assert cfg["name"] == "acme--lin--4" and cfg["backend"] == "python" and cfg["max_batch_size"] == 16
        assert [(i["name"], i["data_type"], [int(d) for d in i["dims"]]) for i in cfg["input"]] == \
            [("input", "TYPE_FP32", [3])]
        assert [(o["name"], o["data_type"]) for o in cfg["output"]] == [("y", "TYPE_FP32")]
        assert cfg["instance_group"][0]["count"] == 2 and cfg["instance_group"][0]["kind"] == "KIND_CPU"
        assert int(cfg["dynamic_batching"]["max_queue_delay_microseconds"]) == 250
        assert [int(v) for v in cfg["version_policy"]["specific"]["versions"]] == [4]
        params = {k: v["string_value"] for k, v in cfg["parameters"].items()}
        assert params["matih_flavor_class"] == "matih_lite.serving.flavors.onnx:OnnxFlavor"
        assert params["matih_layout"] == "rows" and params["matih_verify"] == "false"
        stats = backend.model_statistics("acme/lin/4")
        assert stats["model_stats"][0]["name"] == "acme--lin--4"
    finally:
        backend.close()
    assert backend.repository.listing("acme--lin--4") == []  # closing unloads and tidies the repository


def test_triton_parses_the_onnxruntime_config_and_auto_falls_back_to_the_python_backend(triton, hermetic):
    folder = write_linear_onnx(hermetic / "m", [1.0, 2.0, 3.0], 0.5)
    strict = TritonServing(TritonSettings(url=triton.url, onnx_runtime="onnxruntime"), repository=triton.repository,
                           model_cache=hermetic)
    with pytest.raises(InvalidInput, match="unable to find backend library for backend 'onnxruntime'"):
        strict.load(ModelLoad(key="p/q/1", model_dir=str(folder), flavor="onnx", needs_trusted_source=False))
    # Triton got as far as looking for the backend the config names: it parsed the file.
    assert strict.repository.listing("p--q--1") == []  # and nothing broken is left in the repository
    strict.close()
    from matih_lite.serving.flavors.onnx import OnnxFlavor

    auto = TritonServing(TritonSettings(url=triton.url), repository=triton.repository, model_cache=hermetic)
    try:
        auto.load(ModelLoad(key="p/q/1", model_dir=str(folder), flavor="onnx", needs_trusted_source=False,
                            loader=OnnxFlavor()))
        assert auto.model_config("p/q/1")["backend"] == "python"
        np.testing.assert_allclose(auto.predict("p/q/1", np.ones((2, 3), np.float32)).reshape(-1), [6.5, 6.5])
    finally:
        auto.close()


def test_pickled_models_reach_triton_only_from_verified_copies_and_are_checked_there(triton_host, data):
    from sklearn.linear_model import LogisticRegression

    X, y = data
    host = triton_host()
    mv = register_model(host, "clf", LogisticRegression().fit(X, y), "sklearn", X[:2])
    from matih_lite.serving.materialize import materialize

    verified = materialize(host, T, mv)
    outside = host.context.home / "elsewhere"
    shutil.copytree(verified, outside)
    backend = host.backend("serving")
    with pytest.raises(InvalidInput, match="serving cache"):
        backend.load(model_load(host, outside, "sklearn", "default/clf/1"))
    # A verified copy whose bytes changed afterwards: Triton's model.py checks the manifest's sha256 first.
    tampered = host.context.model_cache / ("f" * 64)
    shutil.copytree(verified, tampered)
    manifest = json.loads((tampered / MANIFEST).read_text())
    victim = next(e["path"] for e in manifest["files"] if e["path"] != "MLmodel")
    (tampered / victim).write_bytes((tampered / victim).read_bytes() + b"\0")
    with pytest.raises(InvalidInput, match="sha256"):
        backend.load(model_load(host, tampered, "sklearn", "default/clf/1"))
    assert "default/clf/1" not in backend.loaded()
    info = backend.load(model_load(host, verified, "sklearn", "default/clf/1"))
    assert info.key == "default/clf/1"


def test_a_model_triton_cannot_load_is_refused_with_its_reason(triton_host, data):
    X, _ = data
    host = triton_host()
    mv = register_model(host, "broken", BrokenOnLoad(), "pyfunc", X[:2])
    with pytest.raises(InvalidInput) as refused:
        load_version(host, T, mv)
    assert "Triton refused to load default/broken/1" in refused.value.message
    assert "weights file is for another architecture" in refused.value.message
    backend = host.backend("serving")
    assert "default/broken/1" not in backend.loaded() and backend.repository.listing("default--broken--1") == []


def test_health_stays_green_after_a_deployment_is_unloaded(triton, hermetic, tmp_path):
    """Triton's own readiness turns false once any model is unloaded in explicit mode (it stays listed as
    unavailable); the backend's health asks whether Triton is live instead (and counts its served models that
    are ready), so removing one deployment does not take the service's /ready down."""
    import tritonclient.http as httpclient

    from matih_lite.serving.flavors.onnx import OnnxFlavor

    backend = TritonServing(TritonSettings(url=triton.url), repository=triton.repository, model_cache=hermetic)
    try:
        for key, weights in (("h/a/1", [1.0, 2.0, 3.0]), ("h/b/1", [3.0, 2.0, 1.0])):
            folder = write_linear_onnx(hermetic / key.replace("/", "-"), weights, 0.0)
            backend.load(ModelLoad(key=key, model_dir=str(folder), flavor="onnx", loader=OnnxFlavor(),
                                   needs_trusted_source=False))
        assert backend.health().ok
        backend.unload("h/a/1")
        client = httpclient.InferenceServerClient(triton.url.removeprefix("http://"))
        assert not client.is_server_ready()  # Triton's own answer now: what asking it made /ready report
        health = backend.health()
        assert health.ok and "1 of 1 served model(s) ready" in health.detail, health.detail
        assert np.asarray(backend.predict("h/b/1", np.ones((1, 3), dtype=np.float32))).size == 1
    finally:
        backend.close()
