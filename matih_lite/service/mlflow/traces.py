"""MLflow 3's tracing routes: traces (V3 and MLflow 2's fallbacks), search, get, delete, tags and assessments.

The client exports a finished trace in two steps: ``POST /api/3.0/mlflow/traces`` with the trace's
info (the answer carries the ``mlflow.artifactLocation`` tag), then a PUT of its spans as
``traces.json`` through the proxied artifacts (:mod:`.artifacts`). ``GET /version`` names this
service's version, which is below MLflow 3.4, so the client does not try OTLP span logging and
uploads the spans that way. The records and their rules are the tracking domain's
(:class:`~matih_lite.tracking.traces.Traces`); this module only translates protobuf JSON
(times as RFC 3339 strings, durations as ``"0.463s"``, spans as OpenTelemetry's ``Span``).
"""

from __future__ import annotations

import calendar
import json
import re
from datetime import datetime, timezone
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post, route
from litestar.params import FromPath, FromQuery, JSONBody

from matih_lite.contracts.traces import Assessment, TraceInfo
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.service.mlflow.api import (
    EXCEPTION_HANDLERS,
    KeyValue,
    MlflowApiError,
    drop_none,
    kv,
    required,
    result_limit,
)
from matih_lite.service.mlflow.scope import Scope, scope
from matih_lite.service.tracking import DEPENDENCIES, PrincipalDep, TrackingDep

PREFIXES = ("/api/2.0/mlflow/traces", "/api/3.0/mlflow/traces")
STATES = ("STATE_UNSPECIFIED", "OK", "ERROR", "IN_PROGRESS")
"""The ``TraceInfoV3.State`` enum, in number order."""
V2_STATUSES = ("TRACE_STATUS_UNSPECIFIED", "OK", "ERROR", "IN_PROGRESS")
"""MLflow 2's ``TraceStatus`` enum, in number order."""
SOURCE_TYPES = ("SOURCE_TYPE_UNSPECIFIED", "HUMAN", "LLM_JUDGE", "CODE")
ASSESSMENT_KINDS = ("feedback", "expectation", "issue")
UPDATE_FIELDS = {"assessment_name": "name", "assessmentName": "name", "feedback": "body", "expectation": "body",
                 "issue": "body", "rationale": "rationale", "metadata": "metadata", "error": "error",
                 "valid": "valid"}
_TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_DURATION = re.compile(r"(\d{1,12})(?:\.(\d{1,9}))?s")


def routes(suffix: str = "") -> list[str]:
    """A trace route under both prefixes the client uses (``/api/2.0/...`` and ``/api/3.0/...``)."""
    return [f"{p}{suffix}" for p in PREFIXES]


