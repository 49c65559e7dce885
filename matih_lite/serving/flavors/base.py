"""What every model flavor shares: the input schema, the predictor and flavor protocols, MLmodel files.

A *flavor* knows how to save one kind of model into a folder laid out as MLflow lays it out
(an ``MLmodel`` YAML file beside the model's files) and how to load such a folder into a
:class:`Predictor`. A predictor answers ``predict(inputs) -> outputs`` over numpy arrays:

- ``inputs`` is a 2-D array of rows (columns in :attr:`Predictor.input_schema` order), or a
  mapping of input name to array when the schema has columns of different kinds (strings beside
  numbers) or several named tensors;
- ``outputs`` is one array (first axis = rows) when the model has one output, and a dict of
  output name to array when it has several (an ONNX classifier's ``label`` and
  ``probabilities``) -- MLflow's pyfunc convention for tensor input. The first name in
  :attr:`Predictor.output_names` is the primary output (the label, as ``sklearn``'s ``predict``).

Nothing here imports a framework; each flavor imports its own when it loads.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from matih_lite.contracts.flavors import (  # noqa: F401  (re-exported: the flavors' shared types are the contract's)
    MLFLOW_TYPES,
    NUMERIC_KINDS,
    Flavor,
    InputSchema,
    LoadOptions,
    Predictor,
    TensorSpec,
    dtype_name,
)
from matih_lite.errors import InvalidInput, NotFound

MLMODEL = "MLmodel"
PYFUNC = "python_function"

Inputs: TypeAlias = "np.ndarray | Mapping[str, np.ndarray]"
"""Rows as one 2-D array, or named columns/tensors."""
Outputs: TypeAlias = "np.ndarray | dict[str, np.ndarray]"
"""One array for a one-output model, else a dict by output name (first = primary)."""

def signature_of_example(example: Any) -> dict[str, Any]:
    """An MLflow signature for an input example: a tensor spec for a numpy array (as MLflow writes
    one), else the registry's column signature (a DataFrame, records, a dict of columns)."""
    if isinstance(example, np.ndarray) and example.dtype.kind in NUMERIC_KINDS:
        shape = [-1, *example.shape[1:]]
        return {"inputs": [{"type": "tensor", "tensor-spec": {"dtype": example.dtype.name, "shape": shape}}],
                "outputs": None}
    from matih_lite.registry.signature import infer_signature

    return infer_signature(example)


def schema_from_width(n_features: int | None, dtype: str = "float64") -> InputSchema:
    """One unnamed ``(-1, n)`` tensor (a model that knows only how many features it takes)."""
    if not n_features:
        return InputSchema()
    return InputSchema("tensors", (TensorSpec("", dtype, (-1, int(n_features))),))


def schema_from_names(names: Sequence[Any], dtype: str = "float64") -> InputSchema:
    return InputSchema("columns", tuple(TensorSpec(str(n), dtype) for n in names))


# ---- MLmodel files -------------------------------------------------------------------------------
def read_mlmodel(folder: str | Path) -> dict[str, Any]:
    """The parsed MLmodel file of a model folder. Raises NotFound without one, InvalidInput if unreadable."""
    import yaml

    path = Path(folder) / MLMODEL
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"no MLmodel file in {folder}: this folder is not a saved model") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"the MLmodel file in {folder} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        raise InvalidInput(f"the MLmodel file in {folder} has no 'flavors' section")
    return doc


