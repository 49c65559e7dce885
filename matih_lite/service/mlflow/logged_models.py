"""MLflow 3's logged-models routes: create, search, get, finalize, delete, tags, params, artifact listing.

The records and their rules are the tracking domain's (:class:`~matih_lite.tracking.LoggedModels`),
kept in the metadata slot; this module only translates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody

from matih_lite.contracts.artifacts import clean_path
from matih_lite.contracts.logged_models import LoggedModel, LoggedModelMetric
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.service.mlflow.api import (
    EXCEPTION_HANDLERS,
    KeyValue,
    drop_none,
    kv,
    page_of,
    pairs,
    paths,
    required,
    result_limit,
)
from matih_lite.service.mlflow.filters import matches, order_item, parse_simple_filter, sort_rows
from matih_lite.service.mlflow.scope import Scope, scope
from matih_lite.service.tracking import DEPENDENCIES, PrincipalDep, TrackingDep, json_float
from matih_lite.tracking.service import MAX_PARAM_VALUE, MAX_TAG_VALUE

MODEL_STATUSES = ("LOGGED_MODEL_STATUS_UNSPECIFIED", "LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY",
                  "LOGGED_MODEL_UPLOAD_FAILED")
"""The protobuf enum, in number order: a client may send the number."""


# ---- request bodies (protobuf JSON; fields the client may add and we do not use are ignored) ------
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


# ---- answers -----------------------------------------------------------------------------------------
def model_metric_json(m: LoggedModelMetric, model_id: str) -> dict[str, Any]:
    """A logged model's metric point as MLflow's ``Metric`` (with its run, model and dataset)."""
    return drop_none({"key": m.key, "value": json_float(m.value), "timestamp": m.timestamp, "step": m.step,
                      "run_id": m.run_id, "model_id": model_id, "dataset_name": m.dataset_name,
                      "dataset_digest": m.dataset_digest})


def logged_model_json(model: LoggedModel, s: Scope) -> dict[str, Any]:
    """A logged model as MLflow 3's ``LoggedModel`` (info and data)."""
    info = drop_none({
        "model_id": model.model_id, "experiment_id": s.external(model.experiment_id), "name": model.name,
        "creation_timestamp_ms": model.creation_time, "last_updated_timestamp_ms": model.last_update_time,
        "artifact_uri": model.artifact_uri, "status": model.status, "model_type": model.model_type,
        "source_run_id": model.source_run_id, "status_message": model.status_message, "tags": kv(model.tags),
        "registrations": []})
    return {"info": info, "data": {"params": kv(model.params),
                                   "metrics": [model_metric_json(m, model.model_id) for m in model.metrics]}}


_MODEL_ATTRIBUTES = {"name": "str", "model_id": "str", "model_type": "str", "status": "str",
                     "source_run_id": "str", "creation_timestamp": "int", "creation_time": "int",
                     "last_updated_timestamp": "int", "experiment_id": "str"}


def _model_value(model: LoggedModel, kind: str, key: str) -> Any:
    """What a filter or an ordering compares: a tag, a param, a metric's latest value or an attribute."""
    if kind == "tag":
        return model.tags.get(key)
    if kind == "param":
        return model.params.get(key)
    if kind == "metric":
        points = [p for p in model.metrics if p.key == key]
        if not points:
            return None
        return max(points, key=lambda p: (p.step, p.timestamp)).value
    if key in ("creation_timestamp", "creation_time"):
        return model.creation_time
    if key == "last_updated_timestamp":
        return model.last_update_time
    if key == "status":
        return model.status.removeprefix("LOGGED_MODEL_")
    return getattr(model, key, None)


