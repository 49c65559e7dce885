"""MLflow's experiments routes: create, get (by id or name), search, update, delete, restore, tags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Controller, get, post
from litestar.params import FromQuery, JSONBody

from matih_lite.contracts import Experiment
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.service.mlflow.api import (
    EXCEPTION_HANDLERS,
    SEARCH_MAX_RESULTS,
    KeyValue,
    MlflowApiError,
    kv,
    page_of,
    pairs,
    paths,
    required,
    result_limit,
    view_type,
)
from matih_lite.service.mlflow.filters import matches, order_item, parse_simple_filter, sort_rows
from matih_lite.service.mlflow.scope import DEFAULT_EXPERIMENT_NAME, Scope, scope
from matih_lite.service.tracking import DEPENDENCIES, PrincipalDep, TrackingDep
from matih_lite.tracking.service import MAX_TAG_VALUE


# ---- request bodies (protobuf JSON; fields the client may add and we do not use are ignored) ------
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


# ---- answers -----------------------------------------------------------------------------------------
def experiment_json(e: Experiment, s: Scope) -> dict[str, Any]:
    """An experiment as MLflow's ``Experiment`` (the Default one as "0")."""
    ext = s.external(e.experiment_id)
    return {"experiment_id": ext, "name": e.name,
            "artifact_location": e.artifact_location or f"mlflow-artifacts:/{e.experiment_id}",
            "lifecycle_stage": e.lifecycle_stage, "last_update_time": e.last_update_time,
            "creation_time": e.creation_time, "tags": kv(e.tags)}


_EXPERIMENT_ATTRIBUTES = {"name": "str", "experiment_id": "str", "creation_time": "int", "last_update_time": "int",
                          "lifecycle_stage": "str"}


class MlflowExperiments(Controller):
    """``/api/2.0/mlflow/experiments/*``."""

    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @post(paths("experiments/create"), sync_to_thread=True, status_code=200)
    def create(self, data: JSONBody[CreateExperimentIn], tracking: TrackingDep,
               principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        name = required(data.name, "name")
        # artifact_location is not honoured: every run's files go to this platform's artifacts slot.
        exp = tracking.create_experiment(s.tenant, name, tags=pairs(data.tags, "tag", limit=MAX_TAG_VALUE))
        return {"experiment_id": s.external(exp.experiment_id)}

    @get(paths("experiments/get"), sync_to_thread=True)
    def read(self, tracking: TrackingDep, principal: PrincipalDep,
             experiment_id: FromQuery[str | None] = None) -> dict[str, Any]:
        s = scope(tracking, principal)
        return {"experiment": experiment_json(tracking.get_experiment(s.tenant, s.internal(experiment_id)), s)}

    @get(paths("experiments/get-by-name"), sync_to_thread=True)
    def by_name(self, tracking: TrackingDep, principal: PrincipalDep,
                experiment_name: FromQuery[str | None] = None) -> dict[str, Any]:
        s = scope(tracking, principal)
        name = required(experiment_name, "experiment_name")
        if name == DEFAULT_EXPERIMENT_NAME:
            s.default_id(create=True)
        try:
            exp = tracking.get_experiment_by_name(s.tenant, name)
        except NotFound:
            raise NotFound(f"Could not find experiment with name '{name}'") from None
        return {"experiment": experiment_json(exp, s)}

    @post(paths("experiments/search"), sync_to_thread=True, status_code=200)
    def search(self, data: JSONBody[SearchExperimentsIn], tracking: TrackingDep,
               principal: PrincipalDep) -> dict[str, Any]:
        return self._search(scope(tracking, principal), data)

    @get(paths("experiments/search"), sync_to_thread=True, name="mlflow-experiments-search-get")
    def search_get(self, tracking: TrackingDep, principal: PrincipalDep, max_results: FromQuery[int | None] = None,
                   page_token: FromQuery[str | None] = None, filter: FromQuery[str | None] = None,
                   order_by: FromQuery[list[str] | None] = None,
                   view_type: FromQuery[str | None] = None) -> dict[str, Any]:
        data = SearchExperimentsIn(max_results, page_token, filter, order_by or [], view_type)
        return self._search(scope(tracking, principal), data)

    @staticmethod
    def _search(s: Scope, data: SearchExperimentsIn) -> dict[str, Any]:
        lifecycle = view_type(data.view_type)
        limit = result_limit(data.max_results, 1000)
        clauses = parse_simple_filter(data.filter, _EXPERIMENT_ATTRIBUTES)
        orders = [order_item(o) for o in data.order_by if o.strip()]
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
        return page_of(sort_rows(rows, sort_keys), "experiments", limit, data.page_token)

    @post(paths("experiments/update"), sync_to_thread=True, status_code=200)
    def update(self, data: JSONBody[UpdateExperimentIn], tracking: TrackingDep,
               principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        tracking.update_experiment(s.tenant, s.internal(data.experiment_id), name=required(data.new_name, "new_name"))
        return {}

    @post(paths("experiments/delete"), sync_to_thread=True, status_code=200)
    def remove(self, data: JSONBody[ExperimentIdIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        tracking.delete_experiment(s.tenant, s.internal(data.experiment_id, create=False))
        return {}

    @post(paths("experiments/restore"), sync_to_thread=True, status_code=200)
    def restore(self, data: JSONBody[ExperimentIdIn], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        tracking.restore_experiment(s.tenant, s.internal(data.experiment_id, create=False))
        return {}

    @post(paths("experiments/set-experiment-tag"), sync_to_thread=True, status_code=200)
    def set_tag(self, data: JSONBody[ExperimentTagIn], tracking: TrackingDep,
                principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        key = required(data.key, "key")
        tracking.set_experiment_tags(s.tenant, s.internal(data.experiment_id), {key: data.value or ""})
        return {}

    @post(paths("experiments/delete-experiment-tag"), sync_to_thread=True, status_code=200)
    def delete_tag(self, data: JSONBody[ExperimentTagIn]) -> dict[str, Any]:
        raise MlflowApiError("NOT_IMPLEMENTED", "deleting an experiment tag is not supported by matih-lite yet; "
                             "set it to an empty value instead", 501)


