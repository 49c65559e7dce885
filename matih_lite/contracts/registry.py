"""The registry part of the metadata slot: registered models, versions, aliases, approvals, audit log.

Scoped by tenant like tracking: a model of another tenant is ``NotFound``. The store keeps
records and applies compare-and-set writes; every rule (who may approve, which thresholds
gate Staging, what a rollback restores) lives in :mod:`matih_lite.registry`.
Timestamps are integer milliseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from matih_lite.contracts.records import Page

STAGES = ("Development", "Staging", "Production", "Archived")
"""Every version is in exactly one; new versions start in Development."""
APPROVAL_STATUSES = ("pending", "approved", "rejected")


class RegisteredModel(msgspec.Struct):
    name: str
    tenant: str
    owner: str = ""
    description: str = ""
    creation_time: int = 0
    last_update_time: int = 0
    latest_version: int = 0
    """The highest version number handed out (numbers are never reused, even after a delete)."""
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    aliases: dict[str, int] = msgspec.field(default_factory=dict)


class ModelVersion(msgspec.Struct):
    """One registered version. Immutable but for description, tags, stage and the aliases naming it."""

    name: str
    version: int
    tenant: str
    source: str = ""
    """What the version was registered from, as given (``runs:/ID/model``, ``models:/m-...``, any URI)."""
    storage_location: str = ""
    """Where its files are (``source`` resolved): what serving and downloads read."""
    run_id: str | None = None
    flavor: str = ""
    signature: dict[str, Any] | None = None
    """``{"inputs": [{"name", "type"}...], "outputs": [...] | None}``."""
    training_data: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """Dataset references, each at least ``{"name", "uri"}``."""
    status: str = "READY"
    stage: str = "Development"
    description: str = ""
    created_by: str = ""
    creation_time: int = 0
    last_update_time: int = 0
    logged_model_id: str | None = None
    """The MLflow 3 logged model it came from, when it did."""
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    aliases: list[str] = msgspec.field(default_factory=list)


class StageMove(msgspec.Struct, frozen=True):
    """Move ``version`` to ``to_stage`` only if it is still in ``from_stage`` (compare and set)."""

    version: int
    from_stage: str
    to_stage: str


class Approval(msgspec.Struct):
    """A request to move a version to a gated stage (Production), and its decision."""

    approval_id: str
    tenant: str
    name: str
    version: int
    to_stage: str = "Production"
    status: str = "pending"
    requested_by: str = ""
    requested_at: int = 0
    reason: str = ""
    decided_by: str | None = None
    decided_at: int | None = None
    comment: str = ""


class ApprovalDecision(msgspec.Struct, frozen=True):
    """Decide a pending approval (``status`` approved or rejected); refused if it is no longer pending."""

    approval_id: str
    status: str
    decided_by: str
    decided_at: int
    comment: str = ""


class AuditEntry(msgspec.Struct):
    """One line of a model's history: who did what, when, from which stage to which, and why."""

    name: str
    action: str
    """``model.created``, ``version.registered``, ``version.transitioned``, ``transition.refused``,
    ``approval.requested``, ``approval.approved``, ``approval.rejected``, ``model.rolled_back``,
    ``alias.set``, ``alias.deleted``, ``version.deleted``, ``model.renamed``, ``model.deleted``."""
    actor: str
    timestamp: int
    tenant: str = ""
    version: int | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    reason: str = ""
    approval_id: str | None = None
    detail: dict[str, Any] = msgspec.field(default_factory=dict)
    entry_id: int = 0
    """Assigned by the store; increases with every entry."""


