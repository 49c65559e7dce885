"""The ``model.py`` that matih-triton copies into a Python-backend model version: loads it with its flavor.

This file runs inside Triton's Python-backend stub, not in the ml-service: Triton's Python needs
``matih-lite`` (the flavors' code), the model's framework (onnxruntime, scikit-learn, XGBoost) and, for
a pyfunc model, the package defining its class. The version folder holds this file and ``model/``
(the model's files as the registry keeps them, with the serving cache's manifest); the config's
``parameters`` say the rest:

- ``matih_flavor_class``: ``module:Class`` of the flavor the ml-service would load it with; its
  ``load(folder, LoadOptions)`` gives the predictor, exactly as the in-process backend does;
- ``matih_layout`` and ``matih_schema``: how the request tensors become the predictor's inputs (see
  :mod:`matih_triton.model_config`); ``auto`` lets the predictor declare its inputs (and outputs) here;
- ``matih_verify``: ``true`` for flavors whose loading can run code: every file listed in the
  manifest must have its recorded size and sha256 before anything is unpickled;
- ``matih_threads``, ``matih_trusted_types``: :class:`~matih_lite.contracts.flavors.LoadOptions`.

Requests that Triton's dynamic batcher hands over together run as one model call (each request's
rows are sliced back out); when that call fails each request is run alone, so one bad request never
fails its neighbours. An :class:`~matih_lite.errors.InvalidInput` of the flavor is an ``INVALID_ARG``
error (HTTP 400: the caller's fault); anything else the model raises is an internal error (500).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

# The stub's embedded interpreter does not read PYTHONPATH: honour it here, so Triton's environment can name
# where matih-lite and the models' own packages live (a checkout, a mounted volume).
for _entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if _entry and _entry not in sys.path:
        sys.path.append(_entry)

MODEL_FOLDER = "model"
WIRE_TO_CONFIG = {"str": "TYPE_STRING", "bytes": "TYPE_STRING", "object": "TYPE_STRING", "bool": "TYPE_BOOL"}


def parameters(config: dict[str, Any]) -> dict[str, str]:
    """The config's ``parameters`` as plain strings."""
    return {k: (v or {}).get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


def load_predictor(config: dict[str, Any], folder: Path) -> Any:
    """The predictor of the model in ``folder``, loaded by the flavor the config names."""
    from matih_lite.contracts.flavors import LoadOptions, resolve_reference, verify_copy

    params = parameters(config)
    if params.get("matih_verify") == "true":
        verify_copy(folder)
    flavor = resolve_reference(params["matih_flavor_class"])
    options = LoadOptions(intra_op_threads=int(params.get("matih_threads") or 1), inter_op_threads=1,
                          trusted_types=tuple(json.loads(params.get("matih_trusted_types") or "[]")))
    return flavor().load(folder, options)


def _config_type(dtype: str) -> str:
    if dtype in WIRE_TO_CONFIG:
        return WIRE_TO_CONFIG[dtype]
    kind = np.dtype(dtype)
    return {"f": "TYPE_FP", "i": "TYPE_INT", "u": "TYPE_UINT"}[kind.kind] + str(kind.itemsize * 8)


def _dims(shape: Any) -> dict[str, Any]:
    rest = [int(d) for d in (shape or (-1,))[1:]]
    return {"dims": rest} if rest else {"dims": [1], "reshape": {"shape": []}}


def _declare(config: Any, kind: str, entry: dict[str, Any]) -> None:
    """Add an input or output through the auto-complete API, then give it its ``reshape`` (one value per row:
    ``dims: [1]`` on the wire, ``[]`` for the model), which that API has no argument for."""
    reshape = entry.pop("reshape", None)
    (config.add_input if kind == "input" else config.add_output)(entry)
    if reshape is not None:
        for found in config.as_dict().get(kind, []):
            if found.get("name") == entry["name"]:
                found["reshape"] = reshape


def declared_io(predictor: Any) -> tuple[str, list[dict[str, Any]]]:
    """The layout and inputs a predictor declares when the ml-service knew none (the ``auto`` layout)."""
    schema = predictor.input_schema
    if schema.kind == "columns" and schema.specs:
        return "columns", [{"name": s.name, "data_type": _config_type(s.dtype), **_dims((-1,))} for s in schema.specs]
    if schema.kind == "tensors" and schema.specs:
        specs = schema.specs
        layout = "rows" if len(specs) == 1 and specs[0].shape is not None and len(specs[0].shape) == 2 else "tensors"
        return layout, [{"name": s.name or "input", "data_type": _config_type(s.dtype), **_dims(s.shape)}
                        for s in specs]
    return "rows", [{"name": "input", "data_type": "TYPE_FP64", "dims": [-1]}]  # anything: 2-D rows of any width


def declared_outputs(predictor: Any) -> list[dict[str, Any]]:
    specs = {s.name: s for s in getattr(predictor, "output_specs", ()) or ()}
    out = []
    for name in predictor.output_names:
        spec = specs.get(name)
        out.append({"name": name, "data_type": _config_type(spec.dtype if spec is not None else "float64"),
                    **_dims(spec.shape if spec is not None else (-1,))})
    return out


class TritonPythonModel:
    """A matih-lite model version as a Triton Python-backend model."""

    @staticmethod
    def auto_complete_config(auto_complete_model_config: Any) -> Any:
        """Declare what the ml-service could not know before loading: the outputs (names and dtypes as the
        flavor's predictor gives them) and, for the ``auto`` layout, the inputs."""
        config = auto_complete_model_config.as_dict()
        params = parameters(config)
        needs_inputs = params.get("matih_layout") == "auto" and not config.get("input")
        if config.get("output") and not needs_inputs:
            return auto_complete_model_config
        predictor = load_predictor(config, Path(__file__).resolve().parent / MODEL_FOLDER)
        if needs_inputs:
            for entry in declared_io(predictor)[1]:
                _declare(auto_complete_model_config, "input", entry)
        if not config.get("output"):
            for entry in declared_outputs(predictor):
                _declare(auto_complete_model_config, "output", entry)
        return auto_complete_model_config

    def initialize(self, args: dict[str, Any]) -> None:
        self.config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / str(args["model_version"]) / MODEL_FOLDER
        self.predictor = load_predictor(self.config, folder)
        params = parameters(self.config)
        self.layout = params.get("matih_layout") or "tensors"
        if self.layout == "auto":
            self.layout = declared_io(self.predictor)[0]
        self.inputs = [i["name"] for i in self.config.get("input", [])]
        self.outputs = [o["name"] for o in self.config.get("output", [])]
        schema = json.loads(params.get("matih_schema") or "{}")
        self.text_columns = {i["name"] for i in schema.get("inputs", []) if i.get("dtype") == "str"}
        if not schema:
            self.text_columns = {s.name for s in self.predictor.input_schema.specs if s.dtype == "str"}
        from matih_lite.errors import InvalidInput

        self.refused = InvalidInput

    # ---- requests -> the predictor's inputs ------------------------------------------------------------------
    def _arrays(self, request: Any) -> dict[str, np.ndarray]:
        import triton_python_backend_utils as pb_utils

        out = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                out[name] = tensor.as_numpy()
        return out

    def _model_inputs(self, arrays: dict[str, np.ndarray]) -> Any:
        if self.layout == "rows" and len(arrays) == 1:
            return next(iter(arrays.values()))
        if self.layout == "columns":
            cols = {}
            for name, arr in arrays.items():
                arr = arr.reshape(-1)
                if name in self.text_columns and arr.dtype == object:
                    arr = np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in arr.tolist()],
                                   dtype=object)
                cols[name] = arr
            return cols
        return next(iter(arrays.values())) if len(arrays) == 1 else arrays

    # ---- the predictor's outputs -> response tensors ---------------------------------------------------------
    def _named(self, outputs: Any) -> dict[str, np.ndarray]:
        if isinstance(outputs, dict):
            return {str(k): np.asarray(v) for k, v in outputs.items()}
        names = self.outputs or list(self.predictor.output_names) or ["predictions"]
        return {names[0]: np.asarray(outputs)}

    @staticmethod
    def _wire(arr: np.ndarray) -> np.ndarray:
        if arr.dtype.kind in "OUS":
            flat = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in arr.reshape(-1).tolist()]
            out = np.empty(len(flat), dtype=object)
            out[:] = flat
            return out.reshape(arr.shape)
        return np.ascontiguousarray(arr)

    def _response(self, outputs: dict[str, np.ndarray]) -> Any:
        import triton_python_backend_utils as pb_utils

        wanted = self.outputs or list(outputs)
        return pb_utils.InferenceResponse([pb_utils.Tensor(n, self._wire(outputs[n])) for n in wanted if n in outputs])

    def _error(self, exc: BaseException) -> Any:
        import triton_python_backend_utils as pb_utils

        if isinstance(exc, self.refused):
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"[:2000]))

    def _one(self, arrays: dict[str, np.ndarray]) -> Any:
        try:
            return self._response(self._named(self.predictor.predict(self._model_inputs(arrays))))
        except Exception as exc:  # answered as this request's error, never the whole batch's
            return self._error(exc)

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run the requests Triton batched as one model call; alone each when that fails or cannot be split."""
        batches = [self._arrays(r) for r in requests]
        if len(batches) == 1:
            return [self._one(batches[0])]
        try:
            counts = [len(next(iter(b.values()))) for b in batches]
            merged = {n: np.concatenate([b[n] for b in batches]) for n in batches[0]}
            outputs = self._named(self.predictor.predict(self._model_inputs(merged)))
            total = sum(counts)
            if not all(len(v) == total for v in outputs.values()):
                raise ValueError("outputs do not have one row per input row")
        except Exception:  # some request is at fault, or the model's outputs do not split by row: run each alone
            return [self._one(b) for b in batches]
        edges = np.cumsum(counts)[:-1]
        parts = {n: np.split(v, edges) for n, v in outputs.items()}
        return [self._response({n: parts[n][i] for n in parts}) for i in range(len(batches))]
