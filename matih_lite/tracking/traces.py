"""MLflow 3's traces, written once over the metadata and artifacts slots.

A trace (``tr-`` and 32 hex digits, chosen by the client) belongs to an experiment. Its record
(times, state, previews, tags, metadata, assessments) is the metadata slot's
(:class:`~matih_lite.contracts.traces.TraceStore`); its spans are the file the client uploads,
``traces.json``, in the artifacts slot at ``{tenant}/{experiment_id}/traces/{trace_id}/artifacts``:
the place the trace's ``mlflow.artifactLocation`` tag
(``mlflow-artifacts:/{experiment_id}/traces/{trace_id}/artifacts``) names, and where the
``mlflow.trace.spansLocation`` tag (``ARTIFACT_REPO``) tells the client to look.

MLflow's trace filter (``tags.`mlflow.traceName` = 'predict' AND timestamp_ms > 1700000000000``)
is parsed here into :class:`~matih_lite.contracts.traces.TraceClause` data; values are never
pasted into SQL. Filters on spans, assessments or prompts are refused with a clear message.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.contracts.records import Page
from matih_lite.contracts.traces import TRACE_STATES, Assessment, TraceClause, TraceInfo, TraceOrder
from matih_lite.errors import InvalidInput, MatihError, NotFound
from matih_lite.tracking.service import Tracking

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.tracking.traces")

TRACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
ASSESSMENT_ID = re.compile(r"^a-[0-9a-f]{32}$")
ARTIFACT_LOCATION_TAG = "mlflow.artifactLocation"
SPANS_LOCATION_TAG = "mlflow.trace.spansLocation"
SPANS_IN_ARTIFACTS = "ARTIFACT_REPO"
TRACE_NAME_TAG = "mlflow.traceName"
SOURCE_RUN_METADATA = "mlflow.sourceRun"
SPANS_FILE = "traces.json"
MAX_KEY = 250
MAX_VALUE = 8000
MAX_PREVIEW = 10_000
"""Previews longer than this are cut: the whole request and response are in the spans."""
MAX_ASSESSMENT_BODY = 1 << 20
MAX_RESULTS = 50_000
SOURCE_TYPES = ("SOURCE_TYPE_UNSPECIFIED", "HUMAN", "LLM_JUDGE", "CODE")
ASSESSMENT_KINDS = ("feedback", "expectation", "issue")
_SERVER_TAGS = (ARTIFACT_LOCATION_TAG, SPANS_LOCATION_TAG)


class Traces:
    """Traces and their assessments for one platform (a :class:`~matih_lite.host.Host`)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.tracking = Tracking(host)

    @property
    def store(self) -> Any:
        """The metadata slot."""
        return self.host.metadata

    @property
    def artifacts(self) -> Any:
        """The artifacts slot (the spans)."""
        return self.host.artifacts

    # ---- traces -------------------------------------------------------------------------------------
    def start(self, tenant: str, trace: TraceInfo) -> TraceInfo:
        """Record a trace (again, for a client's retry) in an active experiment of the tenant.

        Raises InvalidInput for a bad id, state, time or tag, NotFound for the experiment,
        Conflict when another tenant holds the id.
        """
        trace_id = _trace_id(trace.trace_id, missing=InvalidInput)
        exp = self.tracking.get_experiment(tenant, trace.experiment_id)
        if exp.lifecycle_stage != "active":
            raise InvalidInput(f"The experiment {trace.experiment_id} must be in the 'active' state. "
                               f"Current state is {exp.lifecycle_stage}.")
        if trace.state not in TRACE_STATES:
            raise InvalidInput(f"invalid trace state {trace.state!r}; use one of {', '.join(TRACE_STATES)}")
        _millis(trace.request_time, "request_time")
        if trace.execution_duration is not None:
            _millis(trace.execution_duration, "execution_duration")
        tags = _checked(trace.tags, "tag")
        tags.update(self._server_tags(exp.experiment_id, trace_id))
        assessments = [self._new_assessment(a, trace_id) for a in trace.assessments]
        return self.store.start_trace(msgspec.structs.replace(
            trace, trace_id=trace_id, tenant=tenant, experiment_id=exp.experiment_id, tags=tags,
            metadata=_checked(trace.metadata, "metadata"), assessments=assessments,
            client_request_id=_text(trace.client_request_id, "client_request_id"),
            request_preview=_preview(trace.request_preview), response_preview=_preview(trace.response_preview)))

    def begin(self, tenant: str, experiment_id: str, request_time: int, *, metadata: Mapping[str, str] | None = None,
              tags: Mapping[str, str] | None = None) -> TraceInfo:
        """MLflow 2's start: a new IN_PROGRESS trace with an id of our own, ended by :meth:`end`."""
        return self.start(tenant, TraceInfo(uuid.uuid4().hex, tenant, experiment_id, request_time, None, "IN_PROGRESS",
                                            tags=dict(tags or {}), metadata=dict(metadata or {})))

    def end(self, tenant: str, trace_id: str, end_time: int, state: str, *, metadata: Mapping[str, str] | None = None,
            tags: Mapping[str, str] | None = None) -> TraceInfo:
        """MLflow 2's end: the state and the duration (``end_time`` less the request time), tags and metadata merged."""
        trace = self.get(tenant, trace_id)
        _millis(end_time, "timestamp_ms")
        if end_time < trace.request_time:
            raise InvalidInput(f"the trace ends at {end_time}, before it started ({trace.request_time})")
        return self.start(tenant, msgspec.structs.replace(
            trace, state=state, execution_duration=end_time - trace.request_time, tags={**trace.tags, **(tags or {})},
            metadata={**trace.metadata, **(metadata or {})}, assessments=[]))

    def get(self, tenant: str, trace_id: Any) -> TraceInfo:
        """Raises NotFound (for an id that cannot be a trace's too)."""
        return self.store.get_trace(tenant, _trace_id(trace_id))

    def get_many(self, tenant: str, trace_ids: Sequence[Any], experiment_ids: Sequence[str] | None = None
                 ) -> list[TraceInfo]:
        """The tenant's traces among ``trace_ids`` (in those experiments, when given); others are left out."""
        ids = [t for t in trace_ids if isinstance(t, str) and TRACE_ID.match(t)]
        found = self.store.get_traces(tenant, ids) if ids else []
        if experiment_ids is not None:
            wanted = {str(e) for e in experiment_ids}
            found = [t for t in found if t.experiment_id in wanted]
        return found

    def search(self, tenant: str, experiment_ids: Sequence[str], *, filter: str | None = None,
               order_by: Sequence[str] = (), max_results: int = 100, page_token: str | None = None) -> Page[TraceInfo]:
        """Traces of the experiments matching MLflow's trace filter, newest first unless ``order_by`` says."""
        if not isinstance(max_results, int) or isinstance(max_results, bool) or not 1 <= max_results <= MAX_RESULTS:
            raise InvalidInput(f"max_results must be between 1 and {MAX_RESULTS}, got {max_results!r}")
        return self.store.search_traces(tenant, [str(e) for e in experiment_ids], clauses=parse_trace_filter(filter),
                                        order_by=parse_trace_order(order_by), max_results=max_results,
                                        page_token=page_token)

    def delete(self, tenant: str, experiment_id: str, *, trace_ids: Sequence[str] | None = None,
               max_request_time: int | None = None, max_traces: int | None = None) -> int:
        """Delete traces of the experiment by id, or the oldest up to a time; their spans go too. Returns how many."""
        if (trace_ids is None) == (max_request_time is None):
            raise InvalidInput("delete traces either by their ids (request_ids) or by age (max_timestamp_millis), "
                               "not both and not neither")
        if max_request_time is not None:
            _millis(max_request_time, "max_timestamp_millis")
        if trace_ids is not None:
            trace_ids = [t for t in trace_ids if isinstance(t, str) and TRACE_ID.match(t)]
        gone = self.store.delete_traces(tenant, str(experiment_id), trace_ids=trace_ids,
                                        max_request_time=max_request_time, max_traces=max_traces)
        for trace_id in gone:
            folder = f"{tenant}/{experiment_id}/traces/{trace_id}"
            try:
                self.artifacts.delete(folder)  # 0 files when the spans were never uploaded
            except MatihError as exc:  # the record is gone; leftover files only take space
                log.warning("trace %s is deleted but its files in %s could not be: %s", trace_id, folder, exc)
        return len(gone)

    def set_tag(self, tenant: str, trace_id: str, key: Any, value: Any) -> None:
        """Set a tag (not the ones the service keeps). Raises InvalidInput, NotFound."""
        tags = _checked({key: "" if value is None else value}, "tag")
        if key in _SERVER_TAGS:
            raise InvalidInput(f"tag {key!r} is kept by the service and cannot be changed")
        self.store.set_trace_tags(tenant, _trace_id(trace_id), tags)

    def delete_tag(self, tenant: str, trace_id: str, key: Any) -> None:
        """Raises NotFound for the trace or the tag; InvalidInput for the tags the service keeps."""
        if key in _SERVER_TAGS:
            raise InvalidInput(f"tag {key!r} is kept by the service and cannot be deleted")
        if not isinstance(key, str) or not key:
            raise InvalidInput("a trace tag key must be a non-empty string")
        self.store.delete_trace_tag(tenant, _trace_id(trace_id), key)

    # ---- spans ----------------------------------------------------------------------------------------
    def files_root(self, trace: TraceInfo) -> str:
        """Where the trace's files (its spans, attachments) are in the artifacts slot."""
        return f"{trace.tenant}/{trace.experiment_id}/traces/{trace.trace_id}/artifacts"

    def spans(self, trace: TraceInfo) -> list[dict[str, Any]]:
        """The spans the client uploaded (MLflow's span dicts), or [] when none were. Raises InvalidInput if corrupt."""
        try:
            data = self.artifacts.get(f"{self.files_root(trace)}/{SPANS_FILE}")
        except NotFound:
            return []
        try:
            doc = json.loads(data)
            spans = doc["spans"]
            if not isinstance(spans, list) or not all(isinstance(s, dict) for s in spans):
                raise TypeError("spans is not a list of objects")
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"the span data of trace {trace.trace_id} is not MLflow's trace JSON: {exc}") from None
        return spans

    # ---- assessments ------------------------------------------------------------------------------------
    def create_assessment(self, tenant: str, assessment: Assessment) -> Assessment:
        """A new assessment of the tenant's trace (an id of our own). Raises InvalidInput, NotFound."""
        trace = self.get(tenant, assessment.trace_id)
        return self.store.create_assessment(tenant, self._new_assessment(assessment, trace.trace_id))

    def get_assessment(self, tenant: str, trace_id: str, assessment_id: Any) -> Assessment:
        """Raises NotFound."""
        return self.store.get_assessment(tenant, _trace_id(trace_id), _assessment_id(assessment_id))

    def update_assessment(self, tenant: str, trace_id: str, assessment_id: Any, **changes: Any) -> Assessment:
        """Change ``name``, ``body`` (with ``kind``), ``rationale``, ``error``, ``metadata`` or ``valid``.

        Raises InvalidInput for an unknown field or a bad value, NotFound.
        """
        unknown = set(changes) - {"name", "kind", "body", "rationale", "error", "metadata", "valid"}
        if unknown:
            raise InvalidInput(f"cannot update {', '.join(sorted(unknown))} of an assessment; update its name, "
                               "feedback or expectation, rationale, error or metadata")
        current = self.get_assessment(tenant, trace_id, assessment_id)
        if "kind" in changes and changes["kind"] != current.kind:
            raise InvalidInput(f"assessment {current.assessment_id} is {current.kind!r}; it cannot become "
                               f"{changes['kind']!r}")
        updated = msgspec.structs.replace(current, **changes)
        self._check_assessment(updated)
        return self.store.update_assessment(tenant, updated)

    def delete_assessment(self, tenant: str, trace_id: str, assessment_id: Any) -> None:
        """Raises NotFound."""
        self.store.delete_assessment(tenant, _trace_id(trace_id), _assessment_id(assessment_id))

    # ---- inside -----------------------------------------------------------------------------------------
    @staticmethod
    def _server_tags(experiment_id: str, trace_id: str) -> dict[str, str]:
        return {ARTIFACT_LOCATION_TAG: f"mlflow-artifacts:/{experiment_id}/traces/{trace_id}/artifacts",
                SPANS_LOCATION_TAG: SPANS_IN_ARTIFACTS}

    def _new_assessment(self, a: Assessment, trace_id: str) -> Assessment:
        made = msgspec.structs.replace(a, assessment_id=f"a-{uuid.uuid4().hex}", trace_id=trace_id,
                                       overrides=_assessment_id(a.overrides) if a.overrides else None)
        self._check_assessment(made)
        return made

    @staticmethod
    def _check_assessment(a: Assessment) -> None:
        if not isinstance(a.name, str) or not a.name.strip() or len(a.name) > MAX_KEY:
            raise InvalidInput(f"an assessment needs a name of 1 to {MAX_KEY} characters")
        if a.kind not in ASSESSMENT_KINDS:
            raise InvalidInput(f"an assessment is a feedback, an expectation or an issue, not {a.kind!r}")
        if a.source_type not in SOURCE_TYPES:
            raise InvalidInput(f"invalid assessment source type {a.source_type!r}; use one of "
                               f"{', '.join(SOURCE_TYPES)}")
        for what, text in (("value", a.body), ("error", a.error), ("rationale", a.rationale)):
            if text is not None and len(text) > MAX_ASSESSMENT_BODY:
                raise InvalidInput(f"the assessment's {what} is {len(text)} characters; the limit is "
                                   f"{MAX_ASSESSMENT_BODY}")
        _checked(a.metadata, "assessment metadata")
        for what, text in (("source_id", a.source_id), ("span_id", a.span_id)):
            _text(text, what)