# ---- protobuf JSON times ---------------------------------------------------------------------------------
def timestamp_ms(value: Any, name: str) -> int:
    """A protobuf ``Timestamp`` in JSON (``"2026-01-02T03:04:05.678Z"``) as milliseconds since the epoch."""
    m = _TIMESTAMP.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidInput(f"{name} must be an RFC 3339 time such as '2026-01-02T03:04:05.678Z', got {value!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        seconds = calendar.timegm(datetime(year, month, day, hour, minute, second).timetuple())
    except ValueError as exc:
        raise InvalidInput(f"{name} {value!r} is not a valid time: {exc}") from None
    zone = m.group(8)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    ms = seconds * 1000 + int((m.group(7) or "0").ljust(3, "0")[:3])
    if ms < 0:
        raise InvalidInput(f"{name} {value!r} is before 1970")
    return ms


def duration_ms(value: Any, name: str) -> int:
    """A protobuf ``Duration`` in JSON (``"0.463s"``) as milliseconds."""
    m = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidInput(f"{name} must be a duration such as '0.463s' (not negative), got {value!r}")
    return int(m.group(1)) * 1000 + int((m.group(2) or "0").ljust(3, "0")[:3])


def timestamp_json(ms: int) -> str:
    """Milliseconds since the epoch as a protobuf ``Timestamp`` in JSON."""
    seconds, millis = divmod(int(ms), 1000)
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def duration_json(ms: int) -> str:
    """Milliseconds as a protobuf ``Duration`` in JSON."""
    seconds, millis = divmod(int(ms), 1000)
    return f"{seconds}.{millis:03d}s"


def _enum(value: Any, names: tuple[str, ...], what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    if isinstance(value, str) and value in names:
        return value
    raise InvalidInput(f"invalid {what} {value!r}; use one of {', '.join(names)}")


# ---- request bodies (protobuf JSON; fields the client may add and we do not use are ignored) ----------
class ExperimentLocationIn(msgspec.Struct):
    experiment_id: str | None = None


class LocationIn(msgspec.Struct):
    type: str | int | None = None
    mlflow_experiment: ExperimentLocationIn | None = None
    inference_table: dict[str, Any] | None = None


class SourceIn(msgspec.Struct):
    source_type: str | int | None = None
    source_id: str | None = None


class AssessmentIn(msgspec.Struct):
    assessment_id: str | None = None
    assessment_name: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    source: SourceIn | None = None
    create_time: str | None = None
    last_update_time: str | None = None
    feedback: dict[str, Any] | None = None
    expectation: dict[str, Any] | None = None
    issue: dict[str, Any] | None = None
    rationale: str | None = None
    error: dict[str, Any] | None = None
    metadata: dict[str, str] = {}
    overrides: str | None = None
    valid: bool | None = None


class TraceInfoIn(msgspec.Struct):
    trace_id: str | None = None
    client_request_id: str | None = None
    trace_location: LocationIn | None = None
    request: str | None = None
    response: str | None = None
    request_preview: str | None = None
    response_preview: str | None = None
    request_time: str | None = None
    execution_duration: str | None = None
    state: str | int | None = None
    trace_metadata: dict[str, str] = {}
    assessments: list[AssessmentIn] = []
    tags: dict[str, str] = {}


class TraceIn(msgspec.Struct):
    trace_info: TraceInfoIn | None = None


class StartTraceIn(msgspec.Struct):
    """MLflow 3's ``StartTraceV3`` (``trace``), or MLflow 2's ``StartTrace`` (the other fields)."""

    trace: TraceIn | None = None
    experiment_id: str | None = None
    timestamp_ms: int | None = None
    request_metadata: list[KeyValue] = []
    tags: list[KeyValue] = []


class EndTraceIn(msgspec.Struct):
    request_id: str | None = None
    timestamp_ms: int | None = None
    status: str | int | None = None
    request_metadata: list[KeyValue] = []
    tags: list[KeyValue] = []


class SearchTracesIn(msgspec.Struct):
    locations: list[LocationIn] = []
    experiment_ids: list[str] = []
    filter: str | None = None
    max_results: int | None = None
    order_by: list[str] = []
    page_token: str | None = None


class DeleteTracesIn(msgspec.Struct):
    experiment_id: str | None = None
    max_timestamp_millis: int | None = None
    max_traces: int | None = None
    request_ids: list[str] = []


class BatchGetIn(msgspec.Struct):
    trace_ids: list[str] = []
    experiment_ids: list[str] = []


class TraceTagIn(msgspec.Struct):
    key: str | None = None
    value: str | None = None


class CreateAssessmentIn(msgspec.Struct):
    assessment: AssessmentIn | None = None


class UpdateAssessmentIn(msgspec.Struct):
    assessment: AssessmentIn | None = None
    update_mask: str | dict[str, Any] | None = None


# ---- answers -----------------------------------------------------------------------------------------
def assessment_json(a: Assessment) -> dict[str, Any]:
    """An assessment as MLflow's ``assessments.Assessment``."""
    out: dict[str, Any] = drop_none({
        "assessment_id": a.assessment_id, "assessment_name": a.name, "trace_id": a.trace_id, "span_id": a.span_id,
        "source": {"source_type": a.source_type, "source_id": a.source_id},
        "create_time": timestamp_json(a.create_time), "last_update_time": timestamp_json(a.last_update_time),
        "rationale": a.rationale, "overrides": a.overrides, "valid": a.valid,
        "error": json.loads(a.error) if a.error else None, "metadata": a.metadata or None})
    out[a.kind] = json.loads(a.body)
    return out


def trace_info_json(t: TraceInfo, s: Scope) -> dict[str, Any]:
    """A trace as MLflow 3's ``TraceInfoV3``."""
    return drop_none({
        "trace_id": t.trace_id, "client_request_id": t.client_request_id,
        "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": s.external(
            t.experiment_id)}},
        "request_preview": t.request_preview, "response_preview": t.response_preview,
        "request_time": timestamp_json(t.request_time),
        "execution_duration": None if t.execution_duration is None else duration_json(t.execution_duration),
        "state": t.state, "trace_metadata": t.metadata, "tags": t.tags,
        "assessments": [assessment_json(a) for a in t.assessments]})


