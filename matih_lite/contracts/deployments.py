"""The deployments part of the metadata slot: what serves which model versions, and every change to it.

A :class:`Deployment` names a model and what it serves: fixed versions, or whatever version
the registry puts in a stage (``Production``) or behind an alias (``champion``). Its
:class:`Route` list splits traffic between variants by weight (percent), ``shadows`` are
versions that get a copy of each request, and :class:`CanaryState` records a candidate
being stepped up. Every change is one :class:`DeploymentChange` in the deployment's history,
written in the same transaction as the change (the history outlives a deleted deployment).

The store keeps records and applies compare-and-set writes (``revision``); routing, the
canary policy and following the registry are written once in :mod:`matih_lite.serving.deployments`.
Scoped by tenant like the rest of the slot; timestamps are milliseconds.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import msgspec

from matih_lite.contracts.records import Page

TARGETS = ("versions", "stage", "alias")
"""What a deployment serves: fixed versions, the version in a stage, or the version behind an alias."""
CANARY_STATUSES = ("running", "promoted", "rolled_back", "cancelled")


class Route(msgspec.Struct, frozen=True):
    """``weight`` percent of the deployment's traffic goes to ``version``, answered as ``variant``."""

    variant: str
    version: int
    weight: float


class CanaryState(msgspec.Struct):
    """A candidate version taking a growing share of traffic from the primary, or how that ended."""

    candidate: int
    primary: int | None
    percent: float
    started_at: int
    stepped_at: int
    status: str = "running"
    policy: dict[str, Any] = msgspec.field(default_factory=dict)
    """The policy it runs under (initial/step percent, interval, thresholds), fixed when it started."""
    steps: int = 0
    reason: str = ""
    """Why it started (a promotion in the registry, a deploy), or why it was rolled back."""
    finished_at: int | None = None


class Deployment(msgspec.Struct):
    tenant: str
    name: str
    model: str
    target: str = "versions"
    """One of :data:`TARGETS`."""
    follows: str | None = None
    """The stage (``Production``) or alias (``champion``) followed; None for fixed versions."""
    routes: list[Route] = msgspec.field(default_factory=list)
    shadows: list[int] = msgspec.field(default_factory=list)
    canary: CanaryState | None = None
    """The current or last canary; ``canary.status == "running"`` while one is stepping."""
    use_canary: bool = False
    """New versions (a promotion followed, a deploy of another version) enter through a canary."""
    policy: dict[str, Any] = msgspec.field(default_factory=dict)
    """Canary policy overrides for this deployment (over matih.toml's ``[canary]``)."""
    status: str = "active"
    """``active`` (serving) or ``waiting`` (it follows a stage or alias that holds no version yet)."""
    description: str = ""
    created_by: str = ""
    """The user the deployment acts for when its canary promotes a version in the registry."""
    created_at: int = 0
    updated_at: int = 0
    revision: int = 0
    """Assigned by the store: 1 when created, one more with every update."""


class DeploymentChange(msgspec.Struct):
    """One line of a deployment's history: who changed what, when, and why."""

    tenant: str
    deployment: str
    action: str
    """``created``, ``updated``, ``deleted``, ``followed``, ``canary.started``, ``canary.stepped``,
    ``canary.promoted``, ``canary.rolled_back``, ``canary.cancelled``."""
    actor: str
    timestamp: int
    reason: str = ""
    detail: dict[str, Any] = msgspec.field(default_factory=dict)
    """What changed: ``before`` and ``after`` routes, the versions involved, the measurements."""
    change_id: int = 0
    """Assigned by the store; increases with every change of any deployment."""


@runtime_checkable
class DeploymentStore(Protocol):
    """Methods every metadata backend provides for deployments; a deployment of another tenant is NotFound."""

    def create_deployment(self, deployment: Deployment, change: DeploymentChange) -> Deployment:
        """Store a new deployment at revision 1 with its first history line. Raises Conflict on a taken name."""

    def get_deployment(self, tenant: str, name: str) -> Deployment:
        """Raises NotFound."""

    def list_deployments(self, tenant: str, *, model: str | None = None, max_results: int = 1000,
                         page_token: str | None = None) -> Page[Deployment]:
        """Deployments by name (of one model when given). Raises InvalidInput on a bad page token."""

    def update_deployment(self, deployment: Deployment, change: DeploymentChange, *, revision: int) -> Deployment:
        """Replace the stored deployment if it is still at ``revision``; returns it at ``revision + 1``.

        Raises NotFound, or Conflict when another change was stored first (read it again and retry).
        """

    def delete_deployment(self, tenant: str, name: str, change: DeploymentChange) -> None:
        """Delete the deployment, keeping its history (``change`` is the last line). Raises NotFound."""

    def deployment_history(self, tenant: str, name: str, *, max_results: int = 1000,
                           page_token: str | None = None) -> Page[DeploymentChange]:
        """The deployment's changes, oldest first (also after it was deleted). Raises InvalidInput on a bad token."""

    def deployment_changes(self, after: int, *, max_results: int = 1000) -> list[DeploymentChange]:
        """Changes of every tenant with ``change_id > after``, in id order: the feed a server watches."""

    def running_canaries(self) -> list[Deployment]:
        """Deployments of every tenant whose canary is running: the canary controller's work list."""
