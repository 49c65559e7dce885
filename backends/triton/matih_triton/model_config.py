"""Triton model names, I/O and ``config.pbtxt``: what a matih-lite model version becomes in a model repository.

A serving key (``tenant/model/version``) becomes one Triton model (:func:`triton_name`) with one
version folder (:func:`triton_version`), so every version loads, serves and unloads on its own
(an A/B split keeps two versions side by side; a candidate that fails to load leaves the primary
alone). The model's inputs are laid out as the Open Inference Protocol metadata of the ml-service
lays them out, so a client sees the same tensors on ``/v2`` of either server:

- ``rows``: numeric columns (or one unnamed 2-D tensor) are one ``[-1, n_columns]`` tensor;
- ``columns``: columns of different types are one ``[-1]`` tensor each (``dims: [1]``, reshaped);
- ``tensors``: named tensors (an ONNX graph's inputs, an MLflow tensor signature) as declared;
- ``auto``: nothing is known before the model loads; the generated ``model.py`` declares them
  itself from the flavor's predictor (Triton's auto-complete), and :func:`schema_from_config`
  reads them back.

:func:`render_pbtxt` writes a config as protobuf text format, deterministically (the golden test).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from matih_lite.contracts.flavors import InputSchema, TensorSpec, dtype_name

TRITON_TYPES: dict[str, str] = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64", "str": "TYPE_STRING",
    "bytes": "TYPE_STRING", "object": "TYPE_STRING",
}
"""numpy dtype names (and ``str``/``bytes``/``object``) -> Triton's config ``data_type``."""
FROM_TRITON: dict[str, str] = {v: k for k, v in TRITON_TYPES.items() if k not in ("bytes", "object")}
WIRE_TYPES: dict[str, str] = {"TYPE_BOOL": "BOOL", "TYPE_STRING": "BYTES", **{
    t: t[len("TYPE_"):] for t in TRITON_TYPES.values() if t not in ("TYPE_BOOL", "TYPE_STRING")}}
"""Config ``data_type`` -> the wire datatype of the inference protocol (``TYPE_FP32`` -> ``FP32``)."""
ONNX_ELEM_TYPES: dict[int, str] = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
                                   7: "int64", 8: "str", 9: "bool", 10: "float16", 11: "float64", 12: "uint32",
                                   13: "uint64"}
"""``onnx.TensorProto`` element types -> numpy dtype names."""

_SAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME = 120


def triton_name(key: str) -> str:
    """A Triton model name for a serving key: its parts joined by ``--``, safe in a URL and a folder name.

    ``default/churn/3`` -> ``default--churn--3``. A key that had to change to be safe (a ``.``, a
    ``/`` beyond the three parts, a ``--`` inside a part, a long key) gets 10 hex digits of its sha256,
    so two keys never share a name.
    """
    parts = key.split("/")
    safe = [_SAFE.sub("_", p) for p in parts]
    name = "--".join(safe) or "model"
    lossy = safe != parts or any("--" in p or not p for p in parts) or len(name) > MAX_NAME
    if lossy:
        name = f"{name[:MAX_NAME]}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    return name


def triton_version(key: str) -> int:
    """The version folder of a key: its last part when that is a positive integer (the registry's version), else 1."""
    last = key.rsplit("/", 1)[-1]
    return int(last) if last.isdigit() and 0 < int(last) < 2**63 else 1


@dataclass(frozen=True)
class Tensor:
    """One input or output of a Triton model: name, dtype (numpy name, or ``str``), full shape (-1: any)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def data_type(self) -> str:
        return TRITON_TYPES.get(self.dtype, "TYPE_STRING")

    @property
    def wire_type(self) -> str:
        return WIRE_TYPES[self.data_type]

    @property
    def numeric(self) -> bool:
        return self.data_type != "TYPE_STRING"


@dataclass(frozen=True)
class ModelIO:
    """A Triton model's tensors and how the ml-service's inputs map onto them."""

    layout: str
    """``rows``, ``columns``, ``tensors`` or ``auto`` (see the module docstring)."""
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()
    schema: InputSchema = field(default_factory=InputSchema)
    """What the ml-service parses requests for (the model's signature, else what the tensors say)."""

    def batchable(self) -> bool:
        """Every tensor has a variable first dimension: Triton may batch requests (``max_batch_size > 0``)."""
        tensors = (*self.inputs, *self.outputs)
        return bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)


