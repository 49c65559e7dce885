"""The Open Inference Protocol v2 (KServe / Triton REST) as pure functions over bytes and headers.

- :func:`decode_infer_request` reads an infer request: JSON tensors (``inputs: [{name, shape,
  datatype, data}]``, ``data`` flat or nested, row-major) and the binary tensor extension that
  ``tritonclient.http`` uses by default: the body is a JSON header of
  ``Inference-Header-Content-Length`` bytes followed by each input with
  ``parameters.binary_data_size`` as raw little-endian row-major bytes, in input order; a BYTES
  element is a 4-byte little-endian length and its bytes. ``Content-Encoding`` gzip and
  deflate bodies are inflated first.
- :func:`model_inputs` turns the request's tensors into what a predictor takes, by its input schema.
- :func:`encode_infer_response` writes the outputs as JSON ``data`` or binary, honouring
  ``parameters.binary_data_output`` on the request and ``parameters.binary_data`` per requested
  output; it returns the body and the headers to send with it.
- :func:`model_metadata`, :func:`server_metadata`, :func:`live_body`, :func:`ready_body`,
  :func:`error_body` write the other payloads.

Every problem with a request is an :class:`~matih_lite.errors.InvalidInput` naming the tensor.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from matih_lite.errors import InvalidInput
from matih_lite.serving.flavors.base import InputSchema, TensorSpec

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
PROTOCOL_EXTENSIONS = ("binary_tensor_data",)

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
"""Every OIP datatype and the numpy dtype of its tensors (BYTES: an object array of ``bytes``)."""
INPUT_ONLY = ("BF16",)
"""Datatypes accepted in requests but never answered with: BF16 (bfloat16, binary only, as Triton takes it)
arrives as float32 (numpy has no bfloat16; every bfloat16 is exactly a float32)."""

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def datatype_of(dtype: Any) -> str:
    """The OIP datatype of a numpy dtype (strings and objects are BYTES)."""
    dt = np.dtype(dtype)
    if dt.kind in "OUS":
        return "BYTES"
    if dt.kind == "b":
        return "BOOL"
    name = {"i": "INT", "u": "UINT", "f": "FP"}.get(dt.kind)
    if name is None:
        raise InvalidInput(f"no Open Inference Protocol datatype for numpy {dt}")
    return f"{name}{dt.itemsize * 8}"


class Tensor(msgspec.Struct):
    """A named tensor of a request or a response."""

    name: str
    datatype: str
    shape: list[int]
    data: Any
    """A numpy array of ``shape`` (BYTES: an object array of ``bytes``)."""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class RequestedOutput(msgspec.Struct):
    name: str
    binary: bool | None = None
    """``parameters.binary_data`` as sent; None when the request left it to ``binary_data_output``."""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class InferRequest(msgspec.Struct):
    """A decoded infer request."""

    inputs: list[Tensor]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    """The outputs asked for (None: all of them)."""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def binary_output(self) -> bool:
        """Whether outputs not asked for by name come back binary (``binary_data_output``)."""
        return self.parameters.get("binary_data_output") is True


def _bad(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, detail={"field": field})


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _inflate(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding.lower() == "identity":
        return body
    enc = encoding.lower()
    try:
        if enc == "gzip":
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if enc == "deflate":
            return zlib.decompress(body)
    except zlib.error as exc:
        raise _bad(f"the body is not valid {enc} data: {exc}", "body") from None
    raise _bad(f"unsupported Content-Encoding {encoding!r}; send gzip, deflate or none", "Content-Encoding")


def decode_infer_request(body: bytes | bytearray | memoryview, headers: Mapping[str, str] | None = None) -> InferRequest:
    """An infer request from its body and headers (JSON, or the binary tensor extension). Raises InvalidInput."""
    raw = _inflate(bytes(body), _header(headers, "Content-Encoding"))
    length_text = _header(headers, HEADER_LENGTH)
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError:
            raise _bad(f"{HEADER_LENGTH} must be an integer, got {length_text!r}", HEADER_LENGTH) from None
        if length < 0 or length > len(raw):
            raise _bad(f"{HEADER_LENGTH} is {length} but the body has {len(raw)} bytes", HEADER_LENGTH)
    else:
        length = len(raw)
    try:
        doc = _decoder.decode(raw[:length])
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _bad(f"the inference header is not valid JSON: {exc}", "body") from None
    if not isinstance(doc, dict):
        raise _bad("the inference request must be a JSON object with inputs", "body")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("the request needs a non-empty list of inputs", "inputs")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad("parameters must be an object", "parameters")
    offset = length
    tensors: list[Tensor] = []
    seen: set[str] = set()
    for i, item in enumerate(inputs):
        tensor, offset = _input(item, i, raw, offset)
        if tensor.name in seen:
            raise _bad(f"input {tensor.name!r} is given twice", tensor.name)
        seen.add(tensor.name)
        tensors.append(tensor)
    if offset != len(raw):
        raise _bad(f"the body has {len(raw) - offset} bytes beyond the inputs' binary_data_size", "body")
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise _bad("outputs must be a list of {name, parameters}", "outputs")
        outputs = [_requested(o, j) for j, o in enumerate(doc["outputs"])]
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _bad("id must be a string", "id")
    return InferRequest(tensors, rid, outputs, dict(params))


def _requested(item: Any, j: int) -> RequestedOutput:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise _bad(f"outputs[{j}] must be an object with a name", f"outputs[{j}]")
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad(f"outputs[{j}].parameters must be an object", f"outputs[{j}]")
    binary = params.get("binary_data")
    return RequestedOutput(item["name"], binary if isinstance(binary, bool) else None, dict(params))


def _input(item: Any, i: int, raw: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise _bad(f"inputs[{i}] must be an object with a name, shape, datatype and data", f"inputs[{i}]")
    name = item["name"]
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or (datatype not in DATATYPES and datatype not in INPUT_ONLY):
        raise _bad(f"input {name!r} has datatype {datatype!r}; expected one of "
                   f"{', '.join([*DATATYPES, *INPUT_ONLY])}", name)
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise _bad(f"input {name!r} needs a shape: a list of non-negative integers", name)
    count = 1
    for d in shape:
        count *= d
    if count > 1 << 31:
        raise _bad(f"input {name!r} has shape {shape}: too many elements", name)
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad(f"input {name!r}: parameters must be an object", name)
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(raw):
            raise _bad(f"input {name!r} has binary_data_size {size!r} but {len(raw) - offset} bytes remain", name)
        chunk = raw[offset:offset + size]
        data = _from_binary(chunk, datatype, count, name)
        offset += size
    else:
        if "data" not in item:
            raise _bad(f"input {name!r} has neither data nor parameters.binary_data_size", name)
        if datatype == "BF16":
            raise _bad(f"input {name!r} is BF16: send it as binary data (binary_data_size), as Triton takes it", name)
        data = _from_json(item["data"], datatype, count, name)
    try:
        data = data.reshape(shape)
    except ValueError:
        raise _bad(f"input {name!r} has {data.size} elements, not the {count} its shape {shape} holds", name) from None
    return Tensor(name, datatype, list(shape), data, {k: v for k, v in params.items() if k != "binary_data_size"}), offset


def _from_binary(chunk: bytes, datatype: str, count: int, name: str) -> np.ndarray:
    if datatype == "BYTES":
        return deserialize_bytes(chunk, name)
    if datatype == "BF16":  # the upper half of a float32: widen exactly
        if len(chunk) != count * 2:
            raise _bad(f"input {name!r}: {len(chunk)} bytes of BF16 is not the {count} elements of its shape", name)
        return (np.frombuffer(chunk, dtype="<u2").astype("<u4") << 16).view("<f4")
    dtype = DATATYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise _bad(f"input {name!r}: {len(chunk)} bytes of {datatype} is not the {count} elements of its shape", name)
    return np.frombuffer(chunk, dtype=dtype)


def _from_json(data: Any, datatype: str, count: int, name: str) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = _flatten(data, name)
        out = np.empty(len(flat), dtype=object)
        for i, v in enumerate(flat):
            if isinstance(v, str):
                out[i] = v.encode("utf-8")
            else:
                raise _bad(f"input {name!r} is BYTES: its data must be strings, not {type(v).__name__}", name)
        return out
    dtype = DATATYPES[datatype]
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise _bad(f"input {name!r}: its data is ragged", name) from None
    kind = arr.dtype.kind
    if dtype.kind in "iu" and kind in "fO":
        # Integers beyond int64 (UINT64's upper half) make numpy guess floats or objects: check them exactly.
        flat = _flatten(data, name)
        if flat and all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            try:
                return np.array(flat, dtype=dtype)
            except OverflowError:
                raise _bad(f"input {name!r} holds values out of range for {datatype}", name) from None
    if arr.size and (kind not in "biuf" or (datatype == "BOOL" and kind != "b")
                     or (dtype.kind in "iu" and kind == "f") or (dtype.kind != "b" and kind == "b")):
        raise _bad(f"input {name!r} is {datatype} but its data holds {_what(arr)}", name)
    try:
        with np.errstate(over="raise", invalid="raise"):
            out = arr.astype(dtype).reshape(-1)
    except (FloatingPointError, OverflowError, ValueError):
        raise _bad(f"input {name!r} holds values out of range for {datatype}", name) from None
    if dtype.kind in "iu" and arr.size and not np.array_equal(out, arr.reshape(-1)):
        raise _bad(f"input {name!r} holds values out of range for {datatype}", name)
    return out


def _what(arr: np.ndarray) -> str:
    return {"U": "strings", "S": "strings", "O": "mixed values or nulls", "f": "fractional numbers",
            "b": "booleans"}.get(arr.dtype.kind, str(arr.dtype))


def _flatten(data: list[Any], name: str) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def deserialize_bytes(chunk: bytes, name: str = "input") -> np.ndarray:
    """BYTES elements from the binary extension's 4-byte little-endian length-prefixed layout."""
    out = []
    offset, end = 0, len(chunk)
    view = memoryview(chunk)
    while offset < end:
        if offset + 4 > end:
            raise _bad(f"input {name!r}: a BYTES element's length is cut short", name)
        (size,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + size > end:
            raise _bad(f"input {name!r}: a BYTES element says {size} bytes but {end - offset} remain", name)
        out.append(bytes(view[offset:offset + size]))
        offset += size
    arr = np.empty(len(out), dtype=object)
    arr[:] = out
    return arr


def serialize_bytes(arr: np.ndarray) -> bytes:
    """BYTES elements in the binary extension's layout (str elements are written as UTF-8)."""
    parts = []
    for v in arr.reshape(-1).tolist():
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


# ---- tensors to model inputs -----------------------------------------------------------------------------
def input_specs(schema: InputSchema) -> list[dict[str, Any]]:
    """The inputs a model advertises in its metadata: ``{name, datatype, shape}`` each.

    Numeric columns are one ``input`` tensor of shape ``[-1, n_columns]``; mixed columns one
    ``[-1]`` tensor per column; tensors as the model declares them.
    """
    if schema.kind == "columns" and schema.numeric:
        return [{"name": "input", "datatype": datatype_of(schema.row_dtype()), "shape": [-1, len(schema.specs)]}]
    if schema.kind == "columns":
        return [{"name": s.name, "datatype": datatype_of(s.np_dtype()), "shape": [-1]} for s in schema.specs]
    if schema.kind == "tensors":
        return [{"name": s.name or "input", "datatype": datatype_of(s.np_dtype()),
                 "shape": list(s.shape) if s.shape is not None else [-1, -1]} for s in schema.specs]
    return [{"name": "input", "datatype": "FP64", "shape": [-1, -1]}]


def model_inputs(request: InferRequest, schema: InputSchema) -> Any:
    """The request's tensors as a predictor takes them: one 2-D array of rows, or arrays by name.

    A model of numeric columns takes one ``[N, n_columns]`` tensor (any name) or one tensor per
    column named as the column; a model of named tensors takes them by name (one tensor may come
    under any name). Raises InvalidInput naming the tensor at fault.
    """
    tensors = {t.name: t for t in request.inputs}
    if schema.kind == "columns":
        names = schema.names
        if len(tensors) == 1 and request.inputs[0].name not in names:
            t = request.inputs[0]
            if not schema.numeric:
                raise _bad(f"the model takes columns of different types ({', '.join(names)}): send one input per "
                           f"column, named as the column", t.name)
            arr = _numeric_tensor(t, schema.row_dtype())
            if arr.ndim == 1 and len(names) == 1:
                arr = arr.reshape(-1, 1)
            if arr.ndim != 2 or arr.shape[1] != len(names):
                raise _bad(f"input {t.name!r} has shape {list(arr.shape)}; the model takes [N, {len(names)}] "
                           f"(columns {', '.join(names)})", t.name)
            return arr
        missing = [s.name for s in schema.specs if s.name not in tensors and not s.optional]
        if missing:
            raise _bad(f"missing input {missing[0]!r}; the model takes {', '.join(names)}", missing[0])
        extra = [n for n in tensors if n not in names]
        if extra:
            raise _bad(f"extra input {extra[0]!r}: the model takes {', '.join(names)}", extra[0])
        cols = {}
        for spec in schema.specs:
            t = tensors.get(spec.name)
            if t is not None:
                cols[spec.name] = _column(t, spec)
        _same_rows(cols)
        if schema.numeric:
            return np.column_stack([cols[n] for n in names]).astype(schema.row_dtype(), copy=False)
        return cols
    if schema.kind == "tensors":
        if len(schema.specs) == 1 and len(tensors) == 1:
            return _as_spec(request.inputs[0], schema.specs[0])
        missing = [s.name for s in schema.specs if s.name not in tensors and not s.optional]
        if missing:
            raise _bad(f"missing input {missing[0]!r}; the model takes {', '.join(schema.names)}", missing[0])
        extra = [n for n in tensors if n not in schema.names]
        if extra:
            raise _bad(f"extra input {extra[0]!r}: the model takes {', '.join(schema.names)}", extra[0])
        out = {s.name: _as_spec(tensors[s.name], s) for s in schema.specs if s.name in tensors}
        return out[schema.specs[0].name] if len(schema.specs) == 1 else out
    if len(tensors) != 1:
        raise _bad("this model takes one input tensor", request.inputs[1].name)
    return request.inputs[0].data


def _numeric_tensor(t: Tensor, dtype: np.dtype) -> np.ndarray:
    if t.datatype == "BYTES":
        raise _bad(f"input {t.name!r} is BYTES; the model takes numbers ({datatype_of(dtype)})", t.name)
    return t.data.astype(dtype, copy=False)


def _column(t: Tensor, spec: TensorSpec) -> np.ndarray:
    arr = t.data
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise _bad(f"input {t.name!r} has shape {list(arr.shape)}; a column is [N] or [N, 1]", t.name)
    if spec.numeric:
        return _numeric_tensor(Tensor(t.name, t.datatype, [len(arr)], arr), spec.np_dtype())
    if t.datatype != "BYTES":
        raise _bad(f"input {t.name!r} is {t.datatype}; column {spec.name!r} takes strings (BYTES)", t.name)
    if spec.dtype == "str":
        try:
            return np.array([v.decode("utf-8") for v in arr.tolist()], dtype=object)
        except UnicodeDecodeError:
            raise _bad(f"input {t.name!r} holds bytes that are not UTF-8 text", t.name) from None
    return arr


def _as_spec(t: Tensor, spec: TensorSpec) -> np.ndarray:
    if not spec.numeric:
        if t.datatype != "BYTES":
            raise _bad(f"input {t.name!r} is {t.datatype}; the model takes BYTES", t.name)
        return t.data if spec.dtype != "str" else np.vectorize(lambda b: b.decode("utf-8", "replace"),
                                                                otypes=[object])(t.data)
    arr = _numeric_tensor(t, spec.np_dtype())
    if spec.shape is not None and (arr.ndim != len(spec.shape)
                                   or any(w not in (-1, g) for w, g in zip(spec.shape, arr.shape))):
        raise _bad(f"input {t.name!r} has shape {list(arr.shape)}; the model takes {list(spec.shape)}", t.name)
    return arr


def _same_rows(cols: Mapping[str, np.ndarray]) -> None:
    lengths = {n: len(a) for n, a in cols.items()}
    if len(set(lengths.values())) > 1:
        raise _bad(f"the inputs have different numbers of rows: {lengths}", next(iter(lengths)))


# ---- responses ---------------------------------------------------------------------------------------------
def encode_infer_response(model_name: str, outputs: Mapping[str, Any], *, model_version: str | None = None,
                          request: InferRequest | None = None, parameters: Mapping[str, Any] | None = None,
                          ) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (``Content-Type``, and ``Inference-Header-Content-Length`` when
    any output is binary). ``outputs`` are the model's outputs by name; ``request`` picks which are
    returned and how. Raises InvalidInput when the request asks for an output the model has not."""
    chosen: list[tuple[str, np.ndarray, bool]] = []
    default_binary = request.binary_output if request is not None else False
    if request is not None and request.outputs:
        for wanted in request.outputs:
            if wanted.name not in outputs:
                raise _bad(f"unknown output {wanted.name!r}; the model gives {', '.join(outputs)}", wanted.name)
            binary = wanted.binary if wanted.binary is not None else default_binary
            chosen.append((wanted.name, np.asarray(outputs[wanted.name]), binary))
    else:
        chosen = [(name, np.asarray(value), default_binary) for name, value in outputs.items()]
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = str(model_version)
    if request is not None and request.id:
        doc["id"] = request.id
    if parameters:
        doc["parameters"] = dict(parameters)
    blobs: list[bytes] = []
    tensors = []
    for name, arr, binary in chosen:
        datatype = datatype_of(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            blob = serialize_bytes(arr) if datatype == "BYTES" else \
                np.ascontiguousarray(arr, dtype=DATATYPES[datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(arr, datatype)
        tensors.append(entry)
    doc["outputs"] = tensors
    header = _encoder.encode(doc)
    if not blobs:
        return header, {"Content-Type": JSON_TYPE}
    return b"".join([header, *blobs]), {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(header))}


def _json_data(arr: np.ndarray, datatype: str) -> list[Any]:
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat.tolist()]
    if datatype == "FP16":
        flat = flat.astype(np.float32)
    return flat.tolist()


def output_specs(served: Any) -> list[dict[str, Any]]:
    """The outputs a served model advertises (a backend's :class:`~matih_lite.contracts.slots.ServedModel`):
    as its backend described them, else FP64 for each output name."""
    specs = {spec.name: spec for spec in getattr(served, "output_specs", ()) or ()}
    out = []
    for name in getattr(served, "output_names", ()) or tuple(specs):
        spec = specs.get(name)
        if spec is None:
            out.append({"name": name, "datatype": "FP64", "shape": [-1]})
            continue
        dtype = "object" if spec.dtype in ("str", "bytes", "object") else spec.dtype
        out.append({"name": name, "datatype": datatype_of(dtype), "shape": list(spec.shape or (-1,))})
    return out


PLATFORMS = {"onnx": "onnxruntime_onnx", "sklearn": "sklearn", "xgboost": "xgboost", "pyfunc": "python",
             "python_function": "python"}


def model_metadata(name: str, versions: Sequence[str | int], flavor: str, schema: InputSchema,
                   outputs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]``: name, versions, platform, inputs and outputs."""
    return {"name": name, "versions": [str(v) for v in versions], "platform": PLATFORMS.get(flavor, flavor),
            "inputs": input_specs(schema), "outputs": [dict(o) for o in outputs]}


def server_metadata(version: str) -> dict[str, Any]:
    """``GET /v2``: the server's name, version and protocol extensions."""
    return {"name": "matih-lite", "version": version, "extensions": list(PROTOCOL_EXTENSIONS)}


def live_body(live: bool = True) -> dict[str, bool]:
    return {"live": live}


def ready_body(ready: bool) -> dict[str, bool]:
    """``/v2/health/ready`` and ``/v2/models/{name}/ready`` (status 200 when ready, 400 when not, as Triton)."""
    return {"ready": ready}


def error_body(message: str) -> bytes:
    """The protocol's error payload: ``{"error": message}``."""
    return _encoder.encode({"error": message})
