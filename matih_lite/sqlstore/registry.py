"""The registry part of the metadata contract over SQL.

Every write that touches a model's versions, aliases or approvals first updates the model's
row (``_lock_model``): that finds the model, stamps ``last_update_time`` and, on PostgreSQL,
holds the row lock until commit, so version numbering and compare-and-set stage moves are
serialized per model (SQLite serializes all writers with ``BEGIN IMMEDIATE`` anyway).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from matih_lite.contracts.records import Page
from matih_lite.contracts.registry import (
    Approval,
    ApprovalDecision,
    AuditEntry,
    ModelVersion,
    RegisteredModel,
    StageMove,
)
from matih_lite.errors import Conflict, NotFound
from matih_lite.sqlstore.scope import OWNED, Child, Join, Paging, ScopedStore
from matih_lite.sqlstore.tracking import _chunks, _marks

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (2, "registry", [
        """CREATE TABLE registered_models (
            model_id {serial},
            tenant {text} NOT NULL,
            name {text} NOT NULL,
            owner {text} NOT NULL DEFAULT '',
            description {text} NOT NULL DEFAULT '',
            creation_time {bigint} NOT NULL,
            last_update_time {bigint} NOT NULL,
            last_version {bigint} NOT NULL DEFAULT 0,
            UNIQUE (tenant, name))""",
        """CREATE TABLE registered_model_tags (
            model_id {bigint} NOT NULL REFERENCES registered_models (model_id) ON DELETE CASCADE,
            key {text} NOT NULL, value {text} NOT NULL,
            PRIMARY KEY (model_id, key))""",
        """CREATE TABLE model_versions (
            model_id {bigint} NOT NULL REFERENCES registered_models (model_id) ON DELETE CASCADE,
            version {bigint} NOT NULL,
            source {text} NOT NULL,
            storage_location {text} NOT NULL DEFAULT '',
            run_id {text},
            flavor {text} NOT NULL DEFAULT '',
            signature {text},
            training_data {text} NOT NULL DEFAULT '[]',
            status {text} NOT NULL DEFAULT 'READY',
            stage {text} NOT NULL DEFAULT 'Development',
            description {text} NOT NULL DEFAULT '',
            created_by {text} NOT NULL DEFAULT '',
            creation_time {bigint} NOT NULL,
            last_update_time {bigint} NOT NULL,
            logged_model_id {text},
            PRIMARY KEY (model_id, version))""",
        "CREATE INDEX model_versions_by_run ON model_versions (run_id)",
        "CREATE INDEX model_versions_by_stage ON model_versions (model_id, stage)",
        """CREATE TABLE model_version_tags (
            model_id {bigint} NOT NULL, version {bigint} NOT NULL,
            key {text} NOT NULL, value {text} NOT NULL,
            PRIMARY KEY (model_id, version, key),
            FOREIGN KEY (model_id, version) REFERENCES model_versions (model_id, version) ON DELETE CASCADE)""",
        """CREATE TABLE model_aliases (
            model_id {bigint} NOT NULL, alias {text} NOT NULL, version {bigint} NOT NULL,
            PRIMARY KEY (model_id, alias),
            FOREIGN KEY (model_id, version) REFERENCES model_versions (model_id, version) ON DELETE CASCADE)""",
        """CREATE TABLE model_approvals (
            approval_id {text} PRIMARY KEY,
            tenant {text} NOT NULL,
            model_id {bigint} NOT NULL, version {bigint} NOT NULL,
            to_stage {text} NOT NULL,
            status {text} NOT NULL,
            requested_by {text} NOT NULL,
            requested_at {bigint} NOT NULL,
            reason {text} NOT NULL DEFAULT '',
            decided_by {text},
            decided_at {bigint},
            comment {text} NOT NULL DEFAULT '',
            FOREIGN KEY (model_id, version) REFERENCES model_versions (model_id, version) ON DELETE CASCADE)""",
        "CREATE INDEX model_approvals_by_tenant ON model_approvals (tenant, status, requested_at)",
        "CREATE UNIQUE INDEX model_approvals_one_pending ON model_approvals (model_id, version, to_stage) "
        "WHERE status = 'pending'",
        # No foreign key: a model's history outlives the model.
        """CREATE TABLE model_audit (
            entry_id {serial},
            tenant {text} NOT NULL,
            model_name {text} NOT NULL,
            version {bigint},
            action {text} NOT NULL,
            actor {text} NOT NULL,
            timestamp {bigint} NOT NULL,
            from_stage {text},
            to_stage {text},
            reason {text} NOT NULL DEFAULT '',
            approval_id {text},
            detail {text} NOT NULL DEFAULT '{{}}')""",
        "CREATE INDEX model_audit_by_model ON model_audit (tenant, model_name, entry_id)",
    ]),
]
"""Schema for registry: version 2 (and 2 to 2.x by convention, e.g. 201, 202 for later changes)."""

TABLES = {
    "registered_models": OWNED,
    "registered_model_tags": Child("registered_models"),
    "model_versions": Child("registered_models"),
    "model_version_tags": Child("registered_models"),
    "model_aliases": Child("registered_models"),
    "model_approvals": OWNED,
    "model_audit": OWNED,  # no parent: a model's history outlives the model
}

_MODEL_VERSIONS = (Join("model_versions", "v", "v.model_id = m.model_id"),)
_APPROVAL_MODEL = (Join("registered_models", "m", "m.model_id = a.model_id"),)
_MODEL_COLUMNS = "model_id, tenant, name, owner, description, creation_time, last_update_time, last_version"
_VERSION_COLUMNS = ("v.model_id, m.name, v.version, m.tenant, v.source, v.storage_location, v.run_id, v.flavor, "
                    "v.signature, v.training_data, v.status, v.stage, v.description, v.created_by, "
                    "v.creation_time, v.last_update_time, v.logged_model_id")
_APPROVAL_COLUMNS = ("a.approval_id, a.tenant, m.name, a.version, a.to_stage, a.status, a.requested_by, "
                     "a.requested_at, a.reason, a.decided_by, a.decided_at, a.comment")
_AUDIT_COLUMNS = ("entry_id, tenant, model_name, version, action, actor, timestamp, from_stage, to_stage, reason, "
                  "approval_id, detail")


def _now() -> int:
    return int(time.time() * 1000)


def _version_number(version: Any) -> int:
    try:
        value = int(version)
    except (TypeError, ValueError):
        raise NotFound(f"model version {version!r} does not exist") from None
    if value < 1 or value > 2**62:
        raise NotFound(f"model version {version!r} does not exist")
    return value


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class SqlRegistryStore(ScopedStore):
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db`` and ``self._q``."""

    db: Any
    _q: Any

    # ---- helpers ----------------------------------------------------------------------------------
    def _lock_model(self, cur: Any, tenant: str, name: str, now: int | None = None) -> int:
        """The model's id, its row stamped and locked for this transaction. Raises NotFound."""
        row = self.scoped(cur, tenant).update("registered_models", "last_update_time = ?", (now or _now(),),
                                              "name = ?", (name,), returning="model_id")
        if not row:
            raise NotFound(f"registered model {name!r} does not exist")
        return row[0]

    def _model_id(self, cur: Any, tenant: str, name: str) -> int:
        row = self.scoped(cur, tenant).first("registered_models", "model_id", "name = ?", (name,))
        if not row:
            raise NotFound(f"registered model {name!r} does not exist")
        return row[0]

    def _check_version(self, cur: Any, model_id: int, name: str, version: int) -> None:
        cur.execute(self._q("SELECT 1 FROM model_versions WHERE model_id = ? AND version = ?"), (model_id, version))
        if not cur.fetchone():
            raise NotFound(f"model {name!r} has no version {version}")

    def _models(self, cur: Any, tenant: str, where: str, params: Sequence[Any], *, order: str = "",
                paging: Paging | None = None) -> list[RegisteredModel]:
        rows = self.scoped(cur, tenant).select("registered_models", _MODEL_COLUMNS, where, params, order=order,
                                               paging=paging)
        by_id: dict[int, RegisteredModel] = {}
        models = []
        for r in rows:
            m = RegisteredModel(name=r[2], tenant=r[1], owner=r[3], description=r[4], creation_time=r[5],
                                last_update_time=r[6], latest_version=r[7])
            by_id[r[0]] = m
            models.append(m)
        if by_id:
            for chunk in _chunks(list(by_id)):
                cur.execute(self._q(f"SELECT model_id, key, value FROM registered_model_tags "
                                    f"WHERE model_id IN ({_marks(chunk)})"), tuple(chunk))
                for mid, key, value in cur.fetchall():
                    by_id[mid].tags[key] = value
                cur.execute(self._q(f"SELECT model_id, alias, version FROM model_aliases "
                                    f"WHERE model_id IN ({_marks(chunk)}) ORDER BY alias"), tuple(chunk))
                for mid, alias, version in cur.fetchall():
                    by_id[mid].aliases[alias] = int(version)
        return models

    def _versions(self, cur: Any, tenant: str, where: str, params: Sequence[Any], *, order: str = "",
                  paging: Paging | None = None) -> list[ModelVersion]:
        rows = self.scoped(cur, tenant).select("registered_models", _VERSION_COLUMNS, where, params, alias="m",
                                               joins=_MODEL_VERSIONS, order=order, paging=paging)
        out: list[ModelVersion] = []
        by_key: dict[tuple[int, int], ModelVersion] = {}
        for r in rows:
            mv = ModelVersion(name=r[1], version=int(r[2]), tenant=r[3], source=r[4], storage_location=r[5],
                              run_id=r[6], flavor=r[7], signature=_json_or_none(r[8]),
                              training_data=json.loads(r[9]), status=r[10], stage=r[11], description=r[12],
                              created_by=r[13], creation_time=r[14], last_update_time=r[15], logged_model_id=r[16])
            by_key[(r[0], int(r[2]))] = mv
            out.append(mv)
        model_ids = sorted({k[0] for k in by_key})
        for mid in model_ids:
            versions = [v for (m, v) in by_key if m == mid]
            for chunk in _chunks(versions):
                cur.execute(self._q(f"SELECT version, key, value FROM model_version_tags WHERE model_id = ? "
                                    f"AND version IN ({_marks(chunk)})"), (mid, *chunk))
                for version, key, value in cur.fetchall():
                    by_key[(mid, int(version))].tags[key] = value
                cur.execute(self._q(f"SELECT version, alias FROM model_aliases WHERE model_id = ? "
                                    f"AND version IN ({_marks(chunk)}) ORDER BY alias"), (mid, *chunk))
                for version, alias in cur.fetchall():
                    by_key[(mid, int(version))].aliases.append(alias)
        return out

    @staticmethod
    def _approval(r: Sequence[Any]) -> Approval:
        return Approval(approval_id=r[0], tenant=r[1], name=r[2], version=int(r[3]), to_stage=r[4], status=r[5],
                        requested_by=r[6], requested_at=r[7], reason=r[8], decided_by=r[9], decided_at=r[10],
                        comment=r[11])

    def _insert_audit(self, cur: Any, tenant: str, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        self.scoped(cur, tenant).insert_many(
            "model_audit", ("model_name", "version", "action", "actor", "timestamp", "from_stage", "to_stage",
                            "reason", "approval_id", "detail"),
            [(e.name, e.version, e.action, e.actor, e.timestamp or _now(), e.from_stage, e.to_stage,
              e.reason or "", e.approval_id, json.dumps(e.detail or {}, sort_keys=True)) for e in entries])

    # ---- registered models ------------------------------------------------------------------------
    def create_registered_model(self, tenant: str, name: str, *, owner: str = "", description: str = "",
                                tags: Mapping[str, str] | None = None,
                                creation_time: int | None = None) -> RegisteredModel:
        now = creation_time or _now()

        def run(cur: Any) -> None:
            mine = self.scoped(cur, tenant)
            if mine.exists("registered_models", "name = ?", (name,)):
                raise Conflict(f"registered model {name!r} already exists")
            mid = mine.insert("registered_models", {
                "name": name, "owner": owner, "description": description, "creation_time": now,
                "last_update_time": now, "last_version": 0}, returning="model_id")[0]
            if tags:
                cur.executemany(self._q("INSERT INTO registered_model_tags (model_id, key, value) VALUES (?, ?, ?)"),
                                [(mid, k, v) for k, v in tags.items()])

        self.db.write(run)
        return self.get_registered_model(tenant, name)

    def get_registered_model(self, tenant: str, name: str) -> RegisteredModel:
        with self.db.read() as cur:
            found = self._models(cur, tenant, "name = ?", (name,))
        if not found:
            raise NotFound(f"registered model {name!r} does not exist")
        return found[0]

    def search_registered_models(self, tenant: str, *, name_like: str | None = None, max_results: int = 1000,
                                 page_token: str | None = None) -> Page[RegisteredModel]:
        paging = Paging(page_token, max_results)
        with self.db.read() as cur:
            items = self._models(cur, tenant, "name LIKE ?" if name_like else "", (name_like,) if name_like else (),
                                 order="name, model_id", paging=paging)
        return paging.page(items)

    def update_registered_model(self, tenant: str, name: str, *, new_name: str | None = None,
                                description: str | None = None, owner: str | None = None) -> RegisteredModel:
        def run(cur: Any) -> None:
            mid = self._lock_model(cur, tenant, name)
            mine = self.scoped(cur, tenant)
            if new_name is not None and new_name != name:
                if mine.exists("registered_models", "name = ?", (new_name,)):
                    raise Conflict(f"registered model {new_name!r} already exists")
                mine.update("model_audit", "model_name = ?", (new_name,), "model_name = ?", (name,))
            sets, params = [], []
            for column, value in (("name", new_name), ("description", description), ("owner", owner)):
                if value is not None:
                    sets.append(f"{column} = ?")
                    params.append(value)
            if sets:
                mine.update("registered_models", ", ".join(sets), params, "model_id = ?", (mid,))

        self.db.write(run)
        return self.get_registered_model(tenant, new_name if new_name is not None else name)

    def set_registered_model_tags(self, tenant: str, name: str, tags: Mapping[str, str]) -> None:
        def run(cur: Any) -> None:
            mid = self._lock_model(cur, tenant, name)
            cur.executemany(self._q("INSERT INTO registered_model_tags (model_id, key, value) VALUES (?, ?, ?) "
                                    "ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value"),
                            [(mid, k, v) for k, v in tags.items()])

        if tags:
            self.db.write(run)
        else:
            self.get_registered_model(tenant, name)

    def delete_registered_model_tag(self, tenant: str, name: str, key: str) -> None:
        def run(cur: Any) -> None:
            mid = self._lock_model(cur, tenant, name)
            cur.execute(self._q("DELETE FROM registered_model_tags WHERE model_id = ? AND key = ?"), (mid, key))
            if cur.rowcount == 0:
                raise NotFound(f"registered model {name!r} has no tag {key!r}")

        self.db.write(run)

    def delete_registered_model(self, tenant: str, name: str) -> None:
        def run(cur: Any) -> None:
            mid = self._lock_model(cur, tenant, name)
            # Children first: SQLite only cascades with foreign_keys on, and a plugin's connection may not be.
            mine = self.scoped(cur, tenant)
            mine.delete("model_approvals", "model_id = ?", (mid,))
            for table in ("model_aliases", "model_version_tags", "model_versions", "registered_model_tags"):
                cur.execute(self._q(f"DELETE FROM {table} WHERE model_id = ?"), (mid,))
            mine.delete("registered_models", "model_id = ?", (mid,))

        self.db.write(run)

    # ---- versions ---------------------------------------------------------------------------------
    def create_model_version(self, tenant: str, name: str, *, source: str, storage_location: str = "",
                             run_id: str | None = None, flavor: str = "",
                             signature: Mapping[str, Any] | None = None,
                             training_data: Sequence[Mapping[str, Any]] = (), description: str = "",
                             tags: Mapping[str, str] | None = None, created_by: str = "",
                             logged_model_id: str | None = None, creation_time: int | None = None) -> ModelVersion:
        now = creation_time or _now()

        def run(cur: Any) -> int:
            mid = self._lock_model(cur, tenant, name, now)
            version = int(self.scoped(cur, tenant).update("registered_models", "last_version = last_version + 1",
                                                          (), "model_id = ?", (mid,), returning="last_version")[0])
            cur.execute(self._q(
                "INSERT INTO model_versions (model_id, version, source, storage_location, run_id, flavor, signature, "
                "training_data, status, stage, description, created_by, creation_time, last_update_time, "
                "logged_model_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'READY', 'Development', ?, ?, ?, ?, ?)"),
                (mid, version, source, storage_location, run_id, flavor,
                 None if signature is None else json.dumps(dict(signature), sort_keys=True),
                 json.dumps([dict(t) for t in training_data], sort_keys=True), description, created_by, now, now,
                 logged_model_id))
            if tags:
                cur.executemany(self._q("INSERT INTO model_version_tags (model_id, version, key, value) "
                                        "VALUES (?, ?, ?, ?)"), [(mid, version, k, v) for k, v in tags.items()])
            return version

        return self.get_model_version(tenant, name, self.db.write(run))

    def get_model_version(self, tenant: str, name: str, version: int) -> ModelVersion:
        number = _version_number(version)
        with self.db.read() as cur:
            found = self._versions(cur, tenant, "m.name = ? AND v.version = ?", (name, number))
            if not found:
                self._model_id(cur, tenant, name)  # NotFound for the model itself first
                raise NotFound(f"model {name!r} has no version {version}")
        return found[0]

    def get_model_version_by_alias(self, tenant: str, name: str, alias: str) -> ModelVersion:
        with self.db.read() as cur:
            mid = self._model_id(cur, tenant, name)
            cur.execute(self._q("SELECT version FROM model_aliases WHERE model_id = ? AND alias = ?"), (mid, alias))
            row = cur.fetchone()
            if not row:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            return self._versions(cur, tenant, "v.model_id = ? AND v.version = ?", (mid, row[0]))[0]

    def search_model_versions(self, tenant: str, *, name: str | None = None, run_id: str | None = None,
                              stages: Sequence[str] | None = None, max_results: int = 1000,
                              page_token: str | None = None) -> Page[ModelVersion]:
        paging = Paging(page_token, max_results)
        where: list[str] = []
        params: list[Any] = []
        if name is not None:
            where.append("m.name = ?")
            params.append(name)
        if run_id is not None:
            where.append("v.run_id = ?")
            params.append(run_id)
        if stages is not None:
            if not stages:
                return Page([], None)
            where.append(f"v.stage IN ({_marks(stages)})")
            params.extend(stages)
        with self.db.read() as cur:
            items = self._versions(cur, tenant, " AND ".join(where), params,
                                   order="m.name, v.model_id, v.version DESC", paging=paging)
        return paging.page(items)

    def update_model_version(self, tenant: str, name: str, version: int, *,
                             description: str | None = None) -> ModelVersion:
        number = _version_number(version)

        def run(cur: Any) -> None:
            now = _now()
            mid = self._lock_model(cur, tenant, name, now)
            cur.execute(self._q("UPDATE model_versions SET description = COALESCE(?, description), "
                                "last_update_time = ? WHERE model_id = ? AND version = ?"),
                        (description, now, mid, number))
            if cur.rowcount == 0:
                raise NotFound(f"model {name!r} has no version {version}")

        self.db.write(run)
        return self.get_model_version(tenant, name, number)

    def set_model_version_tags(self, tenant: str, name: str, version: int, tags: Mapping[str, str]) -> None:
        number = _version_number(version)

        def run(cur: Any) -> None:
            mid = self._lock_model(cur, tenant, name)
            self._check_version(cur, mid, name, number)
            if tags:
                cur.executemany(self._q("INSERT INTO model_version_tags (model_id, version, key, value) "
                                        "VALUES (?, ?, ?, ?) ON CONFLICT (model_id, version, key) "
                                        "DO UPDATE SET value = excluded.value"),
                                [(mid, number, k, v) for k, v in tags.items()])

        self.db.write(run)

    def delete_model_version_tag(self, tenant: str, name: str, version: int, key: str) -> None:
        number = _version_number(version)

        def run(cur: Any) -> None:
            mid = self._lock_model(cur, tenant, name)
            self._check_version(cur, mid, name, number)
            cur.execute(self._q("DELETE FROM model_version_tags WHERE model_id = ? AND version = ? AND key = ?"),
                        (mid, number, key))
            if cur.rowcount == 0:
                raise NotFound(f"version {number} of model {name!r} has no tag {key!r}")

        self.db.write(run)

    def delete_model_version(self, tenant: str, name: str, version: int) -> None:
        number = _version_number(version)

        def run(cur: Any) -> None:
            mid = self._lock_model(cur, tenant, name)
            self._check_version(cur, mid, name, number)
            self.scoped(cur, tenant).delete("model_approvals", "model_id = ? AND version = ?", (mid, number))
            for table in ("model_aliases", "model_version_tags", "model_versions"):
                cur.execute(self._q(f"DELETE FROM {table} WHERE model_id = ? AND version = ?"), (mid, number))

        self.db.write(run)

    # ---- aliases ----------------------------------------------------------------------------------
    def set_alias(self, tenant: str, name: str, alias: str, version: int) -> None:
        number = _version_number(version)

        def run(cur: Any) -> None:
            mid = self._lock_model(cur, tenant, name)
            self._check_version(cur, mid, name, number)
            cur.execute(self._q("INSERT INTO model_aliases (model_id, alias, version) VALUES (?, ?, ?) "
                                "ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version"),
                        (mid, alias, number))

        self.db.write(run)

    def delete_alias(self, tenant: str, name: str, alias: str) -> None:
        def run(cur: Any) -> None:
            mid = self._lock_model(cur, tenant, name)
            cur.execute(self._q("DELETE FROM model_aliases WHERE model_id = ? AND alias = ?"), (mid, alias))
            if cur.rowcount == 0:
                raise NotFound(f"model {name!r} has no alias {alias!r}")

        self.db.write(run)

    # ---- approvals, transitions, audit ------------------------------------------------------------
    def create_approval(self, tenant: str, name: str, version: int, *, approval_id: str, requested_by: str,
                        requested_at: int, to_stage: str = "Production", reason: str = "",
                        audit: Sequence[AuditEntry] = ()) -> Approval:
        number = _version_number(version)

        def run(cur: Any) -> None:
            mid = self._lock_model(cur, tenant, name)
            self._check_version(cur, mid, name, number)
            mine = self.scoped(cur, tenant)
            row = mine.first("model_approvals", "approval_id",
                             "model_id = ? AND version = ? AND to_stage = ? AND status = 'pending'",
                             (mid, number, to_stage))
            if row:
                raise Conflict(f"version {number} of model {name!r} already has a pending {to_stage} approval "
                               f"({row[0]}); approve or reject it first", detail={"approval_id": row[0]})
            mine.insert("model_approvals", {
                "approval_id": approval_id, "model_id": mid, "version": number, "to_stage": to_stage,
                "status": "pending", "requested_by": requested_by, "requested_at": requested_at, "reason": reason,
                "comment": ""})
            self._insert_audit(cur, tenant, audit)

        self.db.write(run)
        return self.get_approval(tenant, approval_id)

    def get_approval(self, tenant: str, approval_id: str) -> Approval:
        with self.db.read() as cur:
            row = self.scoped(cur, tenant).first("model_approvals", _APPROVAL_COLUMNS, "a.approval_id = ?",
                                                 (approval_id,), alias="a", joins=_APPROVAL_MODEL)
        if not row:
            raise NotFound(f"approval {approval_id!r} does not exist")
        return self._approval(row)

    def search_approvals(self, tenant: str, *, name: str | None = None, status: str | None = None,
                         max_results: int = 1000, page_token: str | None = None) -> Page[Approval]:
        paging = Paging(page_token, max_results)
        where: list[str] = []
        params: list[Any] = []
        if name is not None:
            where.append("m.name = ?")
            params.append(name)
        if status is not None:
            where.append("a.status = ?")
            params.append(status)
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("model_approvals", _APPROVAL_COLUMNS, " AND ".join(where), params,
                                                   alias="a", joins=_APPROVAL_MODEL,
                                                   order="a.requested_at DESC, a.approval_id", paging=paging)
        return paging.page([self._approval(r) for r in rows])

    def record_transition(self, tenant: str, name: str, *, moves: Sequence[StageMove] = (),
                          audit: Sequence[AuditEntry] = (),
                          decision: ApprovalDecision | None = None) -> list[ModelVersion]:
        def run(cur: Any) -> int:
            now = _now()
            mid = self._lock_model(cur, tenant, name, now)
            if decision is not None:
                mine = self.scoped(cur, tenant)
                decided = mine.update("model_approvals", "status = ?, decided_by = ?, decided_at = ?, comment = ?",
                                      (decision.status, decision.decided_by, decision.decided_at, decision.comment),
                                      "approval_id = ? AND model_id = ? AND status = 'pending'",
                                      (decision.approval_id, mid))
                if decided == 0:
                    row = mine.first("model_approvals", "status", "approval_id = ? AND model_id = ?",
                                     (decision.approval_id, mid))
                    if not row:
                        raise NotFound(f"approval {decision.approval_id!r} does not exist")
                    raise Conflict(f"approval {decision.approval_id} is already {row[0]}")
            for move in moves:
                cur.execute(self._q("UPDATE model_versions SET stage = ?, last_update_time = ? "
                                    "WHERE model_id = ? AND version = ? AND stage = ?"),
                            (move.to_stage, now, mid, move.version, move.from_stage))
                if cur.rowcount == 0:
                    cur.execute(self._q("SELECT stage FROM model_versions WHERE model_id = ? AND version = ?"),
                                (mid, move.version))
                    row = cur.fetchone()
                    if not row:
                        raise NotFound(f"model {name!r} has no version {move.version}")
                    raise Conflict(f"version {move.version} of model {name!r} is in {row[0]}, not "
                                   f"{move.from_stage}, any more (changed meanwhile); look again and retry")
            self._insert_audit(cur, tenant, audit)
            return mid

        mid = self.db.write(run)
        if not moves:
            return []
        with self.db.read() as cur:
            numbers = [m.version for m in moves]
            found = {v.version: v for v in self._versions(
                cur, tenant, f"v.model_id = ? AND v.version IN ({_marks(numbers)})", (mid, *numbers))}
        return [found[n] for n in numbers if n in found]

    def append_audit(self, tenant: str, entries: Sequence[AuditEntry]) -> None:
        if entries:
            self.db.write(lambda cur: self._insert_audit(cur, tenant, entries))

    def search_audit(self, tenant: str, *, name: str | None = None, max_results: int = 1000,
                     page_token: str | None = None) -> Page[AuditEntry]:
        paging = Paging(page_token, max_results)
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("model_audit", _AUDIT_COLUMNS,
                                                   "model_name = ?" if name is not None else "",
                                                   (name,) if name is not None else (), order="entry_id",
                                                   paging=paging)
        return paging.page([AuditEntry(entry_id=int(r[0]), tenant=r[1], name=r[2], version=None if r[3] is None else int(r[3]),
                            action=r[4], actor=r[5], timestamp=r[6], from_stage=r[7], to_stage=r[8], reason=r[9],
                            approval_id=r[10], detail=json.loads(r[11] or "{}")) for r in rows])