def io_for(schema: InputSchema | None, graph: tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None = None,
           outputs: Sequence[Tensor] = ()) -> ModelIO:
    """The tensors of a model: an ONNX ``graph``'s inputs and outputs when given (the platform needs them
    exactly), else laid out from the signature's ``schema``; ``auto`` when neither says anything."""
    if graph is not None:
        inputs, graph_outputs = graph
        request = schema if schema is not None and schema.kind != "any" else \
            InputSchema("tensors", tuple(TensorSpec(t.name, t.dtype, t.shape) for t in inputs))
        layout = "rows" if len(inputs) == 1 and len(inputs[0].shape) == 2 else "tensors"
        return ModelIO(layout, tuple(inputs), tuple(graph_outputs), request)
    if schema is None or schema.kind == "any" or not schema.specs:
        return ModelIO("auto", (), tuple(outputs), schema or InputSchema())
    if schema.kind == "columns":
        if schema.numeric:
            row = Tensor("input", schema.row_dtype().name, (-1, len(schema.specs)))
            return ModelIO("rows", (row,), tuple(outputs), schema)
        return ModelIO("columns", tuple(Tensor(s.name, s.dtype, (-1,)) for s in schema.specs), tuple(outputs),
                       schema)
    tensors = tuple(Tensor(s.name or "input", s.dtype, tuple(s.shape) if s.shape else (-1, -1))
                    for s in schema.specs)
    layout = "rows" if len(tensors) == 1 and len(tensors[0].shape) == 2 else "tensors"
    return ModelIO(layout, tensors, tuple(outputs), schema)


def onnx_graph(path: str) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None:
    """An ONNX file's inputs (initializers excluded) and outputs, read with ``onnx`` without its weights; None
    when neither ``onnx`` nor ``onnxruntime`` is installed to read it."""
    try:
        import onnx
    except ImportError:
        return _onnxruntime_graph(path)
    model = onnx.load(path, load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def tensor(value: Any) -> Tensor:
        kind = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in kind.shape.dim)
        return Tensor(value.name, ONNX_ELEM_TYPES.get(kind.elem_type, "object"), dims or (-1,))

    return (tuple(tensor(v) for v in model.graph.input if v.name not in initializers),
            tuple(tensor(v) for v in model.graph.output))


def _onnxruntime_graph(path: str) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    kinds = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
             "tensor(int32)": "int32", "tensor(bool)": "bool", "tensor(string)": "str", "tensor(float16)": "float16",
             "tensor(uint8)": "uint8", "tensor(int8)": "int8"}

    def tensor(v: Any) -> Tensor:
        dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (v.shape or [-1]))
        return Tensor(v.name, kinds.get(v.type, "object"), dims or (-1,))

    return tuple(tensor(v) for v in session.get_inputs()), tuple(tensor(v) for v in session.get_outputs())


# ---- the config ----------------------------------------------------------------------------------------------
def _dims(shape: tuple[int, ...], batched: bool) -> dict[str, Any]:
    """``dims`` (and a ``reshape`` for tensors that are only a batch: Triton wants at least one dim)."""
    dims = list(shape[1:] if batched else shape)
    if not dims:
        return {"dims": [1], "reshape": {"shape": []}}
    return {"dims": dims}


def tensor_config(t: Tensor, batched: bool) -> dict[str, Any]:
    return {"name": t.name, "data_type": Enum(t.data_type), **_dims(t.shape, batched)}


class Enum(str):
    """A protobuf enum value: rendered bare (``TYPE_FP32``), not quoted."""


