"""On-demand feature views: a user function over other views' features and request data, run the same
way offline (on each batch of a historical join) and online (on the looked-up values).

``mode = "pandas"`` (Feast's default) calls ``function(df) -> df``; ``mode = "python"`` calls
``function(columns) -> columns`` with dicts of lists. The input holds every feature of the views in
``sources`` (bare names) and the ``request_schema`` columns; the output must hold every column of
``schema``, one value per input row, and is cast to the declared dtypes.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matih_lite.contracts.features import FeatureDefinitions, OnDemandView
from matih_lite.errors import InvalidInput

_IMPORT_LOCK = threading.Lock()


def arrow_type(dtype: str) -> Any:
    """The pyarrow type of a feature dtype."""
    import pyarrow as pa

    return {"float64": pa.float64(), "float32": pa.float32(), "int64": pa.int64(), "int32": pa.int32(),
            "string": pa.string(), "bool": pa.bool_(), "timestamp": pa.timestamp("us", "UTC")}[dtype]


_LOADED: dict[tuple[str, int], Any] = {}


def load_function(defs: FeatureDefinitions, odfv: OnDemandView) -> Callable[[Any], Any]:
    """The view's function: ``module`` is a file of the repo folder (``a.b`` is ``a/b.py``), loaded again when the
    file changes, else an importable module. Raises InvalidInput saying why it cannot be had."""
    module_name, _, attr = odfv.function.partition(":")
    module = None
    if defs.root:
        base = Path(defs.root).joinpath(*module_name.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                module = _load_file(odfv, module_name, path)
                break
    if module is None:
        try:
            with _IMPORT_LOCK:
                module = importlib.import_module(module_name)
        except Exception as exc:
            raise InvalidInput(f"on-demand view '{odfv.name}': cannot import {module_name!r} for {odfv.function} "
                               f"(no {module_name.replace('.', '/')}.py in the repo folder {defs.root}, nor an "
                               f"installed module): {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InvalidInput(f"on-demand view '{odfv.name}': module {module_name!r} has no function {attr!r}")
    return fn


def _load_file(odfv: OnDemandView, module_name: str, path: Path) -> Any:
    import importlib.util

    key = (str(path), path.stat().st_mtime_ns)
    with _IMPORT_LOCK:
        found = _LOADED.get(key)
        if found is not None:
            return found
        # A name of its own per file, so two repo folders with a transforms.py never share one.
        unique = f"matih_features_{abs(hash(str(path))):x}_{module_name.replace('.', '_')}"
        spec = importlib.util.spec_from_file_location(unique, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:
            raise InvalidInput(f"on-demand view '{odfv.name}': importing {path} failed: "
                               f"{type(exc).__name__}: {exc}") from exc
        for old in [k for k in _LOADED if k[0] == key[0]]:
            del _LOADED[old]
        _LOADED[key] = module
        return module


def inputs_of(defs: FeatureDefinitions, odfv: OnDemandView) -> list[tuple[str, str]]:
    """(view, feature) of every input feature, in the order the function sees them."""
    return [(v, f.name) for v in odfv.sources for f in defs.feature_views[v].features]


def run(defs: FeatureDefinitions, odfv: OnDemandView, columns: dict[str, Any], rows: int) -> dict[str, Any]:
    """The function's outputs (``pyarrow`` arrays of the declared types) for input ``columns`` (name -> pyarrow
    array). Raises InvalidInput naming the view when the function raises or returns the wrong shape."""
    import pyarrow as pa

    fn = load_function(defs, odfv)
    table = pa.table(columns) if columns else pa.table({"__rows": pa.nulls(rows)}).drop(["__rows"])
    try:
        if odfv.mode == "python":
            result = fn(table.to_pydict())
        else:
            result = fn(table.to_pandas())
    except Exception as exc:
        raise InvalidInput(f"on-demand view '{odfv.name}': {odfv.function} raised {type(exc).__name__}: {exc}",
                           detail={"on_demand_view": odfv.name}) from exc
    out: dict[str, Any] = {}
    names = list(result.keys()) if isinstance(result, dict) else list(getattr(result, "columns", []))
    if not names and not isinstance(result, dict):
        raise InvalidInput(f"on-demand view '{odfv.name}': {odfv.function} returned {type(result).__name__}; "
                           f"expected {'a dict of lists' if odfv.mode == 'python' else 'a pandas DataFrame'}")
    for f in odfv.features:
        if f.name not in names:
            raise InvalidInput(f"on-demand view '{odfv.name}': {odfv.function} returned no column '{f.name}' "
                               f"(it returned: {', '.join(map(str, names)) or 'none'})")
        values = result[f.name]
        try:
            array = pa.array(values, type=arrow_type(f.dtype), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise InvalidInput(f"on-demand view '{odfv.name}': column '{f.name}' is not {f.dtype}: {exc}") from exc
        if len(array) != rows:
            raise InvalidInput(f"on-demand view '{odfv.name}': {odfv.function} returned {len(array)} values of "
                               f"'{f.name}' for {rows} rows")
        out[f.name] = array
    return out
