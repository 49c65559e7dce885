"""``/api/v1/models`` and ``/api/v1/approvals``: the model registry over REST. Thin: parse, call, return.

Every rule lives in :class:`~matih_lite.registry.Registry`. The principal (``principal.user``) is
the actor of every change and the owner of a model it creates. A Production promotion that needs
an approval answers ``202 Accepted`` with the pending approval; every other promotion ``200`` with
the transition. A governance refusal is ``422`` problem details whose ``unmet`` lists each
threshold missed, with the actual value.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter

from matih_lite.contracts.registry import Approval, AuditEntry, ModelVersion, RegisteredModel
from matih_lite.errors import InvalidInput
from matih_lite.host import Host
from matih_lite.registry import Registry, Transition
from matih_lite.registry.policy import Policy
from matih_lite.service.auth import Principal, principal
from matih_lite.serving.convert import Conversion

MaxResults = Annotated[int, Parameter(ge=1, le=50_000)]
Version = Annotated[int, Parameter(ge=1, le=2**62)]


# ---- DTOs ------------------------------------------------------------------------------------------
class ModelOut(msgspec.Struct):
    name: str
    owner: str
    description: str
    creation_time: int
    last_update_time: int
    latest_version: int
    tags: dict[str, str]
    aliases: dict[str, int]


class VersionOut(msgspec.Struct):
    name: str
    version: int
    stage: str
    status: str
    source: str
    storage_location: str
    run_id: str | None
    flavor: str
    signature: dict[str, Any] | None
    training_data: list[dict[str, Any]]
    description: str
    created_by: str
    creation_time: int
    last_update_time: int
    logged_model_id: str | None
    tags: dict[str, str]
    aliases: list[str]


class ApprovalOut(msgspec.Struct):
    approval_id: str
    name: str
    version: int
    to_stage: str
    status: str
    requested_by: str
    requested_at: int
    reason: str
    decided_by: str | None
    decided_at: int | None
    comment: str


class TransitionOut(msgspec.Struct):
    name: str
    version: int
    from_stage: str
    to_stage: str
    actor: str
    timestamp: int
    reason: str
    archived: list[int]
    approval_id: str | None


class AuditOut(msgspec.Struct):
    entry_id: int
    name: str
    action: str
    actor: str
    timestamp: int
    version: int | None
    from_stage: str | None
    to_stage: str | None
    reason: str
    approval_id: str | None
    detail: dict[str, Any]


class PolicyOut(msgspec.Struct):
    name: str
    staging_requires: list[str]
    production_approvers: list[str]
    needs_approval: bool
    sources: dict[str, str]


class ModelPage(msgspec.Struct):
    models: list[ModelOut]
    next_page_token: str | None = None


class VersionPage(msgspec.Struct):
    versions: list[VersionOut]
    next_page_token: str | None = None


class ApprovalPage(msgspec.Struct):
    approvals: list[ApprovalOut]
    next_page_token: str | None = None


class AuditPage(msgspec.Struct):
    entries: list[AuditOut]
    next_page_token: str | None = None


class CreateModel(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str = ""
    tags: dict[str, str] = {}


class UpdateModel(msgspec.Struct, forbid_unknown_fields=True):
    description: str | None = None
    tags: dict[str, str] | None = None
    new_name: str | None = None
    owner: str | None = None


class RegisterVersion(msgspec.Struct, forbid_unknown_fields=True):
    source: str | None = None
    """``runs:/RUN_ID/PATH``, ``models:/m-...``, ``models:/NAME/VERSION`` or any artifact URI."""
    run_id: str | None = None
    path: str | None = None
    """With ``run_id`` and no ``source``: the model's artifact path in the run (``model``)."""
    flavor: str | None = None
    signature: dict[str, Any] | None = None
    input_example: Any = None
    """Records (``[{"age": 31}]``) or columns (``{"age": [31]}``); the signature is inferred from it."""
    output_example: Any = None
    training_data: list[dict[str, Any] | str] | None = None
    description: str = ""
    tags: dict[str, str] = {}


class UpdateVersion(msgspec.Struct, forbid_unknown_fields=True):
    description: str | None = None
    tags: dict[str, str] | None = None


class Convert(msgspec.Struct, forbid_unknown_fields=True):
    to: str = "onnx"
    rtol: float = 1e-5
    """Relative tolerance the converted model's outputs must meet on sample rows."""


