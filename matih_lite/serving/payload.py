"""MLflow scoring JSON straight to numpy arrays, and predictions back to JSON. No pandas.

Accepts the request shapes ``mlflow models serve`` accepts, each as the only key of the body
(``params`` may sit beside it and is returned separately):

- ``{"dataframe_split": {"columns": [...], "data": [[...], ...], "index": [...]}}``
- ``{"dataframe_records": [{"col": value, ...}, ...]}``
- ``{"instances": ...}`` or ``{"inputs": ...}``: a list of rows, a list of records, a single
  tensor, or a dict of columns / named tensors.

The result is ordered by the model's :class:`~matih_lite.serving.flavors.InputSchema`: one 2-D
array of rows when every input is numeric (or one tensor), else a dict of name to array. Every
problem is an :class:`~matih_lite.errors.InvalidInput` whose message names the field: a missing
or extra column (extra columns are refused, never silently dropped), a value of the wrong type
("a string where a double column is"), a row of the wrong length, a tensor of the wrong shape,
or no rows at all. ``detail`` carries ``field`` (and ``row`` where one is at fault).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from matih_lite.errors import InvalidInput
from matih_lite.serving.flavors.base import InputSchema, TensorSpec

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MAX_ROWS = 1_000_000
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class ScoringRequest(msgspec.Struct, frozen=True):
    """A parsed request: the model inputs, and the request's ``params`` (MLflow's inference params)."""

    inputs: Any
    params: dict[str, Any] | None = None
    format: str = ""


def _bad(message: str, field: str, **detail: Any) -> InvalidInput:
    return InvalidInput(message, detail={"field": field, **detail})


def decode_json(body: bytes | str | memoryview) -> Any:
    """Decode a JSON body. Raises InvalidInput saying where it is malformed."""
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, TypeError) as exc:
        raise _bad(f"the request body is not valid JSON: {exc}", "body") from None


def parse_scoring_request(body: bytes | str | Mapping[str, Any], schema: InputSchema | None = None) -> ScoringRequest:
    """Parse an MLflow scoring body (bytes, text, or already decoded) into model inputs. Raises InvalidInput."""
    doc = decode_json(body) if isinstance(body, (bytes, bytearray, memoryview, str)) else body
    schema = schema or InputSchema()
    if not isinstance(doc, Mapping):
        raise _bad(f"the body must be a JSON object with one of {', '.join(FORMATS)}", "body")
    given = [k for k in FORMATS if k in doc]
    unknown = sorted(str(k) for k in doc if k not in FORMATS and k != "params")
    if unknown:
        raise _bad(f"unknown field(s) {', '.join(repr(u) for u in unknown)}; the body takes exactly one of "
                   f"{', '.join(FORMATS)} (and optionally params)", unknown[0])
    if len(given) != 1:
        raise _bad(f"the body must have exactly one of {', '.join(FORMATS)}; got "
                   f"{', '.join(given) if given else 'none'}", given[1] if len(given) > 1 else "body")
    params = doc.get("params")
    if params is not None and not isinstance(params, Mapping):
        raise _bad("params must be an object", "params")
    fmt = given[0]
    return ScoringRequest(parse_inputs(fmt, doc[fmt], schema), dict(params) if params else None, fmt)


def parse_inputs(fmt: str, value: Any, schema: InputSchema) -> Any:
    """The model inputs for one request format's value (see :func:`parse_scoring_request`)."""
    if fmt == "dataframe_split":
        columns, rows = _split(value)
        return _table(columns, rows, schema, fmt)
    if fmt == "dataframe_records":
        return _records(value, schema, fmt)
    if fmt not in ("instances", "inputs"):
        raise _bad(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", fmt)
    if isinstance(value, Mapping):
        if not value:
            raise _bad(f"{fmt} is an empty object: no inputs", fmt)
        if schema.kind == "tensors" and (len(schema.specs) > 1 or schema.specs[0].name in value):
            return _named_tensors(value, schema, fmt)
        return _columnar(value, schema, fmt)
    if isinstance(value, list):
        if not value:
            raise _bad(f"{fmt} is empty: no rows", fmt)
        if all(isinstance(v, Mapping) for v in value):
            return _records(value, schema, fmt)
        if schema.kind == "tensors" and len(schema.specs) > 1:
            raise _bad(f"the model takes {len(schema.specs)} named inputs "
                       f"({', '.join(schema.names)}); send {fmt} as an object of them", fmt)
        if schema.kind == "tensors":
            return _tensor(value, schema.specs[0], fmt)
        return _table(None, value, schema, fmt)
    raise _bad(f"{fmt} must be a list of rows or an object of columns, not {_kind(value)}", fmt)


# ---- request shapes ---------------------------------------------------------------------------------
def _split(value: Any) -> tuple[list[str] | None, list[Any]]:
    field = "dataframe_split"
    if not isinstance(value, Mapping):
        raise _bad(f"{field} must be an object with columns and data, not {_kind(value)}", field)
    extra = [str(k) for k in value if k not in ("columns", "data", "index")]
    if extra:
        raise _bad(f"{field} has unknown key(s) {', '.join(map(repr, extra))}; it takes columns, data and index",
                   f"{field}.{extra[0]}")
    data = value.get("data")
    if not isinstance(data, list):
        raise _bad(f"{field}.data must be a list of rows", f"{field}.data")
    columns = value.get("columns")
    if columns is not None:
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise _bad(f"{field}.columns must be a list of column names", f"{field}.columns")
        if len(set(columns)) != len(columns):
            dup = next(c for c in columns if columns.count(c) > 1)
            raise _bad(f"column {dup!r} appears twice in {field}.columns", f"{field}.columns")
    return columns, data


def _records(value: Any, schema: InputSchema, field: str) -> Any:
    if not isinstance(value, list):
        raise _bad(f"{field} must be a list of records (objects), not {_kind(value)}", field)
    if not value:
        raise _bad(f"{field} is empty: no rows", field)
    if schema.kind == "columns" or (schema.kind == "tensors" and len(schema.specs) > 1):
        names = schema.names
    else:
        first = value[0]
        if not isinstance(first, Mapping):
            raise _bad(f"{field}[0] must be an object of column: value", f"{field}[0]", row=0)
        names = [str(k) for k in first]
    required = [s.name for s in schema.specs if not s.optional] if schema.kind != "any" else names
    width = len(names)
    rows = []
    for i, rec in enumerate(value):
        if not isinstance(rec, Mapping):
            raise _bad(f"{field}[{i}] must be an object of column: value, not {_kind(rec)}", f"{field}[{i}]", row=i)
        if len(rec) != width or any(n not in rec for n in names):
            _check_columns(list(rec), names, required, schema, field, row=i)
        rows.append([rec.get(n) for n in names])
    return _table(names, rows, schema, field)


def _columnar(value: Mapping[str, Any], schema: InputSchema, field: str) -> Any:
    """``{"col": [v, ...], ...}``: columns of equal length (a scalar is a column of one)."""
    names = [str(k) for k in value]
    cols = [v if isinstance(v, list) else [v] for v in value.values()]
    lengths = {len(c) for c in cols}
    if len(lengths) > 1:
        raise _bad(f"the columns of {field} have different lengths ({', '.join(map(str, sorted(lengths)))})", field)
    n = lengths.pop()
    if n == 0:
        raise _bad(f"{field} has no rows", field)
    rows = [[c[i] for c in cols] for i in range(n)]
    return _table(names, rows, schema, field)


def _check_columns(given: Sequence[str], names: Sequence[str], required: Sequence[str], schema: InputSchema,
                   field: str, row: int | None = None) -> None:
    where = f" in row {row}" if row is not None else ""
    missing = [n for n in required if n not in given]
    if missing:
        raise _bad(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}{where}; the "
                   f"model takes {', '.join(names)}", missing[0], **({"row": row} if row is not None else {}))
    extra = [g for g in given if g not in names]
    if extra and schema.kind != "any":
        raise _bad(f"extra column{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}{where}: the model does "
                   f"not take {'them' if len(extra) > 1 else 'it'}; it takes {', '.join(names)}", extra[0],
                   **({"row": row} if row is not None else {}))


