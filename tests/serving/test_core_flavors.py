"""Flavors: models saved by the real mlflow client load and predict as the originals; our own saves too."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from matih_lite.config import load_config
from matih_lite.errors import InvalidInput
from matih_lite.host import Host
from matih_lite.serving.flavors.base import InputSchema, LoadOptions, detect_flavor, read_mlmodel
from matih_lite.serving.flavors.onnx import OnnxFlavor
from matih_lite.serving.flavors.pyfunc import PyfuncFlavor
from matih_lite.serving.flavors.sklearn import SklearnFlavor
from matih_lite.serving.flavors.xgboost import XGBoostFlavor

N_FEATURES = 20


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(200, N_FEATURES))
    y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def gbm(data):
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = data
    return GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def framed_gbm(data):
    import pandas as pd
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = data
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(N_FEATURES)])
    return GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0).fit(frame, y), frame


@pytest.fixture(scope="module")
def mlflow_sklearn():
    import mlflow.sklearn

    return mlflow.sklearn


def test_mlflow_sklearn_skops_with_trusted_types_predicts_like_the_original(tmp_path, framed_gbm, mlflow_sklearn):
    model, frame = framed_gbm
    mlflow_sklearn.save_model(model, tmp_path / "m", input_example=frame.head(3), pip_requirements=["scikit-learn"],
                              skops_trusted_types=["sklearn.tree._tree.Tree"])
    doc = read_mlmodel(tmp_path / "m")
    assert doc["flavors"]["sklearn"]["serialization_format"] == "skops"
    assert detect_flavor(doc, ["onnx", "sklearn", "xgboost", "pyfunc"]) == "sklearn"
    predictor = SklearnFlavor().load(tmp_path / "m")
    assert predictor.input_schema.kind == "columns"
    assert predictor.input_schema.names == [f"f{i}" for i in range(N_FEATURES)]
    rows = frame.to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names" per request
        got = predictor.predict(rows)
    np.testing.assert_array_equal(got, model.predict(frame))
    np.testing.assert_allclose(predictor.predict_proba(rows), model.predict_proba(frame))


def test_skops_refuses_untrusted_types_naming_them(tmp_path, gbm):
    import skops.io as sio

    SklearnFlavor().save(gbm, tmp_path / "m", serialization_format="skops")
    # A file whose MLmodel does not vouch for the tree type (as a crafted or hand-edited one might not).
    import yaml

    doc = read_mlmodel(tmp_path / "m")
    doc["flavors"]["sklearn"]["skops_trusted_types"] = None
    (tmp_path / "m" / "MLmodel").write_text(yaml.safe_dump(doc))
    with pytest.raises(InvalidInput, match=r"sklearn\.tree\._tree\.Tree") as err:
        SklearnFlavor().load(tmp_path / "m")
    assert err.value.detail["untrusted_types"] == sio.get_untrusted_types(file=tmp_path / "m" / "model.skops")
    # The serving settings may vouch for it instead.
    ok = SklearnFlavor().load(tmp_path / "m", LoadOptions(trusted_types=("sklearn.tree._tree.Tree",)))
    assert ok.predict(np.zeros((1, N_FEATURES))).shape == (1,)


def test_mlflow_sklearn_skops_default_and_cloudpickle(tmp_path, data, mlflow_sklearn):
    from sklearn.linear_model import LogisticRegression

    X, y = data
    model = LogisticRegression().fit(X, y)
    mlflow_sklearn.save_model(model, tmp_path / "skops", pip_requirements=["scikit-learn"])
    mlflow_sklearn.save_model(model, tmp_path / "cp", serialization_format="cloudpickle",
                              pip_requirements=["scikit-learn"])
    for folder in ("skops", "cp"):
        predictor = SklearnFlavor().load(tmp_path / folder)
        assert predictor.input_schema.width == N_FEATURES
        np.testing.assert_array_equal(predictor.predict(X), model.predict(X))
    assert read_mlmodel(tmp_path / "cp")["flavors"]["sklearn"]["serialization_format"] == "cloudpickle"


def test_mlflow_xgboost_classifier_and_booster(tmp_path, data):
    import mlflow.xgboost
    import xgboost as xgb

    X, y = data
    clf = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y)
    mlflow.xgboost.save_model(clf, tmp_path / "clf", input_example=X[:2], pip_requirements=["xgboost"])
    booster = clf.get_booster()
    mlflow.xgboost.save_model(booster, tmp_path / "booster", model_format="json", pip_requirements=["xgboost"])
    by_clf = XGBoostFlavor().load(tmp_path / "clf")
    assert by_clf.input_schema.kind == "tensors" and by_clf.input_schema.width == N_FEATURES
    np.testing.assert_array_equal(by_clf.predict(X), clf.predict(X))
    by_booster = XGBoostFlavor().load(tmp_path / "booster")
    np.testing.assert_allclose(by_booster.predict(X), booster.predict(xgb.DMatrix(X)), rtol=1e-6)


def test_mlflow_onnx_model(tmp_path, gbm, data):
    import mlflow.onnx
    from skl2onnx import to_onnx

    X, _ = data
    onx = to_onnx(gbm, X[:1].astype(np.float32), options={"zipmap": False})
    mlflow.onnx.save_model(onx, tmp_path / "m", pip_requirements=["onnxruntime"])
    predictor = OnnxFlavor().load(tmp_path / "m")
    assert predictor.output_names == ("label", "probabilities")
    assert predictor.input_schema.specs[0].dtype == "float32"
    out = predictor.predict(X)  # float64 rows are cast to the graph's float32
    np.testing.assert_array_equal(out["label"], gbm.predict(X))
    np.testing.assert_allclose(out["probabilities"], gbm.predict_proba(X), atol=1e-6)


def test_python_function_loader_modules_map_to_builtin_flavors(tmp_path, data, mlflow_sklearn):
    from sklearn.linear_model import Ridge

    X, y = data
    model = Ridge().fit(X, y)
    mlflow_sklearn.save_model(model, tmp_path / "m", pip_requirements=["scikit-learn"])
    np.testing.assert_allclose(PyfuncFlavor().load(tmp_path / "m").predict(X), model.predict(X))


def test_own_saves_round_trip_and_mlflow_reads_them(tmp_path, gbm, data, monkeypatch):
    import mlflow.pyfunc
    import xgboost as xgb
    from skl2onnx import to_onnx

    X, y = data
    SklearnFlavor().save(gbm, tmp_path / "sk")
    assert read_mlmodel(tmp_path / "sk")["flavors"]["sklearn"]["skops_trusted_types"]  # the author vouched
    np.testing.assert_array_equal(SklearnFlavor().load(tmp_path / "sk").predict(X), gbm.predict(X))
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(X, label=y), 20)
    XGBoostFlavor().save(booster, tmp_path / "xgb")
    np.testing.assert_allclose(XGBoostFlavor().load(tmp_path / "xgb").predict(X), booster.predict(xgb.DMatrix(X)),
                               rtol=1e-6)
    OnnxFlavor().save(to_onnx(gbm, X[:1].astype(np.float32), options={"zipmap": False}), tmp_path / "onnx")
    assert OnnxFlavor().load(tmp_path / "onnx").predict(X)["label"].shape == (len(X),)
    # mlflow's own loaders read what we wrote
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    np.testing.assert_array_equal(np.asarray(mlflow.pyfunc.load_model(str(tmp_path / "sk")).predict(X)),
                                  gbm.predict(X))
    np.testing.assert_allclose(mlflow.pyfunc.load_model(str(tmp_path / "xgb")).predict(X),
                               booster.predict(xgb.DMatrix(X)), rtol=1e-6)


class Scaler:
    """A pyfunc model: a class with predict, and state."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def predict(self, rows):
        return np.asarray(rows).sum(axis=1) * self.factor