class Promote(msgspec.Struct, forbid_unknown_fields=True):
    to: str
    reason: str = ""
    archive_existing: bool = False
    """Entering Staging: archive the other versions in Staging (Production always archives its predecessor)."""


class Decide(msgspec.Struct, forbid_unknown_fields=True):
    comment: str = ""


class Rollback(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""


class SetAlias(msgspec.Struct, forbid_unknown_fields=True):
    version: int


def model_out(m: RegisteredModel) -> ModelOut:
    return ModelOut(m.name, m.owner, m.description, m.creation_time, m.last_update_time, m.latest_version, m.tags,
                    m.aliases)


def version_out(v: ModelVersion) -> VersionOut:
    return VersionOut(v.name, v.version, v.stage, v.status, v.source, v.storage_location, v.run_id, v.flavor,
                      v.signature, v.training_data, v.description, v.created_by, v.creation_time,
                      v.last_update_time, v.logged_model_id, v.tags, v.aliases)


def approval_out(a: Approval) -> ApprovalOut:
    return ApprovalOut(a.approval_id, a.name, a.version, a.to_stage, a.status, a.requested_by, a.requested_at,
                       a.reason, a.decided_by, a.decided_at, a.comment)


def transition_out(t: Transition) -> TransitionOut:
    return TransitionOut(t.name, t.version, t.from_stage, t.to_stage, t.actor, t.timestamp, t.reason, t.archived,
                         t.approval_id)


def audit_out(e: AuditEntry) -> AuditOut:
    return AuditOut(e.entry_id, e.name, e.action, e.actor, e.timestamp, e.version, e.from_stage, e.to_stage, e.reason,
                    e.approval_id, e.detail)


def policy_out(p: Policy) -> PolicyOut:
    return PolicyOut(p.model, [str(t) for t in p.staging_requires], list(p.production_approvers), p.needs_approval,
                     p.sources)


RegistryDep = NamedDependency[Registry]
PrincipalDep = NamedDependency[Principal]


def provide_registry(host: NamedDependency[Host]) -> Registry:
    return Registry(host)


DEPENDENCIES = {"registry": Provide(provide_registry, sync_to_thread=False),
                "principal": Provide(principal, sync_to_thread=False)}


class ModelController(Controller):
    path = "/api/v1/models"
    tags = ["models"]
    dependencies = DEPENDENCIES

    @post("/", sync_to_thread=True, summary="Create a registered model (owned by the caller)")
    def create(self, data: JSONBody[CreateModel], registry: RegistryDep, principal: PrincipalDep) -> ModelOut:
        return model_out(registry.create_model(principal, data.name, description=data.description, tags=data.tags))

    @get("/", sync_to_thread=True, summary="List registered models by name")
    def index(self, registry: RegistryDep, principal: PrincipalDep, name_like: FromQuery[str | None] = None,
              max_results: FromQuery[MaxResults] = 1000, page_token: FromQuery[str | None] = None) -> ModelPage:
        page = registry.list_models(principal, name_like=name_like, max_results=max_results, page_token=page_token)
        return ModelPage([model_out(m) for m in page.items], page.next_token)

    @get("/{name:str}", sync_to_thread=True, summary="Get a registered model")
    def read(self, name: FromPath[str], registry: RegistryDep, principal: PrincipalDep) -> ModelOut:
        return model_out(registry.get_model(principal, name))

    @patch("/{name:str}", sync_to_thread=True, summary="Describe, tag, rename or hand over a model")
    def update(self, name: FromPath[str], data: JSONBody[UpdateModel], registry: RegistryDep,
               principal: PrincipalDep) -> ModelOut:
        return model_out(registry.update_model(principal, name, description=data.description, tags=data.tags,
                                               new_name=data.new_name, owner=data.owner))

    @delete("/{name:str}", sync_to_thread=True, status_code=204,
            summary="Delete a model and its versions (refused while one is in Production)")
    def remove(self, name: FromPath[str], registry: RegistryDep, principal: PrincipalDep) -> None:
        registry.delete_model(principal, name)

    @delete("/{name:str}/tags/{key:str}", sync_to_thread=True, status_code=204, summary="Delete a model tag")
    def delete_tag(self, name: FromPath[str], key: FromPath[str], registry: RegistryDep,
                   principal: PrincipalDep) -> None:
        registry.delete_model_tag(principal, name, key)

    @get("/{name:str}/policy", sync_to_thread=True, summary="The governance policy that applies to the model")
    def policy(self, name: FromPath[str], registry: RegistryDep) -> PolicyOut:
        return policy_out(registry.policy(name))

    # versions ------------------------------------------------------------------------------------
    @post("/{name:str}/versions", sync_to_thread=True,
          summary="Register the next version (creates the model if missing)")
    def register(self, name: FromPath[str], data: JSONBody[RegisterVersion], registry: RegistryDep,
                 principal: PrincipalDep) -> VersionOut:
        return version_out(registry.register_version(
            principal, name, data.source, run_id=data.run_id, path=data.path, flavor=data.flavor,
            signature=data.signature, input_example=data.input_example, output_example=data.output_example,
            training_data=data.training_data, description=data.description, tags=data.tags))

    @get("/{name:str}/versions", sync_to_thread=True, summary="List a model's versions, newest first")
    def versions(self, name: FromPath[str], registry: RegistryDep, principal: PrincipalDep,
                 stage: Annotated[list[str] | None, QueryParameter(name="stage")] = None,
                 max_results: FromQuery[MaxResults] = 1000, page_token: FromQuery[str | None] = None) -> VersionPage:
        page = registry.list_versions(principal, name, stages=stage or None, max_results=max_results,
                                      page_token=page_token)
        return VersionPage([version_out(v) for v in page.items], page.next_token)

    @get("/{name:str}/versions/{version:int}", sync_to_thread=True, summary="Get a version")
    def version(self, name: FromPath[str], version: FromPath[Version], registry: RegistryDep,
                principal: PrincipalDep) -> VersionOut:
        return version_out(registry.get_version(principal, name, version))

    @patch("/{name:str}/versions/{version:int}", sync_to_thread=True,
           summary="Edit a version's description and tags (the rest is immutable)")
    def update_version(self, name: FromPath[str], version: FromPath[Version], data: JSONBody[UpdateVersion],
                       registry: RegistryDep,
                       principal: PrincipalDep) -> VersionOut:
        return version_out(registry.update_version(principal, name, version, description=data.description,
                                                   tags=data.tags))

    @delete("/{name:str}/versions/{version:int}", sync_to_thread=True, status_code=204,
            summary="Delete a version (refused while it is in Production)")
    def delete_version(self, name: FromPath[str], version: FromPath[Version], registry: RegistryDep,
                       principal: PrincipalDep) -> None:
        registry.delete_version(principal, name, version)

    @delete("/{name:str}/versions/{version:int}/tags/{key:str}", sync_to_thread=True, status_code=204,
            summary="Delete a version tag")
    def delete_version_tag(self, name: FromPath[str], version: FromPath[Version], key: FromPath[str],
                           registry: RegistryDep,
                           principal: PrincipalDep) -> None:
        registry.delete_version_tag(principal, name, version, key)

    @post("/{name:str}/versions/{version:int}/promote", sync_to_thread=True,
          summary="Move a version to a stage: 200 with the transition, or 202 with a pending approval")
    def promote(self, name: FromPath[str], version: FromPath[Version], data: JSONBody[Promote], registry: RegistryDep,
                principal: PrincipalDep) -> Response[TransitionOut | ApprovalOut]:
        result = registry.promote(principal, name, version, data.to, reason=data.reason,
                                  archive_existing=data.archive_existing)
        if isinstance(result, Approval):
            return Response(approval_out(result), status_code=202)
        return Response(transition_out(result), status_code=200)

    @post("/{name:str}/versions/{version:int}/convert", sync_to_thread=True, status_code=201,
          summary="Convert a scikit-learn or XGBoost version to ONNX, check it, register it as the next version")
    def convert(self, name: FromPath[str], version: FromPath[Version], data: JSONBody[Convert], principal: PrincipalDep,
                host: NamedDependency[Host]) -> Conversion:
        import math

        from matih_lite.serving.convert import convert_version

        if not math.isfinite(data.rtol) or data.rtol < 0:
            raise InvalidInput("rtol must be a finite number >= 0", detail={"field": "rtol"})
        return convert_version(host, principal, name, version, to=data.to, rtol=data.rtol)

    # governance ------------------------------------------------------------------------------------
    @post("/{name:str}/rollback", sync_to_thread=True, status_code=200,
          summary="Put back the version last archived out of Production; archive the current one")
    def rollback(self, name: FromPath[str], data: JSONBody[Rollback], registry: RegistryDep,
                 principal: PrincipalDep) -> TransitionOut:
        return transition_out(registry.rollback(principal, name, reason=data.reason))

    @get("/{name:str}/approvals", sync_to_thread=True, summary="A model's promotion requests, newest first")
    def approvals(self, name: FromPath[str], registry: RegistryDep, principal: PrincipalDep,
                  status: FromQuery[str | None] = None,
                  max_results: FromQuery[MaxResults] = 1000, page_token: FromQuery[str | None] = None) -> ApprovalPage:
        page = registry.list_approvals(principal, name=name, status=status, max_results=max_results,
                                       page_token=page_token)
        return ApprovalPage([approval_out(a) for a in page.items], page.next_token)

    @get("/{name:str}/audit", sync_to_thread=True, summary="Every change to the model, oldest first")
    def audit(self, name: FromPath[str], registry: RegistryDep, principal: PrincipalDep,
              max_results: FromQuery[MaxResults] = 1000,
              page_token: FromQuery[str | None] = None) -> AuditPage:
        page = registry.audit_log(principal, name, max_results=max_results, page_token=page_token)
        return AuditPage([audit_out(e) for e in page.items], page.next_token)

    # aliases -----------------------------------------------------------------------------------------
    @put("/{name:str}/aliases/{alias:str}", sync_to_thread=True, summary="Point an alias at a version")
    def set_alias(self, name: FromPath[str], alias: FromPath[str], data: JSONBody[SetAlias], registry: RegistryDep,
                  principal: PrincipalDep) -> VersionOut:
        return version_out(registry.set_alias(principal, name, alias, data.version))

    @get("/{name:str}/aliases/{alias:str}", sync_to_thread=True, summary="The version an alias points at")
    def get_alias(self, name: FromPath[str], alias: FromPath[str], registry: RegistryDep,
                  principal: PrincipalDep) -> VersionOut:
        return version_out(registry.get_version_by_alias(principal, name, alias))

    @delete("/{name:str}/aliases/{alias:str}", sync_to_thread=True, status_code=204, summary="Delete an alias")
    def delete_alias(self, name: FromPath[str], alias: FromPath[str], registry: RegistryDep,
                     principal: PrincipalDep) -> None:
        registry.delete_alias(principal, name, alias)


class ApprovalController(Controller):
    path = "/api/v1/approvals"
    tags = ["models"]
    dependencies = DEPENDENCIES

    @get("/", sync_to_thread=True, summary="Promotion requests of every model, newest first")
    def index(self, registry: RegistryDep, principal: PrincipalDep, status: FromQuery[str | None] = None,
              model: FromQuery[str | None] = None, max_results: FromQuery[MaxResults] = 1000,
              page_token: FromQuery[str | None] = None) -> ApprovalPage:
        page = registry.list_approvals(principal, name=model, status=status, max_results=max_results,
                                       page_token=page_token)
        return ApprovalPage([approval_out(a) for a in page.items], page.next_token)

    @get("/{approval_id:str}", sync_to_thread=True, summary="Get a promotion request")
    def read(self, approval_id: FromPath[str], registry: RegistryDep, principal: PrincipalDep) -> ApprovalOut:
        return approval_out(registry.get_approval(principal, approval_id))

    @post("/{approval_id:str}/approve", sync_to_thread=True, status_code=200,
          summary="Approve: the version enters Production and its predecessor is Archived")
    def approve(self, approval_id: FromPath[str], data: JSONBody[Decide], registry: RegistryDep,
                principal: PrincipalDep) -> ApprovalOut:
        return approval_out(registry.approve(principal, approval_id, comment=data.comment))

    @post("/{approval_id:str}/reject", sync_to_thread=True, status_code=200,
          summary="Reject with a comment (required)")
    def reject(self, approval_id: FromPath[str], data: JSONBody[Decide], registry: RegistryDep,
               principal: PrincipalDep) -> ApprovalOut:
        return approval_out(registry.reject(principal, approval_id, comment=data.comment))


CONTROLLERS = [ModelController, ApprovalController]
