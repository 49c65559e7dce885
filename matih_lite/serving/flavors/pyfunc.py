"""The ``pyfunc`` flavor: any Python object with ``predict``, saved as a code reference plus its state.

Saving writes ``python_class: "package.module:Class"`` into the MLmodel's ``python_function``
flavor and, when the object has attributes, pickles them to ``state.pkl``; loading imports the
class (its code must be installed where the model is served), makes an instance without
calling ``__init__`` and restores the state (``__setstate__`` when the class has one). A class
saved without state is built with ``Class()``.

The same flavor loads MLflow's ``python_function`` models whose ``loader_module`` is
``mlflow.sklearn``, ``mlflow.xgboost`` or ``mlflow.onnx`` through the matching built-in flavor,
and the MLmodel it writes names this module as ``loader_module``, so ``mlflow.pyfunc.load_model``
reads it too (:func:`_load_pyfunc`). A custom ``mlflow.pyfunc.PythonModel`` (``loader_module:
mlflow.pyfunc.model``: the object cloudpickled, or MLflow 3's models from code) is loaded by
``mlflow.pyfunc.load_model`` itself, which needs ``mlflow`` where the model is served, and gets
its inputs as a DataFrame when its signature names columns (what MLflow hands it).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from matih_lite.errors import InvalidInput, NotFound
from matih_lite.serving.flavors.base import (
    LOADER_FLAVORS,
    PYFUNC,
    InputSchema,
    LoadOptions,
    TensorSpec,
    described_outputs,
    flavor_conf,
    read_mlmodel,
    signature_of_example,
    signature_schema,
    write_mlmodel,
)

LOADER_MODULE = "matih_lite.serving.flavors.pyfunc"
MLFLOW_PYTHON_MODEL = "mlflow.pyfunc.model"
"""The loader module of models logged with ``mlflow.pyfunc.log_model(python_model=...)``."""
STATE_FILE = "state.pkl"


class PyfuncPredictor:
    """Calls the object's ``predict``; a list result becomes an array, a dict stays a dict of arrays."""

    def __init__(self, model: Any, schema: InputSchema, output_names: tuple[str, ...] = ("predictions",)) -> None:
        self.raw = model
        self.input_schema = schema
        self.output_names = output_names

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        """Each output's dtype and shape, for the Open Inference Protocol's model metadata."""
        return described_outputs(self.raw, self.output_names)

    def predict(self, inputs: Any) -> Any:
        out = self.raw.predict(inputs)
        if isinstance(out, Mapping):
            return {str(k): np.asarray(v) for k, v in out.items()}
        return np.asarray(out)


def class_reference(model: Any) -> str:
    """``module:QualName`` of the object's class. Raises InvalidInput for classes that cannot be imported."""
    kind = type(model)
    module, qualname = kind.__module__, kind.__qualname__
    if module in ("__main__", "builtins") or "<locals>" in qualname:
        raise InvalidInput(f"cannot save {qualname} as a pyfunc model: its class is defined in {module!r}"
                           f"{' inside a function' if '<locals>' in qualname else ''}; define it in an importable "
                           "module so the serving side can import it")
    return f"{module}:{qualname}"


def import_class(reference: str) -> type:
    from matih_lite.contracts.flavors import resolve_reference

    if not reference.partition(":")[0] or not reference.partition(":")[2]:
        raise InvalidInput(f"python_class {reference!r} must look like 'package.module:Class'")
    try:
        obj: Any = resolve_reference(reference)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(f"cannot import the model class {reference!r}: {exc}; install the package that "
                           "defines it where the model is served") from exc
    if not isinstance(obj, type):
        raise InvalidInput(f"{reference!r} is not a class")
    return obj


