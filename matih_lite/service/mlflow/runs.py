"""MLflow's runs routes: create, get, update, delete, restore, log (metrics, params, tags, batches),
search, inputs and outputs, MLflow 2's log-model record, metric history and the tracking API's listing."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from typing import Any

import msgspec
from litestar import Controller, get, post
from litestar.params import FromQuery, JSONBody

from matih_lite.contracts import Metric, Run
from matih_lite.contracts.logged_models import Dataset, DatasetInput, LoggedModelMetric, ModelOutput, RunIO
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.service.auth import LOCAL_ADMIN
from matih_lite.service.mlflow.api import (
    EXCEPTION_HANDLERS,
    KeyValue,
    drop_none,
    kv,
    millis,
    pairs,
    paths,
    required,
    result_limit,
    view_type,
)
from matih_lite.service.mlflow.filters import run_filter, run_order_by
from matih_lite.service.mlflow.scope import Scope, scope
from matih_lite.service.tracking import DEPENDENCIES, PrincipalDep, TrackingDep, json_float, parse_float
from matih_lite.tracking.service import MAX_PARAM_VALUE, MAX_TAG_VALUE, RUN_NAME_TAG, check_key, to_metric

log = logging.getLogger("matih_lite.service.mlflow")

RUN_STATUS_BY_NUMBER = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
LOG_MODEL_HISTORY_TAG = "mlflow.log-model.history"


# ---- request bodies (protobuf JSON; fields the client may add and we do not use are ignored) ------
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


# ---- answers -----------------------------------------------------------------------------------------
def metric_json(m: Metric) -> dict[str, Any]:
    """A metric point as MLflow's ``Metric``."""
    return {"key": m.key, "value": json_float(m.value), "timestamp": m.timestamp, "step": m.step}


def run_info_json(r: Run, s: Scope) -> dict[str, Any]:
    """A run as MLflow's ``RunInfo``."""
    return drop_none({"run_id": r.run_id, "run_uuid": r.run_id, "run_name": r.name,
                       "experiment_id": s.external(r.experiment_id), "user_id": r.user_id, "status": r.status,
                       "start_time": r.start_time, "end_time": r.end_time, "artifact_uri": r.artifact_uri,
                       "lifecycle_stage": r.lifecycle_stage})


def run_json(r: Run, s: Scope, io: RunIO | None = None) -> dict[str, Any]:
    """A run as MLflow's ``Run``; with its inputs and outputs when ``io`` is given (searches leave them out)."""
    out: dict[str, Any] = {
        "info": run_info_json(r, s),
        "data": {"metrics": [metric_json(m) for m in r.metrics.values()], "params": kv(r.params),
                 "tags": kv(r.tags)}}
    if io is not None:
        out["inputs"] = {"dataset_inputs": [dataset_input_json(d) for d in io.datasets],
                         "model_inputs": [{"model_id": m} for m in io.model_inputs]}
        out["outputs"] = {"model_outputs": [{"model_id": o.model_id, "step": o.step} for o in io.model_outputs]}
    return out


def dataset_input_json(d: DatasetInput) -> dict[str, Any]:
    """A dataset input as MLflow's ``DatasetInput``."""
    return {"tags": kv(d.tags), "dataset": drop_none(msgspec.structs.asdict(d.dataset))}


def run_id_of(data: Any) -> str:
    """The run a body names, as ``run_id`` or MLflow 2's ``run_uuid``."""
    return str(required(getattr(data, "run_id", None) or getattr(data, "run_uuid", None), "run_id"))


def _metric_points(s: Scope, run_id: str,
                   metrics: list[MetricIn]) -> tuple[list[Metric], dict[str, list[LoggedModelMetric]]]:
    """Checked points for the run, and the points to add to each logged model named by ``model_id``.

    A point that names a logged model and is already in the run's history (``log_model`` sends
    the run's metrics again, tagged with the new model) is kept once, as MLflow does.
    """
    points: list[Metric] = []
    by_model: dict[str, list[LoggedModelMetric]] = {}
    seen: set[tuple] = set()
    history: dict[str, set[tuple]] = {}
    for m in metrics:
        key = check_key(m.key, "metric")
        value = parse_float(required(m.value, "value"), key)
        point = to_metric(key, value, m.timestamp, m.step or 0)
        ident = (point.key, point.timestamp, point.step, "nan" if math.isnan(point.value) else point.value)
        if m.model_id:
            by_model.setdefault(m.model_id, []).append(LoggedModelMetric(
                point.key, point.value, point.timestamp, point.step, run_id, m.dataset_name or None,
                m.dataset_digest or None))
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


