"""MLflow-compatible tracking REST: the unchanged ``mlflow`` client (3.x) logs into matih-lite.

Served under ``/api/2.0/mlflow/`` (and ``/ajax-api/2.0/mlflow/``, as MLflow's own UI calls it):
experiments, runs, metrics, params, tags, batches, inputs and outputs, the logged models that
MLflow 3's ``log_model`` creates, and the proxied artifacts under ``/api/2.0/mlflow-artifacts/``.
Bodies and answers are protobuf JSON as the client writes and parses them (field names as in
MLflow's ``service.proto``, int64 as JSON numbers, NaN and infinities as ``"NaN"``,
``"Infinity"`` and ``"-Infinity"``); errors are ``{"error_code": ..., "message": ...}`` with
MLflow's HTTP status.

Every rule stays in :class:`~matih_lite.tracking.Tracking`; this module only translates.
What MLflow keeps that the tracking records have no place for lives as small JSON documents
in the artifacts slot, under the tenant's ``_mlflow/`` folder (experiment ids are numbers, so
it never meets a run's artifacts):

- ``{tenant}/_mlflow/runs/{run_id}/io.json``: the run's dataset and model inputs and its
  model outputs (``log-inputs``, ``outputs``);
- ``{tenant}/_mlflow/models/{model_id}.json``: one logged model (name, status, tags, params,
  metrics); its files live at ``{tenant}/{experiment_id}/models/{model_id}/artifacts/``, the
  place its ``artifact_uri`` (``mlflow-artifacts:/{experiment_id}/models/{model_id}/artifacts``)
  names.

MLflow's default experiment "0" is this tenant's experiment named "Default", created the first
time a client names it; every answer shows that experiment's id as "0".
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put, route
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import JSONBody
from litestar.response import Stream

from matih_lite.contracts import Experiment, Metric, Run
from matih_lite.contracts.artifacts import clean_path
from matih_lite.contracts.search import ATTRIBUTE_ALIASES as RUN_ATTRIBUTE_ALIASES
from matih_lite.contracts.search import ATTRIBUTES as RUN_ATTRIBUTES
from matih_lite.contracts.records import decode_page_token, encode_page_token
from matih_lite.errors import (Conflict, Forbidden, GovernanceRefused, InvalidInput, MatihError, NotFound,
                               StoreError, Unauthorized)
from matih_lite.service.auth import LOCAL_ADMIN, Principal
from matih_lite.service.tracking import DEPENDENCIES, json_float, parse_float
from matih_lite.tracking import Tracking
from matih_lite.tracking.names import random_run_name
from matih_lite.tracking.service import (MAX_PARAM_VALUE, MAX_TAG_VALUE, RUN_NAME_TAG, check_key, check_value,
                                         now_ms, to_metric)

log = logging.getLogger("matih_lite.service.mlflow")

API = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
ARTIFACTS_API = ("/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts")
DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"
SEARCH_MAX_RESULTS = 50_000
RUN_STATUS_BY_NUMBER = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
VIEW_TYPES = {"ACTIVE_ONLY": "active", "DELETED_ONLY": "deleted", "ALL": "all", 1: "active", 2: "deleted", 3: "all"}
MODEL_STATUSES = ("LOGGED_MODEL_STATUS_UNSPECIFIED", "LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY",
                  "LOGGED_MODEL_UPLOAD_FAILED")
LOG_MODEL_HISTORY_TAG = "mlflow.log-model.history"
DATASET_CONTEXT_TAG = "mlflow.data.context"
MULTIPART_UNSUPPORTED = "Multipart upload is not supported for the current artifact repository"
PRESIGNED_DOWNLOAD_UNSUPPORTED = "Presigned download is not supported for the current artifact repository"
_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
_DOCS_LOCK = threading.Lock()


def _paths(suffix: str, prefixes: tuple[str, ...] = API) -> list[str]:
    # Only the /api/ spelling: the service rewrites /ajax-api/ to /api/ before routing
    # (service/observability.py), because a handler on two paths runs through the thread pool twice.
    return [f"{prefixes[0]}/{suffix}"]


# ---- errors ----------------------------------------------------------------------------------------
class MlflowApiError(Exception):
    """An answer in MLflow's own words: an ``error_code`` name and the HTTP status MLflow gives it."""

    def __init__(self, error_code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status


def required(value: Any, name: str) -> Any:
    if value is None or value == "":
        raise InvalidInput(f"Missing value for required parameter '{name}'. See the API docs for more "
                           "information about request parameters.")
    return value


def _mlflow_body(error_code: str, message: str, status: int) -> Response[dict[str, str]]:
    return Response({"error_code": error_code, "message": message}, status_code=status,
                    media_type="application/json")


def mlflow_error_handler(request: Request, exc: Exception) -> Response:
    """MatihError, Litestar's HTTP errors and anything unexpected, as MLflow-shaped JSON."""
    if isinstance(exc, MlflowApiError):
        return _mlflow_body(exc.error_code, exc.message, exc.status)
    if isinstance(exc, MatihError):
        message = exc.message
        if isinstance(exc, NotFound):
            return _mlflow_body("RESOURCE_DOES_NOT_EXIST", message, 404)
        if isinstance(exc, Conflict):
            code = "RESOURCE_ALREADY_EXISTS" if "already exists" in message else "INVALID_PARAMETER_VALUE"
            return _mlflow_body(code, message, 400)
        if isinstance(exc, (InvalidInput, GovernanceRefused)):
            return _mlflow_body("INVALID_PARAMETER_VALUE", message, 400)
        if isinstance(exc, Unauthorized):
            return _mlflow_body("UNAUTHENTICATED", message, 401)
        if isinstance(exc, Forbidden):
            return _mlflow_body("PERMISSION_DENIED", message, 403)
        if isinstance(exc, StoreError):
            return _mlflow_body("TEMPORARILY_UNAVAILABLE", message, 503)
        log.error("%s %s failed: %s", request.method, request.url.path, message)
        return _mlflow_body("INTERNAL_ERROR", message, 500)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        detail = exc.detail
        if isinstance(exc, ValidationException) and exc.extra:
            problems = "; ".join(f"{e.get('key', '')}: {e.get('message', '')}" if isinstance(e, dict) else str(e)
                                 for e in (exc.extra if isinstance(exc.extra, list) else [exc.extra]))
            detail = f"{detail}: {problems}"
        code = {400: "INVALID_PARAMETER_VALUE", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "ENDPOINT_NOT_FOUND", 409: "RESOURCE_CONFLICT", 413: "INVALID_PARAMETER_VALUE",
                415: "INVALID_PARAMETER_VALUE", 429: "REQUEST_LIMIT_EXCEEDED"}.get(status)
        if code is None:
            code = "BAD_REQUEST" if 400 <= status < 500 else "INTERNAL_ERROR"
        response = _mlflow_body(code, detail, status)
        if getattr(exc, "headers", None):
            response.headers.update(exc.headers)  # e.g. WWW-Authenticate on a 401
        return response
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return _mlflow_body("INTERNAL_ERROR", "an unexpected error occurred; the service log has the details", 500)


EXCEPTION_HANDLERS = {MlflowApiError: mlflow_error_handler, MatihError: mlflow_error_handler,
                      HTTPException: mlflow_error_handler, Exception: mlflow_error_handler}
"""The same keys as the app's own handlers: Litestar picks by exception class first, then by layer."""


# ---- request bodies (protobuf JSON; fields the client may add and we do not use are ignored) ------
class KeyValue(msgspec.Struct):
    key: str | None = None
    value: str | None = None


class CreateExperimentIn(msgspec.Struct):
    name: str | None = None
    artifact_location: str | None = None
    tags: list[KeyValue] = []


class ExperimentIdIn(msgspec.Struct):
    experiment_id: str | None = None


class UpdateExperimentIn(msgspec.Struct):
    experiment_id: str | None = None
    new_name: str | None = None


class ExperimentTagIn(msgspec.Struct):
    experiment_id: str | None = None
    key: str | None = None
    value: str | None = None


class SearchExperimentsIn(msgspec.Struct):
    max_results: int | None = None
    page_token: str | None = None
    filter: str | None = None
    order_by: list[str] = []
    view_type: str | int | None = None


class CreateRunIn(msgspec.Struct):
    experiment_id: str | None = None
    user_id: str | None = None
    start_time: int | None = None
    tags: list[KeyValue] = []
    run_name: str | None = None


class RunIdIn(msgspec.Struct):
    run_id: str | None = None
    run_uuid: str | None = None


class UpdateRunIn(msgspec.Struct):
    run_id: str | None = None
    run_uuid: str | None = None
    status: str | int | None = None
    end_time: int | None = None
    run_name: str | None = None


class MetricIn(msgspec.Struct):
    key: str | None = None
    value: float | str | None = None
    timestamp: int | None = None
    step: int | None = None
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None
    run_id: str | None = None


class LogMetricIn(MetricIn):
    run_uuid: str | None = None


class LogParamIn(msgspec.Struct):
    run_id: str | None = None
    run_uuid: str | None = None
    key: str | None = None
    value: str | None = None


class SetTagIn(LogParamIn):
    pass


class DeleteTagIn(msgspec.Struct):
    run_id: str | None = None
    key: str | None = None


class LogBatchIn(msgspec.Struct):
    run_id: str | None = None
    metrics: list[MetricIn] = []
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class SearchRunsIn(msgspec.Struct):
    experiment_ids: list[str] = []
    filter: str | None = None
    run_view_type: str | int | None = None
    max_results: int | None = None
    order_by: list[str] = []
    page_token: str | None = None


class DatasetIn(msgspec.Struct):
    name: str | None = None
    digest: str | None = None
    source_type: str | None = None
    source: str | None = None
    schema: str | None = None
    profile: str | None = None


class DatasetInputIn(msgspec.Struct):
    tags: list[KeyValue] = []
    dataset: DatasetIn | None = None


class ModelRefIn(msgspec.Struct):
    model_id: str | None = None
    step: int | None = None


class LogInputsIn(msgspec.Struct):
    run_id: str | None = None
    datasets: list[DatasetInputIn] = []
    models: list[ModelRefIn] = []


class LogOutputsIn(msgspec.Struct):
    run_id: str | None = None
    models: list[ModelRefIn] = []


class LogModelIn(msgspec.Struct):
    run_id: str | None = None
    model_json: str | None = None


class CreateLoggedModelIn(msgspec.Struct):
    experiment_id: str | None = None
    name: str | None = None
    model_type: str | None = None
    source_run_id: str | None = None
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class FinalizeLoggedModelIn(msgspec.Struct):
    model_id: str | None = None
    status: str | int | None = None


class LoggedModelTagsIn(msgspec.Struct):
    tags: list[KeyValue] = []


class LoggedModelParamsIn(msgspec.Struct):
    model_id: str | None = None
    params: list[KeyValue] = []


class OrderByIn(msgspec.Struct):
    field_name: str | None = None
    ascending: bool = True
    dataset_name: str | None = None
    dataset_digest: str | None = None


class SearchLoggedModelsIn(msgspec.Struct):
    experiment_ids: list[str] = []
    filter: str | None = None
    datasets: list[dict[str, Any]] = []
    max_results: int | None = None
    order_by: list[OrderByIn] = []
    page_token: str | None = None


# ---- the tenant's view: experiment ids and the JSON documents --------------------------------------
class Scope:
    """One request's tenant, with the "0" <-> Default mapping looked up at most once."""

    _UNSET: Any = object()

    def __init__(self, tracking: Tracking, principal: Principal) -> None:
        self.tracking = tracking
        self.principal = principal
        self.tenant = principal.tenant
        self._default: Any = self._UNSET

    # -- experiment ids
    def default_id(self, *, create: bool) -> str | None:
        if self._default is self._UNSET or (self._default is None and create):
            if create:
                self._default = self.tracking.get_or_create_experiment(self.tenant,
                                                                       DEFAULT_EXPERIMENT_NAME).experiment_id
            else:
                try:
                    self._default = self.tracking.get_experiment_by_name(self.tenant,
                                                                         DEFAULT_EXPERIMENT_NAME).experiment_id
                except NotFound:
                    self._default = None
        return self._default

    def internal(self, experiment_id: Any, *, create: bool = True) -> str:
        """The stored id for an id a client sent ("0" is the Default experiment)."""
        eid = str(required(experiment_id, "experiment_id"))
        if eid == DEFAULT_EXPERIMENT_ID:
            found = self.default_id(create=create)
            if found is None:
                raise NotFound(f"experiment {eid!r} does not exist")
            return found
        return eid

    def external(self, experiment_id: str) -> str:
        """The id a client sees for a stored one."""
        return DEFAULT_EXPERIMENT_ID if experiment_id == self.default_id(create=False) else experiment_id

    # -- runs
    def run(self, run_id: Any) -> Run:
        return self.tracking.get_run(self.tenant, str(required(run_id, "run_id")))

    # -- documents in the artifacts slot
    def _read(self, path: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.tracking.artifacts.get(path))
        except NotFound:
            return None
        except ValueError:
            raise StoreError(f"{path} is not valid JSON any more; restore it or delete it") from None

    def _write(self, path: str, doc: dict[str, Any]) -> None:
        self.tracking.artifacts.put(path, json.dumps(doc, sort_keys=True).encode())

    def io_path(self, run_id: str) -> str:
        return f"{self.tenant}/_mlflow/runs/{clean_path(run_id)}/io.json"

    def run_io(self, run_id: str) -> dict[str, Any]:
        return self._read(self.io_path(run_id)) or {}

    def update_run_io(self, run_id: str, change: Callable[[dict[str, Any]], None]) -> None:
        with _DOCS_LOCK:
            doc = self.run_io(run_id)
            change(doc)
            self._write(self.io_path(run_id), doc)

    def model_path(self, model_id: str) -> str:
        if not isinstance(model_id, str) or not _MODEL_ID.match(model_id):
            raise NotFound(f"logged model {model_id!r} does not exist")
        return f"{self.tenant}/_mlflow/models/{model_id}.json"

    def model(self, model_id: Any, *, allow_deleted: bool = False) -> dict[str, Any]:
        doc = self._read(self.model_path(str(required(model_id, "model_id"))))
        if doc is None or (doc.get("lifecycle_stage") == "deleted" and not allow_deleted):
            raise NotFound(f"logged model {model_id!r} does not exist")
        return doc

    def save_model(self, doc: dict[str, Any]) -> None:
        self._write(self.model_path(doc["model_id"]), doc)

    def update_model(self, model_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        with _DOCS_LOCK:
            doc = self.model(model_id)
            change(doc)
            doc["last_updated_timestamp_ms"] = now_ms()
            self.save_model(doc)
        return doc

    def models(self) -> list[dict[str, Any]]:
        out = []
        for info in self.tracking.artifacts.list(f"{self.tenant}/_mlflow/models"):
            if not info.is_dir and info.path.endswith(".json"):
                doc = self._read(info.path)
                if doc:
                    out.append(doc)
        return out

    def model_root(self, doc: dict[str, Any]) -> str:
        return f"{self.tenant}/{doc['experiment_id']}/models/{doc['model_id']}/artifacts"


def scope(tracking: Tracking, principal: Principal) -> Scope:
    return Scope(tracking, principal)


# ---- answers (protobuf JSON) -----------------------------------------------------------------------
def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _kv(items: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in items.items()]


def metric_json(m: Metric | dict[str, Any]) -> dict[str, Any]:
    if isinstance(m, Metric):
        return {"key": m.key, "value": json_float(m.value), "timestamp": m.timestamp, "step": m.step}
    out = dict(m)
    out["value"] = json_float(float(m["value"]))
    return _drop_none(out)


def experiment_json(e: Experiment, s: Scope) -> dict[str, Any]:
    ext = s.external(e.experiment_id)
    return {"experiment_id": ext, "name": e.name,
            "artifact_location": e.artifact_location or f"mlflow-artifacts:/{e.experiment_id}",
            "lifecycle_stage": e.lifecycle_stage, "last_update_time": e.last_update_time,
            "creation_time": e.creation_time, "tags": _kv(e.tags)}


def run_info_json(r: Run, s: Scope) -> dict[str, Any]:
    return _drop_none({"run_id": r.run_id, "run_uuid": r.run_id, "run_name": r.name,
                       "experiment_id": s.external(r.experiment_id), "user_id": r.user_id, "status": r.status,
                       "start_time": r.start_time, "end_time": r.end_time, "artifact_uri": r.artifact_uri,
                       "lifecycle_stage": r.lifecycle_stage})


def run_json(r: Run, s: Scope, io: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "info": run_info_json(r, s),
        "data": {"metrics": [metric_json(m) for m in r.metrics.values()], "params": _kv(r.params),
                 "tags": _kv(r.tags)}}
    if io is not None:
        out["inputs"] = {"dataset_inputs": io.get("dataset_inputs", []), "model_inputs": io.get("model_inputs", [])}
        out["outputs"] = {"model_outputs": io.get("model_outputs", [])}
    return out


def logged_model_json(doc: dict[str, Any], s: Scope) -> dict[str, Any]:
    info = _drop_none({
        "model_id": doc["model_id"], "experiment_id": s.external(doc["experiment_id"]), "name": doc["name"],
        "creation_timestamp_ms": doc["creation_timestamp_ms"],
        "last_updated_timestamp_ms": doc["last_updated_timestamp_ms"], "artifact_uri": doc["artifact_uri"],
        "status": doc["status"], "model_type": doc.get("model_type"), "source_run_id": doc.get("source_run_id"),
        "status_message": doc.get("status_message"), "tags": _kv(doc.get("tags", {})), "registrations": []})
    return {"info": info, "data": {"params": _kv(doc.get("params", {})),
                                   "metrics": [metric_json(m) for m in doc.get("metrics", [])]}}


# ---- small helpers ---------------------------------------------------------------------------------
_encode_token = encode_page_token
_decode_token = decode_page_token


def _max_results(value: int | None, default: int) -> int:
    if value is None:
        return default
    if value < 1 or value > SEARCH_MAX_RESULTS:
        raise InvalidInput(f"Invalid value {value} for parameter 'max_results' supplied. It must be at most "
                           f"{SEARCH_MAX_RESULTS} and at least 1")
    return value


def _view_type(value: str | int | None) -> str:
    if value is None or value == "":
        return "active"
    found = VIEW_TYPES.get(value.upper() if isinstance(value, str) else value)
    if found is None:
        raise InvalidInput(f"invalid view type {value!r}; use ACTIVE_ONLY, DELETED_ONLY or ALL")
    return found


def _pairs(items: Iterable[KeyValue], what: str, *, limit: int) -> dict[str, str]:
    """Key/value pairs as a dict; a key given twice with different values is refused, as MLflow does."""
    out: dict[str, str] = {}
    for kv in items:
        key = check_key(kv.key, what)
        value = "" if kv.value is None else kv.value
        check_value(value, limit, what, key)
        if key in out and out[key] != value:
            raise InvalidInput(f"Duplicate {what} keys have been submitted with different values: {key!r}")
        out[key] = value
    return out


def _millis(value: int | None, name: str) -> int | None:
    """A time in milliseconds as the stores keep it (int64, not negative), or None when not given."""
    if value is None or value == 0:
        return None
    if not 0 < value < 2**63:
        raise InvalidInput(f"{name} must be milliseconds since the epoch, got {value}")
    return value


def _run_id(data: Any) -> str:
    return str(required(getattr(data, "run_id", None) or getattr(data, "run_uuid", None), "run_id"))


# ---- a small filter language for experiments and logged models -------------------------------------
_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<bt>`[^`]*`)
  | (?P<op>!=|<>|>=|<=|=|<|>)
  | (?P<lp>\() | (?P<rp>\)) | (?P<comma>,)
  | (?P<word>[\w.\-/:+]+)
)""", re.VERBOSE)
_KINDS = {"attribute": "attribute", "attributes": "attribute", "attr": "attribute", "tags": "tag", "tag": "tag",
          "params": "param", "param": "param", "metrics": "metric", "metric": "metric"}


def _spans(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidInput(f"invalid filter at position {pos}: {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


def _tokens(text: str) -> list[tuple[str, str]]:
    return [(kind, tok) for kind, tok, _ in _spans(text)]


def _bare_attribute(token: str) -> bool:
    return "." not in token and (token in RUN_ATTRIBUTES or token in RUN_ATTRIBUTE_ALIASES)


def run_filter(text: str | None) -> str | None:
    """MLflow reads a bare column (``status = 'FINISHED'``) as an attribute; say so for the run filter parser."""
    if not text or not text.strip():
        return None
    try:
        spans = _spans(text)
    except InvalidInput:
        return text  # the parser says what is wrong with it
    starts = [start for i, (kind, tok, start) in enumerate(spans)
              if kind == "word" and _bare_attribute(tok)
              and (i == 0 or (spans[i - 1][0] == "word" and spans[i - 1][1].upper() == "AND"))]
    for start in reversed(starts):
        text = f"{text[:start]}attributes.{text[start:]}"
    return text


def run_order_by(items: list[str]) -> list[str] | None:
    out = []
    for item in items:
        for part in (item.split(",") if not any(q in item for q in "`'\"") else [item]):
            if not part.strip():
                continue
            column = part.strip().split()[0]
            out.append(f"attributes.{part.strip()}" if _bare_attribute(column) else part.strip())
    return out or None


def _unquote(token: str) -> str:
    quote = token[0]
    body = token[1:-1]
    if quote == "`":
        return body
    return re.sub(r"\\(.)", r"\1", body.replace(quote * 2, quote))


def parse_simple_filter(text: str | None, attributes: dict[str, str]) -> list[tuple[str, str, str, Any]]:
    """``name LIKE 'x%' AND tags.team = 'a'`` -> [(kind, key, op, value)]; ``attributes`` maps names to types."""
    if not text or not text.strip():
        return []
    toks = _tokens(text)
    clauses: list[tuple[str, str, str, Any]] = []
    i = 0

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(toks):
            raise InvalidInput(f"invalid filter {text!r}: it ends too early")
        i += 1
        return toks[i - 1]

    while True:
        kind, tok = take()
        if kind == "word" and "." in tok and tok.split(".", 1)[0].lower() in _KINDS:
            prefix, key = tok.split(".", 1)
            entity = _KINDS[prefix.lower()]
            if not key:
                k2, t2 = take()
                if k2 not in ("str", "bt"):
                    raise InvalidInput(f"invalid filter {text!r}: expected a key after {tok!r}")
                key = _unquote(t2)
        elif kind in ("word", "bt", "str"):
            entity, key = "attribute", (tok if kind == "word" else _unquote(tok))
        else:
            raise InvalidInput(f"invalid filter {text!r}: expected a column, got {tok!r}")
        if entity == "attribute" and key not in attributes:
            raise InvalidInput(f"invalid filter {text!r}: unknown attribute {key!r}; valid attributes are "
                               f"{', '.join(sorted(attributes))}")
        kind, tok = take()
        if kind == "op":
            op = "!=" if tok == "<>" else tok
        elif kind == "word" and tok.upper() in ("LIKE", "ILIKE", "IN"):
            op = tok.upper()
        elif kind == "word" and tok.upper() == "NOT":
            if take()[1].upper() != "IN":
                raise InvalidInput(f"invalid filter {text!r}: expected IN after NOT")
            op = "NOT IN"
        else:
            raise InvalidInput(f"invalid filter {text!r}: expected a comparator, got {tok!r}")
        numeric = entity == "metric" or (entity == "attribute" and attributes[key] == "int")
        if op in ("IN", "NOT IN"):
            if take()[0] != "lp":
                raise InvalidInput(f"invalid filter {text!r}: expected '(' after {op}")
            values = []
            while True:
                k2, t2 = take()
                if k2 != "str":
                    raise InvalidInput(f"invalid filter {text!r}: IN takes quoted strings")
                values.append(_unquote(t2))
                k3, _ = take()
                if k3 == "rp":
                    break
                if k3 != "comma":
                    raise InvalidInput(f"invalid filter {text!r}: expected ',' or ')'")
            value: Any = tuple(values)
        else:
            k2, t2 = take()
            if k2 == "str":
                value = _unquote(t2)
            elif k2 == "word":
                try:
                    value = float(t2)
                except ValueError:
                    raise InvalidInput(f"invalid filter {text!r}: expected a value, got {t2!r}") from None
            else:
                raise InvalidInput(f"invalid filter {text!r}: expected a value, got {t2!r}")
            if numeric:
                try:
                    value = float(value)
                except ValueError:
                    raise InvalidInput(f"invalid filter {text!r}: {key!r} compares with numbers") from None
                if op in ("LIKE", "ILIKE"):
                    raise InvalidInput(f"invalid filter {text!r}: {key!r} does not support {op}")
            elif not isinstance(value, str):
                raise InvalidInput(f"invalid filter {text!r}: {key!r} compares with quoted strings")
        clauses.append((entity, key, op, value))
        if i >= len(toks):
            return clauses
        kind, tok = take()
        if not (kind == "word" and tok.upper() == "AND"):
            raise InvalidInput(f"invalid filter {text!r}: join clauses with AND, got {tok!r}")


def _like(pattern: str, value: str, insensitive: bool) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if insensitive else re.DOTALL) is not None