def _table(columns: list[str] | None, rows: list[Any], schema: InputSchema, field: str) -> Any:
    """Rows (lists, positional or under ``columns``) as the schema's arrays."""
    if not rows:
        raise _bad(f"{field} has no rows", field)
    if len(rows) > MAX_ROWS:
        raise _bad(f"{field} has {len(rows)} rows; the limit is {MAX_ROWS}", field)
    if schema.kind == "columns" or (schema.kind == "tensors" and len(schema.specs) > 1):
        names = schema.names
        if len(names) == 1 and not isinstance(rows[0], list):
            rows = [[v] for v in rows]
        if columns is not None and columns != names:
            required = [s.name for s in schema.specs if not s.optional]
            _check_columns(columns, names, required, schema, field)
            index = {c: i for i, c in enumerate(columns)}
            picks = [index.get(n) for n in names]
            rows = [_pick(r, picks, len(columns), field, i) for i, r in enumerate(rows)]
        if schema.kind == "columns" and schema.numeric:
            return _numeric(rows, schema.row_dtype(), names, field, (-1, len(names)))
        return _by_column(rows, schema.specs, field)
    if schema.kind == "tensors":
        spec = schema.specs[0]
        return _tensor(rows, spec, field)
    if columns is not None and len(columns) == 0:
        raise _bad(f"{field} has no columns", field)
    return _numeric(rows, None, columns, field, None)


