"""MLflow-compatible model registry REST: the unchanged ``mlflow`` client (3.x) registers and promotes here.

Served beside the tracking compatibility (:mod:`matih_lite.service.mlflow_compat`) under
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
from litestar.params import JSONBody

from matih_lite.contracts.registry import Approval, ModelVersion, RegisteredModel
from matih_lite.errors import GovernanceRefused, InvalidInput, NotFound
from matih_lite.host import Host
from matih_lite.registry import Registry
from matih_lite.registry.service import normalize_stage
from matih_lite.service.auth import Principal, principal
from matih_lite.contracts.records import decode_page_token, encode_page_token
from matih_lite.service.mlflow_compat import (
    API,
    EXCEPTION_HANDLERS,
    _max_results,
    matches,
    parse_simple_filter,
    required,
)

MLFLOW_STAGE = {"Development": "None", "Staging": "Staging", "Production": "Production", "Archived": "Archived"}
SEARCH_MAX_RESULTS = 50_000
_MODEL_ATTRIBUTES = {"name": "str", "creation_timestamp": "int", "last_updated_timestamp": "int", "user_id": "str",
                     "description": "str"}
_VERSION_ATTRIBUTES = {"name": "str", "version_number": "int", "run_id": "str", "source_path": "str",
                       "current_stage": "str", "user_id": "str", "creation_timestamp": "int",
                       "last_updated_timestamp": "int", "status": "str"}


def _paths(suffix: str) -> list[str]:
    # /ajax-api/ is rewritten to /api/ before routing (service/observability.py): one path per handler.
    return [f"{API[0]}/{suffix}"]


def _error(error_code: str, message: str, status: int) -> Response[dict[str, str]]:
    return Response({"error_code": error_code, "message": message}, status_code=status,
                    media_type="application/json")


def governance_error_handler(request: Request, exc: GovernanceRefused) -> Response:
    """A governance refusal in MLflow's words: 400 INVALID_STATE, the reason in ``message``."""
    return _error("INVALID_STATE", exc.message, 400)


EXCEPTION_HANDLERS_WITH_GOVERNANCE = {**EXCEPTION_HANDLERS, GovernanceRefused: governance_error_handler}


# ---- request bodies (protobuf JSON) -------------------------------------------------------------------
class KeyValue(msgspec.Struct):
    key: str | None = None
    value: str | None = None


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
def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _kv(items: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in items.items()]


def _tags(items: list[KeyValue]) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in items:
        out[str(required(kv.key, "tag.key"))] = kv.value or ""
    return out


def version_json(v: ModelVersion) -> dict[str, Any]:
    return _drop_none({
        "name": v.name, "version": str(v.version), "creation_timestamp": v.creation_time,
        "last_updated_timestamp": v.last_update_time, "user_id": v.created_by,
        "current_stage": MLFLOW_STAGE.get(v.stage, v.stage), "description": v.description, "source": v.source,
        "run_id": v.run_id or None, "status": v.status, "tags": _kv(v.tags), "run_link": "", "aliases": v.aliases,
        "model_id": v.logged_model_id})


def model_json(m: RegisteredModel, latest: list[ModelVersion]) -> dict[str, Any]:
    return {"name": m.name, "creation_timestamp": m.creation_time, "last_updated_timestamp": m.last_update_time,
            "user_id": m.owner, "description": m.description, "latest_versions": [version_json(v) for v in latest],
            "tags": _kv(m.tags), "aliases": [{"alias": a, "version": str(v)} for a, v in m.aliases.items()]}


def pending_message(approval: Approval, approvers: str) -> str:
    return (f"Production for version {approval.version} of model '{approval.name}' needs an approval: request "
            f"{approval.approval_id} is pending (approvers: {approvers}). The version stays in Staging until it is "
            f"approved with 'matih-lite models approve {approval.approval_id}' or "
            f"POST /api/v1/approvals/{approval.approval_id}/approve.")


_token = encode_page_token
_offset = decode_page_token
_limit = _max_results


