"""MLflow-compatible model registry REST: the unchanged ``mlflow`` client (3.x) registers and promotes here.

Served beside the tracking routes of :mod:`matih_lite.service.mlflow` under
``/api/2.0/mlflow/`` (and ``/ajax-api/2.0/mlflow/``): ``registered-models/*``, ``model-versions/*``,
``get-latest-versions``, ``transition-stage`` and the aliases, in protobuf JSON as the client sends
and parses it (versions as strings, errors as ``{"error_code", "message"}``).

Every rule stays in :class:`~matih_lite.registry.Registry`, so governance holds here too:

- MLflow's stage ``None`` is matih-lite's Development; ``Staging``, ``Production`` and ``Archived``
  are the same names.
- A refused transition (Staging thresholds unmet, Production not from Staging) answers
  ``400 INVALID_STATE`` with the reason, each unmet threshold and its actual value in ``message``;
  the client raises it as ``MlflowException``.
- ``transition-stage`` to Production with approvers in the policy does not move the version: it
  creates the pending approval and answers ``400 INVALID_STATE`` saying so, with the approval id
  and who may approve it (the client raises that too; the version moves when an approver
  approves). Only a policy with ``production_approvers = []`` lets Production happen at once.
- ``archive_existing_versions`` archives the other versions in Staging when entering Staging;
  entering Production always archives the version there before, whatever the flag says.
- A ``models:/m-...`` source (what MLflow 3's ``log_model(..., registered_model_name=...)`` sends)
  is resolved to the logged model's artifact location, which ``get-download-uri`` returns, so
  ``mlflow.pyfunc.load_model("models:/churn/1")`` reads the files through the artifacts proxy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery, JSONBody

from matih_lite.contracts.registry import Approval, ModelVersion, RegisteredModel
from matih_lite.errors import GovernanceRefused, NotFound
from matih_lite.host import Host
from matih_lite.registry import Registry
from matih_lite.registry.service import normalize_stage
from matih_lite.service.auth import Principal, principal
from matih_lite.service.mlflow.api import (
    EXCEPTION_HANDLERS,
    KeyValue,
    drop_none,
    error_body,
    kv,
    page_of,
    paths,
    required,
    result_limit,
)
from matih_lite.service.mlflow.filters import matches_registry, order_rows, parse_simple_filter
from matih_lite.service.mlflow.scope import Scope

MLFLOW_STAGE = {"Development": "None", "Staging": "Staging", "Production": "Production", "Archived": "Archived"}
SEARCH_MAX_RESULTS = 50_000
_MODEL_ATTRIBUTES = {"name": "str", "creation_timestamp": "int", "last_updated_timestamp": "int", "user_id": "str",
                     "description": "str"}
_VERSION_ATTRIBUTES = {"name": "str", "version_number": "int", "run_id": "str", "source_path": "str",
                       "current_stage": "str", "user_id": "str", "creation_timestamp": "int",
                       "last_updated_timestamp": "int", "status": "str"}


def governance_error_handler(request: Request, exc: GovernanceRefused) -> Response:
    """A governance refusal in MLflow's words: 400 INVALID_STATE, the reason in ``message``."""
    return error_body("INVALID_STATE", exc.message, 400)


EXCEPTION_HANDLERS_WITH_GOVERNANCE = {**EXCEPTION_HANDLERS, GovernanceRefused: governance_error_handler}


# ---- request bodies (protobuf JSON) -------------------------------------------------------------------
class CreateModelIn(msgspec.Struct):
    name: str | None = None
    tags: list[KeyValue] = []
    description: str | None = None


class NameIn(msgspec.Struct):
    name: str | None = None


class UpdateModelIn(msgspec.Struct):
    name: str | None = None
    description: str | None = None


class RenameModelIn(msgspec.Struct):
    name: str | None = None
    new_name: str | None = None


class LatestVersionsIn(msgspec.Struct):
    name: str | None = None
    stages: list[str] = []


def latest_versions(registry: Registry, principal: Principal, name: str | None, stages: list[str]) -> dict[str, Any]:
    """``get-latest-versions`` (POST with a body, GET with a query): the newest version in each stage."""
    found = registry.latest_versions(principal, required(name, "name"), stages or None)
    return {"model_versions": [version_json(v) for v in found]}


class ModelTagIn(msgspec.Struct):
    name: str | None = None
    key: str | None = None
    value: str | None = None


class AliasIn(msgspec.Struct):
    name: str | None = None
    alias: str | None = None
    version: str | int | None = None


class CreateVersionIn(msgspec.Struct):
    name: str | None = None
    source: str | None = None
    run_id: str | None = None
    tags: list[KeyValue] = []
    run_link: str | None = None
    description: str | None = None
    model_id: str | None = None


