"""The serving-slot contract: every ServingBackend passes these, in-process or remote (Triton).

Override ``backend`` to return a fresh backend built with the ``model_cache`` fixture as its
serving cache (``BackendContext.model_cache``). The kit's models are two tiny ONNX graphs written
here (``y = X @ w + b``, three float32 inputs), loaded through the ``onnx`` flavor by name and
folder, so a remote backend needs nothing else; an in-process backend gets the flavor object as
``ModelLoad.loader``. Needs ``onnx`` and ``onnxruntime`` (the ``ml`` extra).
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matih_lite.contracts.flavors import MANIFEST, ModelLoad
from matih_lite.contracts.slots import ServedModel
from matih_lite.errors import InvalidInput, NotFound

WEIGHTS_A = ([1.0, 2.0, 3.0], 0.5)
WEIGHTS_B = ([3.0, -1.0, 0.25], -2.0)


def write_linear_onnx(folder: Path, weights: list[float], bias: float) -> Path:
    """An MLflow-style ONNX model folder computing ``X @ weights + bias`` for float32 rows of 3."""
    import onnx
    from onnx import TensorProto, helper

    from matih_lite.serving.flavors.onnx import OnnxFlavor

    w = helper.make_tensor("w", TensorProto.FLOAT, [len(weights), 1], weights)
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [bias])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, len(weights)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return OnnxFlavor().save(model, folder)


def expected(weights: tuple[list[float], float], rows: np.ndarray) -> np.ndarray:
    return rows.astype(np.float32) @ np.asarray(weights[0], dtype=np.float32) + np.float32(weights[1])


def flat(outputs: Any) -> np.ndarray:
    """A prediction as one flat array (the primary output when there are several)."""
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    return np.asarray(outputs, dtype=np.float64).reshape(-1)


def verified_copy(source: Path, cache: Path, name: str) -> Path:
    """``source`` copied into the serving cache as the registry's materialization leaves it (manifest last)."""
    target = cache / name
    shutil.copytree(source, target)
    (target / MANIFEST).write_text(json.dumps({"source": name, "files": []}))
    return target