def test_pyfunc_class_saved_by_reference_with_state(tmp_path, data, monkeypatch):
    import mlflow.pyfunc

    X, _ = data
    path = PyfuncFlavor().save(Scaler(3.0), tmp_path / "m", input_example=X[:2])
    conf = read_mlmodel(path)["flavors"]["python_function"]
    assert conf["python_class"] == f"{__name__}:Scaler" and conf["state"] == "state.pkl"
    predictor = PyfuncFlavor().load(path)
    np.testing.assert_allclose(predictor.predict(X), X.sum(axis=1) * 3.0)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    np.testing.assert_allclose(np.asarray(mlflow.pyfunc.load_model(str(path)).predict(X)).reshape(-1),
                               X.sum(axis=1) * 3.0)


def test_pyfunc_refuses_classes_it_cannot_import_again(tmp_path):
    class Local:
        def predict(self, rows):
            return rows

    with pytest.raises(InvalidInput, match="importable module"):
        PyfuncFlavor().save(Local(), tmp_path / "m")


def test_schemas_come_from_the_model_when_the_mlmodel_has_none(tmp_path, gbm, framed_gbm):
    SklearnFlavor().save(gbm, tmp_path / "plain")
    schema = SklearnFlavor().load(tmp_path / "plain").input_schema
    assert schema.kind == "tensors" and schema.width == N_FEATURES
    model, _ = framed_gbm
    SklearnFlavor().save(model, tmp_path / "named")
    assert SklearnFlavor().load(tmp_path / "named").input_schema.names[:2] == ["f0", "f1"]
    sig = {"inputs": [{"type": "double", "name": "a"}, {"type": "long", "name": "b"}]}
    from_sig = InputSchema.from_signature(sig)
    assert from_sig.kind == "columns" and from_sig.row_dtype() == np.float64