# ---- MLflow's trace filter ------------------------------------------------------------------------------
_ATTRIBUTES = {"request_id": "trace_id", "trace_id": "trace_id", "timestamp": "request_time",
               "timestamp_ms": "request_time", "execution_time": "execution_duration",
               "execution_time_ms": "execution_duration", "execution_duration": "execution_duration",
               "end_time": "end_time", "end_time_ms": "end_time", "status": "state", "state": "state",
               "client_request_id": "client_request_id"}
_NUMERIC = {"request_time", "execution_duration", "end_time"}
_MAPPED = {"name": ("tag", TRACE_NAME_TAG), "run_id": ("metadata", SOURCE_RUN_METADATA)}
_PREFIXES = {"attribute": "attribute", "attributes": "attribute", "trace": "attribute", "tag": "tag", "tags": "tag",
             "metadata": "metadata", "request_metadata": "metadata"}
_UNSUPPORTED = {"span": "spans", "feedback": "assessments", "expectation": "assessments", "assessment": "assessments",
                "issue": "issues", "prompt": "linked prompts", "text": "span contents"}
_STATES_V2 = {"TRACE_STATUS_UNSPECIFIED": "STATE_UNSPECIFIED"}
_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<bt>`[^`]*`)
  | (?P<op>!=|<>|>=|<=|=|<|>)
  | (?P<lp>\() | (?P<rp>\)) | (?P<comma>,)
  | (?P<num>[+-]?\d+(?![\w.]))
  | (?P<word>[A-Za-z_][\w.\-]*\.?)
)""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidInput(f"invalid trace filter at position {pos}: {text[pos:pos + 20]!r}")
        out.append((m.lastgroup or "", m.group(m.lastgroup or 0)))
        pos = m.end()
    return out


def _unquote(token: str) -> str:
    quote, body = token[0], token[1:-1]
    if quote == "`":
        return body
    return re.sub(r"\\(.)", r"\1", body.replace(quote * 2, quote))


