"""The deployments part of the metadata contract over SQL: one row per deployment, plus its history.

Routes, shadows, the canary and the policy are small JSON documents in their row (they are
always read and written whole); ``canary_status`` is a column of its own so the canary
controller finds running canaries with an index. An update is compare-and-set on
``revision``, so two controllers (or a controller and a person) never both step a canary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from matih_lite.contracts.deployments import CanaryState, Deployment, DeploymentChange, Route
from matih_lite.contracts.records import Page
from matih_lite.errors import Conflict, InvalidInput, NotFound
from matih_lite.sqlstore.scope import EVERY_TENANT, OWNED, Paging, ScopedStore

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (5, "deployments", [
        """CREATE TABLE deployments (
            tenant {text} NOT NULL,
            name {text} NOT NULL,
            model {text} NOT NULL,
            target {text} NOT NULL,
            follows {text},
            routes {text} NOT NULL DEFAULT '[]',
            shadows {text} NOT NULL DEFAULT '[]',
            canary {text},
            canary_status {text},
            use_canary {bigint} NOT NULL DEFAULT 0,
            policy {text} NOT NULL DEFAULT '{{}}',
            status {text} NOT NULL,
            description {text} NOT NULL DEFAULT '',
            created_by {text} NOT NULL DEFAULT '',
            created_at {bigint} NOT NULL,
            updated_at {bigint} NOT NULL,
            revision {bigint} NOT NULL,
            PRIMARY KEY (tenant, name))""",
        "CREATE INDEX deployments_by_model ON deployments (tenant, model, name)",
        "CREATE INDEX deployments_by_canary ON deployments (canary_status)",
        # No foreign key: a deployment's history outlives the deployment.
        """CREATE TABLE deployment_history (
            change_id {serial},
            tenant {text} NOT NULL,
            deployment {text} NOT NULL,
            action {text} NOT NULL,
            actor {text} NOT NULL,
            timestamp {bigint} NOT NULL,
            reason {text} NOT NULL DEFAULT '',
            detail {text} NOT NULL DEFAULT '{{}}')""",
        "CREATE INDEX deployment_history_by_name ON deployment_history (tenant, deployment, change_id)",
    ]),
]
"""Schema for deployments: version 5 (and 501, 502... for later changes)."""

TABLES = {
    "deployments": OWNED,
    "deployment_history": OWNED,  # no parent: the history outlives the deployment
}

_COLUMNS = ("tenant, name, model, target, follows, routes, shadows, canary, canary_status, use_canary, policy, "
            "status, description, created_by, created_at, updated_at, revision")
_CHANGE_COLUMNS = "change_id, tenant, deployment, action, actor, timestamp, reason, detail"
_VALUE_COLUMNS = tuple(c.strip() for c in _COLUMNS.split(",")[1:])  # all but the tenant, which the scope adds
_routes = msgspec.json.Decoder(list[Route])
_canary = msgspec.json.Decoder(CanaryState)


def _text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _row(d: Deployment, revision: int) -> tuple:
    return (d.tenant, d.name, d.model, d.target, d.follows, _text(d.routes), _text(d.shadows),
            None if d.canary is None else _text(d.canary), None if d.canary is None else d.canary.status,
            1 if d.use_canary else 0, _text(d.policy), d.status, d.description, d.created_by, int(d.created_at),
            int(d.updated_at), revision)


def _deployment(row: Sequence[Any]) -> Deployment:
    return Deployment(
        tenant=row[0], name=row[1], model=row[2], target=row[3], follows=row[4], routes=_routes.decode(row[5]),
        shadows=[int(v) for v in json.loads(row[6])], canary=None if row[7] is None else _canary.decode(row[7]),
        use_canary=bool(row[9]), policy=json.loads(row[10] or "{}"), status=row[11], description=row[12],
        created_by=row[13], created_at=int(row[14]), updated_at=int(row[15]), revision=int(row[16]))


def _change(row: Sequence[Any]) -> DeploymentChange:
    return DeploymentChange(tenant=row[1], deployment=row[2], action=row[3], actor=row[4], timestamp=int(row[5]),
                            reason=row[6], detail=json.loads(row[7] or "{}"), change_id=int(row[0]))


class SqlDeploymentStore(ScopedStore):
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db`` and ``self._q``."""

    db: Any
    _q: Any

    def _log_change(self, cur: Any, tenant: str, change: DeploymentChange) -> None:
        if change.tenant != tenant:
            raise InvalidInput(f"a change of tenant {change.tenant!r} cannot be written to a deployment of {tenant!r}")
        self.scoped(cur, tenant).insert("deployment_history", {
            "deployment": change.deployment, "action": change.action, "actor": change.actor,
            "timestamp": int(change.timestamp), "reason": change.reason, "detail": _text(change.detail)})

    def create_deployment(self, deployment: Deployment, change: DeploymentChange) -> Deployment:
        def run(cur: Any) -> None:
            mine = self.scoped(cur, deployment.tenant)
            if mine.exists("deployments", "name = ?", (deployment.name,)):
                raise Conflict(f"deployment {deployment.name!r} already exists; update it, or delete it first")
            mine.insert_many("deployments", _VALUE_COLUMNS, [_row(deployment, 1)[1:]])
            self._log_change(cur, deployment.tenant, change)

        self.db.write(run)
        return msgspec.structs.replace(deployment, revision=1)

    def get_deployment(self, tenant: str, name: str) -> Deployment:
        with self.db.read() as cur:
            row = self.scoped(cur, tenant).first("deployments", _COLUMNS, "name = ?", (name,))
        if row is None:
            raise NotFound(f"deployment {name!r} does not exist")
        return _deployment(row)

    def list_deployments(self, tenant: str, *, model: str | None = None, max_results: int = 1000,
                         page_token: str | None = None) -> Page[Deployment]:
        paging = Paging(page_token, max_results)
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("deployments", _COLUMNS, "model = ?" if model is not None else "",
                                                   (model,) if model is not None else (), order="name", paging=paging)
        return paging.page([_deployment(r) for r in rows])

    def update_deployment(self, deployment: Deployment, change: DeploymentChange, *, revision: int) -> Deployment:
        sets = ", ".join(f"{c} = ?" for c in _VALUE_COLUMNS[1:])

        def run(cur: Any) -> None:
            mine = self.scoped(cur, deployment.tenant)
            row = _row(deployment, revision + 1)
            if mine.update("deployments", sets, row[2:], "name = ? AND revision = ?", (deployment.name, revision)) != 1:
                found = mine.first("deployments", "revision", "name = ?", (deployment.name,))
                if found is None:
                    raise NotFound(f"deployment {deployment.name!r} does not exist")
                raise Conflict(f"deployment {deployment.name!r} changed meanwhile (revision {found[0]}, not "
                               f"{revision}); read it again and retry")
            self._log_change(cur, deployment.tenant, change)

        self.db.write(run)
        return msgspec.structs.replace(deployment, revision=revision + 1)

    def delete_deployment(self, tenant: str, name: str, change: DeploymentChange) -> None:
        def run(cur: Any) -> None:
            if self.scoped(cur, tenant).delete("deployments", "name = ?", (name,)) != 1:
                raise NotFound(f"deployment {name!r} does not exist")
            self._log_change(cur, tenant, change)

        self.db.write(run)

    def deployment_history(self, tenant: str, name: str, *, max_results: int = 1000,
                           page_token: str | None = None) -> Page[DeploymentChange]:
        paging = Paging(page_token, max_results)
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("deployment_history", _CHANGE_COLUMNS, "deployment = ?", (name,),
                                                   order="change_id", paging=paging)
        return paging.page([_change(r) for r in rows])

    def deployment_changes(self, after: int, *, max_results: int = 1000) -> list[DeploymentChange]:
        if max_results < 1:
            return []
        paging: Paging[tuple] = Paging(None, int(max_results))
        with self.db.read() as cur:
            # Every tenant's: the feed a server follows to notice changes made elsewhere.
            rows = self.scoped(cur, EVERY_TENANT).select("deployment_history", _CHANGE_COLUMNS, "change_id > ?",
                                                         (int(after),), order="change_id", paging=paging)
        return [_change(r) for r in paging.page(rows).items]

    def running_canaries(self) -> list[Deployment]:
        with self.db.read() as cur:
            # Every tenant's: the canary controller steps them all.
            rows = self.scoped(cur, EVERY_TENANT).select("deployments", _COLUMNS, "canary_status = 'running'",
                                                         order="tenant, name")
        return [_deployment(r) for r in rows]