def trace_info_v2_json(t: TraceInfo, s: Scope) -> dict[str, Any]:
    """A trace as MLflow 2's ``TraceInfo``."""
    return drop_none({
        "request_id": t.trace_id, "experiment_id": s.external(t.experiment_id), "timestamp_ms": t.request_time,
        "execution_time_ms": t.execution_duration,
        "status": "TRACE_STATUS_UNSPECIFIED" if t.state == "STATE_UNSPECIFIED" else t.state,
        "request_metadata": kv(t.metadata), "tags": kv(t.tags)})


def any_value(value: Any) -> dict[str, Any]:
    """A JSON value as OpenTelemetry's ``AnyValue`` in protobuf JSON."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"bool_value": value}
    if isinstance(value, int):
        return {"int_value": str(value)}
    if isinstance(value, float):
        return {"double_value": value if value == value and abs(value) != float("inf")
                else ("NaN" if value != value else "Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, str):
        return {"string_value": value}
    if isinstance(value, list):
        return {"array_value": {"values": [any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlist_value": {"values": [{"key": str(k), "value": any_value(v)} for k, v in value.items()]}}
    return {"string_value": str(value)}


def _attributes(items: Any, *, encoded: bool) -> list[dict[str, Any]]:
    out = []
    for key, raw in (items or {}).items():
        value = raw
        if encoded and isinstance(raw, str):
            try:
                value = json.loads(raw)  # MLflow keeps each span attribute as JSON text
            except ValueError:
                value = raw
        out.append({"key": str(key), "value": any_value(value)})
    return out


def span_json(span: dict[str, Any]) -> dict[str, Any]:
    """One span as the client uploaded it (MLflow's span dict) as OpenTelemetry's ``Span`` in protobuf JSON."""
    status = span.get("status") or {}
    return drop_none({
        "trace_id": span.get("trace_id"), "span_id": span.get("span_id"), "parent_span_id": span.get("parent_span_id"),
        "name": span.get("name"), "start_time_unix_nano": str(int(span.get("start_time_unix_nano") or 0)),
        "end_time_unix_nano": None if span.get("end_time_unix_nano") is None else str(int(span["end_time_unix_nano"])),
        "attributes": _attributes(span.get("attributes"), encoded=True),
        "status": drop_none({"code": status.get("code") or "STATUS_CODE_UNSET", "message": status.get("message")}),
        "events": [drop_none({"name": e.get("name"), "time_unix_nano": str(int(e.get("time_unix_nano") or 0)),
                              "attributes": _attributes(e.get("attributes"), encoded=False)})
                   for e in span.get("events") or [] if isinstance(e, dict)]})


def trace_json(t: TraceInfo, s: Scope) -> dict[str, Any]:
    """A trace with its spans as MLflow's ``Trace``."""
    return {"trace_info": trace_info_json(t, s), "spans": [span_json(sp) for sp in s.traces.spans(t)]}


# ---- translation in ------------------------------------------------------------------------------------
def _experiment_of(s: Scope, location: LocationIn | None) -> str:
    if location is None or location.mlflow_experiment is None:
        if location is not None and (location.inference_table is not None or location.type == "INFERENCE_TABLE"):
            raise InvalidInput("traces are kept in MLflow experiments here, not in inference tables")
        raise InvalidInput("Missing value for required parameter 'trace_location.mlflow_experiment.experiment_id'.")
    return s.internal(location.mlflow_experiment.experiment_id)


def _assessment_in(a: AssessmentIn, trace_id: str | None = None) -> Assessment:
    kinds = [k for k in ASSESSMENT_KINDS if getattr(a, k) is not None]
    if len(kinds) != 1:
        raise InvalidInput("an assessment holds exactly one of feedback, expectation or issue")
    source = a.source or SourceIn()
    created = timestamp_ms(a.create_time, "create_time") if a.create_time else 0
    return Assessment(
        assessment_id="", trace_id=trace_id or str(required(a.trace_id, "assessment.trace_id")),
        name=required(a.assessment_name, "assessment.assessment_name"), kind=kinds[0],  # type: ignore[arg-type]
        body=json.dumps(getattr(a, kinds[0])), span_id=a.span_id or None,
        source_type=_enum(source.source_type or "SOURCE_TYPE_UNSPECIFIED", SOURCE_TYPES, "source type"),
        source_id=source.source_id or "", rationale=a.rationale, error=json.dumps(a.error) if a.error else None,
        metadata=dict(a.metadata), overrides=a.overrides or None, valid=True if a.valid is None else a.valid,
        create_time=created,
        last_update_time=timestamp_ms(a.last_update_time, "last_update_time") if a.last_update_time else created)


def _trace_in(s: Scope, info: TraceInfoIn) -> TraceInfo:
    return TraceInfo(
        trace_id=str(required(info.trace_id, "trace.trace_info.trace_id")), tenant=s.tenant,
        experiment_id=_experiment_of(s, info.trace_location),
        request_time=timestamp_ms(required(info.request_time, "trace.trace_info.request_time"), "request_time"),
        execution_duration=duration_ms(info.execution_duration, "execution_duration")
        if info.execution_duration else None,
        state=_enum(info.state if info.state is not None else "STATE_UNSPECIFIED", STATES, "trace state"),
        client_request_id=info.client_request_id or None,
        request_preview=info.request_preview if info.request_preview is not None else info.request,
        response_preview=info.response_preview if info.response_preview is not None else info.response,
        tags=dict(info.tags), metadata=dict(info.trace_metadata),
        assessments=[_assessment_in(a, info.trace_id) for a in info.assessments])


def _pairs(items: list[KeyValue]) -> dict[str, str]:
    return {str(required(i.key, "key")): "" if i.value is None else i.value for i in items}


def _experiments(s: Scope, ids: list[str]) -> list[str]:
    found = []
    for eid in ids:
        try:
            found.append(s.internal(eid, create=False))
        except NotFound:
            continue  # no Default experiment yet: it holds no traces
    return found


def _search(s: Scope, experiment_ids: list[str], data: SearchTracesIn) -> tuple[list[TraceInfo], str | None]:
    page = s.traces.search(s.tenant, _experiments(s, experiment_ids), filter=data.filter, order_by=data.order_by,
                           max_results=result_limit(data.max_results, 100), page_token=data.page_token or None)
    return page.items, page.next_token


class MlflowTraces(Controller):
    """``/api/2.0/mlflow/traces`` and ``/api/3.0/mlflow/traces``."""

    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @post(routes(), sync_to_thread=True, status_code=200)
    def start(self, data: JSONBody[StartTraceIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        """MLflow 3's StartTraceV3 (called once the trace has ended), or MLflow 2's StartTrace."""
        s = scope(tracking, principal)
        if data.trace is not None:
            info = _trace_in(s, required(data.trace.trace_info, "trace.trace_info"))
            return {"trace": {"trace_info": trace_info_json(s.traces.start(s.tenant, info), s)}}
        started = s.traces.begin(s.tenant, s.internal(data.experiment_id),
                                 int(required(data.timestamp_ms, "timestamp_ms")),
                                 metadata=_pairs(data.request_metadata), tags=_pairs(data.tags))
        return {"trace_info": trace_info_v2_json(started, s)}

    @patch(routes("/{trace_id:str}"), sync_to_thread=True)
    def end(self, trace_id: FromPath[str], data: JSONBody[EndTraceIn], tracking: TrackingDep,
            principal: PrincipalDep) -> dict[str, Any]:
        """MLflow 2's EndTrace."""
        s = scope(tracking, principal)
        status = _enum(required(data.status, "status"), V2_STATUSES, "trace status")
        ended = s.traces.end(s.tenant, trace_id, int(required(data.timestamp_ms, "timestamp_ms")),
                             "STATE_UNSPECIFIED" if status == "TRACE_STATUS_UNSPECIFIED" else status,
                             metadata=_pairs(data.request_metadata), tags=_pairs(data.tags))
        return {"trace_info": trace_info_v2_json(ended, s)}

    @get(routes("/{trace_id:str}"), sync_to_thread=True)
    def info(self, trace_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        """MLflow 3's GetTraceInfoV3."""
        s = scope(tracking, principal)
        return {"trace": {"trace_info": trace_info_json(s.traces.get(s.tenant, trace_id), s)}}

    @get(routes("/{trace_id:str}/info"), sync_to_thread=True)
    def info_v2(self, trace_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        """MLflow 2's GetTraceInfo."""
        s = scope(tracking, principal)
        return {"trace_info": trace_info_v2_json(s.traces.get(s.tenant, trace_id), s)}

    @post(routes("/search"), sync_to_thread=True, status_code=200)
    def search(self, data: JSONBody[SearchTracesIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        """MLflow 3's SearchTracesV3 over experiment locations."""
        s = scope(tracking, principal)
        ids = list(data.experiment_ids)
        for location in data.locations:
            if location.mlflow_experiment is None:
                raise InvalidInput("traces are searched in MLflow experiments here (trace locations of type "
                                   "MLFLOW_EXPERIMENT)")
            ids.append(str(required(location.mlflow_experiment.experiment_id, "experiment_id")))
        found, token = _search(s, ids, data)
        return drop_none({"traces": [trace_info_json(t, s) for t in found], "next_page_token": token})

    @get(routes(), sync_to_thread=True)
    def search_v2(self, tracking: TrackingDep, principal: PrincipalDep,
                  experiment_ids: FromQuery[list[str] | None] = None, filter: FromQuery[str | None] = None,
                  max_results: FromQuery[int | None] = None, order_by: FromQuery[list[str] | None] = None,
                  page_token: FromQuery[str | None] = None) -> dict[str, Any]:
        """MLflow 2's SearchTraces."""
        s = scope(tracking, principal)
        data = SearchTracesIn(filter=filter, max_results=max_results, order_by=order_by or [], page_token=page_token)
        found, token = _search(s, list(experiment_ids or []), data)
        return drop_none({"traces": [trace_info_v2_json(t, s) for t in found], "next_page_token": token})

    @post(routes("/delete-traces"), sync_to_thread=True, status_code=200)
    def remove(self, data: JSONBody[DeleteTracesIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        """DeleteTraces: by ids, or the oldest up to a time."""
        s = scope(tracking, principal)
        try:
            experiment_id = s.internal(data.experiment_id, create=False)
        except NotFound:
            return {"traces_deleted": 0}
        deleted = s.traces.delete(s.tenant, experiment_id, trace_ids=data.request_ids or None,
                                  max_request_time=data.max_timestamp_millis if not data.request_ids else None,
                                  max_traces=data.max_traces or None)
        return {"traces_deleted": deleted}

    @post(routes("/batchGetInfos"), sync_to_thread=True, status_code=200)
    def batch_infos(self, data: JSONBody[BatchGetIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        """BatchGetTraceInfos: the infos of the traces named (those this tenant holds)."""
        s = scope(tracking, principal)
        found = s.traces.get_many(s.tenant, data.trace_ids,
                                  _experiments(s, data.experiment_ids) if data.experiment_ids else None)
        return {"trace_infos": [trace_info_json(t, s) for t in found]}

    @get(routes("/get"), sync_to_thread=True)
    def read(self, tracking: TrackingDep, principal: PrincipalDep, trace_id: FromQuery[str | None] = None,
             allow_partial: FromQuery[bool] = False) -> dict[str, Any]:
        """GetTrace: the info and the spans (all of them: a trace here is stored once it has ended)."""
        s = scope(tracking, principal)
        return {"trace": trace_json(s.traces.get(s.tenant, required(trace_id, "trace_id")), s)}

    @get(routes("/batchGet"), sync_to_thread=True)
    def batch(self, tracking: TrackingDep, principal: PrincipalDep, trace_ids: FromQuery[list[str] | None] = None,
              experiment_ids: FromQuery[list[str] | None] = None) -> dict[str, Any]:
        """BatchGetTraces: infos and spans of the traces named (those this tenant holds)."""
        s = scope(tracking, principal)
        found = s.traces.get_many(s.tenant, trace_ids or [],
                                  _experiments(s, experiment_ids) if experiment_ids else None)
        return {"traces": [trace_json(t, s) for t in found]}

    @patch(routes("/{trace_id:str}/tags"), sync_to_thread=True)
    def set_tag(self, trace_id: FromPath[str], data: JSONBody[TraceTagIn], tracking: TrackingDep,
                principal: PrincipalDep) -> dict[str, Any]:
        """SetTraceTag."""
        s = scope(tracking, principal)
        s.traces.set_tag(s.tenant, trace_id, required(data.key, "key"), data.value)
        return {}

    @delete(routes("/{trace_id:str}/tags"), sync_to_thread=True, status_code=200)
    def delete_tag(self, trace_id: FromPath[str], data: JSONBody[TraceTagIn], tracking: TrackingDep,
                   principal: PrincipalDep) -> dict[str, Any]:
        """DeleteTraceTag (the key in the body, as the client sends it)."""
        s = scope(tracking, principal)
        s.traces.delete_tag(s.tenant, trace_id, required(data.key, "key"))
        return {}

    @post(routes("/{trace_id:str}/assessments"), sync_to_thread=True, status_code=200)
    def create_assessment(self, trace_id: FromPath[str], data: JSONBody[CreateAssessmentIn], tracking: TrackingDep,
                          principal: PrincipalDep) -> dict[str, Any]:
        """CreateAssessment."""
        s = scope(tracking, principal)
        made = s.traces.create_assessment(s.tenant, _assessment_in(required(data.assessment, "assessment"), trace_id))
        return {"assessment": assessment_json(made)}

    @get(routes("/{trace_id:str}/assessments/{assessment_id:str}"), sync_to_thread=True)
    def get_assessment(self, trace_id: FromPath[str], assessment_id: FromPath[str], tracking: TrackingDep,
                       principal: PrincipalDep) -> dict[str, Any]:
        """GetAssessment."""
        s = scope(tracking, principal)
        return {"assessment": assessment_json(s.traces.get_assessment(s.tenant, trace_id, assessment_id))}

    @patch(routes("/{trace_id:str}/assessments/{assessment_id:str}"), sync_to_thread=True)
    def update_assessment(self, trace_id: FromPath[str], assessment_id: FromPath[str],
                          data: JSONBody[UpdateAssessmentIn], tracking: TrackingDep,
                          principal: PrincipalDep) -> dict[str, Any]:
        """UpdateAssessment: the fields its ``update_mask`` names."""
        s = scope(tracking, principal)
        given = required(data.assessment, "assessment")
        mask = data.update_mask
        paths = mask.get("paths", []) if isinstance(mask, dict) else [p.strip() for p in (mask or "").split(",")]
        changes: dict[str, Any] = {}
        for path in filter(None, paths):
            field = UPDATE_FIELDS.get(path)
            if field is None:
                raise InvalidInput(f"cannot update {path!r} of an assessment; the update_mask may name "
                                   "assessment_name, feedback, expectation, rationale and metadata")
            if field == "name":
                changes["name"] = required(given.assessment_name, "assessment.assessment_name")
            elif field == "body":
                value = getattr(given, path)
                if value is None:
                    raise InvalidInput(f"the update_mask names {path!r} but the assessment holds none")
                changes["kind"], changes["body"] = path, json.dumps(value)
            elif field == "error":
                changes["error"] = json.dumps(given.error) if given.error else None
            elif field == "metadata":
                changes["metadata"] = dict(given.metadata)
            else:
                changes[field] = getattr(given, field)
        if not changes:
            raise InvalidInput("the update_mask names no field to update")
        return {"assessment": assessment_json(s.traces.update_assessment(s.tenant, trace_id, assessment_id,
                                                                         **changes))}

    @delete(routes("/{trace_id:str}/assessments/{assessment_id:str}"), sync_to_thread=True, status_code=200)
    def delete_assessment(self, trace_id: FromPath[str], assessment_id: FromPath[str], tracking: TrackingDep,
                          principal: PrincipalDep) -> dict[str, Any]:
        """DeleteAssessment."""
        s = scope(tracking, principal)
        s.traces.delete_assessment(s.tenant, trace_id, assessment_id)
        return {}

    @route(routes("/{trace_id:str}"), http_method=["POST", "PUT", "DELETE"], sync_to_thread=False, status_code=404)
    def not_served(self, request: Request, trace_id: FromPath[str]) -> None:
        """Trace endpoints not served here (trace metrics, filter correlation, prompt links, links to runs):
        ENDPOINT_NOT_FOUND, as for any other endpoint, instead of a method error."""
        raise _endpoint_not_found(request)

    @route(routes("/{trace_id:str}/{rest:path}"), http_method=["GET", "POST", "PUT", "PATCH", "DELETE"],
           sync_to_thread=False, status_code=404)
    def not_served_below(self, request: Request, trace_id: FromPath[str], rest: FromPath[str]) -> None:
        """The router does not fall back past a path parameter, so the catch-all repeats under one."""
        raise _endpoint_not_found(request)


def _endpoint_not_found(request: Request) -> MlflowApiError:
    return MlflowApiError("ENDPOINT_NOT_FOUND", f"{request.method} {request.url.path} is not served by "
                          "matih-lite's MLflow-compatible API", 404)