def model_config(name: str, io: ModelIO, *, platform: str | None = None, backend: str | None = None,
                 instances: int = 1, max_batch_size: int = 64, max_queue_delay_us: int = 0,
                 version: int = 1, default_model_filename: str | None = None,
                 parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The model configuration as a dict in ``config.pbtxt``'s field order (see :func:`render_pbtxt`)."""
    batched = max_batch_size > 0 and (io.layout == "auto" or io.batchable())
    cfg: dict[str, Any] = {"name": name}
    if platform:
        cfg["platform"] = platform
    if backend:
        cfg["backend"] = backend
    cfg["max_batch_size"] = max_batch_size if batched else 0
    cfg["version_policy"] = {"specific": {"versions": [version]}}
    if io.inputs:
        cfg["input"] = [tensor_config(t, batched) for t in io.inputs]
    if io.outputs:
        cfg["output"] = [tensor_config(t, batched) for t in io.outputs]
    cfg["instance_group"] = [{"kind": Enum("KIND_CPU"), "count": instances}]
    if batched:
        cfg["dynamic_batching"] = {"max_queue_delay_microseconds": max_queue_delay_us}
    if default_model_filename:
        cfg["default_model_filename"] = default_model_filename
    if parameters:
        cfg["parameters"] = [{"key": k, "value": {"string_value": v}} for k, v in parameters.items()]
    return cfg


def render_pbtxt(cfg: Mapping[str, Any]) -> str:
    """A config dict as protobuf text format: scalars ``key: value``, messages ``key { ... }``, lists of
    messages ``key [ {...}, {...} ]``, lists of scalars ``key: [ 1, 2 ]``; two-space indents."""
    return "".join(_fields(cfg, 0))


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _fields(msg: Mapping[str, Any], level: int) -> list[str]:
    pad = "  " * level
    out: list[str] = []
    for key, value in msg.items():
        if isinstance(value, Mapping):
            out.append(f"{pad}{key} {{\n")
            out += _fields(value, level + 1)
            out.append(f"{pad}}}\n")
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            out.append(f"{pad}{key} [\n")
            for i, item in enumerate(value):
                out.append(f"{pad}  {{\n")
                out += _fields(item, level + 2)
                out.append(f"{pad}  }}{',' if i < len(value) - 1 else ''}\n")
            out.append(f"{pad}]\n")
        elif isinstance(value, (list, tuple)):
            out.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]\n" if value else f"{pad}{key}: []\n")
        else:
            out.append(f"{pad}{key}: {_scalar(value)}\n")
    return out


# ---- reading a config back (what Triton answers to get_model_config) -------------------------------------------
def tensors_of(entries: Sequence[Mapping[str, Any]] | None, batched: bool) -> tuple[Tensor, ...]:
    """The tensors of a config's ``input`` or ``output`` list as Triton returns it (JSON)."""
    out = []
    for e in entries or ():
        reshape = e.get("reshape")
        dims = [int(d) for d in (reshape.get("shape") if isinstance(reshape, Mapping) else e.get("dims")) or []]
        dtype = FROM_TRITON.get(str(e.get("data_type")), "object")
        out.append(Tensor(str(e["name"]), dtype, tuple(([-1] if batched else []) + dims) or (-1,)))
    return tuple(out)


def schema_from_config(cfg: Mapping[str, Any]) -> InputSchema:
    """The input schema a model declared itself (``auto`` layout): named ``[-1]`` tensors are columns, one
    ``input`` FP64 tensor of any width is "anything", the rest are tensors."""
    batched = int(cfg.get("max_batch_size") or 0) > 0
    inputs = tensors_of(cfg.get("input"), batched)
    if not inputs:
        return InputSchema()
    if len(inputs) == 1 and inputs[0].name == "input" and inputs[0].dtype == "float64" and inputs[0].shape == (-1, -1):
        return InputSchema()
    if all(t.shape in ((-1,), (-1, 1)) for t in inputs):
        return InputSchema("columns", tuple(TensorSpec(t.name, t.dtype) for t in inputs))
    return InputSchema("tensors", tuple(TensorSpec(t.name, t.dtype, t.shape) for t in inputs))


def output_specs(tensors: Sequence[Tensor]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t.name, dtype_name(t.dtype) if t.dtype not in ("str",) else "str", t.shape)
                 for t in tensors)


def numpy_dtype(t: Tensor) -> np.dtype:
    return np.dtype(object) if not t.numeric else np.dtype(t.dtype)