@runtime_checkable
class RegistryStore(Protocol):
    """Methods every metadata backend provides for the registry; scoped by tenant like tracking."""

    # registered models -------------------------------------------------------
    def create_registered_model(
        self, tenant: str, name: str, *, owner: str = "", description: str = "",
        tags: Mapping[str, str] | None = None, creation_time: int | None = None,
    ) -> RegisteredModel:
        """A new model. Raises Conflict if the tenant has one of that name."""

    def get_registered_model(self, tenant: str, name: str) -> RegisteredModel:
        """The model with its tags and aliases. Raises NotFound."""

    def search_registered_models(
        self, tenant: str, *, name_like: str | None = None, max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page[RegisteredModel]:
        """Models ordered by name. Raises InvalidInput on a bad page token."""

    def update_registered_model(
        self, tenant: str, name: str, *, new_name: str | None = None, description: str | None = None,
        owner: str | None = None,
    ) -> RegisteredModel:
        """Rename (its audit log follows), describe or hand over. Raises NotFound, Conflict on a taken name."""

    def set_registered_model_tags(self, tenant: str, name: str, tags: Mapping[str, str]) -> None:
        """Upsert tags. Raises NotFound."""

    def delete_registered_model_tag(self, tenant: str, name: str, key: str) -> None:
        """Raises NotFound for the model or the tag."""

    def delete_registered_model(self, tenant: str, name: str) -> None:
        """Delete a model with its versions, aliases and approvals; its audit log stays. Raises NotFound."""

    # versions ----------------------------------------------------------------
    def create_model_version(
        self, tenant: str, name: str, *, source: str, storage_location: str = "", run_id: str | None = None,
        flavor: str = "", signature: Mapping[str, Any] | None = None,
        training_data: Sequence[Mapping[str, Any]] = (), description: str = "",
        tags: Mapping[str, str] | None = None, created_by: str = "", logged_model_id: str | None = None,
        creation_time: int | None = None,
    ) -> ModelVersion:
        """The next version (1, 2, ...; never reused), in Development. Raises NotFound for the model."""

    def get_model_version(self, tenant: str, name: str, version: int) -> ModelVersion:
        """Raises NotFound."""

    def get_model_version_by_alias(self, tenant: str, name: str, alias: str) -> ModelVersion:
        """Raises NotFound for the model or the alias."""

    def search_model_versions(
        self, tenant: str, *, name: str | None = None, run_id: str | None = None,
        stages: Sequence[str] | None = None, max_results: int = 1000, page_token: str | None = None,
    ) -> Page[ModelVersion]:
        """Versions ordered by model name, then newest version first. Raises InvalidInput on a bad token."""

    def update_model_version(self, tenant: str, name: str, version: int, *,
                             description: str | None = None) -> ModelVersion:
        """Change the description. Raises NotFound."""

    def set_model_version_tags(self, tenant: str, name: str, version: int, tags: Mapping[str, str]) -> None:
        """Upsert tags. Raises NotFound."""

    def delete_model_version_tag(self, tenant: str, name: str, version: int, key: str) -> None:
        """Raises NotFound for the version or the tag."""

    def delete_model_version(self, tenant: str, name: str, version: int) -> None:
        """Delete a version with the aliases naming it and its approvals. Raises NotFound."""

    # aliases -----------------------------------------------------------------
    def set_alias(self, tenant: str, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version`` (moving it if it named another). Raises NotFound."""

    def delete_alias(self, tenant: str, name: str, alias: str) -> None:
        """Raises NotFound for the model or the alias."""

    # approvals, transitions, audit ---------------------------------------------
    def create_approval(
        self, tenant: str, name: str, version: int, *, approval_id: str, requested_by: str,
        requested_at: int, to_stage: str = "Production", reason: str = "", audit: Sequence[AuditEntry] = (),
    ) -> Approval:
        """A pending approval, with its audit entries, in one write.

        Raises NotFound for the version; Conflict if one is already pending for it and ``to_stage``.
        """

    def get_approval(self, tenant: str, approval_id: str) -> Approval:
        """Raises NotFound."""

    def search_approvals(
        self, tenant: str, *, name: str | None = None, status: str | None = None, max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page[Approval]:
        """Approvals, newest request first. Raises InvalidInput on a bad page token."""

    def record_transition(
        self, tenant: str, name: str, *, moves: Sequence[StageMove] = (), audit: Sequence[AuditEntry] = (),
        decision: ApprovalDecision | None = None,
    ) -> list[ModelVersion]:
        """Apply stage moves, decide an approval and append audit entries, all or nothing.

        Returns the moved versions. Raises NotFound; Conflict if a version is no longer in its
        move's ``from_stage`` or the approval is no longer pending.
        """

    def append_audit(self, tenant: str, entries: Sequence[AuditEntry]) -> None:
        """Append entries to the audit log (they need no model to exist)."""

    def search_audit(
        self, tenant: str, *, name: str | None = None, max_results: int = 1000, page_token: str | None = None,
    ) -> Page[AuditEntry]:
        """Audit entries oldest first. Raises InvalidInput on a bad page token."""