def _holds(op: str, actual: Any, expected: Any) -> bool:
    if actual is None:
        return False
    if op in ("IN", "NOT IN"):
        return (str(actual) in expected) == (op == "IN")
    if op == "LIKE":
        return _like(expected, str(actual), False)
    if op == "ILIKE":
        return _like(expected, str(actual), True)
    if isinstance(expected, float):
        try:
            actual = float(actual)
        except (TypeError, ValueError):
            return False
        if math.isnan(actual):
            return op == "!="
    else:
        actual = str(actual)
    return {"=": actual == expected, "!=": actual != expected, "<": actual < expected, "<=": actual <= expected,
            ">": actual > expected, ">=": actual >= expected}[op]


def matches(clauses: list[tuple[str, str, str, Any]], get_value: Callable[[str, str], Any]) -> bool:
    return all(_holds(op, get_value(kind, key), value) for kind, key, op, value in clauses)


def _sort(items: list[Any], keys: list[tuple[Callable[[Any], Any], bool]]) -> list[Any]:
    """Stable multi-key sort; missing values (None) sort last whichever the direction."""
    for key, ascending in reversed(keys):
        present = [x for x in items if key(x) is not None]
        missing = [x for x in items if key(x) is None]
        present.sort(key=key, reverse=not ascending)
        items = present + missing
    return items


