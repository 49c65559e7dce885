"""The unchanged ``mlflow`` client (3.x) logs into a running matih-lite through its MLflow-compatible REST."""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import mlflow  # a test dependency ([test] extra): missing, this suite fails, it does not skip
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

import matih_lite


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The real service under uvicorn on a free loopback port; the mlflow client pointed at it."""
    import uvicorn

    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.service import create_app

    work = tmp_path_factory.mktemp("mlflow-server")
    home = work / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        # Requirement inference runs a subprocess for ~10 s per model; the default requirements do here.
        mp.setenv("MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT", "1")
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
            mp.delenv(var, raising=False)
        host = Host(load_config(env={"MATIH_HOME": str(work / ".matih")}, cwd=work))
        app = create_app(host)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
        thread = threading.Thread(target=uv.run, name="matih-mlflow-test-server", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the service did not become ready")
            time.sleep(0.05)
        mlflow.set_tracking_uri(url)
        try:
            yield url, host
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)
            mlflow.tracking.fluent._active_experiment_id = None  # set_experiment's global and env variable
            for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
                os.environ.pop(var, None)
            uv.should_exit = True
            thread.join(timeout=10)


@pytest.fixture
def server(service) -> str:
    return service[0]


@pytest.fixture
def client(server) -> MlflowClient:
    return MlflowClient(server)


def _error_code(excinfo) -> str:
    return excinfo.value.error_code


# ---- experiments -----------------------------------------------------------------------------------
def test_experiment_lifecycle(server, client):
    exp_id = mlflow.set_experiment("exp-lifecycle").experiment_id
    assert mlflow.set_experiment("exp-lifecycle").experiment_id == exp_id  # found, not created twice
    exp = client.get_experiment(exp_id)
    assert exp.name == "exp-lifecycle" and exp.lifecycle_stage == "active"
    assert client.get_experiment_by_name("exp-lifecycle").experiment_id == exp_id
    assert client.get_experiment_by_name("no-such-experiment") is None

    with pytest.raises(MlflowException) as err:
        client.create_experiment("exp-lifecycle")
    assert _error_code(err) == "RESOURCE_ALREADY_EXISTS"

    client.set_experiment_tag(exp_id, "team", "growth")
    other = client.create_experiment("exp-other", tags={"team": "search"})
    found = client.search_experiments(filter_string="tags.team = 'growth'")
    assert [e.experiment_id for e in found] == [exp_id]
    names = [e.name for e in client.search_experiments(filter_string="name LIKE 'exp-%'", order_by=["name ASC"])]
    assert names == ["exp-lifecycle", "exp-other"]

    client.rename_experiment(other, "exp-renamed")
    assert client.get_experiment(other).name == "exp-renamed"

    client.delete_experiment(other)
    assert client.get_experiment(other).lifecycle_stage == "deleted"
    assert other not in [e.experiment_id for e in client.search_experiments()]
    assert other in [e.experiment_id for e in client.search_experiments(view_type=ViewType.DELETED_ONLY)]
    with pytest.raises(MlflowException):
        mlflow.set_experiment("exp-renamed")  # the client refuses a deleted experiment
    client.restore_experiment(other)
    assert client.get_experiment(other).lifecycle_stage == "active"


def test_default_experiment_is_zero(server, client):
    run = client.create_run("0")
    assert run.info.experiment_id == "0"
    exp = client.get_experiment("0")
    assert exp.experiment_id == "0" and exp.name == "Default"
    assert client.get_experiment_by_name("Default").experiment_id == "0"
    assert client.get_run(run.info.run_id).info.experiment_id == "0"
    assert [r.info.run_id for r in client.search_runs(["0"])] == [run.info.run_id]
    client.set_terminated(run.info.run_id)
    # matih-lite's own API shows the stored id of the tenant's "Default" experiment
    own = httpx.get(f"{server}/api/v1/experiments/by-name/Default").json()
    assert httpx.get(f"{server}/api/v1/runs/{run.info.run_id}").json()["experiment_id"] == own["experiment_id"]


# ---- runs ----------------------------------------------------------------------------------------------
def test_run_logging_round_trips_and_shows_in_matih_api(server, client):
    mlflow.set_experiment("exp-runs")
    with mlflow.start_run(run_name="parent") as parent:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_params({"layers": 3, "optimizer": "adam"})
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.9, "f1": 0.8}, step=2)
        mlflow.set_tag("team", "growth")
        mlflow.set_tags({"stage": "dev", "owner": "ada"})
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("child_metric", 7)
    run = client.get_run(parent.info.run_id)
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert run.info.run_name == "parent"
    assert run.data.params == {"alpha": "0.5", "layers": "3", "optimizer": "adam"}
    assert run.data.metrics == {"loss": pytest.approx(1 / 3), "acc": 0.9, "f1": 0.8}
    assert run.data.tags["team"] == "growth" and run.data.tags["owner"] == "ada"
    history = client.get_metric_history(parent.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    kid = client.get_run(child.info.run_id)
    assert kid.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert kid.info.experiment_id == parent.info.experiment_id

    own = httpx.get(f"{server}/api/v1/runs/{parent.info.run_id}").json()
    assert own["params"] == run.data.params
    assert {k: m["value"] for k, m in own["metrics"].items()} == run.data.metrics
    assert own["tags"]["team"] == "growth" and own["status"] == "FINISHED"
    assert own["artifact_uri"] == run.info.artifact_uri

    client.set_tag(parent.info.run_id, "temporary", "x")
    client.delete_tag(parent.info.run_id, "temporary")
    assert "temporary" not in client.get_run(parent.info.run_id).data.tags
    client.set_tag(parent.info.run_id, "mlflow.runName", "renamed")  # MLflow renames the run with this tag
    assert client.get_run(parent.info.run_id).info.run_name == "renamed"


def test_nan_and_infinite_metrics(server, client):
    mlflow.set_experiment("exp-nan")
    with mlflow.start_run() as run:
        mlflow.log_metric("nan", float("nan"))
        mlflow.log_metric("pinf", float("inf"))
        mlflow.log_metrics({"ninf": float("-inf"), "ok": 1.5})
    metrics = client.get_run(run.info.run_id).data.metrics
    assert math.isnan(metrics["nan"])
    assert metrics["pinf"] == math.inf and metrics["ninf"] == -math.inf and metrics["ok"] == 1.5
    assert math.isnan(client.get_metric_history(run.info.run_id, "nan")[0].value)
    raw = httpx.get(f"{server}/api/2.0/mlflow/runs/get", params={"run_id": run.info.run_id}).json()
    values = {m["key"]: m["value"] for m in raw["run"]["data"]["metrics"]}
    assert values["nan"] == "NaN" and values["pinf"] == "Infinity" and values["ninf"] == "-Infinity"


def test_search_runs_filter_and_order(server, client):
    exp_id = mlflow.set_experiment("exp-search").experiment_id
    for i, (model, acc) in enumerate([("xgb", 0.7), ("lr", 0.9), ("xgb", 0.8)]):
        with mlflow.start_run(run_name=f"r{i}"):
            mlflow.log_param("model", model)
            mlflow.log_metric("acc", acc)
    df = mlflow.search_runs(filter_string="params.model = 'xgb'", order_by=["metrics.acc DESC"])
    assert list(df["metrics.acc"]) == [0.8, 0.7]
    assert list(df["tags.mlflow.runName"]) == ["r2", "r0"]
    df = mlflow.search_runs([exp_id], filter_string="metrics.acc > 0.75", order_by=["metrics.acc ASC"])
    assert list(df["params.model"]) == ["xgb", "lr"]
    runs = client.search_runs([exp_id], max_results=2, order_by=["attributes.start_time ASC"])
    assert [r.info.run_name for r in runs] == ["r0", "r1"] and runs.token
    assert [r.info.run_name for r in client.search_runs([exp_id], max_results=2, page_token=runs.token,
                                                         order_by=["attributes.start_time ASC"])] == ["r2"]
    # bare columns are attributes, as in MLflow
    df = mlflow.search_runs([exp_id], filter_string="status = 'FINISHED' and run_name != 'r1'",
                            order_by=["start_time DESC"])
    assert list(df["tags.mlflow.runName"]) == ["r2", "r0"]
    with pytest.raises(MlflowException) as err:
        mlflow.search_runs(filter_string="params.model === 'x'")
    assert _error_code(err) == "INVALID_PARAMETER_VALUE"


def test_search_runs_on_their_dataset_inputs(server, client):
    import pandas as pd

    exp_id = mlflow.set_experiment("exp-datasets").experiment_id
    frame = pd.DataFrame({"x": [1, 2, 3], "y": [0, 1, 0]})
    train = mlflow.data.from_pandas(frame, name="iris", targets="y")
    other = mlflow.data.from_pandas(frame.assign(x=[4, 5, 6]), name="wine")
    with mlflow.start_run(run_name="on-iris") as on_iris:
        mlflow.log_input(train, context="training")
    with mlflow.start_run(run_name="on-wine") as on_wine:
        mlflow.log_input(other, context="eval")
        mlflow.log_input(train, context="eval")
    with mlflow.start_run(run_name="on-nothing"):
        pass

    def names(filter_string):
        return sorted(r.info.run_name for r in client.search_runs([exp_id], filter_string=filter_string))

    assert names("datasets.name = 'iris'") == ["on-iris", "on-wine"]
    assert names("datasets.context = 'eval'") == ["on-wine"]
    assert names(f"datasets.digest = '{other.digest}'") == ["on-wine"]
    assert names("datasets.name IN ('wine', 'nope') and datasets.context = 'eval'") == ["on-wine"]
    assert names("datasets.name LIKE 'i%' and attributes.run_name = 'on-iris'") == ["on-iris"]
    assert [r.info.run_id for r in client.search_runs([exp_id], filter_string="datasets.name = 'iris'",
                                                       order_by=["attributes.start_time DESC"])] == [
        on_wine.info.run_id, on_iris.info.run_id]
    with pytest.raises(MlflowException) as err:
        client.search_runs([exp_id], filter_string="datasets.size = '3'")
    assert _error_code(err) == "INVALID_PARAMETER_VALUE"


def test_a_model_versions_user_is_the_user_of_its_run(server, client):
    mlflow.set_experiment("exp-version-user")
    with mlflow.start_run() as run:
        mlflow.log_text("flavors: {}\n", "model/MLmodel")
    client.create_registered_model("version-user")
    mv = client.create_model_version("version-user", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    assert mv.user_id == run.info.user_id != "local"  # the client's mlflow.user, on a service without auth
    assert client.get_model_version("version-user", mv.version).user_id == run.info.user_id


def test_version_answers_as_mlflow_server_does(server):
    r = httpx.get(f"{server}/version")
    assert r.status_code == 200 and r.text == matih_lite.__version__


def test_delete_and_restore_run(server, client):
    exp_id = mlflow.set_experiment("exp-delete").experiment_id
    with mlflow.start_run() as run:
        mlflow.log_param("p", 1)
    client.delete_run(run.info.run_id)
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    assert client.search_runs([exp_id]) == []
    assert [r.info.run_id for r in client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)] == \
        [run.info.run_id]
    client.restore_run(run.info.run_id)
    assert [r.info.run_id for r in client.search_runs([exp_id])] == [run.info.run_id]


def test_mlflow_errors(server, client):
    mlflow.set_experiment("exp-errors")
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.1)
        mlflow.log_param("lr", 0.1)  # the same value again is fine
        with pytest.raises(MlflowException) as err:
            mlflow.log_param("lr", 0.2)
        assert _error_code(err) == "INVALID_PARAMETER_VALUE"
        with pytest.raises(MlflowException) as err:
            client.log_batch(run.info.run_id, params=[mlflow.entities.Param("lr", "0.3")])
        assert _error_code(err) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as err:
        client.get_run("0" * 32)
    assert _error_code(err) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as err:
        client.log_metric("f" * 32, "m", 1.0)
    assert _error_code(err) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as err:
        client.get_experiment("987654")
    assert _error_code(err) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as err:
        client.log_batch(run.info.run_id, metrics=[mlflow.entities.Metric(f"m{i}", 1.0, 0, 0) for i in range(1001)])
    assert _error_code(err) == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/2.0/mlflow/runs/create", b"{not json"),
    ("POST", "/api/2.0/mlflow/runs/create", b"[1, 2]"),
    ("POST", "/api/2.0/mlflow/runs/create", json.dumps({"experiment_id": {"a": 1}}).encode()),
    ("POST", "/api/2.0/mlflow/experiments/create", b"{}"),
    ("POST", "/api/2.0/mlflow/experiments/create", json.dumps({"name": ""}).encode()),
    ("POST", "/api/2.0/mlflow/runs/log-metric", json.dumps({"run_id": "x", "key": "m", "value": "abc"}).encode()),
    ("POST", "/api/2.0/mlflow/runs/log-batch", json.dumps({"run_id": "x", "metrics": [{"key": "../m",
                                                                                        "value": 1}]}).encode()),
    ("POST", "/api/2.0/mlflow/runs/log-batch", json.dumps({"metrics": "nope"}).encode()),
    ("POST", "/api/2.0/mlflow/runs/search", json.dumps({"experiment_ids": ["1"], "max_results": -1}).encode()),
    ("POST", "/api/2.0/mlflow/runs/search", json.dumps({"experiment_ids": ["1"], "filter": "x ="}).encode()),
    ("POST", "/api/2.0/mlflow/runs/update", json.dumps({"run_id": "x", "status": "BOGUS"}).encode()),
    ("POST", "/api/2.0/mlflow/experiments/search", json.dumps({"filter": "name ~ 'x'"}).encode()),
    ("POST", "/api/2.0/mlflow/experiments/search", json.dumps({"page_token": "garbage"}).encode()),
    ("POST", "/api/2.0/mlflow/runs/create", json.dumps({"experiment_id": "0", "start_time": 2**64 - 1}).encode()),
    ("POST", "/api/2.0/mlflow/runs/create", json.dumps({"experiment_id": "0", "start_time": -5}).encode()),
    ("POST", "/api/2.0/mlflow/runs/create", json.dumps({"experiment_id": "0", "tags": [{"key": "a/../b",
                                                                                        "value": "v"}]}).encode()),
    ("POST", "/api/2.0/mlflow/runs/log-metric", json.dumps({"run_id": "x", "key": "m", "value": 1,
                                                            "step": 2**70}).encode()),
    ("GET", "/api/2.0/mlflow/metrics/get-history?run_id=x", None),
    ("GET", "/api/2.0/mlflow/metrics/get-history?run_id=x&metric_key=m&max_results=99999999999999999999", None),
    ("GET", "/api/2.0/mlflow/experiments/get?experiment_id=99999999999999999999999", None),
    ("GET", "/api/2.0/mlflow/logged-models/..%2F..%2Fx", None),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts?path=..%2F..%2Fetc", None),
    ("GET", "/api/2.0/mlflow/runs/get", None),
    ("POST", "/api/2.0/mlflow/logged-models", json.dumps({"experiment_id": "0", "name": "a/b"}).encode()),
    ("PATCH", "/api/2.0/mlflow/logged-models/m-" + "0" * 32, json.dumps({"status": "NOPE"}).encode()),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/abc", b"x"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/..%2F..%2Fetc", b"x"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/../../x", None),
])
def test_bad_requests_get_mlflow_errors_never_500(server, method, path, body):
    r = httpx.request(method, server + path, content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    payload = r.json()
    assert set(payload) == {"error_code", "message"}
    assert payload["error_code"] in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "ENDPOINT_NOT_FOUND")


def test_unknown_endpoint_is_endpoint_not_found(server):
    r = httpx.post(f"{server}/api/2.0/mlflow/no-such/thing", json={})
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    r = httpx.post(f"{server}/ajax-api/2.0/mlflow/experiments/search", json={"max_results": 5})
    assert r.status_code == 200 and "experiments" in r.json()
    r = httpx.get(f"{server}/api/2.0/mlflow/experiments/search", params={"max_results": 5, "view_type": "ALL"})
    assert r.status_code == 200 and "experiments" in r.json()


def test_another_tenant_sees_nothing(service, client):
    from matih_lite.errors import NotFound
    from matih_lite.identity import Principal
    from matih_lite.service.mlflow.artifacts import resolve_artifact_path
    from matih_lite.service.mlflow.scope import Scope
    from matih_lite.tracking import Tracking

    from sklearn.linear_model import LogisticRegression

    url, host = service
    exp_id = mlflow.set_experiment("exp-tenant").experiment_id
    X, y = _data()
    with mlflow.start_run() as run:
        mlflow.log_text("secret", "s.txt")
        info = mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="m", pip_requirements=["scikit-learn"])
    other = Scope(Tracking(host), Principal("other", "mallory", ("admin",)))
    with pytest.raises(NotFound):
        other.run(run.info.run_id)
    with pytest.raises(NotFound):
        resolve_artifact_path(other, f"{exp_id}/{run.info.run_id}/artifacts/s.txt", allow_root=False)
    with pytest.raises(NotFound):
        other.model(info.model_id)
    assert other.models.search(other.tenant, [exp_id]) == [] and other.default_id(create=False) is None
    assert Scope(Tracking(host), Principal("default", "local", ("admin",))).model(info.model_id).name == "m"


# ---- artifacts ---------------------------------------------------------------------------------------
def test_artifacts_round_trip(server, client, tmp_path):
    mlflow.set_experiment("exp-artifacts")
    payload = os.urandom(200_000)
    (tmp_path / "blob.bin").write_bytes(payload)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "b.txt").write_text("beta")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / "blob.bin"))
        mlflow.log_artifact(str(tmp_path / "blob.bin"), artifact_path="nested/deeper")
        mlflow.log_artifacts(str(folder), artifact_path="tree")
        mlflow.log_dict({"k": [1, 2]}, "conf/config.json")
        mlflow.log_text("hello, world", "notes.txt")
    rid = run.info.run_id
    top = {(f.path, f.is_dir) for f in client.list_artifacts(rid)}
    assert top == {("blob.bin", False), ("nested", True), ("tree", True), ("conf", True), ("notes.txt", False)}
    assert [(f.path, f.file_size) for f in client.list_artifacts(rid, "nested/deeper")] == \
        [("nested/deeper/blob.bin", len(payload))]
    out = Path(client.download_artifacts(rid, "blob.bin", str(tmp_path / "dl1")))
    assert out.read_bytes() == payload
    tree = Path(mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="tree", dst_path=str(tmp_path / "dl2")))
    assert (tree / "a.txt").read_text() == "alpha" and (tree / "sub" / "b.txt").read_text() == "beta"
    assert mlflow.artifacts.load_dict(f"runs:/{rid}/conf/config.json") == {"k": [1, 2]}
    assert mlflow.artifacts.load_text(f"runs:/{rid}/notes.txt") == "hello, world"
    # the same files through matih-lite's own API
    assert httpx.get(f"{server}/api/v1/runs/{rid}/artifacts/blob.bin").content == payload
    # a run's files are only reachable under its own experiment
    other_exp = mlflow.set_experiment("exp-artifacts-other").experiment_id
    r = httpx.get(f"{server}/api/2.0/mlflow-artifacts/artifacts/{other_exp}/{rid}/artifacts/blob.bin")
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # delete through the proxied API
    repo = client._tracking_client._get_artifact_repo(rid)
    repo.delete_artifacts("tree")
    assert "tree" not in {f.path for f in client.list_artifacts(rid)}


def test_multipart_upload_falls_back_to_single_put(server, client, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", "10")
    mlflow.set_experiment("exp-multipart")
    data = os.urandom(5000)
    (tmp_path / "big.bin").write_bytes(data)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / "big.bin"))
    assert Path(client.download_artifacts(run.info.run_id, "big.bin", str(tmp_path))).read_bytes() == data
    info = httpx.get(f"{server}/api/3.0/mlflow/server-info").json()
    assert info["multipart_uploads_enabled"] is False


# ---- autolog and logged models (MLflow 3) ------------------------------------------------------------
def _data():
    rng = np.random.default_rng(0)
    X = rng.random((60, 3))
    return X, (X[:, 0] + 0.1 * X[:, 1] > 0.55).astype(int)


def test_sklearn_autolog(server, client):
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment("exp-autolog")
    X, y = _data()
    mlflow.sklearn.autolog()
    try:
        with mlflow.start_run() as run:
            LogisticRegression(C=0.5, max_iter=200).fit(X, y)
    finally:
        mlflow.sklearn.autolog(disable=True)
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["C"] == "0.5" and got.data.params["max_iter"] == "200"
    assert 0 <= got.data.metrics["training_accuracy_score"] <= 1
    assert got.data.tags["estimator_class"].endswith("LogisticRegression")
    [dataset] = got.inputs.dataset_inputs
    assert dataset.dataset.name and [t.value for t in dataset.tags] == ["train"]
    [output] = got.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.source_run_id == run.info.run_id and model.status.to_int() == 2  # READY
    loaded = mlflow.sklearn.load_model(f"models:/{output.model_id}")
    assert list(loaded.predict(X[:5])) == list(LogisticRegression(C=0.5, max_iter=200).fit(X, y).predict(X[:5]))
    # the model's metrics are the run's, not logged twice into the run's history
    assert {m.key for m in model.metrics} >= {"training_accuracy_score"}
    assert len(client.get_metric_history(run.info.run_id, "training_accuracy_score")) == 1


def test_log_model_and_load_it_back(server, client):
    from sklearn.linear_model import LogisticRegression

    exp_id = mlflow.set_experiment("exp-log-model").experiment_id
    X, y = _data()
    est = LogisticRegression().fit(X, y)
    with mlflow.start_run() as run:
        mlflow.log_param("solver", "lbfgs")
        mlflow.log_metric("acc", float(est.score(X, y)))
        info = mlflow.sklearn.log_model(est, name="model", pip_requirements=["scikit-learn"])
    assert info.model_uri == f"models:/{info.model_id}"
    model = client.get_logged_model(info.model_id)
    assert model.name == "model" and model.experiment_id == exp_id
    assert model.artifact_location == f"mlflow-artifacts:/{exp_id}/models/{info.model_id}/artifacts"
    assert model.params["solver"] == "lbfgs"
    assert {m.key for m in model.metrics} == {"acc"}
    for uri in (info.model_uri, f"runs:/{run.info.run_id}/model"):
        assert list(mlflow.sklearn.load_model(uri).predict(X[:5])) == list(est.predict(X[:5]))
    assert {"MLmodel", "requirements.txt"} <= {f.path for f in client.list_logged_model_artifacts(info.model_id)}

    found = mlflow.search_logged_models(experiment_ids=[exp_id], filter_string="name = 'model'", output_format="list")
    assert [m.model_id for m in found] == [info.model_id]
    client.set_logged_model_tags(info.model_id, {"quality": "good"})
    assert client.get_logged_model(info.model_id).tags["quality"] == "good"
    client.delete_logged_model_tag(info.model_id, "quality")
    assert "quality" not in client.get_logged_model(info.model_id).tags
    client.delete_logged_model(info.model_id)
    with pytest.raises(MlflowException) as err:
        client.get_logged_model(info.model_id)
    assert _error_code(err) == "RESOURCE_DOES_NOT_EXIST"
    assert mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list") == []