class VersionIn(msgspec.Struct):
    name: str | None = None
    version: str | int | None = None


class UpdateVersionIn(VersionIn):
    description: str | None = None


class TransitionIn(VersionIn):
    stage: str | None = None
    archive_existing_versions: bool = False


class VersionTagIn(VersionIn):
    key: str | None = None
    value: str | None = None


# ---- answers ------------------------------------------------------------------------------------------
def _creator(registry: Registry, principal: Principal, data: CreateVersionIn) -> Principal:
    """The principal a new version is created by: the caller, with the user of the source's run as its name
    on a service without auth (MLflow's client sends no user with a version; the run holds its ``mlflow.user``)."""
    run_id = data.run_id or None
    source = data.source or ""
    if run_id is None and source.startswith("runs:/"):
        run_id = source[len("runs:/"):].split("/", 1)[0] or None
    model_id = data.model_id or (source[len("models:/"):].split("/", 1)[0] if source.startswith("models:/m-") else None)
    s = Scope(registry.tracking, principal)
    if run_id is None and model_id:
        try:
            run_id = s.model(model_id).source_run_id
        except NotFound:
            run_id = None  # the registry says what is wrong with the source
    user = s.acting_user(run_id)
    return principal if user == principal.user else Principal(principal.tenant, user, principal.roles)


