"""``/api/v1`` for experiments, runs, metrics, params, tags and artifacts. Thin: parse, call, return."""

from __future__ import annotations

import math
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter
from litestar.response import Stream

from matih_lite.contracts import ArtifactInfo, Experiment, Metric, Run
from matih_lite.errors import InvalidInput
from matih_lite.host import Host
from matih_lite.service.auth import Principal, principal
from matih_lite.service.paths import artifact_path, receive_upload
from matih_lite.tracking import Tracking

JsonFloat = float | str
"""A float, or one of "NaN", "Infinity", "-Infinity" (JSON has no literal for them; protobuf's JSON convention)."""


def json_float(value: float) -> JsonFloat:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def parse_float(value: Any, key: str = "value") -> float:
    if isinstance(value, str):
        special = {"nan": math.nan, "infinity": math.inf, "inf": math.inf, "-infinity": -math.inf, "-inf": -math.inf}
        if value.lower() in special:
            return special[value.lower()]
    if isinstance(value, bool):
        raise InvalidInput(f"metric {key!r} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"metric {key!r} must be a number, got {value!r}") from None


# ---- DTOs ------------------------------------------------------------------------------------------
class MetricOut(msgspec.Struct):
    key: str
    value: JsonFloat
    timestamp: int
    step: int


class RunOut(msgspec.Struct):
    run_id: str
    experiment_id: str
    name: str
    status: str
    start_time: int
    end_time: int | None
    lifecycle_stage: str
    parent_run_id: str | None
    artifact_uri: str
    user_id: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, MetricOut]


class ExperimentOut(msgspec.Struct):
    experiment_id: str
    name: str
    description: str
    artifact_location: str
    lifecycle_stage: str
    creation_time: int
    last_update_time: int
    tags: dict[str, str]


class ExperimentPage(msgspec.Struct):
    experiments: list[ExperimentOut]
    next_page_token: str | None = None


class RunPage(msgspec.Struct):
    runs: list[RunOut]
    next_page_token: str | None = None


class MetricPage(msgspec.Struct):
    metrics: list[MetricOut]
    next_page_token: str | None = None


class ArtifactOut(msgspec.Struct):
    path: str
    is_dir: bool
    size: int | None = None
    sha256: str | None = None


class ArtifactList(msgspec.Struct):
    root_uri: str
    files: list[ArtifactOut]