class ServingBackendContract:
    """Override ``backend`` (built with ``model_cache`` as its serving cache); ``flavor_loader`` if needed."""

    @pytest.fixture
    def model_cache(self, tmp_path) -> Path:
        path = tmp_path / "serving-cache"
        path.mkdir()
        return path

    @pytest.fixture
    def backend(self, model_cache) -> Any:
        raise NotImplementedError("override the 'backend' fixture to build your serving backend on model_cache")

    @pytest.fixture
    def flavor_loader(self) -> Any:
        """The flavor object handed as ``ModelLoad.loader`` (remote backends ignore it)."""
        from matih_lite.serving.flavors.onnx import OnnxFlavor

        return OnnxFlavor()

    @pytest.fixture
    def models(self, tmp_path) -> dict[str, Path]:
        return {"a": write_linear_onnx(tmp_path / "model-a", *WEIGHTS_A),
                "b": write_linear_onnx(tmp_path / "model-b", *WEIGHTS_B)}

    @pytest.fixture
    def rows(self) -> np.ndarray:
        return np.random.default_rng(7).normal(size=(64, 3)).astype(np.float32)

    def request(self, key: str, folder: Path, loader: Any, **kwargs: Any) -> ModelLoad:
        return ModelLoad(key=key, model_dir=str(folder), flavor="onnx", loader=loader,
                         needs_trusted_source=kwargs.pop("needs_trusted_source", False), **kwargs)

    # ---- loading ----------------------------------------------------------------------------------
    def test_health_answers(self, backend):
        health = backend.health()
        assert health.ok, health.detail

    def test_load_then_predict_gives_the_models_answers(self, backend, models, rows, flavor_loader):
        info = backend.load(self.request("t/m/1", models["a"], flavor_loader))
        assert isinstance(info, ServedModel)
        assert info.key == "t/m/1" and info.flavor == "onnx"
        np.testing.assert_allclose(flat(backend.predict("t/m/1", rows)), expected(WEIGHTS_A, rows), rtol=1e-5)
        assert set(backend.loaded()) == {"t/m/1"}

    def test_served_model_describes_its_inputs_and_outputs(self, backend, models, flavor_loader):
        info = backend.load(self.request("k", models["a"], flavor_loader))
        assert info.input_schema is not None and info.input_schema.width == 3
        assert info.output_names and info.output_names[0] == "y"
        if info.output_specs:
            assert [s.name for s in info.output_specs] == list(info.output_names)
            assert info.output_specs[0].dtype == "float32"

    def test_loading_the_same_folder_again_is_a_no_op(self, backend, models, rows, flavor_loader):
        first = backend.load(self.request("k", models["a"], flavor_loader))
        backend.predict("k", rows[:4])
        again = backend.load(self.request("k", models["a"], flavor_loader))
        assert again.loaded_at == first.loaded_at
        assert backend.loaded()["k"].predictions == 1

    def test_another_folder_replaces_the_model(self, backend, models, rows, flavor_loader):
        backend.load(self.request("k", models["a"], flavor_loader))
        backend.load(self.request("k", models["b"], flavor_loader))
        np.testing.assert_allclose(flat(backend.predict("k", rows)), expected(WEIGHTS_B, rows), rtol=1e-5)
        assert list(backend.loaded()) == ["k"]

    def test_two_keys_serve_side_by_side(self, backend, models, rows, flavor_loader):
        backend.load(self.request("a", models["a"], flavor_loader))
        backend.load(self.request("b", models["b"], flavor_loader))
        np.testing.assert_allclose(flat(backend.predict("a", rows)), expected(WEIGHTS_A, rows), rtol=1e-5)
        np.testing.assert_allclose(flat(backend.predict("b", rows)), expected(WEIGHTS_B, rows), rtol=1e-5)

    def test_a_missing_folder_is_refused(self, backend, tmp_path, flavor_loader):
        with pytest.raises((NotFound, InvalidInput)):
            backend.load(self.request("k", tmp_path / "nothing-here", flavor_loader))
        assert "k" not in backend.loaded()

    def test_code_running_models_load_only_from_verified_copies(self, backend, models, model_cache, rows,
                                                                  flavor_loader):
        with pytest.raises(InvalidInput, match="serving cache|registry"):
            backend.load(self.request("k", models["a"], flavor_loader, needs_trusted_source=True))
        assert "k" not in backend.loaded()
        copy = verified_copy(models["a"], model_cache, "0" * 64)
        backend.load(self.request("k", copy, flavor_loader, needs_trusted_source=True))
        np.testing.assert_allclose(flat(backend.predict("k", rows)), expected(WEIGHTS_A, rows), rtol=1e-5)

    # ---- predicting -----------------------------------------------------------------------------------
    def test_unknown_key_is_not_found(self, backend, rows):
        with pytest.raises(NotFound):
            backend.predict("never-loaded", rows)

    @pytest.mark.parametrize("bad", ["wrong-width", "strings"])
    def test_bad_input_is_refused_and_counted(self, backend, models, flavor_loader, bad):
        backend.load(self.request("k", models["a"], flavor_loader))
        inputs = np.zeros((2, 5), dtype=np.float32) if bad == "wrong-width" else np.array([["a", "b", "c"]])
        with pytest.raises(InvalidInput):
            backend.predict("k", inputs)
        info = backend.loaded()["k"]
        assert info.rejected == 1 and info.predictions == 0

    def test_counters_count_calls(self, backend, models, rows, flavor_loader):
        backend.load(self.request("k", models["a"], flavor_loader))
        for i in range(5):
            backend.predict("k", rows[i:i + 1])
        info = backend.loaded()["k"]
        assert (info.predictions, info.rejected, info.errors) == (5, 0, 0)

    def test_loaded_returns_copies(self, backend, models, rows, flavor_loader):
        backend.load(self.request("k", models["a"], flavor_loader))
        snapshot = backend.loaded()["k"]
        backend.predict("k", rows[:1])
        assert snapshot.predictions == 0 and backend.loaded()["k"].predictions == 1

    def test_many_threads_predict_at_once(self, backend, models, rows, flavor_loader):
        backend.load(self.request("k", models["a"], flavor_loader))
        want = expected(WEIGHTS_A, rows)
        errors: list[BaseException] = []

        def worker(offset: int) -> None:
            try:
                for i in range(offset, len(rows), 8):
                    got = flat(backend.predict("k", rows[i:i + 1]))
                    np.testing.assert_allclose(got, want[i:i + 1], rtol=1e-5)
            except BaseException as exc:  # reported below, on the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[0]
        assert backend.loaded()["k"].predictions == len(rows)

    # ---- unloading ----------------------------------------------------------------------------------
    def test_unload_forgets_the_model_and_ignores_unknown_keys(self, backend, models, rows, flavor_loader):
        backend.load(self.request("k", models["a"], flavor_loader))
        backend.unload("k")
        backend.unload("k")
        backend.unload("never-loaded")
        assert "k" not in backend.loaded()
        with pytest.raises(NotFound):
            backend.predict("k", rows)
        backend.load(self.request("k", models["b"], flavor_loader))  # and the key can be used again
        np.testing.assert_allclose(flat(backend.predict("k", rows)), expected(WEIGHTS_B, rows), rtol=1e-5)
