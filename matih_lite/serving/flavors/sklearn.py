"""The ``sklearn`` flavor: scikit-learn estimators and pipelines, as MLflow saves them.

Three serializations, named by the MLmodel's ``serialization_format``: ``skops`` (MLflow 3's
default), ``cloudpickle`` and ``pickle``. All three can run code while loading, so the serving
backend loads them only from its cache of the registry's own artifacts
(:mod:`matih_lite.serving.materialize`). skops additionally refuses any type that is neither in
skops' safe defaults, nor in the MLmodel's ``skops_trusted_types`` (what the author vouched
for when logging), nor in the serving settings' ``trusted_types``; the error names each type.

Predictions take a 2-D array (no pandas per request). A model whose pipeline selects columns
by name (a ``ColumnTransformer`` over named columns) or takes string columns gets a pandas
DataFrame built from the named columns instead.
"""

from __future__ import annotations

import pickle
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
    as_rows,
    columns_of,
    described_outputs,
    flavor_conf,
    read_mlmodel,
    schema_from_names,
    schema_from_width,
    signature_of_example,
    signature_schema,
    write_mlmodel,
)

FORMATS = ("skops", "cloudpickle", "pickle")


class SklearnPredictor:
    """A fitted estimator. Unknown attributes (``classes_``, ``predict_proba``...) are the estimator's."""

    def __init__(self, model: Any, schema: InputSchema, *, frame: bool = False) -> None:
        self.raw = model
        self.input_schema = schema
        self.output_names: tuple[str, ...] = ("predictions",)
        self.frame = frame
        self._width = schema.width

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        """Each output's dtype and shape, for the Open Inference Protocol's model metadata."""
        return described_outputs(self.raw, self.output_names)

    def predict(self, inputs: Any) -> np.ndarray:
        return np.asarray(self.raw.predict(self._prepare(inputs)))

    def predict_proba(self, inputs: Any) -> np.ndarray:
        return np.asarray(self.raw.predict_proba(self._prepare(inputs)))

    def _prepare(self, inputs: Any) -> Any:
        if hasattr(inputs, "columns") and hasattr(inputs, "to_numpy"):
            return inputs  # a DataFrame is what the estimator was fitted on: pass it through
        if self.frame:
            import pandas as pd

            return pd.DataFrame(columns_of(inputs, self.input_schema))
        rows = as_rows(inputs, self.input_schema)
        if rows.ndim != 2 or (self._width is not None and rows.shape[1] != self._width):
            raise InvalidInput(f"expected rows of {self._width} features, got an array of shape {rows.shape}")
        return rows

    def __getattr__(self, name: str) -> Any:
        raw = self.__dict__.get("raw")
        if raw is None:
            raise AttributeError(name)
        return getattr(raw, name)


def _names_columns(model: Any) -> bool:
    """Whether the estimator (or one nested in it) selects input columns by name."""
    try:
        from sklearn.compose import ColumnTransformer
    except ImportError:
        return False
    found = [model]
    try:
        found.extend(v for v in model.get_params(deep=True).values() if hasattr(v, "get_params"))
    except Exception:
        pass
    for est in found:
        if isinstance(est, ColumnTransformer):
            for _name, _trans, cols in getattr(est, "transformers", []):
                items = [cols] if isinstance(cols, str) else (cols if isinstance(cols, (list, tuple)) else [])
                if any(isinstance(c, str) for c in items) or callable(cols):
                    return True
    return False


