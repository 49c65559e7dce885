"""What a schemathesis run over the live OpenAPI found (issue 12, point 9), one test each: inputs that reached a
500, answers the document did not promise, and the document itself (problem details everywhere, integer bounds,
Allow headers). The run itself is tests/service/test_schemathesis.py (slow)."""

from __future__ import annotations

import warnings

import pytest
from litestar.testing import TestClient

from matih_lite.config import load_config
from matih_lite.contracts.clock import MAX_MS
from matih_lite.host import Host
from matih_lite.service import create_app
from matih_lite.service.problems import PROBLEM_JSON

FAR_FUTURE = 1_000_000_000_000_000_000  # milliseconds: the year 31690708
BEYOND_64_BITS = 2**64 + 1


@pytest.fixture
def host(tmp_path):
    h = Host(load_config(cwd=tmp_path, env={"MATIH_HOME": str(tmp_path / ".matih")}))
    yield h
    h.close()


@pytest.fixture
def client(host):
    with TestClient(create_app(host)) as c:
        yield c


@pytest.fixture
def run_id(client):
    r = client.post("/api/v1/runs", json={"experiment_name": "churn"})
    assert r.status_code == 201, r.text
    return r.json()["run_id"]


def assert_problem(r, status: int, *words: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON), r.headers
    body = r.json()
    assert body["status"] == status and body["instance"] and body["title"], body
    for word in words:
        assert word in body["detail"], body
    return body


# ---- times: validated on the way in, and no stored row breaks the OpenLineage listing ----------------------
@pytest.mark.parametrize("value", [FAR_FUTURE, MAX_MS + 1, -1, BEYOND_64_BITS])
def test_a_run_start_time_a_calendar_cannot_show_is_refused(client, value):
    r = client.post("/api/v1/runs", json={"experiment_name": "churn", "start_time": value})
    assert_problem(r, 400, "start_time")


@pytest.mark.parametrize("value", [FAR_FUTURE, BEYOND_64_BITS])
def test_a_run_end_time_a_calendar_cannot_show_is_refused(client, run_id, value):
    r = client.patch(f"/api/v1/runs/{run_id}", json={"status": "FINISHED", "end_time": value})
    assert_problem(r, 400, "end_time")
    assert client.get(f"/api/v1/runs/{run_id}").json()["status"] == "RUNNING"


def test_the_last_time_a_calendar_shows_is_kept(client):
    r = client.post("/api/v1/runs", json={"experiment_name": "churn", "start_time": MAX_MS})
    assert r.status_code == 201, r.text
    assert r.json()["start_time"] == MAX_MS


def test_mlflow_create_run_refuses_a_far_future_start_time(client):
    exp = client.post("/api/2.0/mlflow/experiments/create", json={"name": "mlflow-exp"}).json()["experiment_id"]
    r = client.post("/api/2.0/mlflow/runs/create", json={"experiment_id": exp, "start_time": FAR_FUTURE})
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE" and "start_time" in r.json()["message"]


def test_a_stored_far_future_run_does_not_break_the_openlineage_listing(client, host):
    # A row stored before times were checked on the way in: written to the store directly.
    exp = client.post("/api/v1/experiments", json={"name": "old"}).json()["experiment_id"]
    run = host.metadata.create_run("default", exp, run_id="f" * 32, name="old-run", start_time=FAR_FUTURE)
    r = client.post(f"/api/v1/lineage/runs/{run.run_id}/inputs", json={"uri": "s3://bucket/train.parquet"})
    assert r.status_code == 200, r.text
    r = client.post("/api/v1/lineage/nodes", json={"key": "run:odd", "properties": {"end_time": "soon"}})
    assert r.status_code == 200, r.text
    for _ in range(2):  # every call, not only the first
        r = client.get("/api/v1/lineage/openlineage")
        assert r.status_code == 200, r.text
        times = {e["run"]["facets"]["matih_run"]["run_id"]: e["eventTime"] for e in r.json()["events"]}
        assert times["f" * 32] == "9999-12-31T23:59:59.999Z" and times["odd"].endswith("Z")