def _column(tokens: list[tuple[str, str]], i: int, text: str) -> tuple[str, str, int]:
    """The (kind, key) a filter or an ordering names at ``tokens[i]``, and the index after it."""
    kind, tok = tokens[i]
    if kind == "bt":
        prefix, key, i = "attribute", _unquote(tok), i + 1
    elif kind == "word":
        prefix, dot, key = tok.partition(".")
        i += 1
        if not dot:
            prefix, key = "attribute", tok
        elif not key:  # tags.`mlflow.traceName` or tags."x"
            if i >= len(tokens) or tokens[i][0] not in ("bt", "str"):
                raise InvalidInput(f"invalid trace filter {text!r}: expected a key after {tok!r}")
            key = _unquote(tokens[i][1])
            i += 1
    else:
        raise InvalidInput(f"invalid trace filter {text!r}: expected a column, got {tok!r}")
    lowered = prefix.lower()
    if lowered in _UNSUPPORTED or (lowered in ("attribute", "attributes", "trace") and key in _UNSUPPORTED):
        what = _UNSUPPORTED.get(lowered) or _UNSUPPORTED[key]
        raise InvalidInput(f"matih-lite does not search traces by {what}; filter on trace attributes (timestamp_ms, "
                           "execution_time_ms, status, request_id, client_request_id, name, run_id), tags.* or "
                           "metadata.*")
    entity = _PREFIXES.get(lowered)
    if entity is None:
        raise InvalidInput(f"invalid trace filter {text!r}: unknown prefix {prefix!r}; use attributes., tags. or "
                           "metadata.")
    if entity == "attribute":
        if key in _MAPPED:
            return (*_MAPPED[key], i)
        if key not in _ATTRIBUTES:
            raise InvalidInput(f"invalid trace filter {text!r}: unknown attribute {key!r}; valid attributes are "
                               f"{', '.join(sorted({*_ATTRIBUTES, *_MAPPED}))}")
        return "attribute", _ATTRIBUTES[key], i
    return entity, key, i


