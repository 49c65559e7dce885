"""MLflow 3 tracing with the unchanged ``mlflow`` client: traces round-trip, are searched, tagged, assessed, deleted.

The client exports each finished trace (``POST /api/3.0/mlflow/traces``, then its spans as
``traces.json`` through the proxied artifacts) and reads it back (``search_traces``, ``get_trace``:
the info from the service, the spans from the artifacts). ``GetTrace`` and ``BatchGetTraces``
answer the same spans as OpenTelemetry protobuf JSON, and MLflow 2's trace routes still work.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from conftest import mlflow_service

import mlflow
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource, SpanStatusCode
from mlflow.entities.trace_status import TraceStatus
from mlflow.exceptions import MlflowException


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with mlflow_service(tmp_path_factory.mktemp("tracing")) as served:
        yield served


@pytest.fixture
def client(service) -> MlflowClient:
    return MlflowClient(service.url)


@pytest.fixture
def experiment(service) -> str:
    """A fresh experiment, made the active one."""
    return mlflow.set_experiment(f"traces-{time.monotonic_ns()}").experiment_id


def exported() -> None:
    """Wait until the client's background exporter has sent every finished trace."""
    mlflow.flush_trace_async_logging()


@mlflow.trace(span_type="CHAIN", attributes={"team": "growth"})
def pipeline(question: str, k: int = 2) -> dict:
    with mlflow.start_span("retrieve", span_type="RETRIEVER") as span:
        span.set_inputs({"question": question, "k": k})
        docs = [f"doc-{i}" for i in range(k)]
        span.set_attributes({"hits": k, "scores": [0.5, 0.25], "nested": {"a": [1, "x", None, True]}})
        span.add_event(mlflow.entities.SpanEvent("cache-miss", attributes={"key": question}))
        span.set_outputs(docs)
    answer = generate(question, docs)
    return {"answer": answer, "sources": docs}


@mlflow.trace(name="generate", span_type="LLM")
def generate(question: str, docs: list[str]) -> str:
    time.sleep(0.01)
    return f"{question}? {len(docs)} docs"


@mlflow.trace
def broken(x: int) -> int:
    raise ValueError(f"bad input {x}")


def _spans(trace) -> dict[str, object]:
    return {s.name: s for s in trace.data.spans}


# ---- round trip ------------------------------------------------------------------------------------
def test_traced_calls_round_trip_their_spans_intact(service, client, experiment, mlflow_warnings):
    before = time.time_ns()
    assert pipeline("why", k=2) == {"answer": "why? 2 docs", "sources": ["doc-0", "doc-1"]}
    after = time.time_ns()
    exported()
    [found] = mlflow.search_traces(locations=[experiment], return_type="list")
    trace = client.get_trace(found.info.trace_id)
    assert trace.info.trace_id.startswith("tr-") and trace.info.experiment_id == experiment
    assert trace.info.state == "OK" and 10 <= trace.info.execution_duration <= (after - before) // 1_000_000 + 1
    assert trace.info.tags["mlflow.traceName"] == "pipeline"
    assert json.loads(trace.info.request_preview) == {"question": "why", "k": 2}
    spans = _spans(trace)
    assert set(spans) == {"pipeline", "retrieve", "generate"}
    root, retrieve, gen = spans["pipeline"], spans["retrieve"], spans["generate"]
    assert root.parent_id is None and retrieve.parent_id == root.span_id and gen.parent_id == root.span_id
    assert {s.trace_id for s in trace.data.spans} == {trace.info.trace_id}
    assert root.inputs == {"question": "why", "k": 2}
    assert root.outputs == {"answer": "why? 2 docs", "sources": ["doc-0", "doc-1"]}
    assert root.span_type == "CHAIN" and root.attributes["team"] == "growth"
    assert retrieve.inputs == {"question": "why", "k": 2} and retrieve.outputs == ["doc-0", "doc-1"]
    assert retrieve.span_type == "RETRIEVER"
    assert (retrieve.attributes["hits"], retrieve.attributes["scores"], retrieve.attributes["nested"]) == (
        2, [0.5, 0.25], {"a": [1, "x", None, True]})
    assert [(e.name, e.attributes) for e in retrieve.events] == [("cache-miss", {"key": "why"})]
    assert gen.inputs == {"question": "why", "docs": ["doc-0", "doc-1"]} and gen.span_type == "LLM"
    assert before <= root.start_time_ns <= retrieve.start_time_ns <= retrieve.end_time_ns <= gen.start_time_ns
    assert gen.end_time_ns - gen.start_time_ns >= 10_000_000 and gen.end_time_ns <= root.end_time_ns <= after
    assert all(s.status.status_code == SpanStatusCode.OK for s in trace.data.spans)
    # the same trace through mlflow.get_trace, and the search answer carried the same spans
    assert [s.to_dict() for s in mlflow.get_trace(trace.info.trace_id).data.spans] == [
        s.to_dict() for s in trace.data.spans] == [s.to_dict() for s in found.data.spans]
    frame = mlflow.search_traces()  # the active experiment, as a DataFrame (the default)
    assert list(frame["trace_id"]) == [trace.info.trace_id] and len(frame["spans"][0]) == 3
    assert not mlflow_warnings.messages(), mlflow_warnings.messages()


