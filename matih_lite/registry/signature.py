"""A version's signature: the column names and types of its input (and output), inferred from an example.

The shape is MLflow's column-based schema, so a signature read from an MLmodel file and one
inferred here look the same::

    {"inputs": [{"name": "age", "type": "long"}, {"name": "plan", "type": "string"}],
     "outputs": [{"name": "churn", "type": "double"}]}

Examples may be a dict of columns (``{"age": [31, 45]}``) or of one row (``{"age": 31}``), a
list of records (``[{"age": 31}, ...]``), a list of rows (``[[31, "pro"], ...]``: columns named
``"0"``, ``"1"``...), a pandas DataFrame or Series, or a numpy array. Types are ``boolean``,
``long``, ``double``, ``string``, ``binary``, ``datetime``, or ``object`` when a column mixes them.
numpy and pandas are only used when the example is one of theirs.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from typing import Any

from matih_lite.errors import InvalidInput

TYPES = ("boolean", "integer", "long", "float", "double", "string", "binary", "datetime", "object")


def _scalar_type(value: Any) -> str | None:
    """The schema type of one value; None for a missing value (None or NaN)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return None if value != value else "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray)):
        return "binary"
    if isinstance(value, (_dt.datetime, _dt.date)):
        return "datetime"
    np_type = _numpy_scalar_type(value)
    if np_type is not None:
        return np_type
    return "object"


def _numpy_scalar_type(value: Any) -> str | None:
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    if kind is None or getattr(value, "ndim", 0) != 0:
        return None
    return _dtype_type(value.dtype)


def _dtype_type(dtype: Any) -> str:
    kind = getattr(dtype, "kind", "O")
    size = getattr(dtype, "itemsize", 8)
    if kind == "b":
        return "boolean"
    if kind in "iu":
        return "integer" if size <= 4 and kind == "i" else "long"
    if kind == "f":
        return "float" if size <= 4 else "double"
    if kind in "US":
        return "string" if kind == "U" else "binary"
    if kind == "M":
        return "datetime"
    name = str(dtype)
    if name in ("string", "str"):
        return "string"
    if name == "boolean":
        return "boolean"
    if name.startswith(("Int", "UInt")):
        return "long"
    if name.startswith("Float"):
        return "double"
    return "object"


def _column_type(values: Any) -> str:
    seen = {t for t in (_scalar_type(v) for v in values) if t is not None}
    if not seen:
        return "object"
    if seen == {"long", "double"}:
        return "double"
    return seen.pop() if len(seen) == 1 else "object"


def _columns(example: Any, what: str) -> list[dict[str, str]]:
    mod = type(example).__module__
    if mod.startswith("pandas"):
        if hasattr(example, "dtypes") and hasattr(example, "columns"):  # DataFrame
            out = []
            for col, dtype in example.dtypes.items():
                t = _dtype_type(dtype)
                if t == "object":
                    t = _column_type(example[col].tolist())
                out.append({"name": str(col), "type": t})
            return out
        if hasattr(example, "dtype"):  # Series
            t = _dtype_type(example.dtype)
            if t == "object":
                t = _column_type(example.tolist())
            return [{"name": str(example.name if example.name is not None else "0"), "type": t}]
    if mod.startswith("numpy") and hasattr(example, "ndim"):
        if example.dtype.names:  # a structured array: its fields are the columns
            return [{"name": n, "type": _dtype_type(example.dtype[n])} for n in example.dtype.names]
        t = _dtype_type(example.dtype)
        if t == "object":
            t = _column_type(example.ravel().tolist())
        if example.ndim <= 1:
            return [{"name": "0", "type": t}]
        return [{"name": str(i), "type": t} for i in range(example.shape[1])]
    if isinstance(example, Mapping):
        if not example:
            raise InvalidInput(f"{what} is an empty object; give at least one column")
        out = []
        for key, value in example.items():
            values = value if isinstance(value, (list, tuple)) else _as_list(value)
            out.append({"name": str(key), "type": _column_type(values)})
        return out
    if isinstance(example, (list, tuple)):
        if not example:
            raise InvalidInput(f"{what} is an empty list; give at least one row")
        if all(isinstance(r, Mapping) for r in example):
            names: list[str] = []
            for row in example:
                names.extend(str(k) for k in row if str(k) not in names)
            return [{"name": n, "type": _column_type([r.get(n) for r in example])} for n in names]
        if all(isinstance(r, (list, tuple)) for r in example):
            width = max(len(r) for r in example)
            return [{"name": str(i), "type": _column_type([r[i] if i < len(r) else None for r in example])}
                    for i in range(width)]
        return [{"name": "0", "type": _column_type(example)}]
    t = _scalar_type(example)
    if t is None or t == "object":
        raise InvalidInput(f"cannot infer a schema from {what} of type {type(example).__name__}; give a dict "
                           "of columns, a list of records, a pandas DataFrame or a numpy array")
    return [{"name": "0", "type": t}]