def parse_trace_filter(text: str | None) -> list[TraceClause]:
    """MLflow's trace filter (clauses joined with AND) as :class:`TraceClause` data."""
    if text is None or not text.strip():
        return []
    toks = _tokens(text)
    clauses: list[TraceClause] = []
    i = 0

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(toks):
            raise InvalidInput(f"invalid trace filter {text!r}: it ends too early")
        i += 1
        return toks[i - 1]

    while True:
        if i >= len(toks):
            raise InvalidInput(f"invalid trace filter {text!r}: it ends too early")
        start = i
        kind, key, i = _column(toks, i, text)
        shown = "".join(t for _, t in toks[start:i])
        tkind, tok = take()
        upper = tok.upper()
        if tkind == "op":
            op = "!=" if tok == "<>" else tok
        elif tkind == "word" and upper in ("LIKE", "ILIKE", "IN"):
            op = upper
        elif tkind == "word" and upper == "RLIKE":
            raise InvalidInput(f"invalid trace filter {text!r}: RLIKE (regular expressions) is not supported here; "
                               "use LIKE or ILIKE with % and _")
        elif tkind == "word" and upper == "NOT":
            if take()[1].upper() != "IN":
                raise InvalidInput(f"invalid trace filter {text!r}: expected IN after NOT")
            op = "NOT IN"
        elif tkind == "word" and upper == "IS":
            nxt = take()[1].upper()
            if nxt == "NOT":
                nxt, op = take()[1].upper(), "IS NOT NULL"
            else:
                op = "IS NULL"
            if nxt != "NULL":
                raise InvalidInput(f"invalid trace filter {text!r}: expected NULL after IS")
        else:
            raise InvalidInput(f"invalid trace filter {text!r}: expected a comparator, got {tok!r}")
        numeric = kind == "attribute" and key in _NUMERIC
        value: Any = None
        if op in ("IS NULL", "IS NOT NULL"):
            if kind == "attribute":
                raise InvalidInput(f"invalid trace filter {text!r}: IS NULL applies to tags and metadata")
        elif op in ("IN", "NOT IN"):
            if kind != "attribute" and (kind, key) not in _MAPPED.values():
                raise InvalidInput(f"invalid trace filter {text!r}: IN applies to name, run_id, status, request_id "
                                   "and client_request_id")
            if numeric:
                raise InvalidInput(f"invalid trace filter {text!r}: {op} compares text, and {shown!r} is a time")
            if take()[0] != "lp":
                raise InvalidInput(f"invalid trace filter {text!r}: expected '(' after {op}")
            values = []
            while True:
                k2, t2 = take()
                if k2 != "str":
                    raise InvalidInput(f"invalid trace filter {text!r}: {op} takes quoted strings")
                values.append(_state(_unquote(t2)) if key == "state" else _unquote(t2))
                k3, _ = take()
                if k3 == "rp":
                    break
                if k3 != "comma":
                    raise InvalidInput(f"invalid trace filter {text!r}: expected ',' or ')'")
            value = tuple(values)
        else:
            k2, t2 = take()
            if numeric:
                if k2 not in ("num", "str") or op in ("LIKE", "ILIKE"):
                    raise InvalidInput(f"invalid trace filter {text!r}: {shown!r} compares with a number of "
                                       "milliseconds (=, !=, <, <=, >, >=)")
                try:
                    value = int(_unquote(t2) if k2 == "str" else t2)
                except ValueError:
                    raise InvalidInput(f"invalid trace filter {text!r}: {t2!r} is not a whole number") from None
                if not -(2**63) <= value < 2**63:
                    raise InvalidInput(f"invalid trace filter {text!r}: {value} is out of range")
            elif k2 == "str":
                value = _state(_unquote(t2)) if key == "state" else _unquote(t2)
                if op not in ("=", "!=", "LIKE", "ILIKE"):
                    also = ", IN or NOT IN" if kind == "attribute" else ", IS NULL or IS NOT NULL"
                    raise InvalidInput(f"invalid trace filter {text!r}: {shown!r} compares text with =, !=, LIKE, "
                                       f"ILIKE{also}")
            else:
                raise InvalidInput(f"invalid trace filter {text!r}: expected a quoted value, got {t2!r}")
        clauses.append(TraceClause(kind, key, op, value))  # type: ignore[arg-type]
        if i >= len(toks):
            return clauses
        kind_, tok = take()
        if not (kind_ == "word" and tok.upper() == "AND"):
            raise InvalidInput(f"invalid trace filter {text!r}: join clauses with AND, got {tok!r}")