def _order(items: list[dict[str, Any]], order_by: list[str], allowed: set[str],
           default: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    """Sort answer rows by ``["name ASC", "last_updated_timestamp DESC"]``, then ``default``."""
    keys: list[tuple[str, bool]] = []
    for clause in order_by:
        parts = clause.strip().split()
        if not parts:
            continue
        column = parts[0].strip("`\"'")
        column = {"timestamp": "last_updated_timestamp", "version_number": "version"}.get(column, column)
        ascending = len(parts) < 2 or parts[1].upper() != "DESC"
        if column not in allowed or len(parts) > 2 or (len(parts) == 2 and parts[1].upper() not in ("ASC", "DESC")):
            raise InvalidInput(f"invalid order_by clause {clause!r}; order by {', '.join(sorted(allowed))} "
                               "with ASC or DESC")
        keys.append((column, ascending))
    for key, ascending in reversed(keys + default):
        def sort_key(row: dict[str, Any], key: str = key) -> Any:
            value = row.get(key)
            return int(value) if key == "version" else value

        present = [r for r in items if r.get(key) is not None]
        missing = [r for r in items if r.get(key) is None]  # last, whichever the direction
        items = sorted(present, key=sort_key, reverse=not ascending) + missing
    return items


def _page(rows: list[dict[str, Any]], field: str, max_results: int, page_token: str | None) -> dict[str, Any]:
    offset = _offset(page_token)
    out: dict[str, Any] = {field: rows[offset:offset + max_results]}
    if offset + max_results < len(rows):
        out["next_page_token"] = _token(offset + max_results)
    return out


def _matches(clauses: list[tuple[str, str, str, Any]], get_value: Callable[[str, str], Any]) -> bool:
    """As MLflow's registry filters: a tag that is absent satisfies ``!=`` and ``NOT IN``.

    (MLflow 3's client appends ``tag.`mlflow.prompt.is_prompt` != 'true'`` to every model search.)
    """
    for clause in clauses:
        kind, key, op, _ = clause
        if kind == "tag" and op in ("!=", "NOT IN") and get_value(kind, key) is None:
            continue
        if not matches([clause], get_value):
            return False
    return True


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
    return Registry(host)


DEPENDENCIES = {"registry": Provide(provide_registry, sync_to_thread=False),
                "principal": Provide(principal, sync_to_thread=False)}


class MlflowRegisteredModels(Controller):
    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS_WITH_GOVERNANCE  # type: ignore[assignment]
    include_in_schema = False

    @staticmethod
    def _answer(registry: Registry, p: Principal, name: str) -> dict[str, Any]:
        model = registry.get_model(p, name)
        return {"registered_model": model_json(model, registry.latest_versions(p, model.name))}

    @post(_paths("registered-models/create"), sync_to_thread=True, status_code=200)
    def create(self, data: JSONBody[CreateModelIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        model = registry.create_model(principal, required(data.name, "name"), description=data.description or "",
                                      tags=_tags(data.tags))
        return {"registered_model": model_json(model, [])}

    @get(_paths("registered-models/get"), sync_to_thread=True)
    def read(self, registry: RegistryDep, principal: PrincipalDep, name: str | None = None) -> dict[str, Any]:
        return self._answer(registry, principal, required(name, "name"))

    @get(_paths("registered-models/search"), sync_to_thread=True)
    def search(self, registry: RegistryDep, principal: PrincipalDep, filter: str | None = None,
               max_results: int | None = None, order_by: list[str] | None = None,
               page_token: str | None = None) -> dict[str, Any]:
        limit = _limit(max_results, 100)
        clauses = parse_simple_filter(filter, _MODEL_ATTRIBUTES)
        models = _all(lambda t: registry.list_models(principal, max_results=SEARCH_MAX_RESULTS, page_token=t))
        rows = []
        for m in models:
            row = {"name": m.name, "creation_timestamp": m.creation_time, "last_updated_timestamp": m.last_update_time,
                   "user_id": m.owner, "description": m.description}
            if _matches(clauses, lambda kind, key, m=m, row=row: m.tags.get(key) if kind == "tag" else row.get(key)):
                rows.append((row, m))
        ordered = _order([r for r, _ in rows], order_by or [], set(_MODEL_ATTRIBUTES), [("name", True)])
        by_name = {m.name: m for _, m in rows}
        page = _page(ordered, "registered_models", limit, page_token)
        page["registered_models"] = [model_json(by_name[r["name"]], registry.latest_versions(principal, r["name"]))
                                     for r in page["registered_models"]]
        return page

    @patch(_paths("registered-models/update"), sync_to_thread=True)
    def update(self, data: JSONBody[UpdateModelIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        name = required(data.name, "name")
        registry.update_model(principal, name, description=data.description if data.description is not None else "")
        return self._answer(registry, principal, name)

    @post(_paths("registered-models/rename"), sync_to_thread=True, status_code=200)
    def rename(self, data: JSONBody[RenameModelIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        new_name = required(data.new_name, "new_name")
        registry.update_model(principal, required(data.name, "name"), new_name=new_name)
        return self._answer(registry, principal, new_name)

    @delete(_paths("registered-models/delete"), sync_to_thread=True, status_code=200)
    def remove(self, data: JSONBody[NameIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.delete_model(principal, required(data.name, "name"))
        return {}

    @post(_paths("registered-models/get-latest-versions"), sync_to_thread=True, status_code=200)
    def latest(self, data: JSONBody[LatestVersionsIn], registry: RegistryDep,
               principal: PrincipalDep) -> dict[str, Any]:
        found = registry.latest_versions(principal, required(data.name, "name"), data.stages or None)
        return {"model_versions": [version_json(v) for v in found]}

    @get(_paths("registered-models/get-latest-versions"), sync_to_thread=True,
         name="mlflow-registry-latest-versions-get")
    def latest_get(self, registry: RegistryDep, principal: PrincipalDep, name: str | None = None,
                   stages: list[str] | None = None) -> dict[str, Any]:
        return self.latest(LatestVersionsIn(name, stages or []), registry, principal)  # type: ignore[arg-type]

    @post(_paths("registered-models/set-tag"), sync_to_thread=True, status_code=200)
    def set_tag(self, data: JSONBody[ModelTagIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.update_model(principal, required(data.name, "name"),
                              tags={required(data.key, "key"): data.value or ""})
        return {}

    @delete(_paths("registered-models/delete-tag"), sync_to_thread=True, status_code=200)
    def delete_tag(self, data: JSONBody[ModelTagIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.delete_model_tag(principal, required(data.name, "name"), required(data.key, "key"))
        return {}

    @post(_paths("registered-models/alias"), sync_to_thread=True, status_code=200)
    def set_alias(self, data: JSONBody[AliasIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.set_alias(principal, required(data.name, "name"), required(data.alias, "alias"),
                           required(data.version, "version"))
        return {}

    @get(_paths("registered-models/alias"), sync_to_thread=True, name="mlflow-registry-alias-get")
    def get_alias(self, registry: RegistryDep, principal: PrincipalDep, name: str | None = None,
                  alias: str | None = None) -> dict[str, Any]:
        found = registry.get_version_by_alias(principal, required(name, "name"), required(alias, "alias"))
        return {"model_version": version_json(found)}

    @delete(_paths("registered-models/alias"), sync_to_thread=True, status_code=200,
            name="mlflow-registry-alias-delete")
    def delete_alias(self, data: JSONBody[AliasIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.delete_alias(principal, required(data.name, "name"), required(data.alias, "alias"))
        return {}


class MlflowModelVersions(Controller):
    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS_WITH_GOVERNANCE  # type: ignore[assignment]
    include_in_schema = False

    @post(_paths("model-versions/create"), sync_to_thread=True, status_code=200)
    def create(self, data: JSONBody[CreateVersionIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        mv = registry.register_version(
            principal, required(data.name, "name"), required(data.source, "source"), run_id=data.run_id or None,
            logged_model_id=data.model_id or None, description=data.description or "", tags=_tags(data.tags),
            create_model=False)
        return {"model_version": version_json(mv)}

    @get(_paths("model-versions/get"), sync_to_thread=True)
    def read(self, registry: RegistryDep, principal: PrincipalDep, name: str | None = None,
             version: str | None = None) -> dict[str, Any]:
        mv = registry.get_version(principal, required(name, "name"), required(version, "version"))
        return {"model_version": version_json(mv)}

    @patch(_paths("model-versions/update"), sync_to_thread=True)
    def update(self, data: JSONBody[UpdateVersionIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        mv = registry.update_version(principal, required(data.name, "name"), required(data.version, "version"),
                                     description=data.description if data.description is not None else "")
        return {"model_version": version_json(mv)}

    @delete(_paths("model-versions/delete"), sync_to_thread=True, status_code=200)
    def remove(self, data: JSONBody[VersionIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.delete_version(principal, required(data.name, "name"), required(data.version, "version"))
        return {}

    @post(_paths("model-versions/transition-stage"), sync_to_thread=True, status_code=200)
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

    @get(_paths("model-versions/search"), sync_to_thread=True)
    def search(self, registry: RegistryDep, principal: PrincipalDep, filter: str | None = None,
               max_results: int | None = None, order_by: list[str] | None = None,
               page_token: str | None = None) -> dict[str, Any]:
        limit = _limit(max_results, 10_000)
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

        rows = [version_json(v) for v in versions if _matches(clauses, lambda kind, key, v=v: value(v, kind, key))]
        rows = _order(rows, order_by or [], {"name", "version", "creation_timestamp", "last_updated_timestamp",
                                             "current_stage", "run_id"},
                      [("name", True), ("version", False)])
        return _page(rows, "model_versions", limit, page_token)

    @get(_paths("model-versions/get-download-uri"), sync_to_thread=True)
    def download_uri(self, registry: RegistryDep, principal: PrincipalDep, name: str | None = None,
                     version: str | None = None) -> dict[str, Any]:
        mv = registry.get_version(principal, required(name, "name"), required(version, "version"))
        return {"artifact_uri": mv.storage_location or mv.source}

    @post(_paths("model-versions/set-tag"), sync_to_thread=True, status_code=200)
    def set_tag(self, data: JSONBody[VersionTagIn], registry: RegistryDep, principal: PrincipalDep) -> dict[str, Any]:
        registry.update_version(principal, required(data.name, "name"), required(data.version, "version"),
                                tags={required(data.key, "key"): data.value or ""})
        return {}

    @delete(_paths("model-versions/delete-tag"), sync_to_thread=True, status_code=200)
    def delete_tag(self, data: JSONBody[VersionTagIn], registry: RegistryDep,
                   principal: PrincipalDep) -> dict[str, Any]:
        registry.delete_version_tag(principal, required(data.name, "name"), required(data.version, "version"),
                                    required(data.key, "key"))
        return {}


CONTROLLERS = [MlflowRegisteredModels, MlflowModelVersions]