def _pick(row: Any, picks: list[int | None], width: int, field: str, i: int) -> list[Any]:
    if not isinstance(row, list) or len(row) != width:
        raise _bad(f"{field} row {i} has {len(row) if isinstance(row, list) else 'not a list of'} values; "
                   f"expected {width}", field, row=i)
    return [row[p] if p is not None else None for p in picks]


def _named_tensors(value: Mapping[str, Any], schema: InputSchema, field: str) -> dict[str, np.ndarray]:
    names = schema.names
    _check_columns([str(k) for k in value], names, [s.name for s in schema.specs if not s.optional], schema, field)
    out = {}
    for spec in schema.specs:
        if spec.name in value:
            out[spec.name] = _tensor(value[spec.name], spec, f"{field}.{spec.name}")
    lengths = {len(a) for a in out.values() if a.ndim}
    if len(lengths) > 1:
        raise _bad(f"the inputs of {field} have different numbers of rows ({', '.join(map(str, sorted(lengths)))})",
                   field)
    return out


def _tensor(value: Any, spec: TensorSpec, field: str) -> np.ndarray:
    if not spec.numeric:
        arr = _strings(value if isinstance(value, list) else [value], spec, field)
    else:
        arr = _numeric(value, spec.np_dtype(), None, field, spec.shape)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise _bad(f"{field} has no rows", field)
    return arr


def _by_column(rows: list[Any], specs: Sequence[TensorSpec], field: str) -> dict[str, np.ndarray]:
    width = len(specs)
    for i, r in enumerate(rows):
        if not isinstance(r, list) or len(r) != width:
            raise _bad(f"{field} row {i} has {len(r) if isinstance(r, list) else 'not a list of'} values; "
                       f"expected {width}", field, row=i)
    out: dict[str, np.ndarray] = {}
    for j, spec in enumerate(specs):
        values = [r[j] for r in rows]
        if spec.numeric:
            out[spec.name] = _numeric(values, spec.np_dtype(), [spec.name], field, None, column=spec.name)
        else:
            out[spec.name] = _strings(values, spec, field)
    return out