class MlflowLoggedModels(Controller):
    """``/api/2.0/mlflow/logged-models``."""

    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @post(paths("logged-models"), sync_to_thread=True, status_code=200)
    def create(self, data: JSONBody[CreateLoggedModelIn], tracking: TrackingDep,
               principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        model = s.models.create(s.tenant, s.internal(data.experiment_id), name=data.name,
                                model_type=data.model_type or None, source_run_id=data.source_run_id or None,
                                creator=s.acting_user(data.source_run_id),
                                tags=pairs(data.tags, "tag", limit=MAX_TAG_VALUE),
                                params=pairs(data.params, "param", limit=MAX_PARAM_VALUE))
        return {"model": logged_model_json(model, s)}

    @post(paths("logged-models/search"), sync_to_thread=True, status_code=200)
    def search(self, data: JSONBody[SearchLoggedModelsIn], tracking: TrackingDep,
               principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        ids = set()
        for eid in required(data.experiment_ids, "experiment_ids"):
            try:
                ids.add(s.internal(eid, create=False))
            except NotFound:
                continue
        limit = result_limit(data.max_results, 100)
        clauses = parse_simple_filter(data.filter, _MODEL_ATTRIBUTES)
        models = [m for m in (s.models.search(s.tenant, sorted(ids)) if ids else [])
                  if matches(clauses, lambda kind, key, m=m: _model_value(m, kind, key))]
        keys: list[tuple[Callable[[Any], Any], bool]] = []
        for ob in data.order_by:
            kind, key, _ = order_item(required(ob.field_name, "order_by.field_name"))
            if kind == "attribute" and key not in _MODEL_ATTRIBUTES:
                raise InvalidInput(f"invalid order_by field {ob.field_name!r}")
            keys.append((lambda m, kind=kind, key=key: _model_value(m, kind, key), ob.ascending))
        keys += [(lambda m: m.creation_time, False), (lambda m: m.model_id, True)]
        out = page_of(sort_rows(models, keys), "models", limit, data.page_token)
        out["models"] = [logged_model_json(m, s) for m in out["models"]]
        return out

    @get(paths("logged-models/{model_id:str}"), sync_to_thread=True)
    def read(self, model_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep,
             allow_deleted: FromQuery[bool] = False) -> dict[str, Any]:
        s = scope(tracking, principal)
        return {"model": logged_model_json(s.model(model_id, allow_deleted=allow_deleted), s)}

    @patch(paths("logged-models/{model_id:str}"), sync_to_thread=True)
    def finalize(self, model_id: FromPath[str], data: JSONBody[FinalizeLoggedModelIn], tracking: TrackingDep,
                 principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        status = required(data.status, "status")
        if isinstance(status, int):
            status = MODEL_STATUSES[status] if 0 <= status < len(MODEL_STATUSES) else str(status)
        return {"model": logged_model_json(s.models.finalize(s.tenant, model_id, status), s)}

    @delete(paths("logged-models/{model_id:str}"), sync_to_thread=True, status_code=200)
    def remove(self, model_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        s.models.delete(s.tenant, model_id)
        return {}

    @patch(paths("logged-models/{model_id:str}/tags"), sync_to_thread=True)
    def set_tags(self, model_id: FromPath[str], data: JSONBody[LoggedModelTagsIn], tracking: TrackingDep,
                 principal: PrincipalDep) -> dict[str, Any]:
        tags = pairs(data.tags, "tag", limit=MAX_TAG_VALUE)
        s = scope(tracking, principal)
        s.models.set_tags(s.tenant, model_id, tags)
        return {}

    @delete(paths("logged-models/{model_id:str}/tags/{tag_key:path}"), sync_to_thread=True, status_code=200)
    def delete_tag(self, model_id: FromPath[str], tag_key: FromPath[str], tracking: TrackingDep,
                   principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        s.models.delete_tag(s.tenant, model_id, tag_key.lstrip("/"))
        return {}

    @post(paths("logged-models/{model_id:str}/params"), sync_to_thread=True, status_code=200)
    def log_params(self, model_id: FromPath[str], data: JSONBody[LoggedModelParamsIn], tracking: TrackingDep,
                   principal: PrincipalDep) -> dict[str, Any]:
        params = pairs(data.params, "param", limit=MAX_PARAM_VALUE)
        s = scope(tracking, principal)
        s.models.log_params(s.tenant, model_id, params)
        return {}

    @get(paths("logged-models/{model_id:str}/artifacts/directories"), sync_to_thread=True)
    def list_artifacts(self, model_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep,
                       artifact_directory_path: FromQuery[str | None] = None) -> dict[str, Any]:
        s = scope(tracking, principal)
        model = s.model(model_id)
        root = s.models.files_root(model)
        rel = clean_path(artifact_directory_path or "", allow_root=True)
        cut = len(root) + 1
        files = tracking.artifacts.list(f"{root}/{rel}" if rel else root)
        return {"root_uri": model.artifact_uri,
                "files": [drop_none({"path": f.path[cut:], "is_dir": f.is_dir,
                                     "file_size": None if f.is_dir else f.size}) for f in files]}
