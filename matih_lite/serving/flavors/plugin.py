"""Built-in model flavors: ``onnx``, ``sklearn``, ``xgboost``, ``pyfunc`` (also as ``python_function``) and ``llm``.

Registering imports no framework: each flavor imports onnxruntime, scikit-learn or XGBoost
when it first saves or loads a model.
"""

from __future__ import annotations

from matih_lite.hookspecs import hookimpl
from matih_lite.serving.flavors.llm import LLMFlavor
from matih_lite.serving.flavors.onnx import OnnxFlavor
from matih_lite.serving.flavors.pyfunc import PyfuncFlavor
from matih_lite.serving.flavors.sklearn import SklearnFlavor
from matih_lite.serving.flavors.xgboost import XGBoostFlavor


@hookimpl
def register_flavors(register):
    pyfunc = PyfuncFlavor()
    register("onnx", OnnxFlavor())
    register("sklearn", SklearnFlavor())
    register("xgboost", XGBoostFlavor())
    register("pyfunc", pyfunc)
    register("python_function", pyfunc)  # MLflow's name, as the registry records it for pyfunc-only models
    register("llm", LLMFlavor())