def model_schema(model: Any) -> InputSchema:
    """What scikit-learn itself says the estimator takes: ``feature_names_in_``, else ``n_features_in_``."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        return schema_from_names(list(names))
    try:
        width = getattr(model, "n_features_in_", None)
    except Exception:
        width = None
    return schema_from_width(width)


class SklearnFlavor:
    """``sklearn``: scikit-learn models saved with skops, cloudpickle or pickle (``pip install scikit-learn``)."""

    name = "sklearn"
    needs_trusted_source = True

    def __init__(self, serialization_format: str | None = None) -> None:
        self.serialization_format = serialization_format

    def accepts(self, model: Any) -> bool:
        module = type(model).__module__
        return module.startswith("sklearn") or (hasattr(model, "fit") and hasattr(model, "get_params")
                                               and hasattr(model, "predict") and not module.startswith("xgboost"))

    def save(self, model: Any, folder: str | Path, *, signature: Mapping[str, Any] | None = None,
             input_example: Any = None, serialization_format: str | None = None) -> Path:
        """Save with skops when it can (MLflow 3's default), else cloudpickle, else pickle.

        The types skops does not trust by default are recorded as ``skops_trusted_types``: the
        author saving the model vouches for them, as ``mlflow.sklearn.save_model`` asks them to.
        """
        import sklearn

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        fmt = serialization_format or self.serialization_format
        trusted: list[str] | None = None
        if fmt not in (None, *FORMATS):
            raise InvalidInput(f"unknown serialization_format {fmt!r}; use one of {', '.join(FORMATS)}")
        if fmt in (None, "skops"):
            try:
                import skops.io as sio

                sio.dump(model, path / "model.skops")
                trusted = sio.get_untrusted_types(file=path / "model.skops") or None
                fmt = "skops"
            except ImportError:
                if fmt == "skops":
                    raise InvalidInput("serialization_format 'skops' needs skops: pip install skops") from None
                fmt = None
            except Exception:  # custom classes and functions skops cannot write
                if fmt == "skops":
                    raise
                (path / "model.skops").unlink(missing_ok=True)
                fmt = None
        if fmt is None:
            try:
                import cloudpickle

                fmt = "cloudpickle"
            except ImportError:
                fmt = "pickle"
        data_file = "model.skops" if fmt == "skops" else "model.pkl"
        if fmt == "cloudpickle":
            import cloudpickle

            (path / data_file).write_bytes(cloudpickle.dumps(model))
        elif fmt == "pickle":
            (path / data_file).write_bytes(pickle.dumps(model))
        if signature is None and input_example is not None:
            signature = signature_of_example(input_example)
        return write_mlmodel(path, {
            PYFUNC: {"loader_module": "mlflow.sklearn", "model_path": data_file, "predict_fn": "predict"},
            "sklearn": {"code": None, "pickled_model": data_file, "serialization_format": fmt,
                        "sklearn_version": sklearn.__version__, "skops_trusted_types": trusted},
        }, signature=signature)

    def load(self, folder: str | Path, options: LoadOptions | None = None) -> SklearnPredictor:
        options = options or LoadOptions()
        folder = Path(folder)
        doc = read_mlmodel(folder)
        conf = flavor_conf(doc, "sklearn")
        pyfunc = flavor_conf(doc, PYFUNC)
        data_file = conf.get("pickled_model") or pyfunc.get("model_path") or "model.pkl"
        fmt = conf.get("serialization_format") or ("skops" if str(data_file).endswith(".skops") else "pickle")
        path = folder / str(data_file)
        if not path.is_file() or folder.resolve() not in path.resolve().parents:
            raise NotFound(f"the sklearn model file {data_file!r} is not in {folder}")
        if fmt == "skops":
            model = _load_skops(path, [*(conf.get("skops_trusted_types") or []), *options.trusted_types])
        elif fmt == "cloudpickle":
            import cloudpickle

            with path.open("rb") as f:
                model = cloudpickle.load(f)
        elif fmt == "pickle":
            with path.open("rb") as f:
                model = pickle.load(f)
        else:
            raise InvalidInput(f"unknown sklearn serialization_format {fmt!r} in {folder}/MLmodel; "
                               f"expected one of {', '.join(FORMATS)}")
        schema = signature_schema(doc) or model_schema(model)
        frame = not schema.numeric or _names_columns(model)
        if not frame and getattr(model, "feature_names_in_", None) is not None:
            # Rows arrive as arrays already in feature order (the schema named the columns), so
            # scikit-learn's per-call "X does not have valid feature names" check only costs time.
            _forget_feature_names(model)
        return SklearnPredictor(model, schema, frame=frame)


def _forget_feature_names(model: Any, depth: int = 0, seen: set[int] | None = None) -> None:
    """Drop ``feature_names_in_`` from a fitted estimator and the fitted estimators inside it."""
    seen = seen if seen is not None else set()
    if depth > 6 or id(model) in seen:
        return
    seen.add(id(model))
    state = getattr(model, "__dict__", None)
    if not isinstance(state, dict):
        return
    state.pop("feature_names_in_", None)
    for value in list(state.values()):
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, tuple):  # (name, estimator) pairs of pipelines and ensembles
                item = item[1] if len(item) > 1 else None
            if item is not None and hasattr(item, "get_params") and hasattr(item, "__dict__"):
                _forget_feature_names(item, depth + 1, seen)


def _load_skops(path: Path, trusted: list[str]) -> Any:
    try:
        import skops.io as sio
    except ImportError as exc:
        raise InvalidInput("this model was saved with skops (MLflow 3's default for scikit-learn): "
                           "pip install skops") from exc
    untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in trusted]
    if untrusted:
        raise InvalidInput(
            f"refusing to load {path.name}: it holds types skops does not trust and nobody vouched for: "
            f"{', '.join(untrusted)}. If you trust this model's author, log it with "
            f"skops_trusted_types={untrusted!r} (mlflow.sklearn.log_model) or add them to the serving "
            "backend's trusted_types in matih.toml.", detail={"untrusted_types": untrusted})
    return sio.load(path, trusted=trusted or None)