# ---- values -------------------------------------------------------------------------------------------
def _numeric(rows: Any, dtype: np.dtype | None, names: Sequence[str] | None, field: str,
             shape: tuple[int, ...] | None, column: str | None = None) -> np.ndarray:
    """Nested lists of numbers as an array of ``dtype``, its shape checked against ``shape``."""
    try:
        arr = np.asarray(rows)
    except (ValueError, TypeError, OverflowError):
        raise _shape_error(rows, field, shape) from None
    if arr.size == 0:
        raise _bad(f"{field} has no values", field)
    kind = arr.dtype.kind
    if kind == "O":
        arr = _slow_numeric(rows, arr, dtype, names, field, column)
    elif kind in "US":
        raise _type_error(rows, dtype, names, field, column)
    elif kind not in "biuf":
        raise _bad(f"{field} holds values of an unsupported type ({arr.dtype})", field)
    if shape is not None:
        _check_shape(arr, shape, field)
    elif names is not None and column is None and arr.ndim != 2:
        raise _bad(f"{field} must be rows of {len(names)} values; got an array of shape {list(arr.shape)}", field)
    elif dtype is None and arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if dtype is None:
        return arr if arr.dtype.kind in "biuf" else arr.astype(np.float64)
    if arr.dtype == dtype:
        return arr
    if dtype.kind in "iu" and arr.dtype.kind == "f" and (
            not np.all(np.isfinite(arr)) or not np.all(arr == np.floor(arr))):
        raise _type_error(rows, dtype, names, field, column, wanted="whole numbers")
    if dtype.kind == "b" and arr.dtype.kind != "b":
        raise _type_error(rows, dtype, names, field, column, wanted="true or false")
    try:
        with np.errstate(over="raise", invalid="raise"):
            return arr.astype(dtype)
    except (FloatingPointError, OverflowError, ValueError):
        raise _bad(f"{field} holds numbers out of range for {dtype}", field) from None


def _slow_numeric(rows: Any, arr: np.ndarray, dtype: np.dtype | None, names: Sequence[str] | None, field: str,
                  column: str | None) -> np.ndarray:
    """Arrays numpy could not type by itself: nulls (NaN in float columns), ints beyond int64, mixtures."""
    target = dtype if dtype is not None else np.dtype(np.float64)
    flat = arr.reshape(-1)
    out = np.empty(flat.shape[0], dtype=np.float64 if target.kind == "f" else target)
    for i, v in enumerate(flat):
        if v is None:
            if target.kind != "f":
                raise _null_error(arr, i, names, field, column, target)
            out[i] = math.nan
        elif isinstance(v, (bool, int, float)) and not isinstance(v, str):
            if target.kind in "iu" and isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
                raise _cell_error(arr, i, names, field, column, target, v)
            try:
                out[i] = v
            except (OverflowError, ValueError):
                raise _bad(f"{_where(arr, i, names, field, column)} holds {v!r}, out of range for {target}",
                           column or field) from None
        else:
            raise _cell_error(arr, i, names, field, column, target, v)
    return out.reshape(arr.shape).astype(target, copy=False)


def _strings(values: list[Any], spec: TensorSpec, field: str) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if v is None and spec.optional:
            out[i] = None
        elif isinstance(v, str):
            if spec.dtype == "bytes":
                try:
                    out[i] = base64.b64decode(v, validate=True)
                except (binascii.Error, ValueError):
                    raise _bad(f"column {spec.name!r} takes base64-encoded bytes; row {i} is not base64",
                               spec.name or field, row=i) from None
            else:
                out[i] = v
        elif spec.dtype == "object" and isinstance(v, (int, float, bool)):
            out[i] = v
        else:
            raise _bad(f"column {spec.name!r} takes strings; row {i} holds {_kind(v)}", spec.name or field, row=i)
    return out


def _check_shape(arr: np.ndarray, shape: tuple[int, ...], field: str) -> None:
    if arr.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape[1:], arr.shape[1:])):
        expected = "x".join("N" if d == -1 else str(d) for d in shape)
        raise _bad(f"{field} has shape {'x'.join(map(str, arr.shape)) or 'scalar'}; the model takes {expected}",
                   field, shape=list(arr.shape))