def _as_list(value: Any) -> list[Any]:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        got = tolist()
        return got if isinstance(got, list) else [got]
    return [value]


def infer_signature(input_example: Any, output_example: Any = None) -> dict[str, Any]:
    """``{"inputs": [...], "outputs": [...] | None}`` from examples. Raises InvalidInput if it cannot."""
    return {"inputs": _columns(input_example, "the input example"),
            "outputs": None if output_example is None else _columns(output_example, "the output example")}


def check_signature(signature: Any) -> dict[str, Any]:
    """A signature given by the caller, checked: ``{"inputs": [{"name", "type"}...], "outputs": ...}``."""
    if isinstance(signature, str):
        try:
            signature = json.loads(signature)
        except ValueError:
            raise InvalidInput("signature is not valid JSON") from None
    if not isinstance(signature, Mapping) or "inputs" not in signature:
        raise InvalidInput('signature must be an object like {"inputs": [{"name": "age", "type": "long"}], '
                           '"outputs": [...]}')
    out: dict[str, Any] = {}
    for part in ("inputs", "outputs"):
        cols = signature.get(part)
        if cols is None:
            out[part] = None
            continue
        if not isinstance(cols, list) or not all(isinstance(c, Mapping) and isinstance(c.get("type"), str)
                                                 for c in cols):
            raise InvalidInput(f"signature {part} must be a list of {{\"name\", \"type\"}} objects")
        out[part] = [{k: v for k, v in c.items()} for c in cols]
    unknown = set(signature) - {"inputs", "outputs", "params"}
    if unknown:
        raise InvalidInput(f"signature has unknown keys: {', '.join(sorted(unknown))}")
    if signature.get("params") is not None:
        out["params"] = signature["params"]
    return out


def from_mlmodel(text: str) -> tuple[str, dict[str, Any] | None]:
    """(flavor, signature) from an MLmodel file's text; ("", None) where it says nothing we can read.

    The flavor is the first one that is not ``python_function`` (``sklearn``, ``xgboost``...), else
    ``python_function``. Needs PyYAML (installed with mlflow); without it nothing is read.
    """
    try:
        import yaml
    except ImportError:
        return "", None
    try:
        doc = yaml.safe_load(text)
    except Exception:
        return "", None
    if not isinstance(doc, dict):
        return "", None
    flavors = [f for f in (doc.get("flavors") or {}) if isinstance(f, str)]
    flavor = next((f for f in flavors if f != "python_function"), flavors[0] if flavors else "")
    signature = None
    raw = doc.get("signature")
    if isinstance(raw, dict) and raw.get("inputs"):
        try:
            signature = {"inputs": json.loads(raw["inputs"]),
                         "outputs": json.loads(raw["outputs"]) if raw.get("outputs") else None}
        except (TypeError, ValueError):
            signature = None
    return flavor, signature
