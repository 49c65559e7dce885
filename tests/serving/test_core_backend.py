"""The inprocess serving backend: versions materialized from the registry's artifacts, loaded, predicted."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys

import numpy as np
import pytest

from matih_lite.config import load_config
from matih_lite.contracts.flavors import ModelLoad
from matih_lite.errors import InvalidInput, NotFound, StoreError
from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.serving import load_version, serving_key
from matih_lite.serving.flavors.sklearn import SklearnFlavor
from matih_lite.serving.materialize import cache_root, materialize
from matih_lite.tracking.service import Tracking


@pytest.fixture
def host(hermetic):
    h = Host(load_config(cwd=hermetic))
    yield h
    h.close()


@pytest.fixture(scope="module")
def model_and_rows():
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(1)
    X = rng.normal(size=(150, 20))
    y = (X[:, 0] - X[:, 3] > 0).astype(int)
    return GradientBoostingClassifier(n_estimators=20, max_depth=2).fit(X, y), X


def log_model(host, folder, name="churn"):
    """Upload a saved model folder into a run's artifacts, register it; returns the version."""
    tracking = Tracking(host)
    exp = tracking.get_or_create_experiment(LOCAL_ADMIN.tenant, name)
    run = tracking.create_run(LOCAL_ADMIN.tenant, exp.experiment_id)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        tracking.log_artifact(LOCAL_ADMIN.tenant, run.run_id, f"model/{path.relative_to(folder).as_posix()}",
                              path.read_bytes())
    return Registry(host).register_version(LOCAL_ADMIN, name, f"runs:/{run.run_id}/model")


def test_registered_mlflow_model_loads_and_predicts(host, tmp_path, model_and_rows):
    import mlflow.sklearn

    model, X = model_and_rows
    mlflow.sklearn.save_model(model, tmp_path / "m", pip_requirements=["scikit-learn"],
                              skops_trusted_types=["sklearn.tree._tree.Tree"])
    mv = log_model(host, tmp_path / "m")
    assert mv.flavor == "sklearn"
    served = load_version(host, LOCAL_ADMIN.tenant, mv)
    assert served.key == serving_key("default", "churn", mv.version)
    assert served.model_dir.startswith(str(cache_root(host.context.home)))
    backend = host.backend("serving")
    np.testing.assert_array_equal(backend.predict(served.key, X), model.predict(X))
    assert load_version(host, LOCAL_ADMIN.tenant, mv).loaded_at == served.loaded_at  # idempotent
    info = backend.loaded()[served.key]
    assert info.predictions == 1 and info.flavor == "sklearn" and info.input_schema.width == 20
    assert backend.health().ok
    backend.unload(served.key)
    with pytest.raises(NotFound):
        backend.predict(served.key, X)
    backend.unload("never-loaded")


def test_materialize_copies_once_and_checks_hashes(host, tmp_path, model_and_rows):
    model, _ = model_and_rows
    SklearnFlavor().save(model, tmp_path / "m")
    mv = log_model(host, tmp_path / "m")
    first = materialize(host, "default", mv)
    marker = first / "MLmodel"
    mtime = marker.stat().st_mtime_ns
    assert materialize(host, "default", mv) == first and marker.stat().st_mtime_ns == mtime
    # a file changed behind the store's back no longer matches its recorded sha256
    root = host.artifacts.root
    stored = next(root.rglob("model.skops"))
    stored.write_bytes(stored.read_bytes()[:-3] + b"xyz")
    with pytest.raises(StoreError, match="sha256"):
        materialize(host, "default", mv, root=tmp_path / "other-cache")
    with pytest.raises(InvalidInput, match="outside the registry's artifacts"):
        materialize(host, "default", "s3://bucket/model")


def test_pickles_load_only_from_the_serving_cache(host, tmp_path, model_and_rows):
    model, _ = model_and_rows
    SklearnFlavor().save(model, tmp_path / "m", serialization_format="pickle")
    backend = host.backend("serving")
    with pytest.raises(InvalidInput, match="registry's artifacts"):
        backend.load(ModelLoad("k", str(tmp_path / "m"), "sklearn", loader=host.registry("register_flavors")["sklearn"]))


def test_onnx_loads_from_any_folder_and_threads_share_it(host, tmp_path, model_and_rows):
    from skl2onnx import to_onnx

    from matih_lite.serving.flavors.onnx import OnnxFlavor

    model, X = model_and_rows
    OnnxFlavor().save(to_onnx(model, X[:1].astype(np.float32), options={"zipmap": False}), tmp_path / "onnx")
    backend = host.backend("serving")
    backend.load(ModelLoad("onnx", str(tmp_path / "onnx"), "onnx", loader=host.registry("register_flavors")["onnx"],
                           needs_trusted_source=False))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: backend.predict("onnx", X[i:i + 1])["label"][0], range(len(X))))
    np.testing.assert_array_equal(results, model.predict(X))
    assert backend.loaded()["onnx"].predictions == len(X)


def test_model_errors_are_counted_and_raised(host, tmp_path):
    from matih_lite.serving.flavors.pyfunc import PyfuncFlavor

    PyfuncFlavor().save(Exploding(), tmp_path / "boom")
    backend = host.backend("serving")
    from matih_lite.builtin.inprocess_serving import InprocessServing, InprocessSettings

    trusting = InprocessServing(InprocessSettings(trusted_dirs=[str(tmp_path)]), model_cache=host.context.model_cache)
    trusting.load(ModelLoad("boom", str(tmp_path / "boom"), "pyfunc", loader=PyfuncFlavor()))
    with pytest.raises(RuntimeError, match="boom"):
        trusting.predict("boom", np.zeros((1, 2)))
    assert trusting.loaded()["boom"].errors == 1 and "boom" in trusting.loaded()["boom"].last_error
    assert backend is not trusting


class Exploding:
    def predict(self, rows):
        raise RuntimeError("boom")


def test_starting_the_host_imports_no_ml_framework(tmp_path):
    code = ("import sys; from matih_lite.host import Host; from matih_lite.config import load_config; "
            f"from pathlib import Path; h = Host(load_config(cwd=Path({str(tmp_path)!r}))); h.backend('serving').health(); "
            "h.registry('register_flavors'); "
            "print(sorted(m for m in ('onnxruntime', 'sklearn', 'xgboost', 'skops', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