def parse_trace_order(items: Sequence[str]) -> list[TraceOrder]:
    """MLflow's ``order_by`` for traces (``["timestamp_ms DESC", "tags.team"]``) as :class:`TraceOrder` data."""
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            continue
        toks = _tokens(item)
        ascending = True
        if len(toks) > 1 and toks[-1][0] == "word" and toks[-1][1].upper() in ("ASC", "DESC"):
            ascending = toks[-1][1].upper() == "ASC"
            toks = toks[:-1]
        kind, key, end = _column(toks, 0, item)
        if end != len(toks):
            raise InvalidInput(f"invalid order_by clause {item!r}; order by a column, then ASC or DESC")
        out.append(TraceOrder(kind, key, ascending))  # type: ignore[arg-type]
    return out


# ---- checks -------------------------------------------------------------------------------------------
def _state(value: str) -> str:
    return _STATES_V2.get(value, value)


def _trace_id(value: Any, missing: type[Exception] = NotFound) -> str:
    if not isinstance(value, str) or not TRACE_ID.match(value):
        if missing is NotFound:
            raise NotFound(f"trace {value!r} does not exist")
        raise InvalidInput(f"invalid trace id {value!r}: 1 to 128 letters, digits, '-' and '_' (MLflow's are "
                           "'tr-' and 32 hex digits)")
    return value