def _shape_error(rows: Any, field: str, shape: tuple[int, ...] | None) -> InvalidInput:
    if isinstance(rows, list) and rows and isinstance(rows[0], list):
        width = len(rows[0])
        for i, r in enumerate(rows):
            if not isinstance(r, list) or len(r) != width:
                return _bad(f"{field} row {i} has {len(r) if isinstance(r, list) else 'not a list of'} values; row 0 "
                            f"has {width}", field, row=i)
    return _bad(f"{field} is ragged: its rows are not all the same shape", field)


def _where(arr: np.ndarray, flat_index: int, names: Sequence[str] | None, field: str, column: str | None) -> str:
    if column is not None:
        return f"column {column!r} row {flat_index}"
    if arr.ndim >= 2 and names:
        row, col = divmod(flat_index, arr.shape[-1]) if arr.ndim == 2 else (flat_index, 0)
        if col < len(names):
            return f"column {names[col]!r} row {row}"
    return f"{field} value {flat_index}"


def _field_of(arr: np.ndarray, flat_index: int, names: Sequence[str] | None, field: str, column: str | None) -> str:
    if column is not None:
        return column
    if arr.ndim == 2 and names and divmod(flat_index, arr.shape[1])[1] < len(names):
        return names[divmod(flat_index, arr.shape[1])[1]]
    return field


def _type_name(dtype: np.dtype) -> str:
    return {"f": "numbers", "i": "integers", "u": "non-negative integers", "b": "true or false"}.get(dtype.kind, "numbers")


def _cell_error(arr: np.ndarray, i: int, names: Sequence[str] | None, field: str, column: str | None,
                target: np.dtype, value: Any) -> InvalidInput:
    where = _where(arr, i, names, field, column)
    return _bad(f"{where} holds {_kind(value)}; the model takes {_type_name(target)} ({target}) there",
                _field_of(arr, i, names, field, column))


def _null_error(arr: np.ndarray, i: int, names: Sequence[str] | None, field: str, column: str | None,
                target: np.dtype) -> InvalidInput:
    where = _where(arr, i, names, field, column)
    return _bad(f"{where} is null; the model takes {_type_name(target)} ({target}) there and has no missing "
                "values for them", _field_of(arr, i, names, field, column))


def _type_error(rows: Any, dtype: np.dtype | None, names: Sequence[str] | None, field: str, column: str | None,
                wanted: str | None = None) -> InvalidInput:
    target = dtype if dtype is not None else np.dtype(np.float64)
    try:
        arr = np.asarray(rows, dtype=object)
    except (ValueError, TypeError):
        return _bad(f"{field} holds values that are not {wanted or _type_name(target)}", field)
    flat = arr.reshape(-1)
    for i, v in enumerate(flat):
        bad = isinstance(v, str) or not isinstance(v, (int, float, bool)) if v is not None else False
        if wanted == "whole numbers" and isinstance(v, float):
            bad = not math.isfinite(v) or v != int(v)
        if wanted == "true or false":
            bad = not isinstance(v, bool)
        if bad:
            return _cell_error(arr, i, names, field, column, target, v)
    return _bad(f"{field} holds values that are not {wanted or _type_name(target)}", field)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# ---- responses -----------------------------------------------------------------------------------------
def predictions_json(outputs: Any) -> Any:
    """Outputs as plain JSON values: an array as a list, several outputs as ``{name: list}``."""
    if isinstance(outputs, Mapping):
        return {str(k): _jsonable(v) for k, v in outputs.items()}
    return _jsonable(outputs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return [_jsonable(v) for v in value.tolist()]
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def encode_predictions(outputs: Any, extra: Mapping[str, Any] | None = None) -> bytes:
    """``{"predictions": [...], **extra}`` as JSON bytes (NaN and infinities become null)."""
    doc: dict[str, Any] = {"predictions": predictions_json(outputs)}
    if extra:
        doc.update(extra)
    return _encoder.encode(doc)