def _record_model_metrics(s: Scope, by_model: dict[str, list[LoggedModelMetric]]) -> None:
    for model_id, points in by_model.items():
        try:
            s.models.log_metrics(s.tenant, model_id, points)
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
    """``/api/2.0/mlflow/runs/*``."""

    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @post(paths("runs/create"), sync_to_thread=True, status_code=200)
    def create(self, data: JSONBody[CreateRunIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        experiment_id = s.internal(data.experiment_id)
        tags = pairs(data.tags, "tag", limit=MAX_TAG_VALUE)
        # Without authentication the caller's own user name is the best we know; with it, the principal.
        user = (data.user_id or principal.user) if principal == LOCAL_ADMIN else principal.user
        run = tracking.create_run(s.tenant, experiment_id, name=data.run_name or None, user_id=user,
                                  start_time=millis(data.start_time, "start_time"), tags=tags)
        return {"run": run_json(run, s, RunIO())}

    @get(paths("runs/get"), sync_to_thread=True)
    def read(self, tracking: TrackingDep, principal: PrincipalDep, run_id: FromQuery[str | None] = None,
             run_uuid: FromQuery[str | None] = None) -> dict[str, Any]:
        s = scope(tracking, principal)
        run = s.run(run_id or run_uuid)
        return {"run": run_json(run, s, s.models.run_io(s.tenant, run.run_id))}

    @post(paths("runs/update"), sync_to_thread=True, status_code=200)
    def update(self, data: JSONBody[UpdateRunIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        status = data.status
        if isinstance(status, int):
            status = RUN_STATUS_BY_NUMBER.get(status, str(status))
        run = tracking.update_run(s.tenant, run_id_of(data), status=status or None,
                                  end_time=millis(data.end_time, "end_time"), name=data.run_name or None)
        return {"run_info": run_info_json(run, s)}

    @post(paths("runs/delete"), sync_to_thread=True, status_code=200)
    def remove(self, data: JSONBody[RunIdIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        tracking.delete_run(principal.tenant, run_id_of(data))
        return {}

    @post(paths("runs/restore"), sync_to_thread=True, status_code=200)
    def restore(self, data: JSONBody[RunIdIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        tracking.restore_run(principal.tenant, run_id_of(data))
        return {}

    @post(paths("runs/log-metric"), sync_to_thread=True, status_code=200)
    def log_metric(self, data: JSONBody[LogMetricIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        required(data.key, "key")
        _log(s, run_id_of(data), metrics=[data])
        return {}

    @post(paths("runs/log-parameter"), sync_to_thread=True, status_code=200)
    def log_param(self, data: JSONBody[LogParamIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        _log(s, run_id_of(data), params=pairs([KeyValue(required(data.key, "key"), data.value)], "param",
                                             limit=MAX_PARAM_VALUE))
        return {}

    @post(paths("runs/set-tag"), sync_to_thread=True, status_code=200)
    def set_tag(self, data: JSONBody[SetTagIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        _log(s, run_id_of(data), tags=pairs([KeyValue(required(data.key, "key"), data.value)], "tag",
                                           limit=MAX_TAG_VALUE))
        return {}

    @post(paths("runs/delete-tag"), sync_to_thread=True, status_code=200)
    def delete_tag(self, data: JSONBody[DeleteTagIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        tracking.delete_tag(principal.tenant, run_id_of(data), required(data.key, "key"))
        return {}

    @post(paths("runs/log-batch"), sync_to_thread=True, status_code=200)
    def log_batch(self, data: JSONBody[LogBatchIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        _log(s, run_id_of(data), metrics=data.metrics, params=pairs(data.params, "param", limit=MAX_PARAM_VALUE),
             tags=pairs(data.tags, "tag", limit=MAX_TAG_VALUE))
        return {}

    @post(paths("runs/search"), sync_to_thread=True, status_code=200)
    def search(self, data: JSONBody[SearchRunsIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        ids = []
        for eid in data.experiment_ids:
            try:
                ids.append(s.internal(eid, create=False))
            except NotFound:
                continue  # no Default experiment yet: it has no runs
        page = tracking.search_runs(s.tenant, ids, filter=run_filter(data.filter),
                                    order_by=run_order_by(data.order_by),
                                    lifecycle=view_type(data.run_view_type),
                                    max_results=result_limit(data.max_results, 1000),
                                    page_token=data.page_token or None)
        out: dict[str, Any] = {"runs": [run_json(r, s) for r in page.items]}
        if page.next_token:
            out["next_page_token"] = page.next_token
        return out

    @post(paths("runs/log-inputs"), sync_to_thread=True, status_code=200)
    def log_inputs(self, data: JSONBody[LogInputsIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        run = s.run(data.run_id)
        _writable(run)
        datasets = [_dataset(d) for d in data.datasets]
        models = [str(required(m.model_id, "model_id")) for m in data.models]
        s.models.log_run_io(s.tenant, run.run_id, datasets=datasets, model_inputs=models)
        return {}

    @post(paths("runs/outputs"), sync_to_thread=True, status_code=200)
    def log_outputs(self, data: JSONBody[LogOutputsIn], tracking: TrackingDep,
                    principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        run = s.run(data.run_id)
        _writable(run)
        outputs = [ModelOutput(str(required(m.model_id, "model_id")), m.step or 0)
                   for m in required(data.models, "models")]
        s.models.log_run_io(s.tenant, run.run_id, model_outputs=outputs)
        return {}

    @post(paths("runs/log-model"), sync_to_thread=True, status_code=200)
    def log_model(self, data: JSONBody[LogModelIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
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


def _dataset(d: DatasetInputIn) -> DatasetInput:
    ds = required(d.dataset, "dataset")
    fields: dict[str, Any] = {}
    for field, limit in _DATASET_LIMITS.items():
        value = getattr(ds, field)
        if field in ("name", "digest", "source_type", "source"):
            required(value, f"dataset.{field}")
        if value is not None:
            if len(value) > limit:
                raise InvalidInput(f"dataset {field} is {len(value)} characters; the limit is {limit}")
            fields[field] = value
    tags = {}
    for t in d.tags:
        key = required(t.key, "tag.key")
        if len(key) > 255 or len(t.value or "") > 500:
            raise InvalidInput("dataset input tags are limited to 255-character keys and 500-character values")
        tags[key] = t.value or ""
    return DatasetInput(Dataset(**fields), tags)


class MlflowMetrics(Controller):
    """``/api/2.0/mlflow/metrics/get-history`` and the tracking API's ``artifacts/list``."""

    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @get(paths("metrics/get-history"), sync_to_thread=True)
    def history(self, tracking: TrackingDep, principal: PrincipalDep, run_id: FromQuery[str | None] = None,
                run_uuid: FromQuery[str | None] = None, metric_key: FromQuery[str | None] = None,
                max_results: FromQuery[int | None] = None, page_token: FromQuery[str | None] = None) -> dict[str, Any]:
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

    @get(paths("artifacts/list"), sync_to_thread=True)
    def list_artifacts(self, tracking: TrackingDep, principal: PrincipalDep, run_id: FromQuery[str | None] = None,
                       run_uuid: FromQuery[str | None] = None, path: FromQuery[str | None] = None) -> dict[str, Any]:
        """The tracking API's listing (MLflow's UI uses it); the client lists through mlflow-artifacts."""
        rid = str(required(run_id or run_uuid, "run_id"))
        run = tracking.get_run(principal.tenant, rid)
        files = tracking.list_artifacts(principal.tenant, rid, path or "")
        return {"root_uri": run.artifact_uri,
                "files": [drop_none({"path": f.path, "is_dir": f.is_dir, "file_size": None if f.is_dir else f.size})
                          for f in files]}