# ---- bodies that cannot be read --------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/v1/experiments", "/api/v1/runs/search", "/api/2.0/mlflow/experiments/create"])
def test_json_nested_a_thousand_deep_is_a_400(client, path):
    deep = "[" * 1000 + "]" * 1000
    r = client.post(path, content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "nest" in r.text


def test_evaluate_with_a_ragged_x_is_a_400_even_for_a_model_that_does_not_exist(client):
    r = client.post("/api/v1/models/nope/versions/1/evaluate", json={"X": [[1, 2], [1]], "y": [0, 1]})
    assert_problem(r, 400, "X is not a table")
    r = client.post("/api/v1/models/nope/versions/1/evaluate", json={"X": [{"a": 1}, [2]], "y": [0, 1]})
    assert_problem(r, 400, "row objects")
    r = client.post("/api/v1/models/nope/versions/1/evaluate", json={"X": [[1, 2], [3, 4]], "y": [0, 1]})
    assert_problem(r, 404)


def test_an_inference_input_whose_datatype_is_not_a_string_is_a_400(client):
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": {}, "data": [1]}]}
    r = client.post("/v2/models/nope/infer", json=body)
    assert r.status_code == 400, r.text
    assert "datatype" in r.json()["error"]


# ---- MLflow's get-latest-versions by GET -------------------------------------------------------------------
def test_get_latest_versions_is_served_by_get(client):
    r = client.get("/api/2.0/mlflow/registered-models/get-latest-versions", params={"name": "x"})
    assert r.status_code == 404, r.text
    assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert client.post("/api/2.0/mlflow/registered-models/create", json={"name": "x"}).status_code == 200
    r = client.get("/api/2.0/mlflow/registered-models/get-latest-versions", params={"name": "x"})
    assert r.status_code == 200, r.text
    assert r.json() == {"model_versions": []}


# ---- the document says what the code answers ------------------------------------------------------------
@pytest.fixture
def document(client):
    return client.get("/schema/openapi.json").json()


def operations(document):
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "patch", "delete"):
                yield method, path, op


def test_every_error_response_is_documented_as_problem_details(document):
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            if int(status) < 400 or (path, status) == ("/ready", "503"):
                continue
            content = response["content"]
            assert content[PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/ProblemDetails"}, \
                (method, path, status)
            if path.startswith("/v2"):
                assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/OipProblem"}
            else:
                assert set(content) == {PROBLEM_JSON}, (method, path, status, content)
    assert "ValidationException" not in str(document)


def test_oip_errors_carry_the_documented_fields(client, document):
    r = client.post("/v2/models/nope/infer", content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    schema = document["components"]["schemas"]
    required = set(schema["ProblemDetails"]["required"]) | set(schema["OipProblem"]["allOf"][1]["required"])
    assert required <= set(body), body
    assert body["error"] == body["detail"]


def test_integer_bounds_are_written_as_integers(document):
    version = next(p for p in document["paths"]["/api/v1/models/{name}/versions/{version}"]["get"]["parameters"]
                   if p["name"] == "version")
    assert version["schema"]["maximum"] == 2**62 and isinstance(version["schema"]["maximum"], int)


def test_feature_routes_document_their_404(document):
    for method, path, op in operations(document):
        if path.startswith(("/api/v1/features", "/get-online-features", "/materialize", "/push")):
            assert "404" in op["responses"], (method, path)


def test_options_lists_every_method_of_a_path(client):
    for path, methods in (("/api/v1/experiments/1", {"GET", "PATCH", "DELETE"}),
                          ("/api/v1/runs/abc", {"GET", "PATCH", "DELETE"}),
                          ("/api/v1/experiments", {"GET", "POST"})):
        r = client.options(path)
        assert r.status_code == 204, r.text
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert methods | {"OPTIONS"} <= allowed, (path, allowed)


# ---- issue 12, point 8: no inferred parameters or dependencies ---------------------------------------------
def test_the_app_declares_every_parameter_and_dependency(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        host = Host(load_config(cwd=tmp_path, env={"MATIH_HOME": str(tmp_path / ".matih")}))
        try:
            create_app(host)
        finally:
            host.close()
    inferred = [str(w.message) for w in caught if "nferred" in str(w.message)]
    assert inferred == [], "\n".join(inferred[:20])
