"""models convert: sklearn and XGBoost versions become verified ONNX versions with the same lineage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from matih_lite.config import load_config
from matih_lite.errors import InvalidInput
from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.serving import load_version
from matih_lite.serving.convert import CONVERTED_FROM_TAG, compare, convert_version
from matih_lite.serving.flavors.pyfunc import PyfuncFlavor
from matih_lite.serving.flavors.sklearn import SklearnFlavor
from matih_lite.serving.flavors.xgboost import XGBoostFlavor
from matih_lite.tracking.service import Tracking


@pytest.fixture
def host(hermetic):
    h = Host(load_config(cwd=hermetic))
    yield h
    h.close()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 20))
    return X, (X[:, 0] + X[:, 5] > 0).astype(int)


def register(host, folder, name):
    tracking = Tracking(host)
    exp = tracking.get_or_create_experiment(LOCAL_ADMIN.tenant, name)
    run = tracking.create_run(LOCAL_ADMIN.tenant, exp.experiment_id, tags={"matih.dataset.train": "s3://b/t.parquet"})
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        tracking.log_artifact(LOCAL_ADMIN.tenant, run.run_id, f"model/{path.relative_to(folder).as_posix()}",
                              path.read_bytes())
    return Registry(host).register_version(LOCAL_ADMIN, name, f"runs:/{run.run_id}/model")


def served_predictions(host, mv, X):
    served = load_version(host, LOCAL_ADMIN.tenant, mv)
    return host.backend("serving").predict(served.key, X)


def test_sklearn_version_converts_to_an_equal_onnx_version(host, tmp_path, data):
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = data
    model = GradientBoostingClassifier(n_estimators=30, max_depth=2, random_state=0).fit(X, y)
    SklearnFlavor().save(model, tmp_path / "m", input_example=X[:5])
    v1 = register(host, tmp_path / "m", "churn")
    result = convert_version(host, LOCAL_ADMIN, "churn", v1.version)
    assert result.version == v1.version + 1 and "label" in result.compared and "probabilities" in result.compared
    v2 = Registry(host).get_version(LOCAL_ADMIN, "churn", result.version)
    assert v2.flavor == "onnx" and v2.run_id == v1.run_id and v2.tags[CONVERTED_FROM_TAG] == str(v1.version)
    assert v2.training_data == v1.training_data and v2.signature == v1.signature
    onnx_out = served_predictions(host, v2, X)
    np.testing.assert_array_equal(onnx_out["label"], served_predictions(host, v1, X))
    np.testing.assert_allclose(onnx_out["probabilities"], model.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_xgboost_version_converts_through_the_cli(host, tmp_path, data, hermetic):
    import xgboost as xgb

    from matih_lite.cli import app, load_commands

    X, y = data
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(X, label=y), 20)
    XGBoostFlavor().save(booster, tmp_path / "m")
    v1 = register(host, tmp_path / "m", "fraud")
    load_commands()
    out = CliRunner().invoke(app, ["models", "convert", "fraud", str(v1.version), "--to", "onnx", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["version"] == v1.version + 1 and result["converter"].startswith("onnxmltools")
    v2 = Registry(host).get_version(LOCAL_ADMIN, "fraud", result["version"])
    onnx_out = served_predictions(host, v2, X)
    np.testing.assert_allclose(onnx_out["probabilities"][:, 1], booster.predict(xgb.DMatrix(X)), rtol=1e-5, atol=1e-6)


def test_unconvertible_versions_are_refused_with_the_reason(host, tmp_path):
    PyfuncFlavor().save(Constant(), tmp_path / "p")
    mv = register(host, tmp_path / "p", "rules")
    with pytest.raises(InvalidInput, match="converts sklearn and xgboost"):
        convert_version(host, LOCAL_ADMIN, "rules", mv.version)
    with pytest.raises(InvalidInput, match="onnx"):
        convert_version(host, LOCAL_ADMIN, "rules", mv.version, to="tflite")


def test_compare_reports_divergence():
    with pytest.raises(InvalidInput, match="differ"):
        compare(np.array([0, 1, 1]), {"label": np.array([0, 0, 1])})
    assert compare(np.array([0.5, 0.25]), np.array([[0.5], [0.2500001]]))[0] == ["output"]


class Constant:
    def predict(self, rows):
        return np.zeros(len(rows))


def test_convert_over_rest_and_the_cli_with_matih_url(host, tmp_path, data, monkeypatch):
    """The service converts where its artifacts are; the CLI with MATIH_URL asks it to."""
    import httpx
    from sklearn.linear_model import LogisticRegression

    from matih_lite.cli import app, load_commands
    from matih_lite.testing.service import serve

    X, y = data
    SklearnFlavor().save(LogisticRegression().fit(X, y), tmp_path / "m", input_example=X[:5])
    v1 = register(host, tmp_path / "m", "churn")
    with serve(host) as url, httpx.Client(base_url=url, timeout=60) as http:
        made = http.post(f"/api/v1/models/churn/versions/{v1.version}/convert", json={"to": "onnx"})
        assert made.status_code == 201, made.text
        assert made.json()["version"] == v1.version + 1 and made.json()["from_version"] == v1.version
        bad = http.post(f"/api/v1/models/churn/versions/{v1.version}/convert", json={"to": "tflite"})
        assert bad.status_code == 400 and "onnx" in bad.json()["detail"]
        assert http.post("/api/v1/models/churn/versions/99/convert", json={}).status_code == 404
        monkeypatch.setenv("MATIH_URL", url)
        load_commands()
        out = CliRunner().invoke(app, ["models", "convert", "churn", str(v1.version), "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["version"] == v1.version + 2