def _order_item(text: str) -> tuple[str, str, bool]:
    parts = text.strip().rsplit(None, 1)
    ascending = True
    if len(parts) == 2 and parts[1].upper() in ("ASC", "DESC"):
        ascending = parts[1].upper() == "ASC"
        text = parts[0]
    column = text.strip()
    prefix, dot, key = column.partition(".")
    if dot and prefix.lower() in _KINDS:
        return _KINDS[prefix.lower()], key.strip("`\"'"), ascending
    return "attribute", column.strip("`\"'"), ascending


# ---- experiments -----------------------------------------------------------------------------------
_EXPERIMENT_ATTRIBUTES = {"name": "str", "experiment_id": "str", "creation_time": "int", "last_update_time": "int",
                          "lifecycle_stage": "str"}


class MlflowExperiments(Controller):
    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @post(_paths("experiments/create"), sync_to_thread=True, status_code=200)
    def create(self, data: JSONBody[CreateExperimentIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        name = required(data.name, "name")
        # artifact_location is not honoured: every run's files go to this platform's artifacts slot.
        exp = tracking.create_experiment(s.tenant, name, tags=_pairs(data.tags, "tag", limit=MAX_TAG_VALUE))
        return {"experiment_id": s.external(exp.experiment_id)}

    @get(_paths("experiments/get"), sync_to_thread=True)
    def read(self, tracking: Tracking, principal: Principal, experiment_id: str | None = None) -> dict[str, Any]:
        s = scope(tracking, principal)
        return {"experiment": experiment_json(tracking.get_experiment(s.tenant, s.internal(experiment_id)), s)}

    @get(_paths("experiments/get-by-name"), sync_to_thread=True)
    def by_name(self, tracking: Tracking, principal: Principal,
                experiment_name: str | None = None) -> dict[str, Any]:
        s = scope(tracking, principal)
        name = required(experiment_name, "experiment_name")
        if name == DEFAULT_EXPERIMENT_NAME:
            s.default_id(create=True)
        try:
            exp = tracking.get_experiment_by_name(s.tenant, name)
        except NotFound:
            raise NotFound(f"Could not find experiment with name '{name}'") from None
        return {"experiment": experiment_json(exp, s)}

    @post(_paths("experiments/search"), sync_to_thread=True, status_code=200)
    def search(self, data: JSONBody[SearchExperimentsIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        return self._search(scope(tracking, principal), data)

    @get(_paths("experiments/search"), sync_to_thread=True, name="mlflow-experiments-search-get")
    def search_get(self, tracking: Tracking, principal: Principal, max_results: int | None = None,
                   page_token: str | None = None, filter: str | None = None,
                   order_by: list[str] | None = None, view_type: str | None = None) -> dict[str, Any]:
        data = SearchExperimentsIn(max_results, page_token, filter, order_by or [], view_type)
        return self._search(scope(tracking, principal), data)

    @staticmethod
    def _search(s: Scope, data: SearchExperimentsIn) -> dict[str, Any]:
        lifecycle = _view_type(data.view_type)
        limit = _max_results(data.max_results, 1000)
        clauses = parse_simple_filter(data.filter, _EXPERIMENT_ATTRIBUTES)
        orders = [_order_item(o) for o in data.order_by if o.strip()]
        for kind, key, _ in orders:
            if kind != "attribute" or key not in ("name", "experiment_id", "creation_time", "last_update_time"):
                raise InvalidInput(f"invalid order_by clause {key!r}: order experiments by name, experiment_id, "
                                   "creation_time or last_update_time")
        exps: list[Experiment] = []
        token = None
        while True:
            page = s.tracking.search_experiments(s.tenant, lifecycle=lifecycle, max_results=SEARCH_MAX_RESULTS,
                                                 page_token=token)
            exps.extend(page.items)
            token = page.next_token
            if not token:
                break
        rows = [experiment_json(e, s) for e in exps]

        def value(row: dict[str, Any], kind: str, key: str) -> Any:
            if kind == "tag":
                return next((t["value"] for t in row["tags"] if t["key"] == key), None)
            if kind == "attribute":
                return row.get(key)
            return None

        rows = [r for r in rows if matches(clauses, lambda k, key, r=r: value(r, k, key))]
        sort_keys: list[tuple[Callable[[Any], Any], bool]] = []
        for _, key, ascending in orders:
            if key == "experiment_id":
                sort_keys.append((lambda r: int(r["experiment_id"]), ascending))
            else:
                sort_keys.append((lambda r, key=key: r[key], ascending))
        if not any(k == "creation_time" for _, k, _ in orders):
            sort_keys.append((lambda r: r["creation_time"], False))
        sort_keys.append((lambda r: int(r["experiment_id"]), True))
        rows = _sort(rows, sort_keys)
        offset = _decode_token(data.page_token)
        out: dict[str, Any] = {"experiments": rows[offset:offset + limit]}
        if offset + limit < len(rows):
            out["next_page_token"] = _encode_token(offset + limit)
        return out

    @post(_paths("experiments/update"), sync_to_thread=True, status_code=200)
    def update(self, data: JSONBody[UpdateExperimentIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        tracking.update_experiment(s.tenant, s.internal(data.experiment_id), name=required(data.new_name, "new_name"))
        return {}

    @post(_paths("experiments/delete"), sync_to_thread=True, status_code=200)
    def remove(self, data: JSONBody[ExperimentIdIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        tracking.delete_experiment(s.tenant, s.internal(data.experiment_id, create=False))
        return {}

    @post(_paths("experiments/restore"), sync_to_thread=True, status_code=200)
    def restore(self, data: JSONBody[ExperimentIdIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        tracking.restore_experiment(s.tenant, s.internal(data.experiment_id, create=False))
        return {}

    @post(_paths("experiments/set-experiment-tag"), sync_to_thread=True, status_code=200)
    def set_tag(self, data: JSONBody[ExperimentTagIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        key = required(data.key, "key")
        tracking.set_experiment_tags(s.tenant, s.internal(data.experiment_id), {key: data.value or ""})
        return {}

    @post(_paths("experiments/delete-experiment-tag"), sync_to_thread=True, status_code=200)
    def delete_tag(self, data: JSONBody[ExperimentTagIn]) -> dict[str, Any]:
        raise MlflowApiError("NOT_IMPLEMENTED", "deleting an experiment tag is not supported by matih-lite yet; "
                             "set it to an empty value instead", 501)


# ---- runs --------------------------------------------------------------------------------------------
def _metric_points(s: Scope, run_id: str, metrics: list[MetricIn]) -> tuple[list[Metric], dict[str, list[dict]]]:
    """Checked points for the run, and the points to add to each logged model named by ``model_id``.

    A point that names a logged model and is already in the run's history (``log_model`` sends
    the run's metrics again, tagged with the new model) is kept once, as MLflow does.
    """
    points: list[Metric] = []
    by_model: dict[str, list[dict]] = {}
    seen: set[tuple] = set()
    history: dict[str, set[tuple]] = {}
    for m in metrics:
        key = check_key(m.key, "metric")
        value = parse_float(required(m.value, "value"), key)
        point = to_metric(key, value, m.timestamp, m.step or 0)
        ident = (point.key, point.timestamp, point.step, "nan" if math.isnan(point.value) else point.value)
        if m.model_id:
            by_model.setdefault(m.model_id, []).append(_drop_none({
                "key": point.key, "value": point.value, "timestamp": point.timestamp, "step": point.step,
                "run_id": run_id, "model_id": m.model_id, "dataset_name": m.dataset_name,
                "dataset_digest": m.dataset_digest}))
            if key not in history:
                history[key] = {(p.key, p.timestamp, p.step, "nan" if math.isnan(p.value) else p.value)
                                for p in s.tracking.metric_history(s.tenant, run_id, key).items}
            if ident in history[key]:
                continue
        if ident in seen:
            continue
        seen.add(ident)
        points.append(point)
    return points, by_model


def _record_model_metrics(s: Scope, by_model: dict[str, list[dict]]) -> None:
    for model_id, points in by_model.items():
        def add(doc: dict[str, Any], points: list[dict] = points) -> None:
            def ident(p: dict[str, Any]) -> tuple:
                return p["key"], p["timestamp"], p["step"], p.get("run_id")

            have = {ident(p) for p in doc.setdefault("metrics", [])}
            doc["metrics"].extend(p for p in points if ident(p) not in have)

        try:
            s.update_model(model_id, add)
        except NotFound:
            log.debug("metrics name logged model %s, which this tenant does not have; kept on the run only", model_id)


def _log(s: Scope, run_id: str, *, metrics: Iterable[MetricIn] = (), params: dict[str, str] | None = None,
         tags: dict[str, str] | None = None) -> None:
    points, by_model = _metric_points(s, run_id, list(metrics))
    s.tracking.log_batch(s.tenant, run_id, metrics=points, params=params or {}, tags=tags or {})
    if tags and RUN_NAME_TAG in tags and tags[RUN_NAME_TAG].strip():
        s.tracking.update_run(s.tenant, run_id, name=tags[RUN_NAME_TAG])  # MLflow renames the run with the tag
    if by_model:
        _record_model_metrics(s, by_model)


class MlflowRuns(Controller):
    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @post(_paths("runs/create"), sync_to_thread=True, status_code=200)
    def create(self, data: JSONBody[CreateRunIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        experiment_id = s.internal(data.experiment_id)
        tags = _pairs(data.tags, "tag", limit=MAX_TAG_VALUE)
        # Without authentication the caller's own user name is the best we know; with it, the principal.
        user = (data.user_id or principal.user) if principal == LOCAL_ADMIN else principal.user
        run = tracking.create_run(s.tenant, experiment_id, name=data.run_name or None, user_id=user,
                                  start_time=_millis(data.start_time, "start_time"), tags=tags)
        return {"run": run_json(run, s, {})}

    @get(_paths("runs/get"), sync_to_thread=True)
    def read(self, tracking: Tracking, principal: Principal, run_id: str | None = None,
             run_uuid: str | None = None) -> dict[str, Any]:
        s = scope(tracking, principal)
        run = s.run(run_id or run_uuid)
        return {"run": run_json(run, s, s.run_io(run.run_id))}

    @post(_paths("runs/update"), sync_to_thread=True, status_code=200)
    def update(self, data: JSONBody[UpdateRunIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        status = data.status
        if isinstance(status, int):
            status = RUN_STATUS_BY_NUMBER.get(status, str(status))
        run = tracking.update_run(s.tenant, _run_id(data), status=status or None,
                                  end_time=_millis(data.end_time, "end_time"), name=data.run_name or None)
        return {"run_info": run_info_json(run, s)}

    @post(_paths("runs/delete"), sync_to_thread=True, status_code=200)
    def remove(self, data: JSONBody[RunIdIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        tracking.delete_run(principal.tenant, _run_id(data))
        return {}

    @post(_paths("runs/restore"), sync_to_thread=True, status_code=200)
    def restore(self, data: JSONBody[RunIdIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        tracking.restore_run(principal.tenant, _run_id(data))
        return {}

    @post(_paths("runs/log-metric"), sync_to_thread=True, status_code=200)
    def log_metric(self, data: JSONBody[LogMetricIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        required(data.key, "key")
        _log(s, _run_id(data), metrics=[data])
        return {}

    @post(_paths("runs/log-parameter"), sync_to_thread=True, status_code=200)
    def log_param(self, data: JSONBody[LogParamIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        _log(s, _run_id(data), params=_pairs([KeyValue(required(data.key, "key"), data.value)], "param",
                                             limit=MAX_PARAM_VALUE))
        return {}

    @post(_paths("runs/set-tag"), sync_to_thread=True, status_code=200)
    def set_tag(self, data: JSONBody[SetTagIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        _log(s, _run_id(data), tags=_pairs([KeyValue(required(data.key, "key"), data.value)], "tag",
                                           limit=MAX_TAG_VALUE))
        return {}

    @post(_paths("runs/delete-tag"), sync_to_thread=True, status_code=200)
    def delete_tag(self, data: JSONBody[DeleteTagIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        tracking.delete_tag(principal.tenant, _run_id(data), required(data.key, "key"))
        return {}

    @post(_paths("runs/log-batch"), sync_to_thread=True, status_code=200)
    def log_batch(self, data: JSONBody[LogBatchIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        _log(s, _run_id(data), metrics=data.metrics, params=_pairs(data.params, "param", limit=MAX_PARAM_VALUE),
             tags=_pairs(data.tags, "tag", limit=MAX_TAG_VALUE))
        return {}

    @post(_paths("runs/search"), sync_to_thread=True, status_code=200)
    def search(self, data: JSONBody[SearchRunsIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        ids = []
        for eid in data.experiment_ids:
            try:
                ids.append(s.internal(eid, create=False))
            except NotFound:
                continue  # no Default experiment yet: it has no runs
        page = tracking.search_runs(s.tenant, ids, filter=run_filter(data.filter),
                                    order_by=run_order_by(data.order_by),
                                    lifecycle=_view_type(data.run_view_type),
                                    max_results=_max_results(data.max_results, 1000),
                                    page_token=data.page_token or None)
        out: dict[str, Any] = {"runs": [run_json(r, s) for r in page.items]}
        if page.next_token:
            out["next_page_token"] = page.next_token
        return out

    @post(_paths("runs/log-inputs"), sync_to_thread=True, status_code=200)
    def log_inputs(self, data: JSONBody[LogInputsIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        run = s.run(data.run_id)
        _writable(run)
        datasets = [_dataset(d) for d in data.datasets]
        models = [{"model_id": str(required(m.model_id, "model_id"))} for m in data.models]

        def add(doc: dict[str, Any]) -> None:
            have = doc.setdefault("dataset_inputs", [])
            keys = {_dataset_key(d) for d in have}
            for d in datasets:
                if _dataset_key(d) not in keys:
                    have.append(d)
                    keys.add(_dataset_key(d))
            model_inputs = doc.setdefault("model_inputs", [])
            model_inputs.extend(m for m in models if m not in model_inputs)

        if datasets or models:
            s.update_run_io(run.run_id, add)
        return {}

    @post(_paths("runs/outputs"), sync_to_thread=True, status_code=200)
    def log_outputs(self, data: JSONBody[LogOutputsIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        run = s.run(data.run_id)
        _writable(run)
        outputs = [{"model_id": str(required(m.model_id, "model_id")), "step": m.step or 0}
                   for m in required(data.models, "models")]

        def add(doc: dict[str, Any]) -> None:
            have = doc.setdefault("model_outputs", [])
            have.extend(o for o in outputs if o not in have)

        s.update_run_io(run.run_id, add)
        return {}

    @post(_paths("runs/log-model"), sync_to_thread=True, status_code=200)
    def log_model(self, data: JSONBody[LogModelIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        """MLflow 2's record of a model logged to a run's artifacts: appended to a run tag, as MLflow does."""
        s = scope(tracking, principal)
        run = s.run(data.run_id)
        try:
            model = json.loads(required(data.model_json, "model_json"))
        except ValueError:
            raise InvalidInput("model_json is not valid JSON") from None
        try:
            history = json.loads(run.tags.get(LOG_MODEL_HISTORY_TAG, "[]"))
        except ValueError:
            history = []
        history.append(model)
        text = json.dumps(history)
        while len(text) > MAX_TAG_VALUE and len(history) > 1:
            history.pop(0)
            text = json.dumps(history)
        if len(text) > MAX_TAG_VALUE:
            raise InvalidInput(f"model_json is {len(text)} characters; the limit is {MAX_TAG_VALUE}")
        tracking.log_batch(s.tenant, run.run_id, tags={LOG_MODEL_HISTORY_TAG: text})
        return {}


def _writable(run: Run) -> None:
    if run.lifecycle_stage != "active":
        raise InvalidInput(f"The run {run.run_id} must be in the 'active' state. Current state is "
                           f"{run.lifecycle_stage}.")


_DATASET_LIMITS = {"name": 500, "digest": 36, "source_type": 64, "source": 65535, "schema": 1048575,
                   "profile": 16384}


def _dataset(d: DatasetInputIn) -> dict[str, Any]:
    ds = required(d.dataset, "dataset")
    out: dict[str, Any] = {}
    for field, limit in _DATASET_LIMITS.items():
        value = getattr(ds, field)
        if field in ("name", "digest", "source_type", "source"):
            required(value, f"dataset.{field}")
        if value is not None:
            if len(value) > limit:
                raise InvalidInput(f"dataset {field} is {len(value)} characters; the limit is {limit}")
            out[field] = value
    tags = []
    for t in d.tags:
        key = required(t.key, "tag.key")
        if len(key) > 255 or len(t.value or "") > 500:
            raise InvalidInput("dataset input tags are limited to 255-character keys and 500-character values")
        tags.append({"key": key, "value": t.value or ""})
    return {"tags": tags, "dataset": out}


def _dataset_key(d: dict[str, Any]) -> tuple:
    context = next((t["value"] for t in d.get("tags", []) if t["key"] == DATASET_CONTEXT_TAG), None)
    return d["dataset"]["name"], d["dataset"]["digest"], context


class MlflowMetrics(Controller):
    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @get(_paths("metrics/get-history"), sync_to_thread=True)
    def history(self, tracking: Tracking, principal: Principal, run_id: str | None = None,
                run_uuid: str | None = None, metric_key: str | None = None, max_results: int | None = None,
                page_token: str | None = None) -> dict[str, Any]:
        rid = str(required(run_id or run_uuid, "run_id"))
        key = required(metric_key, "metric_key")
        if max_results is not None and not 1 <= max_results < 2**31:
            raise InvalidInput(f"max_results must be between 1 and {2**31 - 1}, got {max_results}")
        page = tracking.metric_history(principal.tenant, rid, key, max_results=max_results,
                                       page_token=page_token or None)
        out: dict[str, Any] = {"metrics": [metric_json(m) for m in page.items]}
        if page.next_token:
            out["next_page_token"] = page.next_token
        return out

    @get(_paths("artifacts/list"), sync_to_thread=True)
    def list_artifacts(self, tracking: Tracking, principal: Principal, run_id: str | None = None,
                       run_uuid: str | None = None, path: str | None = None) -> dict[str, Any]:
        """The tracking API's listing (MLflow's UI uses it); the client lists through mlflow-artifacts."""
        rid = str(required(run_id or run_uuid, "run_id"))
        run = tracking.get_run(principal.tenant, rid)
        files = tracking.list_artifacts(principal.tenant, rid, path or "")
        return {"root_uri": run.artifact_uri,
                "files": [_drop_none({"path": f.path, "is_dir": f.is_dir, "file_size": None if f.is_dir else f.size})
                          for f in files]}


# ---- logged models (MLflow 3) ----------------------------------------------------------------------
_MODEL_ATTRIBUTES = {"name": "str", "model_id": "str", "model_type": "str", "status": "str",
                     "source_run_id": "str", "creation_timestamp": "int", "creation_time": "int",
                     "last_updated_timestamp": "int", "experiment_id": "str"}
_BAD_MODEL_NAME_CHARS = ("/", ":", ".", "%", '"', "'")


def _model_value(doc: dict[str, Any], kind: str, key: str) -> Any:
    if kind == "tag":
        return doc.get("tags", {}).get(key)
    if kind == "param":
        return doc.get("params", {}).get(key)
    if kind == "metric":
        points = [p for p in doc.get("metrics", []) if p["key"] == key]
        if not points:
            return None
        return max(points, key=lambda p: (p["step"], p["timestamp"]))["value"]
    if key in ("creation_timestamp", "creation_time"):
        return doc["creation_timestamp_ms"]
    if key == "last_updated_timestamp":
        return doc["last_updated_timestamp_ms"]
    if key == "status":
        return doc["status"].removeprefix("LOGGED_MODEL_")
    return doc.get(key)


class MlflowLoggedModels(Controller):
    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @post(_paths("logged-models"), sync_to_thread=True, status_code=200)
    def create(self, data: JSONBody[CreateLoggedModelIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        experiment_id = s.internal(data.experiment_id)
        exp = tracking.get_experiment(s.tenant, experiment_id)
        if exp.lifecycle_stage != "active":
            raise InvalidInput(f"The experiment {data.experiment_id} must be in the 'active' state. "
                               f"Current state is {exp.lifecycle_stage}.")
        if data.name is not None and (not data.name or any(c in data.name for c in _BAD_MODEL_NAME_CHARS)):
            raise InvalidInput(f"Invalid model name ({data.name!r}) provided. Model name must be a non-empty "
                               f"string and cannot contain the following characters: {_BAD_MODEL_NAME_CHARS}")
        if data.source_run_id:
            s.run(data.source_run_id)  # a run of this tenant, or 404
        model_id = f"m-{uuid.uuid4().hex}"
        now = now_ms()
        doc = {
            "model_id": model_id, "experiment_id": exp.experiment_id, "name": data.name or random_run_name(),
            "creation_timestamp_ms": now, "last_updated_timestamp_ms": now,
            "artifact_uri": f"mlflow-artifacts:/{exp.experiment_id}/models/{model_id}/artifacts",
            "status": "LOGGED_MODEL_PENDING", "model_type": data.model_type or None,
            "source_run_id": data.source_run_id or None, "creator": principal.user, "lifecycle_stage": "active",
            "tags": _pairs(data.tags, "tag", limit=MAX_TAG_VALUE),
            "params": _pairs(data.params, "param", limit=MAX_PARAM_VALUE), "metrics": []}
        s.save_model(doc)
        return {"model": logged_model_json(doc, s)}

    @post(_paths("logged-models/search"), sync_to_thread=True, status_code=200)
    def search(self, data: JSONBody[SearchLoggedModelsIn], tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        ids = set()
        for eid in required(data.experiment_ids, "experiment_ids"):
            try:
                ids.add(s.internal(eid, create=False))
            except NotFound:
                continue
        limit = _max_results(data.max_results, 100)
        clauses = parse_simple_filter(data.filter, _MODEL_ATTRIBUTES)
        docs = [d for d in s.models() if d["experiment_id"] in ids and d.get("lifecycle_stage") != "deleted"
                and matches(clauses, lambda kind, key, d=d: _model_value(d, kind, key))]
        keys: list[tuple[Callable[[Any], Any], bool]] = []
        for ob in data.order_by:
            kind, key, _ = _order_item(required(ob.field_name, "order_by.field_name"))
            if kind == "attribute" and key not in _MODEL_ATTRIBUTES:
                raise InvalidInput(f"invalid order_by field {ob.field_name!r}")
            keys.append((lambda d, kind=kind, key=key: _model_value(d, kind, key), ob.ascending))
        keys += [(lambda d: d["creation_timestamp_ms"], False), (lambda d: d["model_id"], True)]
        docs = _sort(docs, keys)
        offset = _decode_token(data.page_token)
        out: dict[str, Any] = {"models": [logged_model_json(d, s) for d in docs[offset:offset + limit]]}
        if offset + limit < len(docs):
            out["next_page_token"] = _encode_token(offset + limit)
        return out

    @get(_paths("logged-models/{model_id:str}"), sync_to_thread=True)
    def read(self, model_id: str, tracking: Tracking, principal: Principal,
             allow_deleted: bool = False) -> dict[str, Any]:
        s = scope(tracking, principal)
        return {"model": logged_model_json(s.model(model_id, allow_deleted=allow_deleted), s)}

    @patch(_paths("logged-models/{model_id:str}"), sync_to_thread=True)
    def finalize(self, model_id: str, data: JSONBody[FinalizeLoggedModelIn], tracking: Tracking,
                 principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        status = required(data.status, "status")
        if isinstance(status, int):
            status = MODEL_STATUSES[status] if 0 <= status < len(MODEL_STATUSES) else str(status)
        if status not in MODEL_STATUSES[1:]:
            raise InvalidInput(f"invalid logged model status {status!r}; use one of {', '.join(MODEL_STATUSES[1:])}")

        def change(doc: dict[str, Any]) -> None:
            doc["status"] = status

        return {"model": logged_model_json(s.update_model(model_id, change), s)}

    @delete(_paths("logged-models/{model_id:str}"), sync_to_thread=True, status_code=200)
    def remove(self, model_id: str, tracking: Tracking, principal: Principal) -> dict[str, Any]:
        def change(doc: dict[str, Any]) -> None:
            doc["lifecycle_stage"] = "deleted"

        scope(tracking, principal).update_model(model_id, change)
        return {}

    @patch(_paths("logged-models/{model_id:str}/tags"), sync_to_thread=True)
    def set_tags(self, model_id: str, data: JSONBody[LoggedModelTagsIn], tracking: Tracking,
                 principal: Principal) -> dict[str, Any]:
        tags = _pairs(data.tags, "tag", limit=MAX_TAG_VALUE)
        scope(tracking, principal).update_model(model_id, lambda doc: doc.setdefault("tags", {}).update(tags))
        return {}

    @delete(_paths("logged-models/{model_id:str}/tags/{tag_key:path}"), sync_to_thread=True, status_code=200)
    def delete_tag(self, model_id: str, tag_key: str, tracking: Tracking, principal: Principal) -> dict[str, Any]:
        key = tag_key.lstrip("/")

        def change(doc: dict[str, Any]) -> None:
            if key not in doc.get("tags", {}):
                raise NotFound(f"logged model {model_id!r} has no tag {key!r}")
            del doc["tags"][key]

        scope(tracking, principal).update_model(model_id, change)
        return {}

    @post(_paths("logged-models/{model_id:str}/params"), sync_to_thread=True, status_code=200)
    def log_params(self, model_id: str, data: JSONBody[LoggedModelParamsIn], tracking: Tracking,
                   principal: Principal) -> dict[str, Any]:
        params = _pairs(data.params, "param", limit=MAX_PARAM_VALUE)

        def change(doc: dict[str, Any]) -> None:
            have = doc.setdefault("params", {})
            for k, v in params.items():
                if k in have and have[k] != v:
                    raise InvalidInput(f"param {k!r} of logged model {model_id} is already {have[k]!r}; params "
                                       f"are write-once and cannot change to {v!r}")
            have.update(params)

        scope(tracking, principal).update_model(model_id, change)
        return {}

    @get(_paths("logged-models/{model_id:str}/artifacts/directories"), sync_to_thread=True)
    def list_artifacts(self, model_id: str, tracking: Tracking, principal: Principal,
                       artifact_directory_path: str | None = None) -> dict[str, Any]:
        s = scope(tracking, principal)
        doc = s.model(model_id)
        root = s.model_root(doc)
        rel = clean_path(artifact_directory_path or "", allow_root=True)
        cut = len(root) + 1
        files = tracking.artifacts.list(f"{root}/{rel}" if rel else root)
        return {"root_uri": doc["artifact_uri"],
                "files": [_drop_none({"path": f.path[cut:], "is_dir": f.is_dir,
                                      "file_size": None if f.is_dir else f.size}) for f in files]}


# ---- proxied artifacts -------------------------------------------------------------------------------
class Target(msgspec.Struct):
    """Where a proxied path lands: a run's artifacts, or a logged model's."""

    slot_root: str
    rel: str
    run_id: str | None = None
    model: dict[str, Any] | None = None


def resolve_artifact_path(s: Scope, path: str, *, allow_root: bool) -> Target:
    """``{experiment_id}/{run_id}/artifacts/{rel}`` or ``{experiment_id}/models/{model_id}/artifacts/{rel}``."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    shape = ("artifact paths look like EXPERIMENT_ID/RUN_ID/artifacts/PATH or "
             "EXPERIMENT_ID/models/MODEL_ID/artifacts/PATH")
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        experiment_id = s.internal(parts[0], create=False)
        doc = s.model(parts[2])
        if doc["experiment_id"] != experiment_id:
            raise NotFound(f"logged model {parts[2]!r} does not exist in experiment {parts[0]!r}")
        rel = clean_path("/".join(parts[4:]), allow_root=allow_root)
        return Target(s.model_root(doc), rel, model=doc)
    if len(parts) >= 3 and parts[2] == "artifacts":
        experiment_id = s.internal(parts[0], create=False)
        run = s.run(parts[1])
        if run.experiment_id != experiment_id:
            raise NotFound(f"run {parts[1]!r} does not exist in experiment {parts[0]!r}")
        rel = clean_path("/".join(parts[3:]), allow_root=allow_root)
        return Target("", rel, run_id=run.run_id)
    raise InvalidInput(f"{path!r}: {shape}")


class MlflowArtifacts(Controller):
    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @put(_paths("artifacts/{path:path}", ARTIFACTS_API), status_code=200, request_max_body_size=None)
    async def upload(self, path: str, request: Request, tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        target = await anyio.to_thread.run_sync(lambda: resolve_artifact_path(s, path, allow_root=False))
        spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        try:
            async for chunk in request.stream():
                spool.write(chunk)
            spool.seek(0)
            if target.run_id is not None:
                run_id = target.run_id
                await anyio.to_thread.run_sync(lambda: tracking.log_artifact(s.tenant, run_id, target.rel, spool))
            else:
                full = f"{target.slot_root}/{target.rel}"
                await anyio.to_thread.run_sync(lambda: tracking.artifacts.put(full, spool))
        finally:
            spool.close()
        return {}

    @get(_paths("artifacts/{path:path}", ARTIFACTS_API), media_type="application/octet-stream")
    async def download(self, path: str, tracking: Tracking, principal: Principal) -> Stream:
        # async with the blocking part in a thread: a sync handler with several paths returning a
        # Stream trips Litestar 2.x (its response is never awaited).
        s = scope(tracking, principal)

        def open_file() -> tuple[Any, int]:
            target = resolve_artifact_path(s, path, allow_root=False)
            if target.run_id is not None:
                info = tracking.stat_artifact(s.tenant, target.run_id, target.rel)
                opener = lambda: tracking.open_artifact(s.tenant, target.run_id, target.rel)  # noqa: E731
            else:
                full = f"{target.slot_root}/{target.rel}"
                info = tracking.artifacts.stat(full)
                opener = lambda: tracking.artifacts.open(full)  # noqa: E731
            if info.is_dir:
                raise InvalidInput(f"{target.rel!r} is a folder; list it with GET "
                                   "/api/2.0/mlflow-artifacts/artifacts?path=...")
            return opener(), info.size

        handle, size = await anyio.to_thread.run_sync(open_file)

        def chunks():
            with handle:
                while chunk := handle.read(1 << 20):
                    yield chunk

        return Stream(chunks(), media_type="application/octet-stream", headers={"Content-Length": str(size)})

    @get(_paths("artifacts", ARTIFACTS_API), sync_to_thread=True)
    def listing(self, tracking: Tracking, principal: Principal, path: str | None = None) -> dict[str, Any]:
        s = scope(tracking, principal)
        parts = [p for p in (path or "").split("/") if p not in ("", ".")]
        if len(parts) == 2 or (len(parts) == 3 and parts[1] == "models"):
            # the folder above a run's (or a model's) artifacts: just "artifacts"
            resolve_artifact_path(s, "/".join([*parts, "artifacts"]), allow_root=True)
            return {"files": [{"path": "artifacts", "is_dir": True}]}
        if len(parts) < 3:
            return {}
        target = resolve_artifact_path(s, path or "", allow_root=True)
        if target.run_id is not None:
            files = tracking.list_artifacts(s.tenant, target.run_id, target.rel)
        else:
            files = tracking.artifacts.list(f"{target.slot_root}/{target.rel}" if target.rel else target.slot_root)
        out = [_drop_none({"path": f.path.rsplit("/", 1)[-1], "is_dir": f.is_dir,
                           "file_size": None if f.is_dir else f.size}) for f in files]
        return {"files": out} if out else {}

    @delete(_paths("artifacts/{path:path}", ARTIFACTS_API), sync_to_thread=True, status_code=200)
    def remove(self, path: str, tracking: Tracking, principal: Principal) -> dict[str, Any]:
        s = scope(tracking, principal)
        target = resolve_artifact_path(s, path, allow_root=True)
        if target.run_id is not None:
            tracking.delete_artifacts(s.tenant, target.run_id, target.rel)
        else:
            tracking.artifacts.delete(f"{target.slot_root}/{target.rel}" if target.rel else target.slot_root)
        return {}

    @post([*_paths("mpu/{action:str}/{path:path}", ARTIFACTS_API), *_paths("mpu/{action:str}", ARTIFACTS_API)],
          sync_to_thread=False, status_code=200)
    def multipart(self, action: str) -> dict[str, Any]:
        """Multipart uploads are not offered (server-info says so); the client then sends one PUT."""
        raise MlflowApiError("NOT_IMPLEMENTED", MULTIPART_UNSUPPORTED, 501)

    @get(_paths("presigned/{path:path}", ARTIFACTS_API), sync_to_thread=False)
    def presigned(self, path: str) -> dict[str, Any]:
        raise MlflowApiError("NOT_IMPLEMENTED", PRESIGNED_DOWNLOAD_UNSUPPORTED, 501)


class MlflowServerInfo(Controller):
    path = "/"
    tags = ["mlflow"]
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @get(["/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info"], sync_to_thread=False)
    def server_info(self) -> dict[str, Any]:
        """What the client probes before large uploads and for workspaces: neither is offered."""
        return {"store_type": "matih-lite", "workspaces_enabled": False, "trace_archival_enabled": False,
                "multipart_uploads_enabled": False, "multipart_downloads_enabled": False,
                "presigned_upload_run_id_supported": False, "presigned_upload_model_id_supported": False,
                "features_enabled": {"gateway": False}}

    @route([*_paths("{rest:path}"), *_paths("{rest:path}", ARTIFACTS_API), "/api/3.0/mlflow/{rest:path}",
            "/ajax-api/3.0/mlflow/{rest:path}"],
           http_method=["GET", "POST", "PUT", "PATCH", "DELETE"], sync_to_thread=False, status_code=404)
    def not_found(self, request: Request, rest: str) -> None:
        """Any other MLflow endpoint: ENDPOINT_NOT_FOUND, which the client knows how to fall back from."""
        raise _endpoint_not_found(request)

    @route(_paths("logged-models/{model_id:str}/{rest:path}"), http_method=["GET", "POST", "PUT", "PATCH", "DELETE"],
           sync_to_thread=False, status_code=404)
    def not_found_under_model(self, request: Request, model_id: str, rest: str) -> None:
        """The router does not fall back past a path parameter, so the catch-all repeats under one."""
        raise _endpoint_not_found(request)


def _endpoint_not_found(request: Request) -> MlflowApiError:
    return MlflowApiError("ENDPOINT_NOT_FOUND", f"{request.method} {request.url.path} is not served by "
                          "matih-lite's MLflow-compatible API", 404)


CONTROLLERS = [MlflowExperiments, MlflowRuns, MlflowMetrics, MlflowLoggedModels, MlflowArtifacts, MlflowServerInfo]
