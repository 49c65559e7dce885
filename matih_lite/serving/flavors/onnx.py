"""The ``onnx`` flavor: an ONNX graph run by onnxruntime on the CPU provider.

Saved as MLflow's ``mlflow.onnx`` saves it (``model.onnx`` + an MLmodel with the ``onnx`` and
``python_function`` flavors), so either side loads the other's. Sessions use one intra-op thread
by default (``LoadOptions.intra_op_threads``): serving runs many small predictions side by side,
where more threads per call only add contention.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from matih_lite.errors import InvalidInput, NotFound
from matih_lite.serving.flavors.base import (
    PYFUNC,
    InputSchema,
    LoadOptions,
    TensorSpec,
    flavor_conf,
    read_mlmodel,
    signature_schema,
    write_mlmodel,
)

ONNX_TYPES: dict[str, str] = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool", "tensor(string)": "str",
}


class OnnxPredictor:
    """An onnxruntime session; ``predict`` feeds the model's inputs and returns its outputs."""

    def __init__(self, session: Any, schema: InputSchema | None = None) -> None:
        self.session = session
        self.raw = session
        self._inputs = [(i.name, ONNX_TYPES.get(i.type, "object"), _shape(i.shape)) for i in session.get_inputs()]
        self.output_names = tuple(o.name for o in session.get_outputs())
        self._dtypes = {n: np.dtype(t) for n, t, _ in self._inputs if t not in ("str", "object")}
        self.model_schema = InputSchema("tensors", tuple(TensorSpec(n, t, s) for n, t, s in self._inputs))
        self.input_schema = schema or self.model_schema
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        self._refused = InvalidArgument

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        """Each output's dtype and shape as the ONNX graph declares them (-1 where any size goes)."""
        return tuple(TensorSpec(o.name, ONNX_TYPES.get(o.type, "object"),
                                tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (o.shape or [-1])))
                     for o in self.session.get_outputs())

    def _cast(self, name: str, dtype: str, shape: tuple[int, ...] | None, value: Any) -> np.ndarray:
        arr = np.asarray(value)
        if dtype == "str":
            if arr.dtype.kind not in "OU":
                arr = arr.astype(str)
        else:
            want = self._dtypes[name]
            if arr.dtype != want:
                if arr.dtype.kind in "OUS":
                    raise InvalidInput(f"input {name!r} takes {dtype} numbers, got {arr.dtype} values")
                arr = arr.astype(want)
        if shape is not None and len(shape) == 2 and arr.ndim == 1:
            arr = arr.reshape(-1, 1) if shape[1] == 1 else arr.reshape(1, -1)
        return arr

    def feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        """The session's feed dict for ``inputs`` (one array, or named arrays)."""
        if hasattr(inputs, "columns") and hasattr(inputs, "to_numpy"):  # pandas, off the hot path
            inputs = ({str(c): inputs[c].to_numpy() for c in inputs.columns} if len(self._inputs) > 1
                      else inputs.to_numpy())
        if isinstance(inputs, Mapping):
            if len(self._inputs) == 1 and self._inputs[0][0] not in inputs and len(inputs) > 1:
                # Named columns for a model with one tensor input: stack them in schema order.
                from matih_lite.serving.flavors.base import as_rows

                inputs = as_rows(inputs, self.input_schema)
            else:
                missing = [n for n, _, _ in self._inputs if n not in inputs]
                if missing and not (len(self._inputs) == 1 and len(inputs) == 1):
                    raise InvalidInput(f"missing input {missing[0]!r}; the model takes "
                                       f"{', '.join(n for n, _, _ in self._inputs)}")
                if missing:
                    inputs = next(iter(inputs.values()))
                else:
                    return {n: self._cast(n, t, s, inputs[n]) for n, t, s in self._inputs}
        arr = np.asarray(inputs)
        if len(self._inputs) == 1:
            n, t, s = self._inputs[0]
            return {n: self._cast(n, t, s, arr)}
        # One 2-D array for a model with one input per column (skl2onnx's layout for mixed frames).
        if arr.ndim == 2 and arr.shape[1] == len(self._inputs):
            return {n: self._cast(n, t, s, arr[:, i:i + 1]) for i, (n, t, s) in enumerate(self._inputs)}
        raise InvalidInput(f"the model takes {len(self._inputs)} inputs "
                           f"({', '.join(n for n, _, _ in self._inputs)}); send them by name")

    def predict(self, inputs: Any) -> Any:
        try:
            results = self.session.run(list(self.output_names), self.feeds(inputs))
        except self._refused as exc:  # the inputs do not fit the graph (dimensions, types): the caller's fault
            raise InvalidInput(f"the model refused these inputs: {str(exc).split(' : ', 2)[-1].strip()}") from None
        outputs = {name: _as_array(value) for name, value in zip(self.output_names, results)}
        return outputs[self.output_names[0]] if len(outputs) == 1 else outputs


def _shape(dims: Any) -> tuple[int, ...] | None:
    if dims is None:
        return None
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)


def _as_array(value: Any) -> np.ndarray:
    """An output as an array; a ZipMap output (a list of {class: probability}) as a 2-D array."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = list(value[0])
        return np.asarray([[row[k] for k in keys] for row in value], dtype=np.float32)
    return np.asarray(value)


class OnnxFlavor:
    """``onnx``: ONNX models through onnxruntime (``pip install onnxruntime``)."""

    name = "onnx"
    needs_trusted_source = False

    def accepts(self, model: Any) -> bool:
        return type(model).__name__ == "ModelProto" and type(model).__module__.startswith("onnx")

    def save(self, model: Any, folder: str | Path, *, signature: Mapping[str, Any] | None = None,
             input_example: Any = None) -> Path:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
        (path / "model.onnx").write_bytes(bytes(data))
        try:
            import onnx

            version = onnx.__version__
        except ImportError:
            version = None
        return write_mlmodel(path, {
            "onnx": {"code": None, "data": "model.onnx", "onnx_session_options": None, "onnx_version": version,
                     "providers": ["CPUExecutionProvider"]},
            PYFUNC: {"data": "model.onnx", "loader_module": "mlflow.onnx"},
        }, signature=signature)

    def load(self, folder: str | Path, options: LoadOptions | None = None) -> OnnxPredictor:
        options = options or LoadOptions()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise InvalidInput("the onnx flavor needs onnxruntime: pip install onnxruntime "
                               "(or pip install 'matih-lite[ml]')") from exc
        folder = Path(folder)
        try:
            doc = read_mlmodel(folder)
        except NotFound:
            doc = {"flavors": {}}
        conf = flavor_conf(doc, "onnx") or flavor_conf(doc, PYFUNC)
        model_file = folder / str(conf.get("data") or "model.onnx")
        if not model_file.is_file():
            found = sorted(folder.glob("*.onnx"))
            if not found:
                raise NotFound(f"no ONNX model file in {folder}")
            model_file = found[0]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(0, options.intra_op_threads)
        opts.inter_op_num_threads = max(0, options.inter_op_threads)
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = ort.InferenceSession(str(model_file), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise InvalidInput(f"onnxruntime cannot load {model_file.name}: {exc}") from exc
        return OnnxPredictor(session, signature_schema(doc))
