"""The real ``mlflow`` client against matih-lite's registry: register, transition, alias, governance refusals."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import mlflow  # test dependencies ([test] and [ml] extras): missing, this suite fails, it does not skip
import sklearn  # noqa: F401
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from matih_lite.identity import Principal
from matih_lite.registry import Registry

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # MLflow deprecates stages; we keep them governed

LEAD = Principal("default", "lena", ("lead",))
POLICY = """
[models."*"]
staging_requires = ["auc >= 0.85"]
production_approvers = ["owner", "lead"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The ml-service on a free 127.0.0.1 port, with a governance policy; yields (url, host)."""
    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.testing.service import serve

    folder = tmp_path_factory.mktemp("mlflow-registry")
    (folder / "matih.toml").write_text(textwrap.dedent(POLICY))
    host = Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))
    with serve(host) as url:
        yield url, host


@pytest.fixture
def client(server, monkeypatch):
    url, _ = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    yield MlflowClient(url, url)
    while mlflow.active_run():
        mlflow.end_run()
    # mlflow keeps both addresses process-wide: later tests' clients must not call this stopped server
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def data():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=120, n_features=4, random_state=0)
    return X, y


def train(data, *, auc: float, registered_model_name: str | None = None, experiment: str = "churn"):
    """A run that logs ``auc`` and an sklearn model (registered when a name is given); returns (run_id, info)."""
    from sklearn.linear_model import LogisticRegression

    X, y = data
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_metric("auc", auc)
        mlflow.set_tag("matih.dataset.train", "s3://data/churn/train.parquet")
        model = LogisticRegression(max_iter=200).fit(X, y)
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=registered_model_name,
                                        input_example=X[:3], pip_requirements=["scikit-learn"])
    return run.info.run_id, info


def test_log_model_with_registered_model_name_and_register_model(client, data):
    run_id, info = train(data, auc=0.91, registered_model_name="churn-log")
    assert str(info.registered_model_version) == "1"
    v1 = client.get_model_version("churn-log", "1")
    assert v1.run_id == run_id and v1.source == f"models:/{info.model_id}" and v1.status == "READY"
    assert v1.current_stage == "None"
    second = mlflow.register_model(f"runs:/{run_id}/model", "churn-log")
    assert second.version == "2" and second.run_id == run_id
    model = client.get_registered_model("churn-log")
    assert model.name == "churn-log" and {v.version for v in model.latest_versions} == {"2"}
    loaded = mlflow.pyfunc.load_model("models:/churn-log/1")
    assert list(loaded.predict(data[0][:5])) == list(mlflow.sklearn.load_model(info.model_uri).predict(data[0][:5]))
    found = [v.name for v in client.search_model_versions(f"run_id = '{run_id}'")]
    assert found == ["churn-log", "churn-log"]


def test_the_registry_records_flavor_signature_and_training_data(client, data, server):
    _, host = server
    run_id, info = train(data, auc=0.9, registered_model_name="churn-meta")
    mv = Registry(host).get_version(Principal("default", "local", ("admin",)), "churn-meta", 1)
    assert mv.flavor == "sklearn" and mv.logged_model_id == info.model_id and mv.run_id == run_id
    assert mv.storage_location.startswith("mlflow-artifacts:/") and mv.storage_location.endswith("/artifacts")
    assert mv.signature["inputs"] == [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]
    assert mv.training_data == [{"name": "train", "uri": "s3://data/churn/train.parquet"}]


def test_transitions_follow_governance_and_production_waits_for_an_approval(client, data, server):
    _, host = server
    train(data, auc=0.93, registered_model_name="churn-gov")
    staged = client.transition_model_version_stage("churn-gov", "1", "Staging")
    assert staged.current_stage == "Staging"
    with pytest.raises(MlflowException) as info:
        client.transition_model_version_stage("churn-gov", "1", "Production")
    message = str(info.value)
    assert "needs an approval" in message and "pending" in message and info.value.error_code == "INVALID_STATE"
    assert client.get_model_version("churn-gov", "1").current_stage == "Staging"
    registry = Registry(host)
    pending = registry.list_approvals(LEAD, name="churn-gov", status="pending").items
    assert len(pending) == 1 and pending[0].approval_id in message
    registry.approve(LEAD, pending[0].approval_id, comment="approved from the test")
    latest = client.get_latest_versions("churn-gov", stages=["Production"])
    assert [v.version for v in latest] == ["1"]
    # A second version through approval archives the first.
    train(data, auc=0.95, registered_model_name="churn-gov")
    client.transition_model_version_stage("churn-gov", "2", "Staging", archive_existing_versions=True)
    with pytest.raises(MlflowException):
        client.transition_model_version_stage("churn-gov", "2", "Production", archive_existing_versions=True)
    registry.approve(LEAD, registry.list_approvals(LEAD, name="churn-gov", status="pending").items[0].approval_id)
    assert client.get_model_version("churn-gov", "1").current_stage == "Archived"
    assert client.get_model_version("churn-gov", "2").current_stage == "Production"
    client.transition_model_version_stage("churn-gov", "1", "None")
    assert client.get_model_version("churn-gov", "1").current_stage == "None"


def test_a_refused_transition_is_an_mlflow_exception_naming_the_threshold(client, data):
    train(data, auc=0.61, registered_model_name="churn-low")
    with pytest.raises(MlflowException) as info:
        client.transition_model_version_stage("churn-low", "1", "Staging")
    assert "auc >= 0.85 (actual: 0.61)" in str(info.value) and info.value.error_code == "INVALID_STATE"
    assert client.get_model_version("churn-low", "1").current_stage == "None"
    with pytest.raises(MlflowException, match="promote it to Staging first"):
        client.transition_model_version_stage("churn-low", "1", "Production")


def test_aliases_set_get_load_and_delete(client, data):
    train(data, auc=0.9, registered_model_name="churn-alias")
    train(data, auc=0.92, registered_model_name="churn-alias")
    client.set_registered_model_alias("churn-alias", "champion", 1)
    client.set_registered_model_alias("churn-alias", "challenger", "2")
    assert client.get_model_version_by_alias("churn-alias", "champion").version == "1"
    assert client.get_model_version("churn-alias", "2").aliases == ["challenger"]
    assert client.get_registered_model("churn-alias").aliases == {"champion": "1", "challenger": "2"}
    assert len(mlflow.pyfunc.load_model("models:/churn-alias@champion").predict(data[0][:2])) == 2
    client.delete_registered_model_alias("churn-alias", "champion")
    with pytest.raises(MlflowException) as info:
        client.get_model_version_by_alias("churn-alias", "champion")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException, match="reserved"):
        client.set_registered_model_alias("churn-alias", "latest", 1)


def test_models_create_search_update_rename_and_delete(client):
    client.create_registered_model("fraud-a", tags={"team": "risk"}, description="first")
    client.create_registered_model("fraud-b")
    with pytest.raises(MlflowException) as info:
        client.create_registered_model("fraud-a")
    assert info.value.error_code == "RESOURCE_ALREADY_EXISTS"
    names = [m.name for m in client.search_registered_models(filter_string="name LIKE 'fraud-%'")]
    assert names == ["fraud-a", "fraud-b"]
    assert [m.name for m in client.search_registered_models(filter_string="tags.team = 'risk'")] == ["fraud-a"]
    assert [m.name for m in client.search_registered_models(filter_string="name LIKE 'fraud-%'",
                                                            order_by=["name DESC"], max_results=1)] == ["fraud-b"]
    client.update_registered_model("fraud-a", description="second")
    assert client.get_registered_model("fraud-a").description == "second"
    assert client.get_registered_model("fraud-a").tags == {"team": "risk"}
    client.rename_registered_model("fraud-b", "fraud-c")
    with pytest.raises(MlflowException) as info:
        client.get_registered_model("fraud-b")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as info:  # not a run, logged model or artifact of this tenant
        client.create_model_version("fraud-c", "s3://bucket/fraud/model", description="external")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE" and "is not a run" in info.value.message
    with mlflow.start_run() as run:
        mlflow.log_text("weights", "model/weights.txt")
    version = client.create_model_version("fraud-c", f"runs:/{run.info.run_id}/model", description="logged")
    assert version.version == "1" and version.source == f"runs:/{run.info.run_id}/model"
    client.update_model_version("fraud-c", "1", description="edited")
    client.set_model_version_tag("fraud-c", "1", "reviewed", "yes")
    got = client.get_model_version("fraud-c", "1")
    assert got.description == "edited" and got.tags == {"reviewed": "yes"}
    client.delete_model_version("fraud-c", "1")
    client.delete_registered_model("fraud-c")
    assert [m.name for m in client.search_registered_models(filter_string="name LIKE 'fraud-%'")] == ["fraud-a"]
    with pytest.raises(MlflowException) as info:
        client.create_model_version("nope", "s3://x")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.parametrize("method, path, params, body, code", [
    ("GET", "registered-models/get", {}, None, "INVALID_PARAMETER_VALUE"),
    ("GET", "registered-models/get", {"name": "never-made"}, None, "RESOURCE_DOES_NOT_EXIST"),
    ("POST", "registered-models/create", {}, {"name": "bad/name"}, "INVALID_PARAMETER_VALUE"),
    ("GET", "registered-models/search", {"filter": "name ~ 'x'"}, None, "INVALID_PARAMETER_VALUE"),
    ("GET", "registered-models/search", {"order_by": "nonsense DESC"}, None, "INVALID_PARAMETER_VALUE"),
    ("GET", "model-versions/search", {"max_results": "0"}, None, "INVALID_PARAMETER_VALUE"),
    ("GET", "model-versions/get", {"name": "never-made", "version": "x"}, None, "INVALID_PARAMETER_VALUE"),
    ("POST", "model-versions/transition-stage", {}, {"name": "never-made", "version": "1", "stage": "Limbo"},
     "INVALID_PARAMETER_VALUE"),
    ("POST", "model-versions/transition-stage", {}, {"name": "never-made", "version": "1", "stage": "Staging"},
     "RESOURCE_DOES_NOT_EXIST"),
    ("POST", "registered-models/alias", {}, {"name": "never-made", "alias": "v3", "version": "1"},
     "INVALID_PARAMETER_VALUE"),
    ("POST", "model-versions/create", {}, {"name": "never-made"}, "INVALID_PARAMETER_VALUE"),
])
def test_bad_requests_are_mlflow_shaped_4xx(server, method, path, params, body, code):
    import httpx

    url, _ = server
    r = httpx.request(method, f"{url}/api/2.0/mlflow/{path}", params=params, json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error_code"] == code and r.json()["message"]


def test_models_logged_by_the_mlflow_client_deploy_as_they_are(client, data, server):
    """``mlflow.sklearn.log_model`` and ``mlflow.pyfunc.log_model(python_model=...)`` with
    ``registered_model_name``, then a deployment over REST: the predictions are the models' own."""
    import httpx
    import pandas as pd

    url, _ = server
    X, _ = data
    run_id, info = train(data, auc=0.9, registered_model_name="churn-deploy")

    class Margin(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input["x0"] - model_input["x1"]

    frame = pd.DataFrame(X[:, :2], columns=["x0", "x1"])
    with mlflow.start_run():
        mlflow.log_metric("auc", 0.9)  # the policy's Staging threshold
        mlflow.pyfunc.log_model(name="margin", python_model=Margin(), input_example=frame.head(2),
                                registered_model_name="margin", pip_requirements=["mlflow"])
    for model in ("churn-deploy", "margin"):  # live traffic takes Staging and Production versions
        mlflow.MlflowClient().transition_model_version_stage(model, "1", "Staging")
    with httpx.Client(base_url=url, timeout=60) as http:
        for name, model in (("churn-deploy", "churn-deploy"), ("margin-api", "margin")):
            made = http.post("/api/v1/deployments", json={"name": name, "model": model, "version": 1})
            assert made.status_code == 201, made.text
        sk = http.post("/api/v1/deployments/churn-deploy/predict", json={"inputs": X[:7].tolist()})
        assert sk.status_code == 200, sk.text
        assert sk.json()["predictions"] == mlflow.sklearn.load_model(info.model_uri).predict(X[:7]).tolist()
        py = http.post("/api/v1/deployments/margin-api/predict",
                       json={"dataframe_split": {"columns": ["x1", "x0"], "data": X[:5, ::-1][:, -2:].tolist()}})
        assert py.status_code == 200, py.text
        np.testing.assert_allclose(py.json()["predictions"], X[:5, 0] - X[:5, 1])
