"""Model flavors: how each kind of model is saved into an MLflow-style folder and loaded to predict.

The built-ins (``onnx``, ``sklearn``, ``xgboost``, ``pyfunc``) are contributed through the
``register_flavors`` hook by :mod:`matih_lite.serving.flavors.plugin`; plugins add others the same way.
Each module imports its framework only when a model is saved or loaded.
"""

from matih_lite.serving.flavors.base import (
    Flavor,
    InputSchema,
    LoadOptions,
    Predictor,
    TensorSpec,
    detect_flavor,
    named_outputs,
    read_mlmodel,
    write_mlmodel,
)

__all__ = ["Flavor", "InputSchema", "LoadOptions", "Predictor", "TensorSpec", "detect_flavor", "named_outputs",
           "read_mlmodel", "write_mlmodel"]