def _assessment_id(value: Any) -> str:
    if not isinstance(value, str) or not ASSESSMENT_ID.match(value):
        raise NotFound(f"assessment {value!r} does not exist")
    return value


def _millis(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidInput(f"{name} must be milliseconds (0 or more, within 64 bits), got {value!r}")
    return value


def _text(value: Any, name: str) -> Any:
    if value is not None and (not isinstance(value, str) or len(value) > MAX_VALUE):
        raise InvalidInput(f"{name} must be a string of at most {MAX_VALUE} characters")
    return value


def _preview(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("a request or response preview must be a string")
    return value[:MAX_PREVIEW]


def _checked(items: Mapping[str, Any] | None, what: str) -> dict[str, str]:
    out = {}
    for key, value in (items or {}).items():
        if not isinstance(key, str) or not key or len(key) > MAX_KEY:
            raise InvalidInput(f"a trace {what} key must be a string of 1 to {MAX_KEY} characters, got {key!r}")
        if not isinstance(value, str):
            raise InvalidInput(f"trace {what} {key!r} must be a string, got {value!r}")
        if len(value) > MAX_VALUE:
            raise InvalidInput(f"trace {what} {key!r} is {len(value)} characters; the limit is {MAX_VALUE}")
        out[key] = value
    return out