def _tags(items: list[KeyValue]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        out[str(required(item.key, "tag.key"))] = item.value or ""
    return out


def version_json(v: ModelVersion) -> dict[str, Any]:
    """A version as MLflow's ``ModelVersion`` (Development as stage "None")."""
    return drop_none({
        "name": v.name, "version": str(v.version), "creation_timestamp": v.creation_time,
        "last_updated_timestamp": v.last_update_time, "user_id": v.created_by,
        "current_stage": MLFLOW_STAGE.get(v.stage, v.stage), "description": v.description, "source": v.source,
        "run_id": v.run_id or None, "status": v.status, "tags": kv(v.tags), "run_link": "", "aliases": v.aliases,
        "model_id": v.logged_model_id})


def model_json(m: RegisteredModel, latest: list[ModelVersion]) -> dict[str, Any]:
    """A model as MLflow's ``RegisteredModel``, with its latest version per stage."""
    return {"name": m.name, "creation_timestamp": m.creation_time, "last_updated_timestamp": m.last_update_time,
            "user_id": m.owner, "description": m.description, "latest_versions": [version_json(v) for v in latest],
            "tags": kv(m.tags), "aliases": [{"alias": a, "version": str(v)} for a, v in m.aliases.items()]}


def pending_message(approval: Approval, approvers: str) -> str:
    """What the client is told when Production waits for an approval, and how to give it."""
    return (f"Production for version {approval.version} of model '{approval.name}' needs an approval: request "
            f"{approval.approval_id} is pending (approvers: {approvers}). The version stays in Staging until it is "
            f"approved with 'matih-lite models approve {approval.approval_id}' or "
            f"POST /api/v1/approvals/{approval.approval_id}/approve.")


def _all(fetch: Callable[[str | None], Any]) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        page = fetch(token)
        items.extend(page.items)
        token = page.next_token
        if not token:
            return items


RegistryDep = NamedDependency[Registry]
PrincipalDep = NamedDependency[Principal]


def provide_registry(host: NamedDependency[Host]) -> Registry:
    """The registry domain over the app's host, per request."""
    return Registry(host)


DEPENDENCIES = {"registry": Provide(provide_registry, sync_to_thread=False),
                "principal": Provide(principal, sync_to_thread=False)}


class MlflowRegisteredModels(Controller):
    """``/api/2.0/mlflow/registered-models/*``."""

    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS_WITH_GOVERNANCE  # type: ignore[assignment]
    include_in_schema = False

    @staticmethod
    def _answer(registry: Registry, p: Principal, name: str) -> dict[str, Any]:
        model = registry.get_model(p, name)
        return {"registered_model": model_json(model, registry.latest_versions(p, model.name))}

    @post(paths("registered-models/create"), sync_to_thread=True, status_code=200)
    def create(self, data: JSONBody[CreateModelIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        model = registry.create_model(principal, required(data.name, "name"), description=data.description or "",
                                      tags=_tags(data.tags))
        return {"registered_model": model_json(model, [])}

    @get(paths("registered-models/get"), sync_to_thread=True)
    def read(self, registry: RegistryDep, principal: PrincipalDep,
             name: FromQuery[str | None] = None) -> dict[str, Any]:
        return self._answer(registry, principal, required(name, "name"))

    @get(paths("registered-models/search"), sync_to_thread=True)
    def search(self, registry: RegistryDep, principal: PrincipalDep, filter: FromQuery[str | None] = None,
               max_results: FromQuery[int | None] = None, order_by: FromQuery[list[str] | None] = None,
               page_token: FromQuery[str | None] = None) -> dict[str, Any]:
        limit = result_limit(max_results, 100)
        clauses = parse_simple_filter(filter, _MODEL_ATTRIBUTES)
        models = _all(lambda t: registry.list_models(principal, max_results=SEARCH_MAX_RESULTS, page_token=t))
        rows = []
        for m in models:
            row = {"name": m.name, "creation_timestamp": m.creation_time, "last_updated_timestamp": m.last_update_time,
                   "user_id": m.owner, "description": m.description}
            if matches_registry(clauses, lambda kind, key, m=m, row=row: m.tags.get(key) if kind == "tag"
                                else row.get(key)):
                rows.append((row, m))
        ordered = order_rows([r for r, _ in rows], order_by or [], set(_MODEL_ATTRIBUTES), [("name", True)])
        by_name = {m.name: m for _, m in rows}
        page = page_of(ordered, "registered_models", limit, page_token)
        page["registered_models"] = [model_json(by_name[r["name"]], registry.latest_versions(principal, r["name"]))
                                     for r in page["registered_models"]]
        return page

    @patch(paths("registered-models/update"), sync_to_thread=True)
    def update(self, data: JSONBody[UpdateModelIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        name = required(data.name, "name")
        registry.update_model(principal, name, description=data.description if data.description is not None else "")
        return self._answer(registry, principal, name)

    @post(paths("registered-models/rename"), sync_to_thread=True, status_code=200)
    def rename(self, data: JSONBody[RenameModelIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        new_name = required(data.new_name, "new_name")
        registry.update_model(principal, required(data.name, "name"), new_name=new_name)
        return self._answer(registry, principal, new_name)

    @delete(paths("registered-models/delete"), sync_to_thread=True, status_code=200)
    def remove(self, data: JSONBody[NameIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.delete_model(principal, required(data.name, "name"))
        return {}

    @post(paths("registered-models/get-latest-versions"), sync_to_thread=True, status_code=200)
    def latest(self, data: JSONBody[LatestVersionsIn], registry: RegistryDep,
               principal: PrincipalDep) -> dict[str, Any]:
        return latest_versions(registry, principal, data.name, data.stages)

    @get(paths("registered-models/get-latest-versions"), sync_to_thread=True,
         name="mlflow-registry-latest-versions-get")
    def latest_get(self, registry: RegistryDep, principal: PrincipalDep, name: FromQuery[str | None] = None,
                   stages: FromQuery[list[str] | None] = None) -> dict[str, Any]:
        return latest_versions(registry, principal, name, stages or [])

    @post(paths("registered-models/set-tag"), sync_to_thread=True, status_code=200)
    def set_tag(self, data: JSONBody[ModelTagIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.update_model(principal, required(data.name, "name"),
                              tags={required(data.key, "key"): data.value or ""})
        return {}

    @delete(paths("registered-models/delete-tag"), sync_to_thread=True, status_code=200)
    def delete_tag(self, data: JSONBody[ModelTagIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.delete_model_tag(principal, required(data.name, "name"), required(data.key, "key"))
        return {}

    @post(paths("registered-models/alias"), sync_to_thread=True, status_code=200)
    def set_alias(self, data: JSONBody[AliasIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.set_alias(principal, required(data.name, "name"), required(data.alias, "alias"),
                           required(data.version, "version"))
        return {}

    @get(paths("registered-models/alias"), sync_to_thread=True, name="mlflow-registry-alias-get")
    def get_alias(self, registry: RegistryDep, principal: PrincipalDep, name: FromQuery[str | None] = None,
                  alias: FromQuery[str | None] = None) -> dict[str, Any]:
        found = registry.get_version_by_alias(principal, required(name, "name"), required(alias, "alias"))
        return {"model_version": version_json(found)}

    @delete(paths("registered-models/alias"), sync_to_thread=True, status_code=200,
            name="mlflow-registry-alias-delete")
    def delete_alias(self, data: JSONBody[AliasIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.delete_alias(principal, required(data.name, "name"), required(data.alias, "alias"))
        return {}


class MlflowModelVersions(Controller):
    """``/api/2.0/mlflow/model-versions/*``."""

    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS_WITH_GOVERNANCE  # type: ignore[assignment]
    include_in_schema = False

    @post(paths("model-versions/create"), sync_to_thread=True, status_code=200)
    def create(self, data: JSONBody[CreateVersionIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        mv = registry.register_version(
            _creator(registry, principal, data), required(data.name, "name"), required(data.source, "source"),
            run_id=data.run_id or None,
            logged_model_id=data.model_id or None, description=data.description or "", tags=_tags(data.tags),
            create_model=False)
        return {"model_version": version_json(mv)}

    @get(paths("model-versions/get"), sync_to_thread=True)
    def read(self, registry: RegistryDep, principal: PrincipalDep, name: FromQuery[str | None] = None,
             version: FromQuery[str | None] = None) -> dict[str, Any]:
        mv = registry.get_version(principal, required(name, "name"), required(version, "version"))
        return {"model_version": version_json(mv)}

    @patch(paths("model-versions/update"), sync_to_thread=True)
    def update(self, data: JSONBody[UpdateVersionIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        mv = registry.update_version(principal, required(data.name, "name"), required(data.version, "version"),
                                     description=data.description if data.description is not None else "")
        return {"model_version": version_json(mv)}

    @delete(paths("model-versions/delete"), sync_to_thread=True, status_code=200)
    def remove(self, data: JSONBody[VersionIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.delete_version(principal, required(data.name, "name"), required(data.version, "version"))
        return {}

    @post(paths("model-versions/transition-stage"), sync_to_thread=True, status_code=200)
    def transition(self, data: JSONBody[TransitionIn], registry: RegistryDep,
                   principal: PrincipalDep) -> dict[str, Any]:
        name = required(data.name, "name")
        version = required(data.version, "version")
        stage = normalize_stage(required(data.stage, "stage"))
        result = registry.promote(principal, name, version, stage, archive_existing=data.archive_existing_versions)
        if isinstance(result, Approval):
            model = registry.get_model(principal, name)
            raise GovernanceRefused(pending_message(result, registry.policy(name).describe_approvers(model.owner)),
                                    detail={"approval_id": result.approval_id})
        return {"model_version": version_json(registry.get_version(principal, name, version))}

    @get(paths("model-versions/search"), sync_to_thread=True)
    def search(self, registry: RegistryDep, principal: PrincipalDep, filter: FromQuery[str | None] = None,
               max_results: FromQuery[int | None] = None, order_by: FromQuery[list[str] | None] = None,
               page_token: FromQuery[str | None] = None) -> dict[str, Any]:
        limit = result_limit(max_results, 10_000)
        clauses = parse_simple_filter(filter, _VERSION_ATTRIBUTES)
        named = [v for kind, key, op, v in clauses if kind == "attribute" and key == "name" and op == "="]
        try:
            versions = _all(lambda t: registry.list_versions(principal, named[0] if named else None,
                                                             max_results=SEARCH_MAX_RESULTS, page_token=t))
        except NotFound:
            versions = []  # no such model: nothing matches

        def value(mv: ModelVersion, kind: str, key: str) -> Any:
            if kind == "tag":
                return mv.tags.get(key)
            return {"name": mv.name, "version_number": mv.version, "run_id": mv.run_id, "source_path": mv.source,
                    "current_stage": MLFLOW_STAGE.get(mv.stage), "user_id": mv.created_by,
                    "creation_timestamp": mv.creation_time, "last_updated_timestamp": mv.last_update_time,
                    "status": mv.status}.get(key)

        rows = [version_json(v) for v in versions
                if matches_registry(clauses, lambda kind, key, v=v: value(v, kind, key))]
        rows = order_rows(rows, order_by or [], {"name", "version", "creation_timestamp", "last_updated_timestamp",
                                             "current_stage", "run_id"},
                      [("name", True), ("version", False)])
        return page_of(rows, "model_versions", limit, page_token)

    @get(paths("model-versions/get-download-uri"), sync_to_thread=True)
    def download_uri(self, registry: RegistryDep, principal: PrincipalDep, name: FromQuery[str | None] = None,
                     version: FromQuery[str | None] = None) -> dict[str, Any]:
        mv = registry.get_version(principal, required(name, "name"), required(version, "version"))
        return {"artifact_uri": mv.storage_location or mv.source}

    @post(paths("model-versions/set-tag"), sync_to_thread=True, status_code=200)
    def set_tag(self, data: JSONBody[VersionTagIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.update_version(principal, required(data.name, "name"), required(data.version, "version"),
                                tags={required(data.key, "key"): data.value or ""})
        return {}

    @delete(paths("model-versions/delete-tag"), sync_to_thread=True, status_code=200)
    def delete_tag(self, data: JSONBody[VersionTagIn], registry: RegistryDep,
                   principal: PrincipalDep) -> dict[str, Any]:
        registry.delete_version_tag(principal, required(data.name, "name"), required(data.version, "version"),
                                    required(data.key, "key"))
        return {}


CONTROLLERS = [MlflowRegisteredModels, MlflowModelVersions]
