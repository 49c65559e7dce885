"""Registry rules written once, whatever backend keeps the records.

A :class:`Registry` over a host registers models and versions and moves versions between
stages under the model's governance policy (:mod:`matih_lite.registry.policy`):

- **Development <-> Staging** freely, except that entering Staging needs the version's run
  metrics (latest values) to meet every ``staging_requires`` threshold; a refusal raises
  :class:`~matih_lite.errors.GovernanceRefused` listing each unmet threshold with its actual value.
- **Production** takes a version from Staging. With approvers in the policy, a promotion creates
  a pending :class:`~matih_lite.contracts.registry.Approval`; the model owner, a lead (or whoever
  the policy names) or an admin approves or rejects it with a comment, never the requester. On
  approval the version enters Production and the version there before is Archived.
- **Archived** from any stage, freely. :meth:`Registry.rollback` puts the version most recently
  archived out of Production back, archiving the current one (a second rollback undoes the first).

Every change is written to the model's audit log in the same transaction as the change itself,
and emitted as a platform event (``model.version.transitioned``, ``model.approval.requested``,
``model.approval.decided``, ``model.rolled_back``; also ``model.created``,
``model.version.registered``, ``model.alias.set``, ``model.deleted``).

Training data references come from the registering run's tags: each ``matih.dataset.NAME`` tag
is one dataset, its value a URI (``s3://bucket/churn/2024-06.parquet``) or a JSON object with at
least ``uri`` (``{"uri": "...", "version": "3", "digest": "ab12"}``). They can also be given
explicitly when registering.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.contracts.artifacts import clean_path
from matih_lite.contracts.clock import now_ms
from matih_lite.contracts.logged_models import LoggedModel
from matih_lite.contracts.records import Page
from matih_lite.contracts.registry import (
    STAGES,
    Approval,
    ApprovalDecision,
    AuditEntry,
    ModelVersion,
    RegisteredModel,
    StageMove,
)
from matih_lite.errors import Conflict, Forbidden, GovernanceRefused, InvalidInput, MatihError, NotFound
from matih_lite.events import PlatformEvent
from matih_lite.identity import Principal
from matih_lite.registry.policy import Policy, policy_for
from matih_lite.registry.signature import check_signature, from_mlmodel, infer_signature
from matih_lite.tracking.logged_models import LoggedModels
from matih_lite.tracking.service import MAX_TAG_VALUE, Tracking, check_key, check_value

if TYPE_CHECKING:
    from matih_lite.host import Host


MAX_NAME = 256
MAX_DESCRIPTION = 65_536
MAX_RESULTS = 50_000
DATASET_TAG_PREFIX = "matih.dataset."
_ALIAS = re.compile(r"^[\w\-]+$")
_VERSION_ALIAS = re.compile(r"^[vV]\d+$")
_LOGGED_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
_STAGE_NAMES = {s.lower(): s for s in STAGES} | {"none": "Development", "dev": "Development", "prod": "Production"}


def normalize_stage(stage: Any) -> str:
    """``"staging"``, ``"Staging"``, MLflow's ``"None"`` (Development)... as one of :data:`STAGES`."""
    found = _STAGE_NAMES.get(str(stage).strip().lower()) if isinstance(stage, str) else None
    if found is None:
        raise InvalidInput(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return found


class Transition(msgspec.Struct):
    """A version that changed stage, and the versions that were archived to make room for it."""

    name: str
    version: int
    from_stage: str
    to_stage: str
    actor: str
    timestamp: int
    reason: str = ""
    archived: list[int] = msgspec.field(default_factory=list)
    approval_id: str | None = None


_RUN_ARTIFACTS = "mlflow-artifacts:/"
CONVERTED_FOLDER = "_converted"
"""Where serving.convert keeps the conversion of a version without a run (``mlflow-artifacts:/_converted/...``)."""


class SourceInfo(msgspec.Struct):
    """What a registration source resolved to."""

    storage_location: str
    run_id: str | None = None
    logged_model_id: str | None = None
    flavor: str = ""
    signature: dict[str, Any] | None = None


class Registry:
    """Registered models, versions, aliases and governed stages for one platform (a :class:`Host`)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.tracking = Tracking(host)

    @property
    def store(self) -> Any:
        return self.host.metadata

    @property
    def artifacts(self) -> Any:
        return self.host.artifacts

    def policy(self, name: str) -> Policy:
        """The governance policy of model ``name`` (matih.toml ``[models.NAME]`` over ``[models."*"]``)."""
        return policy_for(self.host.config.section("models"), name)

    # ---- registered models ----------------------------------------------------------------------
    def create_model(self, principal: Principal, name: str, *, description: str = "",
                     tags: Mapping[str, Any] | None = None) -> RegisteredModel:
        """A new model owned by the principal. Raises Conflict if the tenant has one of that name."""
        name = check_model_name(name)
        model = self.store.create_registered_model(principal.tenant, name, owner=principal.user,
                                                   description=_description(description), tags=_tags(tags))
        self._audit(principal, [self._entry(principal, name, "model.created", detail={"owner": principal.user})])
        self._emit(principal, "model.created", name, {"name": name, "owner": principal.user})
        return model

    def get_model(self, principal: Principal, name: str) -> RegisteredModel:
        return self.store.get_registered_model(principal.tenant, name)

    def list_models(self, principal: Principal, *, name_like: str | None = None, max_results: int = 1000,
                    page_token: str | None = None) -> Page[RegisteredModel]:
        """Models by name; ``name_like`` is a SQL LIKE pattern."""
        return self.store.search_registered_models(principal.tenant, name_like=name_like,
                                                   max_results=_max(max_results), page_token=page_token)

    def update_model(self, principal: Principal, name: str, *, description: str | None = None,
                     tags: Mapping[str, Any] | None = None, new_name: str | None = None,
                     owner: str | None = None) -> RegisteredModel:
        """Describe, tag, rename or hand over a model. Handing over takes the owner, a lead or an admin."""
        model = self.store.get_registered_model(principal.tenant, name)
        previous_owner = model.owner
        if owner is not None and owner != model.owner:
            self._require_manager(principal, model, "hand over")
            if not isinstance(owner, str) or not owner.strip():
                raise InvalidInput("owner must be a user name")
        if new_name is not None:
            new_name = check_model_name(new_name)
        if tags:
            self.store.set_registered_model_tags(principal.tenant, name, _tags(tags))
        if description is not None or (new_name is not None and new_name != name) or owner is not None:
            model = self.store.update_registered_model(
                principal.tenant, name, new_name=new_name, owner=owner,
                description=None if description is None else _description(description))
        else:
            model = self.store.get_registered_model(principal.tenant, name)
        entries = []
        if new_name is not None and new_name != name:
            entries.append(self._entry(principal, new_name, "model.renamed", detail={"from": name, "to": new_name}))
        if owner is not None and owner != previous_owner:
            entries.append(self._entry(principal, model.name, "model.owner_changed",
                                       detail={"from": previous_owner, "to": owner}))
        self._audit(principal, entries)
        return model

    def delete_model_tag(self, principal: Principal, name: str, key: str) -> None:
        self.store.delete_registered_model_tag(principal.tenant, name, key)

    def delete_model(self, principal: Principal, name: str) -> None:
        """Delete a model and its versions (its audit log stays). Refused while a version is in Production."""
        model = self.store.get_registered_model(principal.tenant, name)
        self._require_manager(principal, model, "delete")
        live = self.store.search_model_versions(principal.tenant, name=name, stages=["Production"]).items
        if live:
            raise Conflict(f"model {name!r} has version {live[0].version} in Production; archive it before "
                           "deleting the model")
        self.store.delete_registered_model(principal.tenant, name)
        self._audit(principal, [self._entry(principal, name, "model.deleted")])
        self._emit(principal, "model.deleted", name, {"name": name})

    # ---- versions -------------------------------------------------------------------------------
    def register_version(
        self, principal: Principal, name: str, source: str | None = None, *, run_id: str | None = None,
        path: str | None = None, flavor: str | None = None, signature: Any = None, input_example: Any = None,
        output_example: Any = None, training_data: Sequence[Mapping[str, Any]] | None = None,
        description: str = "", tags: Mapping[str, Any] | None = None, logged_model_id: str | None = None,
        create_model: bool = True,
    ) -> ModelVersion:
        """Register the next version of ``name`` (created, owned by the principal, if missing).

        ``source`` is ``runs:/RUN_ID/PATH`` (or give ``run_id`` and ``path``), ``models:/m-...``
        (an MLflow logged model), ``models:/NAME/VERSION`` or any artifact URI. The signature is
        ``signature`` if given, else inferred from ``input_example`` (and ``output_example``),
        else read from the source's MLmodel file. Raises NotFound for a run or artifacts that do
        not exist, InvalidInput for a malformed source.
        """
        name = check_model_name(name)
        if source is None or source == "":
            if not run_id or path is None:
                raise InvalidInput("give a source URI, or a run id and the artifact path of the model in it")
            source = f"runs:/{run_id}/{path.strip('/')}"
        if not isinstance(source, str) or len(source) > 4096:
            raise InvalidInput("source must be a URI of at most 4096 characters")
        if not create_model:
            self.store.get_registered_model(principal.tenant, name)  # a missing model first, then the source
        info = self.resolve_source(principal, source, run_id=run_id, logged_model_id=logged_model_id)
        if signature is not None:
            sig = check_signature(signature)
        elif input_example is not None:
            sig = infer_signature(input_example, output_example)
        else:
            sig = info.signature
        if training_data is None:
            data = self._training_data(principal.tenant, info.run_id)
        else:
            data = [_dataset_ref(d, "training_data") for d in training_data]
        tags = {**self._feature_tags(principal.tenant, info.run_id), **_tags(tags)}
        flavor_name = flavor if flavor else info.flavor
        if not isinstance(flavor_name, str) or len(flavor_name) > 100:
            raise InvalidInput("flavor must be a short name like 'sklearn'")
        tenant = principal.tenant
        try:
            self.store.get_registered_model(tenant, name)
        except NotFound:
            if not create_model:
                raise
            try:
                self.create_model(principal, name)
            except Conflict:
                pass  # created meanwhile by someone else
        mv = self.store.create_model_version(
            tenant, name, source=source, storage_location=info.storage_location, run_id=info.run_id,
            flavor=flavor_name, signature=sig, training_data=data, description=_description(description),
            tags=tags, created_by=principal.user, logged_model_id=info.logged_model_id)
        self._audit(principal, [self._entry(principal, name, "version.registered", version=mv.version,
                                            to_stage=mv.stage, detail={"source": source, "run_id": info.run_id})])
        self._emit(principal, "model.version.registered", f"{name}/{mv.version}",
                   {"name": name, "version": mv.version, "run_id": info.run_id, "source": source,
                    "storage_location": info.storage_location, "flavor": flavor_name})
        return mv

    def resolve_source(self, principal: Principal, source: str, *, run_id: str | None = None,
                       logged_model_id: str | None = None) -> SourceInfo:
        """Where a registration source's files are, with its run, flavor and signature when known."""
        tenant = principal.tenant
        if source.startswith("runs:/"):
            rid, _, rel = source[len("runs:/"):].partition("/")
            if not rid:
                raise InvalidInput(f"invalid source {source!r}: write runs:/RUN_ID/PATH")
            if run_id and run_id != rid:
                raise InvalidInput(f"source {source!r} names run {rid}, not run_id {run_id}")
            run = self.tracking.get_run(tenant, rid)
            rel = clean_path(rel, allow_root=True)
            found = self._run_has(tenant, rid, rel)
            if found:
                location = run.artifact_uri + (f"/{rel}" if rel else "")
                mlmodel = self._read_text(lambda: _read_all(self.tracking.open_artifact(
                    tenant, rid, f"{rel}/MLmodel" if rel else "MLmodel")))
                flavor, sig = from_mlmodel(mlmodel) if mlmodel else ("", None)
                return SourceInfo(location, rid, logged_model_id, flavor, sig)
            doc = self._logged_model_of_run(tenant, rid, rel)
            if doc is None:
                raise NotFound(f"run {rid} has no artifacts at {rel or 'its root'!r} (nor an MLflow logged model "
                               "of that name); log the model first, or check the path")
            return self._logged_model_source(tenant, doc, rid)
        if source.startswith("models:/"):
            ref = source[len("models:/"):].strip("/")
            if _LOGGED_MODEL_ID.match(ref):
                doc = self._logged_model(tenant, ref)
                if doc is None:
                    raise NotFound(f"logged model {ref!r} does not exist")
                return self._logged_model_source(tenant, doc, run_id)
            mv = self._version_from_uri(principal, ref, source)
            return SourceInfo(mv.storage_location, run_id or mv.run_id, logged_model_id or mv.logged_model_id,
                              mv.flavor, mv.signature)
        flavor, sig = "", None
        run_id = run_id or self._own_source_run(tenant, source, logged_model_id)
        if run_id:
            run = self.tracking.get_run(tenant, run_id)  # a run of this tenant, or NotFound
            if run.artifact_uri and source.startswith(run.artifact_uri + "/"):
                # The client resolved runs:/ itself (MLflow does): still read the MLmodel it points at.
                rel = source[len(run.artifact_uri) + 1:].strip("/")
                text = self._read_text(lambda: _read_all(self.tracking.open_artifact(tenant, run_id, f"{rel}/MLmodel")))
                flavor, sig = from_mlmodel(text) if text else ("", None)
        if logged_model_id:
            doc = self._logged_model(tenant, logged_model_id)
            if doc is None:
                raise NotFound(f"logged model {logged_model_id!r} does not exist")
            if source == doc.artifact_uri:
                found = self._logged_model_source(tenant, doc, run_id)
                flavor, sig = found.flavor, found.signature
        self._check_own_source(tenant, source, run_id, logged_model_id)
        return SourceInfo(source, run_id or None, logged_model_id or None, flavor, sig)

    def _own_source_run(self, tenant: str, source: str, logged_model_id: str | None) -> str | None:
        """The run whose artifacts ``source`` names (``mlflow-artifacts:/EXP/RUN/artifacts/...`` as the MLflow
        client resolves ``runs:/``), or None. A run of another tenant is NotFound, as everywhere."""
        if logged_model_id or not source.startswith(_RUN_ARTIFACTS):
            return None
        parts = source[len(_RUN_ARTIFACTS):].split("/")
        if len(parts) < 3 or parts[2] != "artifacts" or not parts[1] or parts[1] in ("models", "traces"):
            return None
        run = self.tracking.get_run(tenant, parts[1])
        return run.run_id if run.artifact_uri and source.startswith(run.artifact_uri) else None

    def _check_own_source(self, tenant: str, source: str, run_id: str | None, logged_model_id: str | None) -> None:
        """Raises InvalidInput unless ``source`` lies in this tenant's own run or logged model: a version never
        points at another tenant's files, a local path or an outside URI (``get-download-uri`` would hand it
        out)."""
        roots: list[str] = []
        if run_id:
            roots.append(self.tracking.get_run(tenant, run_id).artifact_uri)
        parts = source[len(_RUN_ARTIFACTS):].split("/") if source.startswith(_RUN_ARTIFACTS) else []
        if not logged_model_id and len(parts) >= 3 and parts[1] == "models":
            logged_model_id = parts[2]  # mlflow-artifacts:/EXP/models/m-ID/artifacts...
        if logged_model_id:
            doc = self._logged_model(tenant, logged_model_id)
            if doc is not None:
                roots.append(doc.artifact_uri)
        if parts and parts[0] == CONVERTED_FOLDER and ".." not in parts and \
                self.artifacts.list(f"{tenant}/{'/'.join(parts)}"):
            return  # a conversion kept in the registry's own folder of this tenant (serving.convert)
        for root in roots:
            if root and (source == root or source.startswith(root.rstrip("/") + "/")) and \
                    "/../" not in source[len(root):] + "/":
                return
        raise InvalidInput(
            f"source {source[:200]!r} is not a run, logged model or artifact of tenant {tenant!r}: register "
            "runs:/RUN_ID/PATH (a run's artifacts), models:/m-ID (a logged model) or models:/NAME/VERSION")

    def get_version(self, principal: Principal, name: str, version: int | str) -> ModelVersion:
        return self.store.get_model_version(principal.tenant, name, _version(version))

    def get_version_by_alias(self, principal: Principal, name: str, alias: str) -> ModelVersion:
        return self.store.get_model_version_by_alias(principal.tenant, name, alias)

    def list_versions(self, principal: Principal, name: str | None = None, *, stages: Sequence[str] | None = None,
                      run_id: str | None = None, max_results: int = 1000,
                      page_token: str | None = None) -> Page[ModelVersion]:
        """Versions (of one model, or every model), newest first within a model."""
        if name is not None:
            self.store.get_registered_model(principal.tenant, name)
        wanted = None if stages is None else [normalize_stage(s) for s in stages]
        return self.store.search_model_versions(principal.tenant, name=name, run_id=run_id, stages=wanted,
                                                max_results=_max(max_results), page_token=page_token)

    def latest_versions(self, principal: Principal, name: str,
                        stages: Sequence[str] | None = None) -> list[ModelVersion]:
        """The newest version in each stage (each of ``stages``, or every stage that has one)."""
        wanted = [normalize_stage(s) for s in stages] if stages else list(STAGES)
        out = []
        for stage in dict.fromkeys(wanted):
            found = self.list_versions(principal, name, stages=[stage], max_results=1).items
            out.extend(found)
        return sorted(out, key=lambda v: v.version)

    def update_version(self, principal: Principal, name: str, version: int | str, *,
                       description: str | None = None, tags: Mapping[str, Any] | None = None) -> ModelVersion:
        """Edit what a version allows editing: its description and tags."""
        number = _version(version)
        if tags:
            self.store.set_model_version_tags(principal.tenant, name, number, _tags(tags))
        if description is not None:
            return self.store.update_model_version(principal.tenant, name, number,
                                                   description=_description(description))
        return self.store.get_model_version(principal.tenant, name, number)

    def delete_version_tag(self, principal: Principal, name: str, version: int | str, key: str) -> None:
        self.store.delete_model_version_tag(principal.tenant, name, _version(version), key)

    def delete_version(self, principal: Principal, name: str, version: int | str) -> None:
        """Delete a version (and the aliases naming it). Refused while it is in Production."""
        mv = self.get_version(principal, name, version)
        if mv.stage == "Production":
            raise Conflict(f"version {mv.version} of model {name!r} is in Production; archive it before deleting it")
        self.store.delete_model_version(principal.tenant, name, mv.version)
        self._audit(principal, [self._entry(principal, name, "version.deleted", version=mv.version,
                                            from_stage=mv.stage)])

    # ---- stages and governance ------------------------------------------------------------------
    def promote(self, principal: Principal, name: str, version: int | str, to: str, *, reason: str = "",
                archive_existing: bool = False) -> Transition | Approval:
        """Move a version to stage ``to`` under the model's policy.

        Returns the :class:`Transition`, or the pending :class:`Approval` for a Production request
        that needs one. ``archive_existing`` archives the other versions in Staging when entering
        Staging (entering Production always archives the version there before). Raises
        GovernanceRefused (Staging thresholds unmet, Production not from Staging), Conflict (already
        in that stage, a request already pending), NotFound, InvalidInput (unknown stage).
        """
        to = normalize_stage(to)
        reason = _reason(reason)
        mv = self.get_version(principal, name, version)
        model = self.store.get_registered_model(principal.tenant, name)
        if mv.stage == to:
            raise Conflict(f"version {mv.version} of model {name!r} is already in {to}")
        policy = self.policy(name)
        if to == "Staging":
            unmet = policy.unmet(self._metrics(principal.tenant, mv))
            if unmet:
                self._audit(principal, [self._entry(principal, name, "transition.refused", version=mv.version,
                                                    from_stage=mv.stage, to_stage=to, reason=reason,
                                                    detail={"unmet": unmet})])
                listed = "; ".join(f"{u['rule']} (actual: {_actual(u['actual'])})" for u in unmet)
                raise GovernanceRefused(
                    f"version {mv.version} of model {name!r} cannot enter Staging: {len(unmet)} of "
                    f"{len(policy.staging_requires)} thresholds unmet: {listed}",
                    detail={"model": name, "version": mv.version, "to": to, "unmet": unmet})
            others = [v for v in self._in_stage(principal, name, "Staging") if v.version != mv.version] \
                if archive_existing else []
            return self._apply(principal, name, mv, to, reason, archive=others)
        if to == "Production":
            if mv.stage != "Staging":
                raise GovernanceRefused(
                    f"version {mv.version} of model {name!r} is in {mv.stage}; Production takes a version from "
                    f"Staging: promote it to Staging first", detail={
                        "model": name, "version": mv.version, "to": to,
                        "unmet": [{"rule": "stage == Staging", "actual": mv.stage}]})
            current = [v for v in self._in_stage(principal, name, "Production") if v.version != mv.version]
            if not policy.needs_approval:
                return self._apply(principal, name, mv, to, reason, archive=current)
            return self._request_approval(principal, model, mv, to, reason, policy)
        return self._apply(principal, name, mv, to, reason, archive=[])

    def approve(self, principal: Principal, approval_id: str, *, comment: str = "") -> Approval:
        """Approve a pending request: the version enters Production, the one there before is Archived.

        Raises Forbidden for the requester or anyone the policy does not name, Conflict if the
        request was already decided or the version has left Staging meanwhile.
        """
        approval = self._pending(principal, approval_id)
        model = self.store.get_registered_model(principal.tenant, approval.name)
        policy = self.policy(model.name)
        self_approved = principal.user == approval.requested_by
        if self_approved and not self.self_approval_allowed():
            hint = ""
            if not self._auth_enabled():
                hint = ("; alone on this folder without auth? set [governance] self_approval = true in matih.toml "
                        "(recorded as a self-approval in the audit log and on the model card)")
            raise Forbidden(f"you requested this promotion (approval {approval.approval_id}); someone else must "
                            f"approve it: {policy.describe_approvers(model.owner)}{hint}")
        if not policy.may_approve(principal, model.owner):
            raise Forbidden(f"{principal.user} may not approve {approval.to_stage} for model {model.name!r}; "
                            f"approvers: {policy.describe_approvers(model.owner)}")
        mv = self.get_version(principal, model.name, approval.version)
        if mv.stage != "Staging":
            raise Conflict(f"version {mv.version} of model {model.name!r} is in {mv.stage} now, no longer in "
                           f"Staging; reject approval {approval.approval_id} and request again")
        comment = _reason(comment, "comment")
        current = [v for v in self._in_stage(principal, model.name, approval.to_stage) if v.version != mv.version]
        now = now_ms()
        decision = ApprovalDecision(approval.approval_id, "approved", principal.user, now, comment)
        decided = self._entry(principal, model.name, "approval.approved", version=mv.version, from_stage=mv.stage,
                              to_stage=approval.to_stage, reason=comment, approval_id=approval.approval_id,
                              detail={"self_approved": True} if self_approved else None)
        transition = self._apply(principal, model.name, mv, approval.to_stage, approval.reason, archive=current,
                                 decision=decision, extra_audit=[decided], approval_id=approval.approval_id)
        result = self.store.get_approval(principal.tenant, approval.approval_id)
        self._emit(principal, "model.approval.decided", f"{model.name}/{mv.version}",
                   {"approval_id": result.approval_id, "name": model.name, "version": mv.version,
                    "status": "approved", "decided_by": principal.user, "comment": comment,
                    "archived": transition.archived})
        return result

    def self_approval_allowed(self) -> bool:
        """Whether a requester may approve their own Production request: only with ``[governance]
        self_approval = true`` and auth off (one person on a laptop); with auth on, always four eyes."""
        from matih_lite.registry.policy import governance_settings

        return governance_settings(self.host.config).self_approval and not self._auth_enabled()

    def _auth_enabled(self) -> bool:
        from matih_lite.auth import auth_enabled

        try:
            return auth_enabled(self.host)
        except MatihError:
            return True  # a broken [auth] section never loosens the rule

    def reject(self, principal: Principal, approval_id: str, *, comment: str) -> Approval:
        """Reject a pending request with a comment (an approver, or the requester withdrawing it)."""
        comment = _reason(comment, "comment")
        if not comment.strip():
            raise InvalidInput("a rejection needs a comment saying why")
        approval = self._pending(principal, approval_id)
        model = self.store.get_registered_model(principal.tenant, approval.name)
        policy = self.policy(model.name)
        if principal.user != approval.requested_by and not policy.may_approve(principal, model.owner):
            raise Forbidden(f"{principal.user} may not reject {approval.to_stage} requests for model "
                            f"{model.name!r}; approvers: {policy.describe_approvers(model.owner)}")
        mv = self.get_version(principal, model.name, approval.version)
        decision = ApprovalDecision(approval.approval_id, "rejected", principal.user, now_ms(), comment)
        self.store.record_transition(principal.tenant, model.name, decision=decision, audit=[
            self._entry(principal, model.name, "approval.rejected", version=mv.version, from_stage=mv.stage,
                        to_stage=approval.to_stage, reason=comment, approval_id=approval.approval_id)])
        result = self.store.get_approval(principal.tenant, approval.approval_id)
        self._emit(principal, "model.approval.decided", f"{model.name}/{mv.version}",
                   {"approval_id": result.approval_id, "name": model.name, "version": mv.version,
                    "status": "rejected", "decided_by": principal.user, "comment": comment})
        return result

    def get_approval(self, principal: Principal, approval_id: str) -> Approval:
        return self.store.get_approval(principal.tenant, approval_id)

    def list_approvals(self, principal: Principal, *, name: str | None = None, status: str | None = None,
                       max_results: int = 1000, page_token: str | None = None) -> Page[Approval]:
        """Approvals, newest request first; ``status`` is pending, approved, rejected (or None for all)."""
        if status is not None and status not in ("pending", "approved", "rejected"):
            raise InvalidInput(f"status must be pending, approved or rejected, not {status!r}")
        if name is not None:
            self.store.get_registered_model(principal.tenant, name)
        return self.store.search_approvals(principal.tenant, name=name, status=status,
                                           max_results=_max(max_results), page_token=page_token)

    def rollback(self, principal: Principal, name: str, *, reason: str = "") -> Transition:
        """Restore the version most recently archived out of Production; archive the current one.

        Takes someone who may approve Production for the model. Raises Conflict when no version
        was ever archived out of Production (or none of those is still Archived).
        """
        reason = _reason(reason)
        model = self.store.get_registered_model(principal.tenant, name)
        policy = self.policy(name)
        if policy.needs_approval and not policy.may_approve(principal, model.owner):
            raise Forbidden(f"{principal.user} may not roll back model {name!r}; it takes one of the Production "
                            f"approvers: {policy.describe_approvers(model.owner)}")
        target = self._last_retired(principal, name)
        if target is None:
            raise Conflict(f"model {name!r} has no Archived version that was in Production before; nothing to "
                           "roll back to")
        current = [v for v in self._in_stage(principal, name, "Production") if v.version != target.version]
        why = reason or f"rollback to version {target.version}"
        rolled = self._entry(principal, name, "model.rolled_back", version=target.version, from_stage="Archived",
                             to_stage="Production", reason=why, detail={"replaced": [v.version for v in current]})
        transition = self._apply(principal, name, target, "Production", why, archive=current, extra_audit=[rolled])
        self._emit(principal, "model.rolled_back", f"{name}/{target.version}",
                   {"name": name, "version": target.version, "replaced": transition.archived, "actor": principal.user,
                    "reason": why})
        return transition

    # ---- aliases --------------------------------------------------------------------------------
    def set_alias(self, principal: Principal, name: str, alias: str, version: int | str) -> ModelVersion:
        """Point ``alias`` (``champion``, ``challenger``, any name) at a version."""
        alias = check_alias(alias)
        number = _version(version)
        model = self.store.get_registered_model(principal.tenant, name)
        previous = model.aliases.get(alias)
        self.store.set_alias(principal.tenant, name, alias, number)
        self._audit(principal, [self._entry(principal, name, "alias.set", version=number,
                                            detail={"alias": alias, "previous": previous})])
        self._emit(principal, "model.alias.set", f"{name}@{alias}",
                   {"name": name, "alias": alias, "version": number, "previous": previous})
        return self.store.get_model_version(principal.tenant, name, number)

    def delete_alias(self, principal: Principal, name: str, alias: str) -> None:
        model = self.store.get_registered_model(principal.tenant, name)
        self.store.delete_alias(principal.tenant, name, alias)
        self._audit(principal, [self._entry(principal, name, "alias.deleted", version=model.aliases.get(alias),
                                            detail={"alias": alias})])

    # ---- audit ----------------------------------------------------------------------------------
    def audit_log(self, principal: Principal, name: str, *, max_results: int = 1000,
                  page_token: str | None = None) -> Page[AuditEntry]:
        """The model's history, oldest first (it outlives a deleted model of that name). Raises NotFound
        when the tenant has neither a model of that name nor any history for one."""
        page = self.store.search_audit(principal.tenant, name=name, max_results=_max(max_results),
                                       page_token=page_token)
        if not page.items and not page_token:
            self.store.get_registered_model(principal.tenant, name)
        return page

    # ---- internals ------------------------------------------------------------------------------
    def _apply(self, principal: Principal, name: str, mv: ModelVersion, to: str, reason: str, *,
               archive: Sequence[ModelVersion], decision: ApprovalDecision | None = None,
               extra_audit: Sequence[AuditEntry] = (), approval_id: str | None = None) -> Transition:
        now = now_ms()
        moves = [StageMove(mv.version, mv.stage, to)]
        entries = list(extra_audit)
        entries.append(self._entry(principal, name, "version.transitioned", version=mv.version, from_stage=mv.stage,
                                   to_stage=to, reason=reason, approval_id=approval_id, timestamp=now))
        for other in archive:
            moves.append(StageMove(other.version, other.stage, "Archived"))
            entries.append(self._entry(principal, name, "version.transitioned", version=other.version,
                                       from_stage=other.stage, to_stage="Archived", timestamp=now,
                                       reason=f"replaced by version {mv.version} in {to}", approval_id=approval_id))
        self.store.record_transition(principal.tenant, name, moves=moves, audit=entries, decision=decision)
        transition = Transition(name, mv.version, mv.stage, to, principal.user, now, reason,
                                [o.version for o in archive], approval_id)
        for move, entry in zip(moves, entries[len(extra_audit):]):
            self._emit(principal, "model.version.transitioned", f"{name}/{move.version}",
                       {"name": name, "version": move.version, "from": move.from_stage, "to": move.to_stage,
                        "actor": principal.user, "reason": entry.reason, "approval_id": approval_id})
        return transition

    def _request_approval(self, principal: Principal, model: RegisteredModel, mv: ModelVersion, to: str,
                          reason: str, policy: Policy) -> Approval:
        approval_id = uuid.uuid4().hex
        now = now_ms()
        entry = self._entry(principal, model.name, "approval.requested", version=mv.version, from_stage=mv.stage,
                            to_stage=to, reason=reason, approval_id=approval_id, timestamp=now,
                            detail={"approvers": list(policy.production_approvers)})
        approval = self.store.create_approval(principal.tenant, model.name, mv.version, approval_id=approval_id,
                                              requested_by=principal.user, requested_at=now, to_stage=to,
                                              reason=reason, audit=[entry])
        self._emit(principal, "model.approval.requested", f"{model.name}/{mv.version}",
                   {"approval_id": approval_id, "name": model.name, "version": mv.version, "to": to,
                    "requested_by": principal.user, "reason": reason,
                    "approvers": policy.describe_approvers(model.owner)})
        return approval

    def _pending(self, principal: Principal, approval_id: str) -> Approval:
        if not isinstance(approval_id, str) or not approval_id:
            raise InvalidInput("give an approval id")
        approval = self.store.get_approval(principal.tenant, approval_id)
        if approval.status != "pending":
            raise Conflict(f"approval {approval.approval_id} is already {approval.status} "
                           f"(by {approval.decided_by})")
        return approval

    def _in_stage(self, principal: Principal, name: str, stage: str) -> list[ModelVersion]:
        return self.store.search_model_versions(principal.tenant, name=name, stages=[stage],
                                                max_results=MAX_RESULTS).items

    def _last_retired(self, principal: Principal, name: str) -> ModelVersion | None:
        """The version most recently moved from Production to Archived that is Archived still."""
        entries: list[AuditEntry] = []
        token = None
        while True:
            page = self.store.search_audit(principal.tenant, name=name, max_results=MAX_RESULTS, page_token=token)
            entries.extend(page.items)
            token = page.next_token
            if not token:
                break
        for e in reversed(entries):
            if e.action == "version.transitioned" and e.from_stage == "Production" and e.to_stage == "Archived" \
                    and e.version is not None:
                try:
                    mv = self.store.get_model_version(principal.tenant, name, e.version)
                except NotFound:
                    continue
                if mv.stage == "Archived":
                    return mv
        return None

    def _metrics(self, tenant: str, mv: ModelVersion) -> dict[str, float]:
        if not mv.run_id:
            return {}
        try:
            run = self.tracking.get_run(tenant, mv.run_id)
        except NotFound:
            return {}
        return {k: m.value for k, m in run.metrics.items()}

    def _training_data(self, tenant: str, run_id: str | None) -> list[dict[str, Any]]:
        if not run_id:
            return []
        run = self.tracking.get_run(tenant, run_id)
        out = []
        for key, value in sorted(run.tags.items()):
            if not key.startswith(DATASET_TAG_PREFIX) or len(key) == len(DATASET_TAG_PREFIX):
                continue
            ref: dict[str, Any]
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            ref = dict(parsed) if isinstance(parsed, dict) else {"uri": value}
            ref["name"] = key[len(DATASET_TAG_PREFIX):]
            out.append(ref)
        return out

    def _feature_tags(self, tenant: str, run_id: str | None) -> dict[str, str]:
        """The feature service (or features) the run was trained on: a version remembers them, and a deployment
        of it looks them up online by entity key."""
        if not run_id:
            return {}
        try:
            run = self.tracking.get_run(tenant, run_id)
        except NotFound:
            return {}
        from matih_lite.features.job_inputs import FEATURE_SERVICE_TAG, FEATURES_TAG

        return {k: run.tags[k] for k in (FEATURE_SERVICE_TAG, FEATURES_TAG) if run.tags.get(k)}

    def _run_has(self, tenant: str, run_id: str, rel: str) -> bool:
        if not rel:
            return bool(self.tracking.list_artifacts(tenant, run_id, ""))
        try:
            self.tracking.stat_artifact(tenant, run_id, rel)
            return True
        except NotFound:
            return False

    # MLflow 3 logged models are the tracking domain's (matih_lite.tracking.LoggedModels), their files
    # under {tenant}/{experiment_id}/models/{model_id}/artifacts.
    def _logged_model(self, tenant: str, model_id: str) -> LoggedModel | None:
        if not _LOGGED_MODEL_ID.match(model_id or ""):
            return None
        try:
            return LoggedModels(self.host).get(tenant, model_id)
        except NotFound:
            return None

    def _logged_model_of_run(self, tenant: str, run_id: str, name: str) -> LoggedModel | None:
        return LoggedModels(self.host).of_run(tenant, run_id, name)

    def _logged_model_source(self, tenant: str, doc: LoggedModel, run_id: str | None) -> SourceInfo:
        mlmodel = self._read_text(lambda: self.artifacts.get(f"{LoggedModels(self.host).files_root(doc)}/MLmodel"))
        flavor, sig = from_mlmodel(mlmodel) if mlmodel else ("", None)
        return SourceInfo(doc.artifact_uri, run_id or doc.source_run_id, doc.model_id, flavor, sig)

    def _version_from_uri(self, principal: Principal, ref: str, source: str) -> ModelVersion:
        if "@" in ref:
            name, _, alias = ref.partition("@")
            return self.get_version_by_alias(principal, name, alias)
        name, _, version = ref.rpartition("/")
        if not name or not version:
            raise InvalidInput(f"invalid source {source!r}: write models:/NAME/VERSION, models:/NAME@ALIAS "
                               "or models:/m-<logged model id>")
        return self.get_version(principal, name, version)

    @staticmethod
    def _read_text(read: Any) -> str | None:
        try:
            data = read()
        except (NotFound, InvalidInput):
            return None
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else None

    def _require_manager(self, principal: Principal, model: RegisteredModel, what: str) -> None:
        if principal.user != model.owner and not principal.has("lead"):
            raise Forbidden(f"only the owner of model {model.name!r} ({model.owner or 'none set'}), a lead or an "
                            f"admin may {what} it")

    @staticmethod
    def _entry(principal: Principal, name: str, action: str, *, version: int | None = None,
               from_stage: str | None = None, to_stage: str | None = None, reason: str = "",
               approval_id: str | None = None, detail: dict[str, Any] | None = None,
               timestamp: int | None = None) -> AuditEntry:
        return AuditEntry(name=name, action=action, actor=principal.user, timestamp=timestamp or now_ms(),
                          tenant=principal.tenant, version=version, from_stage=from_stage, to_stage=to_stage,
                          reason=reason, approval_id=approval_id, detail=detail or {})

    def _audit(self, principal: Principal, entries: Sequence[AuditEntry]) -> None:
        if entries:
            self.store.append_audit(principal.tenant, entries)

    def _emit(self, principal: Principal, kind: str, subject: str, data: dict[str, Any]) -> None:
        self.host.emit(PlatformEvent(kind, subject, principal.tenant, data))


# ---- checks ---------------------------------------------------------------------------------------
def check_model_name(name: Any) -> str:
    """A registered model name: 1 to 256 characters, none of ``/ : @`` nor control characters."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("model name must be a non-empty string")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"model name is {len(name)} characters; the limit is {MAX_NAME}")
    if name != name.strip() or any(c in name for c in "/:@") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInput(f"invalid model name {name!r}: no '/', ':', '@', control characters, or spaces at "
                           "either end")
    return name


def check_alias(alias: Any) -> str:
    """An alias as MLflow allows them: letters, digits, ``_`` and ``-``; not ``latest`` nor ``v<N>``."""
    if not isinstance(alias, str) or not alias:
        raise InvalidInput("alias must be a non-empty string")
    if len(alias) > 255 or not _ALIAS.match(alias):
        raise InvalidInput(f"invalid alias {alias!r}: use letters, digits, '_' and '-' (at most 255)")
    if alias.lower() == "latest" or _VERSION_ALIAS.match(alias):
        raise InvalidInput(f"alias {alias!r} is reserved ('latest' and v<N> name versions already)")
    return alias


def _version(version: Any) -> int:
    if isinstance(version, bool):
        raise InvalidInput(f"version must be a positive integer, got {version!r}")
    try:
        number = int(str(version).strip())
    except (TypeError, ValueError):
        raise InvalidInput(f"version must be a positive integer, got {version!r}") from None
    if number < 1:
        raise InvalidInput(f"version must be a positive integer, got {version!r}")
    return number


def _max(n: Any) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > MAX_RESULTS:
        raise InvalidInput(f"max_results must be between 1 and {MAX_RESULTS}, got {n!r}")
    return n


def _tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidInput("tags must be an object of key: value")
    return {check_key(k, "tag"): check_value(v if isinstance(v, str) else str(v), MAX_TAG_VALUE, "tag", k)
            for k, v in tags.items()}


def _description(text: Any) -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InvalidInput("description must be a string")
    if len(text) > MAX_DESCRIPTION:
        raise InvalidInput(f"description is {len(text)} characters; the limit is {MAX_DESCRIPTION}")
    return text


def _reason(text: Any, what: str = "reason") -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a string")
    if len(text) > 4000:
        raise InvalidInput(f"{what} is {len(text)} characters; the limit is 4000")
    return text


def _dataset_ref(ref: Any, what: str) -> dict[str, Any]:
    if isinstance(ref, str):
        return {"name": ref.rsplit("/", 1)[-1] or ref, "uri": ref}
    if not isinstance(ref, Mapping) or not isinstance(ref.get("uri", ref.get("name")), str):
        raise InvalidInput(f"each {what} entry is a URI or an object with at least \"uri\" (or \"name\")")
    try:
        json.dumps(dict(ref))
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} entries must be plain JSON") from None
    out = dict(ref)
    out.setdefault("name", str(out.get("uri", "")).rsplit("/", 1)[-1])
    return out


def _actual(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _read_all(handle: Any) -> bytes:
    with handle:
        return handle.read()