def test_get_trace_and_batch_get_answer_the_same_spans(service, client, experiment):
    pipeline("spans", k=1)
    exported()
    [found] = mlflow.search_traces(locations=[experiment], return_type="list")
    store = client._tracing_client.store  # GetTrace / BatchGetTraces: what other MLflow tools call
    served = store.get_trace(found.info.trace_id)
    batch = store.batch_get_traces([found.info.trace_id, "tr-" + "0" * 32])
    assert [t.info.trace_id for t in batch] == [found.info.trace_id]
    for other in (served, batch[0]):
        assert {s.name: (s.parent_id, s.inputs, s.outputs, s.start_time_ns, s.end_time_ns, s.span_type)
                for s in other.data.spans} == {
            s.name: (s.parent_id, s.inputs, s.outputs, s.start_time_ns, s.end_time_ns, s.span_type)
            for s in found.data.spans}
        assert _spans(other)["retrieve"].attributes["nested"] == {"a": [1, "x", None, True]}
    assert [i.trace_id for i in store.batch_get_trace_infos([found.info.trace_id])] == [found.info.trace_id]


def test_an_exception_makes_an_error_trace(service, client, experiment, mlflow_warnings):
    with pytest.raises(ValueError, match="bad input 7"):
        broken(7)
    exported()
    [trace] = mlflow.search_traces(locations=[experiment], return_type="list")
    assert trace.info.state == "ERROR"
    [span] = trace.data.spans
    assert span.status.status_code == SpanStatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert "bad input 7" in span.events[0].attributes["exception.message"]
    assert not mlflow_warnings.messages()


def test_spans_of_the_default_experiment(service, client, monkeypatch):
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # set_experiment sets it
    with mlflow.start_span("bare") as span:
        span.set_inputs("x")
    exported()
    found = [t for t in mlflow.search_traces(locations=["0"], return_type="list")
             if t.info.tags.get("mlflow.traceName") == "bare"]
    assert len(found) == 1 and found[0].info.experiment_id == "0" and found[0].data.spans[0].inputs == "x"


# ---- search ------------------------------------------------------------------------------------------
def test_search_filters_orders_and_pages(service, client, experiment):
    for i in range(5):
        with mlflow.start_span(f"step-{i % 2}") as span:
            span.set_inputs(i)
        time.sleep(0.002)
    with pytest.raises(ValueError):
        broken(1)
    exported()
    every = mlflow.search_traces(locations=[experiment], return_type="list")
    assert len(every) == 6
    times = [t.info.request_time for t in every]
    assert times == sorted(times, reverse=True)  # newest first
    broken_id = every[0].info.trace_id
    client.set_trace_tag(every[1].info.trace_id, "team", "search")

    def ids(filter_string=None, **kw):
        return [t.info.trace_id for t in mlflow.search_traces(locations=[experiment], filter_string=filter_string,
                                                              return_type="list", **kw)]

    assert ids("name = 'step-0'") == [t.info.trace_id for t in every if t.info.tags["mlflow.traceName"] == "step-0"]
    assert len(ids("tags.`mlflow.traceName` LIKE 'step-%'")) == 5
    assert ids("status = 'ERROR'") == [broken_id]
    assert ids("trace.status != 'ERROR' AND tags.team = 'search'") == [every[1].info.trace_id]
    assert set(ids(f"timestamp_ms >= {every[2].info.request_time}")) >= {t.info.trace_id for t in every[:3]}
    assert ids(f"request_id = '{every[3].info.trace_id}'") == [every[3].info.trace_id]
    assert ids("name IN ('step-1', 'broken')") == [t.info.trace_id for t in every
                                                   if t.info.tags["mlflow.traceName"] in ("step-1", "broken")]
    assert ids(order_by=["timestamp_ms ASC"]) == [t.info.trace_id for t in reversed(every)]
    assert ids("metadata.`mlflow.trace_schema.version` = '3'") == [t.info.trace_id for t in every]
    # pages through the client's own loop, and by hand
    assert ids(max_results=4) == [t.info.trace_id for t in every[:4]]
    page = client.search_traces(locations=[experiment], max_results=4, include_spans=False)
    rest = client.search_traces(locations=[experiment], max_results=4, page_token=page.token, include_spans=False)
    assert [t.info.trace_id for t in page] + [t.info.trace_id for t in rest] == [t.info.trace_id for t in every]
    assert rest.token is None and all(t.data.spans == [] for t in page)


