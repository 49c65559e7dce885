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
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

import msgspec
import numpy as np

from matih_lite.errors import InvalidInput, NotFound

MLMODEL = "MLmodel"
PYFUNC = "python_function"

Inputs: TypeAlias = "np.ndarray | Mapping[str, np.ndarray]"
"""Rows as one 2-D array, or named columns/tensors."""
Outputs: TypeAlias = "np.ndarray | dict[str, np.ndarray]"
"""One array for a one-output model, else a dict by output name (first = primary)."""

# MLflow column types -> numpy dtype names. ``str``/``bytes``/``object`` columns become object arrays.
MLFLOW_TYPES: dict[str, str] = {
    "boolean": "bool", "integer": "int32", "long": "int64", "float": "float32", "double": "float64",
    "string": "str", "binary": "bytes", "datetime": "object", "object": "object",
}
NUMERIC_KINDS = "biuf"


class TensorSpec(msgspec.Struct, frozen=True):
    """One input: a named column (``shape`` None) or a tensor (``shape`` with -1 where any size goes)."""

    name: str
    dtype: str
    """A numpy dtype name (``float64``, ``int64``, ``bool``...) or ``str``, ``bytes``, ``object``."""
    shape: tuple[int, ...] | None = None
    optional: bool = False

    @property
    def numeric(self) -> bool:
        return self.dtype not in ("str", "bytes", "object")

    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype) if self.numeric else np.dtype(object)


class InputSchema(msgspec.Struct, frozen=True, dict=True):
    """What a model takes, in order.

    ``kind`` is ``columns`` (named scalar columns: an MLflow column signature, or scikit-learn's
    ``feature_names_in_``), ``tensors`` (named tensors with shapes: ONNX inputs, an MLflow tensor
    signature, or one unnamed ``(-1, n_features)`` tensor), or ``any`` (nothing is known).
    """

    kind: str = "any"
    specs: tuple[TensorSpec, ...] = ()

    @cached_property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @cached_property
    def numeric(self) -> bool:
        """Every input is a number or a boolean: the rows fit one 2-D array."""
        return all(s.numeric for s in self.specs)

    def row_dtype(self) -> np.dtype:
        """The dtype of the 2-D array of rows when every column is numeric (float64 when they mix)."""
        return self._row_dtype

    @cached_property
    def _row_dtype(self) -> np.dtype:
        if not self.specs:
            return np.dtype(np.float64)
        dtypes = {s.dtype for s in self.specs}
        if len(dtypes) == 1:
            return np.dtype(dtypes.pop())
        found = np.result_type(*[np.dtype(d) for d in dtypes])
        return found if found.kind != "b" else np.dtype(np.float64)

    @cached_property
    def width(self) -> int | None:
        """Columns per row: the column count, or a single tensor's last dimension when it is 2-D."""
        if self.kind == "columns":
            return len(self.specs)
        if self.kind == "tensors" and len(self.specs) == 1:
            shape = self.specs[0].shape
            if shape is not None and len(shape) == 2 and shape[1] > 0:
                return shape[1]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "inputs": [
            {"name": s.name, "dtype": s.dtype, **({"shape": list(s.shape)} if s.shape is not None else {})}
            for s in self.specs]}

    @classmethod
    def from_signature(cls, signature: Mapping[str, Any] | None) -> InputSchema | None:
        """The schema of an MLflow signature (``{"inputs": [...]}``, as the registry keeps it), or None."""
        if not signature:
            return None
        cols = signature.get("inputs")
        if isinstance(cols, str):
            try:
                cols = json.loads(cols)
            except ValueError:
                return None
        if not isinstance(cols, list) or not cols:
            return None
        specs: list[TensorSpec] = []
        tensors = all(isinstance(c, Mapping) and c.get("type") == "tensor" for c in cols)
        for i, col in enumerate(cols):
            if not isinstance(col, Mapping):
                return None
            name = col.get("name")
            name = str(name) if name is not None else ("" if len(cols) == 1 else str(i))
            optional = col.get("required") is False or bool(col.get("optional", False))
            if col.get("type") == "tensor":
                spec = col.get("tensor-spec") or {}
                dtype = _dtype_name(spec.get("dtype", "float64"))
                shape = spec.get("shape")
                specs.append(TensorSpec(name, dtype, tuple(int(d) for d in shape) if shape else None, optional))
            else:
                kind = col.get("type")
                dtype = MLFLOW_TYPES.get(kind, "object") if isinstance(kind, str) else "object"
                specs.append(TensorSpec(name, dtype, None, optional))
        return cls("tensors" if tensors else "columns", tuple(specs))


def _dtype_name(value: Any) -> str:
    text = str(value)
    if text in ("str", "string", "object", "bytes"):
        return {"string": "str"}.get(text, text)
    try:
        dt = np.dtype(text)
    except TypeError:
        return "object"
    if dt.kind in "US":
        return "str" if dt.kind == "U" else "bytes"
    return dt.name if dt.kind in NUMERIC_KINDS else "object"


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


class LoadOptions(msgspec.Struct, frozen=True):
    """How the serving backend wants a model loaded; flavors ignore what does not concern them."""

    intra_op_threads: int = 1
    """Threads one prediction may use (onnxruntime intra-op, XGBoost nthread); 0 lets the library choose."""
    inter_op_threads: int = 1
    trusted_types: tuple[str, ...] = ()
    """skops types trusted beyond the ones the model's MLmodel lists (``sklearn.tree._tree.Tree``...)."""


@runtime_checkable
class Predictor(Protocol):
    """A loaded model: ``predict`` over numpy arrays, and what it takes and gives."""

    input_schema: InputSchema
    output_names: tuple[str, ...]

    def predict(self, inputs: Any) -> Any:
        """Outputs for a batch of rows (see the module docstring). Raises InvalidInput on unusable inputs."""


@runtime_checkable
class Flavor(Protocol):
    """How one kind of model is saved to a folder and loaded back as a :class:`Predictor`."""

    name: str
    needs_trusted_source: bool
    """True when loading runs a deserializer that can execute code (pickle, cloudpickle, skops)."""

    def save(self, model: Any, folder: str | Path, *, signature: Mapping[str, Any] | None = None,
             input_example: Any = None) -> Path:
        """Write the model and its MLmodel file into ``folder``; returns the folder."""

    def load(self, folder: str | Path, options: LoadOptions | None = None) -> Predictor:
        """A predictor for the model saved in ``folder``. Raises InvalidInput, NotFound."""

    def accepts(self, model: Any) -> bool:
        """Whether ``save`` knows this model object."""


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


def named_outputs(outputs: Any, output_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Any predictor's outputs as a dict of name to array (a lone array takes the first output name)."""
    if isinstance(outputs, Mapping):
        return {str(k): np.asarray(v) for k, v in outputs.items()}
    name = output_names[0] if output_names else "predictions"
    return {name: np.asarray(outputs)}
