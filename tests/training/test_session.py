"""What an entrypoint sees outside Ray: the local session, entrypoint loading, models in MLflow's layout."""

from __future__ import annotations

import pickle

import pytest

from matih_lite import training
from matih_lite.training.runner import load_entrypoint, model_files


def test_an_entrypoint_runs_as_a_plain_call_with_a_local_session():
    import jobfns

    session = training.LocalSession({"x": 2.0, "iterations": 3})
    training.use(session)
    try:
        training.call_entrypoint(jobfns.quadratic, training.config())
        assert [h["step"] for h in session.history] == [0, 1, 2]
        assert session.history[-1]["loss"] == pytest.approx(1 + 1 / 3)
        training.report({"loss": 0.5}, checkpoint={"epoch": 4})
        assert training.get_checkpoint() == {"epoch": 4} and training.context().iteration == 4
        assert training.prepare_model("model") == "model"  # one worker: nothing to wrap
    finally:
        training.use(None)


def test_entrypoints_are_functions_or_scripts(tmp_path):
    (tmp_path / "mod_for_entry.py").write_text("def train(config):\n    return config['a'] * 2\n"
                                               "def no_args():\n    return 'ok'\n")
    assert training.call_entrypoint(load_entrypoint("mod_for_entry:train", str(tmp_path)), {"a": 21}) == 42
    assert training.call_entrypoint(load_entrypoint("mod_for_entry:no_args", str(tmp_path)), {}) == "ok"
    with pytest.raises(AttributeError, match="has no function 'missing'"):
        load_entrypoint("mod_for_entry:missing", str(tmp_path))
    (tmp_path / "script.py").write_text("from matih_lite import training\n"
                                        "training.report({'seen': training.config()['a']})\n")
    session = training.LocalSession({"a": 7})
    training.use(session)
    try:
        training.call_entrypoint(load_entrypoint("script.py", str(tmp_path)), session.config)
    finally:
        training.use(None)
    assert session.history == [{"step": 0, "seen": 7}]
    with pytest.raises(FileNotFoundError, match="nope.py does not exist"):
        load_entrypoint("nope.py", str(tmp_path))


def test_models_are_saved_in_mlflow_layout():
    import numpy as np
    import xgboost as xgb
    from sklearn.linear_model import LogisticRegression

    X, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
    flavor, files = model_files(LogisticRegression().fit(X, y), None)
    assert flavor == "sklearn" and set(files) == {"model.pkl", "MLmodel"}
    assert b"sklearn:" in files["MLmodel"] and pickle.loads(files["model.pkl"]).predict(X).shape == (40,)
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, label=y), num_boost_round=2)
    flavor, files = model_files(booster, None)
    assert flavor == "xgboost" and set(files) == {"model.json", "MLmodel"} and b"xgboost:" in files["MLmodel"]
    with pytest.raises(TypeError, match="cannot tell how to save a object"):
        model_files(object(), None)