def test_traces_of_a_run_are_found_by_run_id(service, client, experiment):
    with mlflow.start_run() as run:
        pipeline("in a run", k=1)
    pipeline("outside", k=1)
    exported()
    [inside] = mlflow.search_traces(locations=[experiment], run_id=run.info.run_id, return_type="list")
    assert inside.info.request_metadata["mlflow.sourceRun"] == run.info.run_id
    assert json.loads(inside.info.request_preview)["question"] == "in a run"


@pytest.mark.parametrize("bad, says", [
    ("span.name = 'x'", "spans"),
    ("feedback.quality = 'yes'", "assessments"),
    ("nope = 'x'", "unknown attribute"),
    ("name RLIKE 'a.*'", "RLIKE"),
    ("timestamp_ms > 'soon'", "whole number"),
    ("name = 'a' OR name = 'b'", "AND"),
])
def test_a_filter_it_cannot_run_is_a_clear_400(service, client, experiment, bad, says):
    with pytest.raises(MlflowException, match=says) as err:
        mlflow.search_traces(locations=[experiment], filter_string=bad, return_type="list")
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


# ---- tags, assessments, delete -----------------------------------------------------------------------
def _one_trace(experiment: str) -> str:
    pipeline("tagged", k=1)
    exported()
    return mlflow.search_traces(locations=[experiment], return_type="list")[0].info.trace_id


def test_tags_set_and_delete_and_the_services_own_stay(service, client, experiment):
    trace_id = _one_trace(experiment)
    client.set_trace_tag(trace_id, "reviewed", "yes")
    assert client.get_trace(trace_id).info.tags["reviewed"] == "yes"
    client.delete_trace_tag(trace_id, "reviewed")
    assert "reviewed" not in client.get_trace(trace_id).info.tags
    with pytest.raises(MlflowException) as err:
        client.delete_trace_tag(trace_id, "reviewed")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    # the client refuses to move the spans' location itself; the service refuses it from anyone else too
    for method, body in (("PATCH", {"key": "mlflow.artifactLocation", "value": "file:///etc"}),
                         ("DELETE", {"key": "mlflow.trace.spansLocation"})):
        r = httpx.request(method, f"{service.url}/api/2.0/mlflow/traces/{trace_id}/tags", json=body)
        assert r.status_code == 400 and "kept by the service" in r.json()["message"], r.text
    assert client.get_trace(trace_id).data.spans  # still readable where the service put them


def test_assessments_feedback_expectations_overrides(service, client, experiment):
    trace_id = _one_trace(experiment)
    human = AssessmentSource(source_type="HUMAN", source_id="ann")
    fb = mlflow.log_feedback(trace_id=trace_id, name="relevance", value=0.75, source=human, rationale="mostly",
                             metadata={"round": "1"})
    ex = mlflow.log_expectation(trace_id=trace_id, name="expected", value={"answer": "42", "n": [1, 2]}, source=human)
    err = mlflow.log_feedback(trace_id=trace_id, name="judge",
                              error=mlflow.entities.AssessmentError(error_code="TIMEOUT", error_message="slow"))
    got = mlflow.get_assessment(trace_id, fb.assessment_id)
    assert (got.name, got.value, got.rationale, got.metadata, got.source.source_id) == (
        "relevance", 0.75, "mostly", {"round": "1"}, "ann")
    assert mlflow.get_assessment(trace_id, ex.assessment_id).value == {"answer": "42", "n": [1, 2]}
    assert mlflow.get_assessment(trace_id, err.assessment_id).error.error_code == "TIMEOUT"
    updated = mlflow.update_assessment(trace_id, fb.assessment_id,
                                       mlflow.entities.Feedback(name="relevance", value=0.9, rationale="better"))
    assert (updated.value, updated.rationale) == (0.9, "better")
    newer = mlflow.override_feedback(trace_id=trace_id, assessment_id=fb.assessment_id, value=1.0,
                                     rationale="re-judged")
    by_id = {a.assessment_id: a for a in client.get_trace(trace_id).info.assessments}
    assert set(by_id) == {fb.assessment_id, ex.assessment_id, err.assessment_id, newer.assessment_id}
    assert by_id[fb.assessment_id].valid is False and by_id[newer.assessment_id].overrides == fb.assessment_id
    mlflow.delete_assessment(trace_id, newer.assessment_id)
    assert mlflow.get_assessment(trace_id, fb.assessment_id).valid is True
    with pytest.raises(MlflowException) as missing:
        mlflow.get_assessment(trace_id, newer.assessment_id)
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_delete_by_ids_and_by_age_takes_the_spans_too(service, client, experiment):
    for i in range(4):
        pipeline(f"q{i}", k=1)
    exported()
    every = mlflow.search_traces(locations=[experiment], return_type="list")
    root = service.host.artifacts
    folder = f"default/{every[0].info.tags['mlflow.artifactLocation'].split(':/', 1)[1].rsplit('/artifacts', 1)[0]}"
    assert root.list(folder, recursive=True)
    assert client.delete_traces(experiment_id=experiment, trace_ids=[every[0].info.trace_id, "tr-" + "f" * 32]) == 1
    assert root.list(folder, recursive=True) == []
    with pytest.raises(MlflowException):
        client.get_trace(every[0].info.trace_id)
    oldest = every[-1].info.request_time
    assert client.delete_traces(experiment_id=experiment, max_timestamp_millis=oldest + 1, max_traces=5) >= 1
    left = {t.info.trace_id for t in mlflow.search_traces(locations=[experiment], return_type="list")}
    assert every[-1].info.trace_id not in left and every[1].info.trace_id in left