def test_string_columns_reach_a_pipeline_as_a_frame(tmp_path):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame({"plan": ["a", "b", "c", "a"] * 10, "age": np.arange(40.0)})
    y = np.array([0, 1] * 20)
    model = make_pipeline(ColumnTransformer([("plan", OneHotEncoder(), ["plan"])], remainder="passthrough"),
                          LogisticRegression()).fit(frame, y)
    SklearnFlavor().save(model, tmp_path / "m", serialization_format="cloudpickle", input_example=frame.head(2))
    predictor = SklearnFlavor().load(tmp_path / "m")
    assert predictor.frame and predictor.input_schema.names == ["plan", "age"]
    got = predictor.predict({"plan": np.array(["a", "c"], dtype=object), "age": np.array([1.0, 30.0])})
    np.testing.assert_array_equal(got, model.predict(pd.DataFrame({"plan": ["a", "c"], "age": [1.0, 30.0]})))


def test_host_registers_the_builtin_flavors(tmp_path):
    host = Host(load_config(cwd=tmp_path))
    try:
        assert {"onnx", "sklearn", "xgboost", "pyfunc", "python_function"} <= set(host.registry("register_flavors"))
    finally:
        host.close()


def test_an_mlflow_python_model_loads_through_mlflow_and_gets_a_frame(tmp_path):
    import mlflow.pyfunc
    import pandas as pd

    class Scaled(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            self.factor = 3.0

        def predict(self, context, model_input, params=None):
            assert isinstance(model_input, pd.DataFrame)
            return model_input["a"] * self.factor + model_input["b"]

    example = pd.DataFrame({"a": [1.0, 2.0], "b": [0.5, 0.25]})
    mlflow.pyfunc.save_model(tmp_path / "m", python_model=Scaled(), input_example=example,
                             pip_requirements=["mlflow"])
    predictor = PyfuncFlavor().load(tmp_path / "m")
    assert predictor.input_schema.names == ["a", "b"]
    got = predictor.predict(np.array([[1.0, 0.5], [4.0, 1.0]]))
    np.testing.assert_allclose(got, [3.5, 13.0])
    got = predictor.predict({"b": np.array([1.0]), "a": np.array([2.0])})  # columns by name, any order
    np.testing.assert_allclose(got, [7.0])
