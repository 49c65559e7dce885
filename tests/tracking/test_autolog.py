"""ml.autolog(): scikit-learn, XGBoost and PyTorch-loop training logs itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

import matih_lite as ml
from matih_lite.host import Host
from matih_lite.tracking import Tracking
from matih_lite.tracking.autolog import autolog


@pytest.fixture
def tracking():
    return Tracking(Host.open())


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, y


@pytest.fixture(autouse=True)
def reset_autolog():
    yield
    autolog(disable=True)
    while ml.active_run() is not None:
        ml.end_run()


def runs_of(tracking):
    exps = tracking.search_experiments("default").items
    return tracking.search_runs("default", [e.experiment_id for e in exps]).items


def test_sklearn_fit_without_a_run_starts_one_and_logs_everything(tracking, data):
    from sklearn.ensemble import RandomForestClassifier

    assert "sklearn" in autolog(["sklearn"])
    RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(*data)
    (run,) = runs_of(tracking)
    assert run.status == "FINISHED"
    assert run.params["n_estimators"] == "5" and run.params["max_depth"] == "3"
    assert run.tags["estimator_name"] == "RandomForestClassifier"
    assert 0.8 < run.metrics["training_accuracy_score"].value <= 1.0
    assert {"training_f1_score", "training_roc_auc", "training_log_loss", "training_score"} <= set(run.metrics)
    files = {i.path for i in tracking.list_artifacts("default", run.run_id, recursive=True)}
    assert {"model/model.pkl", "model/MLmodel", "feature_importances.json"} <= files
    importances = json.loads(tracking.open_artifact("default", run.run_id, "feature_importances.json").read())
    assert set(importances) == {"f0", "f1", "f2", "f3"} and importances["f0"] > importances["f3"]


def test_sklearn_logs_into_the_active_run_and_meta_estimators_once(tracking, data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    autolog(["sklearn"])
    with ml.start_run(experiment="grid") as run:
        GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(*data)
    got = tracking.get_run("default", run.run_id)
    assert got.tags["estimator_name"] == "GridSearchCV"
    assert "cv" in got.params and "training_score" in got.metrics
    assert len(runs_of(tracking)) == 1


def test_regressor_metrics(tracking, data):
    from sklearn.linear_model import Ridge

    autolog(["sklearn"])
    X, y = data
    Ridge().fit(X, y.astype(float))
    (run,) = runs_of(tracking)
    assert {"training_mean_squared_error", "training_root_mean_squared_error", "training_r2_score"} <= set(run.metrics)


def test_failing_fit_marks_the_run_failed(tracking):
    from sklearn.linear_model import LogisticRegression

    autolog(["sklearn"])
    with pytest.raises(ValueError):
        LogisticRegression().fit(np.zeros((4, 2)), np.zeros(4))  # one class only
    (run,) = runs_of(tracking)
    assert run.status == "FAILED"


def test_xgboost_logs_each_iteration(tracking, data):
    import xgboost as xgb

    autolog(["xgboost"])
    X, y = data
    dtrain = xgb.DMatrix(X[:150], label=y[:150])
    dvalid = xgb.DMatrix(X[150:], label=y[150:])
    with ml.start_run(experiment="xgb") as run:
        xgb.train({"objective": "binary:logistic", "eval_metric": "logloss", "max_depth": 2}, dtrain,
                  num_boost_round=12, evals=[(dtrain, "train"), (dvalid, "valid")])
    history = tracking.metric_history("default", run.run_id, "valid-logloss").items
    assert [m.step for m in history] == list(range(12))
    assert history[-1].value < history[0].value
    got = tracking.get_run("default", run.run_id)
    assert got.params["max_depth"] == "2" and got.params["num_boost_round"] == "12"
    files = {i.path for i in tracking.list_artifacts("default", run.run_id, recursive=True)}
    assert "model/model.json" in files and "feature_importance_gain.json" in files


def test_xgboost_sklearn_api_is_logged(tracking, data):
    import xgboost as xgb

    autolog(["xgboost"])
    X, y = data
    xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(X, y, eval_set=[(X, y)], verbose=False)
    (run,) = runs_of(tracking)
    assert len(tracking.metric_history("default", run.run_id, "validation_0-logloss").items) == 5


def test_disable_restores_the_originals(data):
    from sklearn.linear_model import LogisticRegression

    original = LogisticRegression.fit
    autolog(["sklearn"])
    assert LogisticRegression.fit is not original
    autolog(disable=True)
    assert LogisticRegression.fit is original


def test_unknown_framework_is_a_clear_error():
    from matih_lite.errors import InvalidInput

    with pytest.raises(InvalidInput, match="no auto-logger for keras"):
        autolog(["keras"])


def test_pytorch_step_logger_accepts_tensors_and_floats(tracking):
    from matih_lite.tracking.pytorch import StepLogger

    class FakeTensor:  # anything with .item(), as torch tensors have
        def __init__(self, v):
            self.v = v

        def item(self):
            return self.v

    logger = StepLogger(every=2)
    with ml.start_run(experiment="torch") as run:
        for step in range(10):
            logger.log(step, loss=FakeTensor(1.0 / (step + 1)), accuracy=step / 10)
    history = tracking.metric_history("default", run.run_id, "loss").items
    assert [m.step for m in history] == [0, 2, 4, 6, 8]
    assert len(tracking.metric_history("default", run.run_id, "accuracy").items) == 5