# ---- MLflow 2's routes, the raw protocol, bad input ---------------------------------------------------
def test_mlflow_2_start_end_info_and_search(service, client, experiment):
    store = client._tracing_client.store
    started = store.deprecated_start_trace_v2(experiment_id=experiment, timestamp_ms=1_700_000_000_000,
                                              request_metadata={"m": "1"}, tags={"t": "a"})
    assert started.status.name == "IN_PROGRESS" and not started.execution_time_ms
    ended = store.deprecated_end_trace_v2(request_id=started.request_id, timestamp_ms=1_700_000_000_250,
                                          status=TraceStatus.OK, request_metadata={"n": "2"},
                                          tags={"u": "b"})
    assert (ended.status.name, ended.execution_time_ms) == ("OK", 250)
    assert (ended.request_metadata["m"], ended.request_metadata["n"], ended.tags["t"], ended.tags["u"]) == (
        "1", "2", "a", "b")
    with service.http() as http:
        info = http.get(f"/api/2.0/mlflow/traces/{started.request_id}/info").json()["trace_info"]
        assert (info["status"], info["execution_time_ms"], info["experiment_id"]) == ("OK", 250, experiment)
        found = http.get("/api/2.0/mlflow/traces", params={"experiment_ids": [experiment],
                                                           "filter": "tags.u = 'b'"}).json()
        assert [t["request_id"] for t in found["traces"]] == [started.request_id]
        v3 = http.get(f"/api/3.0/mlflow/traces/{started.request_id}").json()["trace"]["trace_info"]
        assert (v3["state"], v3["execution_duration"], v3["request_time"]) == ("OK", "0.250s",
                                                                             "2023-11-14T22:13:20.000Z")


def test_version_is_plain_text_below_otlp_span_logging(service):
    r = httpx.get(f"{service.url}/version")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    from packaging.version import Version

    assert Version(r.text) < Version("3.4")  # the client then uploads spans as an artifact, which is kept here


def test_a_trace_the_service_refuses_is_a_client_warning_not_a_silent_loss(service, client, experiment,
                                                                          mlflow_warnings):
    client.delete_experiment(experiment)
    with mlflow.start_span("too-late") as span:
        span.set_inputs(1)
    exported()
    assert any("Failed to send trace" in m and "must be in the 'active' state" in m
               for m in mlflow_warnings.messages()), mlflow_warnings.messages()
    client.restore_experiment(experiment)
    assert mlflow.search_traces(locations=[experiment], return_type="list") == []