class CreateExperiment(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str = ""
    tags: dict[str, str] = {}


class UpdateExperiment(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    description: str | None = None


class Tags(msgspec.Struct, forbid_unknown_fields=True):
    tags: dict[str, str]


class CreateRun(msgspec.Struct, forbid_unknown_fields=True):
    experiment_id: str | None = None
    experiment_name: str | None = None
    """Used (and created if missing) when experiment_id is not given."""
    name: str | None = None
    parent_run_id: str | None = None
    tags: dict[str, str] = {}
    start_time: int | None = None


class UpdateRun(msgspec.Struct, forbid_unknown_fields=True):
    status: str | None = None
    end_time: int | None = None
    name: str | None = None


class MetricIn(msgspec.Struct, forbid_unknown_fields=True):
    key: str
    value: float | str
    timestamp: int | None = None
    step: int = 0


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    metrics: list[MetricIn] = []
    params: dict[str, str | int | float | bool] = {}
    tags: dict[str, str] = {}


class SearchRuns(msgspec.Struct, forbid_unknown_fields=True):
    experiment_ids: list[str] = []
    experiment_names: list[str] = []
    filter: str | None = None
    order_by: list[str] = []
    max_results: int = 1000
    page_token: str | None = None
    columns: list[str] | None = None
    """e.g. ["metrics.auc", "params.*"]; null returns every param, metric and tag."""
    lifecycle: str = "active"


def experiment_out(e: Experiment) -> ExperimentOut:
    return ExperimentOut(e.experiment_id, e.name, e.description, e.artifact_location, e.lifecycle_stage,
                         e.creation_time, e.last_update_time, e.tags)


def metric_out(m: Metric) -> MetricOut:
    return MetricOut(m.key, json_float(m.value), m.timestamp, m.step)


def run_out(r: Run) -> RunOut:
    return RunOut(r.run_id, r.experiment_id, r.name, r.status, r.start_time, r.end_time, r.lifecycle_stage,
                  r.parent_run_id, r.artifact_uri, r.user_id, r.params, r.tags,
                  {k: metric_out(m) for k, m in r.metrics.items()})


def artifact_out(i: ArtifactInfo) -> ArtifactOut:
    return ArtifactOut(i.path, i.is_dir, None if i.is_dir else i.size, i.sha256)


TrackingDep = NamedDependency[Tracking]
PrincipalDep = NamedDependency[Principal]


def provide_tracking(host: NamedDependency[Host]) -> Tracking:
    return Tracking(host)


DEPENDENCIES = {"tracking": Provide(provide_tracking, sync_to_thread=False),
                "principal": Provide(principal, sync_to_thread=False)}


class ExperimentController(Controller):
    path = "/api/v1/experiments"
    tags = ["experiments"]
    dependencies = DEPENDENCIES

    @post("/", sync_to_thread=True, summary="Create an experiment")
    def create(self, data: JSONBody[CreateExperiment], tracking: TrackingDep, principal: PrincipalDep) -> ExperimentOut:
        return experiment_out(tracking.create_experiment(principal.tenant, data.name, description=data.description,
                                                         tags=data.tags))

    @get("/", sync_to_thread=True, summary="List experiments, newest first")
    def index(self, tracking: TrackingDep, principal: PrincipalDep, lifecycle: FromQuery[str] = "active",
             name_like: FromQuery[str | None] = None, max_results: Annotated[int, Parameter(ge=1, le=50_000)] = 1000,
             page_token: FromQuery[str | None] = None) -> ExperimentPage:
        page = tracking.search_experiments(principal.tenant, lifecycle=lifecycle, name_like=name_like,
                                           max_results=max_results, page_token=page_token)
        return ExperimentPage([experiment_out(e) for e in page.items], page.next_token)

    @get("/by-name/{name:str}", sync_to_thread=True, summary="Get an experiment by name")
    def by_name(self, name: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> ExperimentOut:
        return experiment_out(tracking.get_experiment_by_name(principal.tenant, name))

    @get("/{experiment_id:str}", sync_to_thread=True, summary="Get an experiment")
    def read(self, experiment_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> ExperimentOut:
        return experiment_out(tracking.get_experiment(principal.tenant, experiment_id))

    @patch("/{experiment_id:str}", sync_to_thread=True, summary="Rename or describe an experiment")
    def update(self, experiment_id: FromPath[str], data: JSONBody[UpdateExperiment], tracking: TrackingDep,
               principal: PrincipalDep) -> ExperimentOut:
        return experiment_out(tracking.update_experiment(principal.tenant, experiment_id, name=data.name,
                                                         description=data.description))

    @delete("/{experiment_id:str}", sync_to_thread=True, status_code=200,
            summary="Delete an experiment and its runs (restorable)")
    def remove(self, experiment_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> ExperimentOut:
        return experiment_out(tracking.delete_experiment(principal.tenant, experiment_id))

    @post("/{experiment_id:str}/restore", sync_to_thread=True, status_code=200, summary="Restore an experiment")
    def restore(self, experiment_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> ExperimentOut:
        return experiment_out(tracking.restore_experiment(principal.tenant, experiment_id))

    @put("/{experiment_id:str}/tags", sync_to_thread=True, summary="Set experiment tags")
    def set_tags(self, experiment_id: FromPath[str], data: JSONBody[Tags], tracking: TrackingDep,
                 principal: PrincipalDep) -> ExperimentOut:
        tracking.set_experiment_tags(principal.tenant, experiment_id, data.tags)
        return experiment_out(tracking.get_experiment(principal.tenant, experiment_id))


class RunController(Controller):
    path = "/api/v1/runs"
    tags = ["runs"]
    dependencies = DEPENDENCIES

    @post("/", sync_to_thread=True, summary="Start a run")
    def create(self, data: JSONBody[CreateRun], tracking: TrackingDep, principal: PrincipalDep) -> RunOut:
        if data.experiment_id is not None:
            experiment_id = data.experiment_id
        elif data.experiment_name:
            experiment_id = tracking.get_or_create_experiment(principal.tenant, data.experiment_name).experiment_id
        else:
            raise InvalidInput("give experiment_id or experiment_name")
        return run_out(tracking.create_run(principal.tenant, experiment_id, name=data.name,
                                           parent_run_id=data.parent_run_id, tags=data.tags,
                                           start_time=data.start_time, user_id=principal.user))

    @post("/search", sync_to_thread=True, status_code=200,
          summary="Search runs with an MLflow-style filter, order and column selection")
    def search(self, data: JSONBody[SearchRuns], tracking: TrackingDep, principal: PrincipalDep) -> RunPage:
        ids = list(data.experiment_ids)
        for name in data.experiment_names:
            ids.append(tracking.get_experiment_by_name(principal.tenant, name).experiment_id)
        page = tracking.search_runs(principal.tenant, ids, filter=data.filter, order_by=data.order_by or None,
                                    lifecycle=data.lifecycle, max_results=data.max_results,
                                    page_token=data.page_token, columns=data.columns)
        return RunPage([run_out(r) for r in page.items], page.next_token)

    @get("/compare", sync_to_thread=True,
         summary="Params and metrics of runs side by side, differences and best values marked")
    def compare(self, tracking: TrackingDep, principal: PrincipalDep,
                run_ids: Annotated[list[str],
                                   QueryParameter(name="run_ids", min_items=1, max_items=100)]) -> dict[str, Any]:
        result = tracking.compare_runs(principal.tenant, run_ids)
        for entry in result["metrics"].values():
            entry["values"] = [None if v is None else json_float(v) for v in entry["values"]]
        return result

    @get("/{run_id:str}", sync_to_thread=True, summary="Get a run with params, tags and latest metrics")
    def read(self, run_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> RunOut:
        return run_out(tracking.get_run(principal.tenant, run_id))

    @patch("/{run_id:str}", sync_to_thread=True, summary="Set a run's status, end time or name")
    def update(self, run_id: FromPath[str], data: JSONBody[UpdateRun], tracking: TrackingDep,
               principal: PrincipalDep) -> RunOut:
        return run_out(tracking.update_run(principal.tenant, run_id, status=data.status, end_time=data.end_time,
                                           name=data.name))

    @delete("/{run_id:str}", sync_to_thread=True, status_code=200, summary="Delete a run (restorable)")
    def remove(self, run_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> RunOut:
        return run_out(tracking.delete_run(principal.tenant, run_id))

    @post("/{run_id:str}/restore", sync_to_thread=True, status_code=200, summary="Restore a deleted run")
    def restore(self, run_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> RunOut:
        return run_out(tracking.restore_run(principal.tenant, run_id))

    @post("/{run_id:str}/batch", sync_to_thread=True, status_code=200,
          summary="Log metrics, params and tags in one all-or-nothing batch")
    def log_batch(self, run_id: FromPath[str], data: JSONBody[Batch], tracking: TrackingDep,
                  principal: PrincipalDep) -> dict[str, int]:
        from matih_lite.tracking.service import to_metric

        metrics = [to_metric(m.key, parse_float(m.value, m.key), m.timestamp, m.step) for m in data.metrics]
        tracking.log_batch(principal.tenant, run_id, metrics=metrics, params=data.params, tags=data.tags)
        return {"metrics": len(metrics), "params": len(data.params), "tags": len(data.tags)}

    @delete("/{run_id:str}/tags/{key:str}", sync_to_thread=True, status_code=204, summary="Delete a run tag")
    def delete_tag(self, run_id: FromPath[str], key: FromPath[str], tracking: TrackingDep,
                   principal: PrincipalDep) -> None:
        tracking.delete_tag(principal.tenant, run_id, key)

    @get("/{run_id:str}/metrics/history", sync_to_thread=True,
         summary="Every point of a metric, by step (the key is a query parameter, so it may hold '/')")
    def history(self, run_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep,
                key: Annotated[str, QueryParameter(name="key", min_length=1)],
                max_results: Annotated[int | None, Parameter(ge=1, le=1_000_000)] = None,
                page_token: FromQuery[str | None] = None) -> MetricPage:
        page = tracking.metric_history(principal.tenant, run_id, key, max_results=max_results,
                                       page_token=page_token)
        return MetricPage([metric_out(m) for m in page.items], page.next_token)

    @get("/{run_id:str}/artifacts", sync_to_thread=True, summary="List a run's artifacts under a folder")
    def list_artifacts(self, run_id: FromPath[str], tracking: TrackingDep, principal: PrincipalDep,
                       path: FromQuery[str] = "",
                       recursive: FromQuery[bool] = False) -> ArtifactList:
        files = tracking.list_artifacts(principal.tenant, run_id, path, recursive=recursive)
        return ArtifactList(tracking.get_run(principal.tenant, run_id).artifact_uri,
                            [artifact_out(i) for i in files])

    @put("/{run_id:str}/artifacts/{path:path}", summary="Upload one artifact file (the raw request body)",
         request_max_body_size=None)
    async def upload(self, run_id: FromPath[str], path: FromPath[str], request: Request, tracking: TrackingDep,
                     principal: PrincipalDep) -> ArtifactOut:
        rel = artifact_path(request, path)
        _, root = await anyio.to_thread.run_sync(lambda: tracking._artifact_root(principal.tenant, run_id))
        spool = await receive_upload(request, tracking, principal.tenant, f"{root}/{rel}")  # [quotas]: 413, 507
        try:
            info = await anyio.to_thread.run_sync(lambda: tracking.log_artifact(principal.tenant, run_id, rel, spool))
        finally:
            spool.close()
        return artifact_out(info)

    @get("/{run_id:str}/artifacts/{path:path}", sync_to_thread=True, summary="Download one artifact file",
         media_type="application/octet-stream")
    def download(self, run_id: FromPath[str], path: FromPath[str], request: Request, tracking: TrackingDep,
                 principal: PrincipalDep) -> Response:
        rel = artifact_path(request, path)
        info = tracking.stat_artifact(principal.tenant, run_id, rel)
        if info.is_dir:
            raise InvalidInput(f"{rel!r} is a folder; list it with GET /api/v1/runs/{run_id}/artifacts?path={rel}")
        handle = tracking.open_artifact(principal.tenant, run_id, rel)

        def chunks():
            with handle:
                while chunk := handle.read(1 << 20):
                    yield chunk

        headers = {"X-Sha256": info.sha256 or "", "Content-Length": str(info.size)}
        return Stream(chunks(), media_type="application/octet-stream", headers=headers)


class EnvironmentController(Controller):
    path = "/api/v1/environments"
    tags = ["runs"]
    dependencies = DEPENDENCIES

    @put("/", summary="Store a package list once per distinct content; runs tag its sha256",
         request_max_body_size=8 << 20)
    async def store(self, request: Request, tracking: TrackingDep, principal: PrincipalDep) -> dict[str, str]:
        body = await request.body()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the environment must be UTF-8 text") from None
        sha = await anyio.to_thread.run_sync(lambda: tracking.store_environment(principal.tenant, text))
        return {"sha256": sha}

    @get("/{sha:str}", sync_to_thread=True, media_type="text/plain", summary="A stored package list")
    def read(self, sha: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> str:
        return tracking.read_environment(principal.tenant, sha)


CONTROLLERS = [ExperimentController, RunController, EnvironmentController]
