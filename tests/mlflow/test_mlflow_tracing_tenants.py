"""Traces per tenant: with auth on, the unchanged ``mlflow`` client of one tenant never sees another's traces.

Each user's client sends their token (``MLFLOW_TRACKING_TOKEN``); the other tenant's trace ids,
span files and assessments answer 404 through every route, and its searches find nothing.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import httpx
import pytest
from conftest import mlflow_service

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

USERS = {"ann": ("acme", ["editor"]), "vic": ("acme", ["viewer"]), "bob": ("globex", ["editor"])}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with mlflow_service(tmp_path_factory.mktemp("tracing-tenants"), users=USERS) as served:
        yield served


@contextmanager
def acting_as(service, user: str):
    """The fluent API and a client sending ``user``'s token (the exporter reads it at each request)."""
    before = os.environ.get("MLFLOW_TRACKING_TOKEN")
    os.environ["MLFLOW_TRACKING_TOKEN"] = service.secrets[user]
    try:
        yield MlflowClient(service.url)
    finally:
        mlflow.flush_trace_async_logging()
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = before


@mlflow.trace
def answer(question: str) -> str:
    with mlflow.start_span("lookup") as span:
        span.set_inputs(question)
        span.set_outputs("secret")
    return "secret"


@pytest.fixture(scope="module")
def acme(service):
    """Ann's traced call in acme, with a feedback on it."""
    with acting_as(service, "ann"):
        experiment = mlflow.set_experiment("assistant").experiment_id
        answer("what is the plan?")
    with acting_as(service, "ann"):
        [trace] = mlflow.search_traces(locations=[experiment], return_type="list")
        feedback = mlflow.log_feedback(trace_id=trace.info.trace_id, name="helpful", value=True)
    return {"experiment": experiment, "trace": trace, "feedback": feedback.assessment_id,
            "path": trace.info.tags["mlflow.artifactLocation"].split(":/", 1)[1]}


def _code(call) -> str:
    with pytest.raises(MlflowException) as err:
        call()
    return err.value.error_code


def test_the_owner_reads_its_trace_back(service, acme):
    with acting_as(service, "ann") as client:
        got = client.get_trace(acme["trace"].info.trace_id)
        assert [s.name for s in got.data.spans] == ["answer", "lookup"]
        assert [a.name for a in got.info.assessments] == ["helpful"]


def test_another_tenant_sees_none_of_its_traces(service, acme):
    trace_id = acme["trace"].info.trace_id
    with acting_as(service, "bob") as client:
        own = mlflow.set_experiment("assistant").experiment_id  # the same name is a globex experiment of its own
        assert own != acme["experiment"]
        assert mlflow.search_traces(locations=[acme["experiment"]], return_type="list") == []
        assert mlflow.search_traces(locations=[own, "0"], return_type="list") == []
        assert _code(lambda: client.get_trace(trace_id)) == "RESOURCE_DOES_NOT_EXIST"
        assert _code(lambda: client.set_trace_tag(trace_id, "stolen", "yes")) == "RESOURCE_DOES_NOT_EXIST"
        assert _code(lambda: client.delete_trace_tag(trace_id, "mlflow.traceName")) == "RESOURCE_DOES_NOT_EXIST"
        assert _code(lambda: mlflow.log_feedback(trace_id=trace_id, name="x", value=1)) == "RESOURCE_DOES_NOT_EXIST"
        assert _code(lambda: mlflow.get_assessment(trace_id, acme["feedback"])) == "RESOURCE_DOES_NOT_EXIST"
        assert _code(lambda: mlflow.delete_assessment(trace_id, acme["feedback"])) == "RESOURCE_DOES_NOT_EXIST"
        assert client.delete_traces(experiment_id=acme["experiment"], trace_ids=[trace_id]) == 0
        assert client.delete_traces(experiment_id=acme["experiment"], max_timestamp_millis=2**62) == 0
        store = client._tracing_client.store
        assert store.batch_get_traces([trace_id]) == [] and store.batch_get_trace_infos([trace_id]) == []
        assert _code(lambda: store.get_trace(trace_id)) == "RESOURCE_DOES_NOT_EXIST"
    with service.http("bob") as http:
        spans = f"/api/2.0/mlflow-artifacts/artifacts/{acme['path']}/traces.json"
        assert http.get(spans).status_code == 404
        assert http.put(spans, content=b'{"spans": []}').status_code == 404
        assert http.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": acme["path"]}).status_code == 404
        # a trace id is the client's: taking another tenant's is refused, and changes nothing of it
        r = http.post("/api/3.0/mlflow/traces", json={"trace": {"trace_info": {
            "trace_id": trace_id, "trace_location": {"type": "MLFLOW_EXPERIMENT",
                                                     "mlflow_experiment": {"experiment_id": own}},
            "request_time": "2026-01-01T00:00:00Z", "state": "OK", "tags": {"mlflow.traceName": "mine"}}}})
        assert r.status_code == 400 and r.json()["error_code"] == "RESOURCE_ALREADY_EXISTS", r.text
    with acting_as(service, "ann") as client:
        intact = client.get_trace(trace_id)
        assert intact.info.tags["mlflow.traceName"] == "answer" and "stolen" not in intact.info.tags
        assert [s.outputs for s in intact.data.spans] == ["secret", "secret"]
        assert [a.assessment_id for a in intact.info.assessments] == [acme["feedback"]]


def test_a_viewer_reads_but_does_not_write(service, acme):
    trace_id = acme["trace"].info.trace_id
    with acting_as(service, "vic") as client:
        assert mlflow.search_traces(locations=[acme["experiment"]], return_type="list")[0].info.trace_id == trace_id
        assert _code(lambda: client.set_trace_tag(trace_id, "k", "v")) == "PERMISSION_DENIED"
        assert _code(lambda: mlflow.log_feedback(trace_id=trace_id, name="x", value=1)) == "PERMISSION_DENIED"
    assert httpx.get(f"{service.url}/api/3.0/mlflow/traces/{trace_id}").status_code == 401  # no token at all


def test_a_model_versions_user_is_the_authenticated_user(service):
    with acting_as(service, "ann") as client:
        mlflow.set_experiment("registered")
        with mlflow.start_run() as run:
            mlflow.log_text("flavors: {}\n", "model/MLmodel")
        client.create_registered_model("assistant-model")
        mv = client.create_model_version("assistant-model", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        assert mv.user_id == "ann"