TRACE = {"trace_id": "tr-" + "a" * 32, "trace_location": {"type": "MLFLOW_EXPERIMENT",
                                                         "mlflow_experiment": {"experiment_id": "0"}},
         "request_time": "2026-01-02T03:04:05.678Z", "execution_duration": "0.5s", "state": "OK"}


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {**TRACE, "trace_id": "../../etc"}}}),
    ("POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {**TRACE, "request_time": "yesterday"}}}),
    ("POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {**TRACE, "request_time": "1969-12-31T23:59:59Z"}}}),
    ("POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {**TRACE, "request_time": "2026-13-40T00:00:00Z"}}}),
    ("POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {**TRACE, "execution_duration": "-1s"}}}),
    ("POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {**TRACE, "state": "DONE"}}}),
    ("POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {**TRACE, "trace_location": {
        "type": "INFERENCE_TABLE", "inference_table": {"full_table_name": "a.b.c"}}}}}),
    ("POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {**TRACE, "tags": {"k": 5}}}}),
    ("POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {**TRACE, "trace_location": {
        "mlflow_experiment": {"experiment_id": "987654"}}}}}),
    ("POST", "/api/3.0/mlflow/traces", {"trace": {}}),
    ("POST", "/api/2.0/mlflow/traces", {"experiment_id": "0"}),
    ("POST", "/api/3.0/mlflow/traces", [1, 2]),
    ("PATCH", "/api/2.0/mlflow/traces/tr-nope", {"timestamp_ms": 5, "status": "OK"}),
    ("GET", "/api/3.0/mlflow/traces/tr-nope", None),
    ("GET", "/api/3.0/mlflow/traces/get?trace_id=..%2Fx", None),
    ("GET", "/api/2.0/mlflow/traces/tr-nope/info", None),
    ("POST", "/api/3.0/mlflow/traces/search", {"locations": [{"type": "INFERENCE_TABLE"}]}),
    ("POST", "/api/3.0/mlflow/traces/search", {"locations": [{"mlflow_experiment": {"experiment_id": "0"}}],
                                               "max_results": 0}),
    ("POST", "/api/3.0/mlflow/traces/search", {"locations": [{"mlflow_experiment": {"experiment_id": "0"}}],
                                               "page_token": "garbage"}),
    ("POST", "/api/3.0/mlflow/traces/search", {"locations": [{"mlflow_experiment": {"experiment_id": "0"}}],
                                               "order_by": ["span.name"]}),
    ("POST", "/api/2.0/mlflow/traces/delete-traces", {"experiment_id": "0"}),
    ("PATCH", "/api/2.0/mlflow/traces/tr-nope/tags", {"key": "a", "value": "b"}),
    ("PATCH", "/api/2.0/mlflow/traces/tr-nope/tags", {"value": "b"}),
    ("DELETE", "/api/2.0/mlflow/traces/tr-nope/tags", {"key": "a"}),
    ("POST", "/api/3.0/mlflow/traces/tr-nope/assessments", {"assessment": {"assessment_name": "q",
                                                                           "feedback": {"value": 1}}}),
    ("POST", "/api/3.0/mlflow/traces/tr-nope/assessments", {"assessment": {"assessment_name": "q"}}),
    ("GET", "/api/3.0/mlflow/traces/tr-nope/assessments/a-nope", None),
    ("PATCH", "/api/3.0/mlflow/traces/tr-nope/assessments/a-nope", {"assessment": {}, "update_mask": "valid"}),
    ("DELETE", "/api/3.0/mlflow/traces/tr-nope/assessments/a-nope", None),
    ("POST", "/api/3.0/mlflow/traces/metrics", {}),
    ("POST", "/api/3.0/mlflow/traces/link-to-run", {"trace_ids": ["tr-x"], "run_id": "r"}),
    ("GET", "/api/3.0/mlflow/traces/tr-nope/unknown/thing", None),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/traces/tr-nope/artifacts/traces.json", "x"),
])
def test_bad_trace_requests_get_mlflow_errors_never_500(service, method, path, body):
    content = json.dumps(body).encode() if not isinstance(body, str) and body is not None else (body or "").encode()
    r = httpx.request(method, service.url + path, content=content, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    payload = r.json()
    assert set(payload) == {"error_code", "message"} and payload["message"]
    assert payload["error_code"] in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "ENDPOINT_NOT_FOUND")


def test_assessment_updates_refuse_what_cannot_change(service, client, experiment):
    trace_id = _one_trace(experiment)
    fb = mlflow.log_feedback(trace_id=trace_id, name="q", value=True)
    base = f"{service.url}/api/3.0/mlflow/traces/{trace_id}/assessments/{fb.assessment_id}"
    for body in ({"assessment": {"expectation": {"value": 1}}, "update_mask": "expectation"},  # a feedback stays one
                 {"assessment": {"assessment_name": ""}, "update_mask": "assessmentName"},
                 {"assessment": {}, "update_mask": "trace_id"},
                 {"assessment": {}, "update_mask": ""}):
        r = httpx.patch(base, json=body)
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", (body, r.text)
    assert mlflow.get_assessment(trace_id, fb.assessment_id).value is True
