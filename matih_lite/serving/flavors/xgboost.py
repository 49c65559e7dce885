"""The ``xgboost`` flavor: XGBoost boosters and their scikit-learn wrappers, as MLflow saves them.

Files are XGBoost's own formats (``model.ubj``, MLflow 3's default, or ``model.json``), which
load without running code. The MLmodel's ``model_class`` decides what ``predict`` means, as in
MLflow: a ``Booster`` gives raw scores (probabilities for a binary logistic objective), an
``XGBClassifier`` gives labels. Only classes from the ``xgboost`` package are instantiated.
"""

from __future__ import annotations

import importlib
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
    described_outputs,
    flavor_conf,
    read_mlmodel,
    schema_from_names,
    schema_from_width,
    signature_of_example,
    signature_schema,
    write_mlmodel,
)

BOOSTER = "xgboost.core.Booster"


class XGBoostPredictor:
    """A booster (``inplace_predict``, falling back to a DMatrix) or an XGBoost scikit-learn model."""

    def __init__(self, model: Any, schema: InputSchema, *, inplace: bool = True) -> None:
        self.raw = model
        self.input_schema = schema
        self.output_names: tuple[str, ...] = ("predictions",)
        self._booster = type(model).__name__ == "Booster"
        self._inplace = inplace
        self._width = schema.width

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        """Each output's dtype and shape, for the Open Inference Protocol's model metadata."""
        return described_outputs(self.raw, self.output_names)

    def predict(self, inputs: Any) -> np.ndarray:
        rows = as_rows(inputs, self.input_schema)
        if rows.ndim != 2 or (self._width is not None and rows.shape[1] != self._width):
            raise InvalidInput(f"expected rows of {self._width} features, got an array of shape {rows.shape}")
        if not self._booster:
            return np.asarray(self.raw.predict(rows))
        if self._inplace:
            try:
                return np.asarray(self.raw.inplace_predict(rows, validate_features=False))
            except (TypeError, ValueError):
                self._inplace = False  # a booster inplace_predict cannot run (gblinear): use a DMatrix
        import xgboost

        return np.asarray(self.raw.predict(xgboost.DMatrix(rows, feature_names=self.raw.feature_names),
                                           validate_features=False))

    def __getattr__(self, name: str) -> Any:
        raw = self.__dict__.get("raw")
        if raw is None:
            raise AttributeError(name)
        return getattr(raw, name)


def _model_class(qualified: str) -> type:
    module, _, cls = qualified.rpartition(".")
    if not (module == "xgboost" or module.startswith("xgboost.")):
        raise InvalidInput(f"refusing model_class {qualified!r}: the xgboost flavor instantiates only classes of "
                           "the xgboost package")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(f"model_class {qualified!r} is not in the installed xgboost") from exc


class XGBoostFlavor:
    """``xgboost``: XGBoost models in XGBoost's JSON or UBJSON format (``pip install xgboost``)."""

    name = "xgboost"
    needs_trusted_source = False

    def accepts(self, model: Any) -> bool:
        return type(model).__module__.startswith("xgboost")

    def save(self, model: Any, folder: str | Path, *, signature: Mapping[str, Any] | None = None,
             input_example: Any = None, model_format: str = "ubj") -> Path:
        import xgboost

        if model_format not in ("ubj", "json"):
            raise InvalidInput(f"model_format must be ubj or json, not {model_format!r}")
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        data_file = f"model.{model_format}"
        model.save_model(str(path / data_file))
        kind = type(model)
        if signature is None and input_example is not None:
            signature = signature_of_example(input_example)
        return write_mlmodel(path, {
            PYFUNC: {"data": data_file, "loader_module": "mlflow.xgboost"},
            "xgboost": {"code": None, "data": data_file, "model_class": f"{kind.__module__}.{kind.__name__}",
                        "model_format": model_format, "xgb_version": xgboost.__version__},
        }, signature=signature)

    def load(self, folder: str | Path, options: LoadOptions | None = None) -> XGBoostPredictor:
        options = options or LoadOptions()
        try:
            import xgboost  # noqa: F401
        except ImportError as exc:
            raise InvalidInput("the xgboost flavor needs xgboost: pip install xgboost-cpu") from exc
        folder = Path(folder)
        doc = read_mlmodel(folder)
        conf = flavor_conf(doc, "xgboost") or flavor_conf(doc, PYFUNC)
        data_file = conf.get("data") or "model.ubj"
        path = folder / str(data_file)
        if not path.is_file() or folder.resolve() not in path.resolve().parents:
            raise NotFound(f"the xgboost model file {data_file!r} is not in {folder}")
        model = _model_class(str(conf.get("model_class") or BOOSTER))()
        try:
            model.load_model(str(path))
        except Exception as exc:  # XGBoostError for a damaged file
            raise InvalidInput(f"xgboost cannot load {path.name}: {exc}") from exc
        booster = model if type(model).__name__ == "Booster" else model.get_booster()
        if options.intra_op_threads > 0:
            booster.set_param({"nthread": options.intra_op_threads})
            if booster is not model:
                model.set_params(n_jobs=options.intra_op_threads)
        names = booster.feature_names
        schema = signature_schema(doc) or (schema_from_names(names) if names else
                                           schema_from_width(booster.num_features()))
        return XGBoostPredictor(model, schema)