class PyfuncFlavor:
    """``pyfunc``: a Python class with ``predict(inputs)``, by code reference and pickled state."""

    name = "pyfunc"
    needs_trusted_source = True

    def accepts(self, model: Any) -> bool:
        return callable(getattr(model, "predict", None))

    def save(self, model: Any, folder: str | Path, *, signature: Mapping[str, Any] | None = None,
             input_example: Any = None) -> Path:
        reference = class_reference(model)
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        state = model.__getstate__() if hasattr(type(model), "__getstate__") and \
            type(model).__getstate__ is not object.__getstate__ else getattr(model, "__dict__", None)
        state_file = None
        if state:
            (path / STATE_FILE).write_bytes(pickle.dumps(state))
            state_file = STATE_FILE
        if signature is None and input_example is not None:
            signature = signature_of_example(input_example)
        return write_mlmodel(path, {PYFUNC: {"loader_module": LOADER_MODULE, "python_class": reference,
                                             "state": state_file, "code": None}}, signature=signature)

    def load(self, folder: str | Path, options: LoadOptions | None = None) -> Any:
        folder = Path(folder)
        doc = read_mlmodel(folder)
        conf = flavor_conf(doc, PYFUNC)
        loader = str(conf.get("loader_module") or "")
        if loader in LOADER_FLAVORS:
            return builtin_flavor(LOADER_FLAVORS[loader]).load(folder, options)
        if loader == MLFLOW_PYTHON_MODEL:
            return _load_mlflow_python_model(folder, doc)
        if loader != LOADER_MODULE or not conf.get("python_class"):
            raise InvalidInput(f"cannot load this python_function model: loader_module {loader or 'none'!r} is not "
                               f"one matih-lite serves (it serves {LOADER_MODULE}, {MLFLOW_PYTHON_MODEL} and "
                               f"{', '.join(LOADER_FLAVORS)}); convert it with 'matih-lite models convert' or save "
                               "it with the pyfunc flavor")
        cls = import_class(str(conf["python_class"]))
        state_file = conf.get("state")
        if state_file:
            path = folder / str(state_file)
            if not path.is_file() or folder.resolve() not in path.resolve().parents:
                raise NotFound(f"the pyfunc state file {state_file!r} is not in {folder}")
            state = pickle.loads(path.read_bytes())
            model = cls.__new__(cls)
            if hasattr(model, "__setstate__") and type(model).__setstate__ is not getattr(object, "__setstate__", None):
                model.__setstate__(state)
            else:
                model.__dict__.update(state)
        else:
            model = cls()
        schema = signature_schema(doc) or getattr(model, "input_schema", None)
        if not isinstance(schema, InputSchema):
            schema = InputSchema()
        names = getattr(model, "output_names", None)
        return PyfuncPredictor(model, schema, tuple(names) if names else ("predictions",))


class MlflowPythonModelPredictor:
    """An ``mlflow.pyfunc.PythonModel`` as MLflow loads it; inputs become a DataFrame when it names columns."""

    def __init__(self, model: Any, schema: InputSchema) -> None:
        self.raw = model
        self.input_schema = schema
        self.output_names: tuple[str, ...] = ("predictions",)

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        """Each output's dtype and shape, for the Open Inference Protocol's model metadata."""
        return described_outputs(self.raw, self.output_names)

    def predict(self, inputs: Any) -> Any:
        from matih_lite.serving.flavors.base import columns_of

        if self.input_schema.kind == "columns" and not hasattr(inputs, "columns"):
            import pandas as pd

            inputs = pd.DataFrame(columns_of(inputs, self.input_schema))
        out = self.raw.predict(inputs)
        if hasattr(out, "columns") and hasattr(out, "to_numpy"):  # a DataFrame: one output per column
            if len(out.columns) == 1:
                return out.iloc[:, 0].to_numpy()
            return {str(c): out[c].to_numpy() for c in out.columns}
        if hasattr(out, "to_numpy"):  # a Series
            return out.to_numpy()
        if isinstance(out, Mapping):
            return {str(k): np.asarray(v) for k, v in out.items()}
        return np.asarray(out)


def _load_mlflow_python_model(folder: Path, doc: Mapping[str, Any]) -> MlflowPythonModelPredictor:
    try:
        import mlflow.pyfunc
    except ImportError as exc:
        raise InvalidInput("this model is an mlflow.pyfunc.PythonModel: serving it needs mlflow where the model is "
                           "served (pip install mlflow)") from exc
    try:
        model = mlflow.pyfunc.load_model(str(folder))
    except Exception as exc:  # mlflow's own errors: code that does not import, a missing artifact...
        raise InvalidInput(f"mlflow cannot load this PythonModel: {type(exc).__name__}: {exc}"[:1000]) from exc
    schema = signature_schema(doc)
    return MlflowPythonModelPredictor(model, schema if isinstance(schema, InputSchema) else InputSchema())


def builtin_flavor(name: str) -> Any:
    """One of the built-in flavors by name (for MLflow ``python_function`` loader modules)."""
    if name == "sklearn":
        from matih_lite.serving.flavors.sklearn import SklearnFlavor

        return SklearnFlavor()
    if name == "xgboost":
        from matih_lite.serving.flavors.xgboost import XGBoostFlavor

        return XGBoostFlavor()
    if name == "onnx":
        from matih_lite.serving.flavors.onnx import OnnxFlavor

        return OnnxFlavor()
    if name in ("pyfunc", PYFUNC):
        return PyfuncFlavor()
    raise InvalidInput(f"no built-in flavor {name!r}")


def _load_pyfunc(path: str) -> Any:
    """MLflow's pyfunc entry point: ``mlflow.pyfunc.load_model`` calls this with the model folder."""
    return PyfuncFlavor().load(path)