def flavor_conf(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    conf = doc.get("flavors", {}).get(name)
    return conf if isinstance(conf, dict) else {}


def signature_schema(doc: Mapping[str, Any]) -> InputSchema | None:
    """The input schema written in an MLmodel file's ``signature``, if any."""
    raw = doc.get("signature")
    return InputSchema.from_signature(raw) if isinstance(raw, Mapping) else None


def write_mlmodel(folder: str | Path, flavors: Mapping[str, Mapping[str, Any]], *,
                  signature: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write an MLmodel file MLflow reads: ``flavors``, ``signature`` (JSON strings, as MLflow keeps them)."""
    import time
    import uuid

    import yaml

    doc: dict[str, Any] = {"flavors": {k: dict(v) for k, v in flavors.items()}}
    if PYFUNC in doc["flavors"]:
        doc["flavors"][PYFUNC].setdefault("python_version", platform.python_version())
    if signature:
        doc["signature"] = {
            "inputs": json.dumps(signature.get("inputs")) if signature.get("inputs") is not None else None,
            "outputs": json.dumps(signature.get("outputs")) if signature.get("outputs") is not None else None,
            "params": None}
    doc["model_uuid"] = uuid.uuid4().hex
    doc["utc_time_created"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    doc["saved_by"] = "matih-lite"
    doc.update(extra or {})
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / MLMODEL).write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def detect_flavor(doc: Mapping[str, Any], available: Sequence[str]) -> str:
    """The flavor to load an MLmodel folder with: the first listed that is available, ``python_function`` last.

    Raises InvalidInput naming the model's flavors and the installed ones when none fits.
    """
    listed = [f for f in doc.get("flavors", {}) if isinstance(f, str)]
    for name in listed:
        if name != PYFUNC and name in available:
            return name
    if PYFUNC in listed:
        conf = flavor_conf(doc, PYFUNC)
        loader = str(conf.get("loader_module") or "")
        by_loader = LOADER_FLAVORS.get(loader)
        if by_loader and by_loader in available:
            return by_loader
        for name in ("pyfunc", PYFUNC):
            if name in available:
                return name
    raise InvalidInput(f"cannot serve this model: its MLmodel lists flavors {', '.join(listed) or 'none'}; "
                       f"installed flavors: {', '.join(sorted(available)) or 'none'} (a plugin may add one "
                       "through register_flavors)")


LOADER_FLAVORS: dict[str, str] = {
    "mlflow.sklearn": "sklearn", "mlflow.xgboost": "xgboost", "mlflow.onnx": "onnx",
}
"""MLflow ``python_function`` loader modules and the flavor that loads their files the same way."""


def model_size(folder: str | Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


# ---- helpers the flavors share ----------------------------------------------------------------------
def as_rows(inputs: Any, schema: InputSchema, what: str = "inputs") -> np.ndarray:
    """``inputs`` as one 2-D array of rows in schema order (a mapping of columns is stacked; a frame too)."""
    if isinstance(inputs, np.ndarray):
        return inputs
    if hasattr(inputs, "columns") and hasattr(inputs, "to_numpy"):  # a pandas DataFrame, off the hot path
        names = schema.names if schema.kind == "columns" else None
        if names and all(n in inputs.columns for n in names):
            inputs = inputs[names]
        return inputs.to_numpy()
    if isinstance(inputs, Mapping):
        names = schema.names if schema.kind == "columns" else list(inputs)
        missing = [n for n in names if n not in inputs]
        if missing:
            raise InvalidInput(f"{what}: missing column {missing[0]!r}")
        cols = [np.asarray(inputs[n]).reshape(-1) for n in names]
        return np.column_stack(cols) if cols else np.empty((0, 0))
    return np.asarray(inputs)


def columns_of(inputs: Any, schema: InputSchema) -> dict[str, np.ndarray]:
    """``inputs`` as a mapping of column name to 1-D array, in schema order."""
    if isinstance(inputs, Mapping):
        return {n: np.asarray(inputs[n]).reshape(-1) for n in schema.names if n in inputs}
    if hasattr(inputs, "columns") and hasattr(inputs, "to_numpy"):
        return {str(c): inputs[c].to_numpy() for c in inputs.columns}
    arr = np.asarray(inputs)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if len(schema.specs) > 1 else arr.reshape(-1, 1)
    return {n: arr[:, i] for i, n in enumerate(schema.names)}


def described_outputs(raw: Any, output_names: Sequence[str]) -> tuple[TensorSpec, ...]:
    """Each output's dtype as far as the model object tells: a classifier's class labels, an XGBoost
    booster's float32, float64 otherwise; one dimension of any length."""
    classes = getattr(raw, "classes_", None)
    if classes is not None:
        dtype = dtype_name(np.asarray(classes).dtype)
    elif type(raw).__name__ == "Booster":
        dtype = "float32"
    else:
        dtype = "float64"
    return tuple(TensorSpec(name, dtype, (-1,)) for name in output_names)


def named_outputs(outputs: Any, output_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Any predictor's outputs as a dict of name to array (a lone array takes the first output name)."""
    if isinstance(outputs, Mapping):
        return {str(k): np.asarray(v) for k, v in outputs.items()}
    name = output_names[0] if output_names else "predictions"
    return {name: np.asarray(outputs)}
