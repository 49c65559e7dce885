"""The feature part of the metadata contract over SQL: definition versions, their audit, materializations, alerts.

A version's definitions are one JSON document (read and written whole); each change an apply made is
an audit row. Alert claims are rows with a primary key: the first ``INSERT`` wins, so an alert for a
(view, feature, window) goes out once however many processes check at the same time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from matih_lite.contracts.features import (
    DefinitionChange,
    DefinitionVersion,
    FeatureAuditEntry,
    Materialization,
)
from matih_lite.errors import Conflict, InvalidInput, NotFound
from matih_lite.sqlstore.scope import OWNED, Paging, ScopedStore

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (200, "features", [
        """CREATE TABLE feature_definitions (
            tenant {text} NOT NULL,
            version {bigint} NOT NULL,
            digest {text} NOT NULL,
            document {text} NOT NULL,
            actor {text} NOT NULL DEFAULT '',
            created_at {bigint} NOT NULL,
            PRIMARY KEY (tenant, version))""",
        """CREATE TABLE feature_audit (
            entry_id {serial},
            tenant {text} NOT NULL,
            version {bigint} NOT NULL,
            action {text} NOT NULL,
            kind {text} NOT NULL,
            name {text} NOT NULL,
            diff {text} NOT NULL DEFAULT '{{}}',
            actor {text} NOT NULL DEFAULT '',
            created_at {bigint} NOT NULL)""",
        "CREATE INDEX feature_audit_by_name ON feature_audit (tenant, name, entry_id)",
        """CREATE TABLE feature_materializations (
            entry_id {serial},
            tenant {text} NOT NULL,
            view_name {text} NOT NULL,
            start_us {bigint} NOT NULL,
            end_us {bigint} NOT NULL,
            row_count {bigint} NOT NULL,
            created_at {bigint} NOT NULL)""",
        "CREATE INDEX feature_materializations_by_view ON feature_materializations (tenant, view_name, end_us)",
        """CREATE TABLE feature_alerts (
            tenant {text} NOT NULL,
            view_name {text} NOT NULL,
            feature {text} NOT NULL,
            window_label {text} NOT NULL,
            bucket {bigint} NOT NULL,
            created_at {bigint} NOT NULL,
            PRIMARY KEY (tenant, view_name, feature, window_label, bucket))""",
    ]),
]
"""Schema for features: versions 200 to 299."""

TABLES = {"feature_definitions": OWNED, "feature_audit": OWNED, "feature_materializations": OWNED,
          "feature_alerts": OWNED}

_VERSION_COLUMNS = "tenant, version, digest, document, actor, created_at"
_AUDIT_COLUMNS = "entry_id, tenant, version, actor, created_at, action, kind, name, diff"
_MATERIALIZATION_COLUMNS = "tenant, view_name, start_us, end_us, row_count, created_at"


def _version(row: Sequence[Any], with_document: bool = True) -> DefinitionVersion:
    return DefinitionVersion(row[0], int(row[1]), row[2], json.loads(row[3]) if with_document else {}, row[4],
                             int(row[5]))


def _audit(row: Sequence[Any]) -> FeatureAuditEntry:
    change = DefinitionChange(row[5], row[6], row[7], json.loads(row[8] or "{}"))
    return FeatureAuditEntry(int(row[0]), row[1], int(row[2]), row[3], int(row[4]), change)


def _materialization(row: Sequence[Any]) -> Materialization:
    return Materialization(row[0], row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5]))


class SqlFeatureDefinitionStore(ScopedStore):
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db``."""

    db: Any

    def put_feature_definitions(self, tenant: str, document: dict[str, Any], *, digest: str, actor: str, at: int,
                                changes: Sequence[DefinitionChange],
                                expected_version: int | None = None) -> DefinitionVersion:
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))

        def run(cur: Any) -> DefinitionVersion:
            scope = self.scoped(cur, tenant)
            row = scope.first("feature_definitions", "max(version)")
            latest = int(row[0]) if row and row[0] is not None else 0
            if expected_version is not None and expected_version != latest:
                raise Conflict(f"the feature definitions changed since version {expected_version} was read (now "
                               f"version {latest}); run 'matih-lite features plan' again")
            version = latest + 1
            scope.insert("feature_definitions", {"version": version, "digest": digest, "document": text,
                                                 "actor": actor, "created_at": at})
            scope.insert_many("feature_audit", ("version", "action", "kind", "name", "diff", "actor", "created_at"),
                              [(version, c.action, c.kind, c.name, json.dumps(c.diff, sort_keys=True, default=str),
                                actor, at) for c in changes])
            return DefinitionVersion(tenant, version, digest, json.loads(text), actor, at)

        return self.db.write(run)

    def get_feature_definitions(self, tenant: str, version: int | None = None) -> DefinitionVersion:
        with self.db.read() as cur:
            scope = self.scoped(cur, tenant)
            if version is None:
                rows = scope.select("feature_definitions", _VERSION_COLUMNS, order="version DESC",
                                    paging=Paging(None, 1))
            else:
                rows = scope.select("feature_definitions", _VERSION_COLUMNS, "version = ?", (int(version),))
        if not rows:
            what = ("no feature definitions are applied" if version is None
                    else f"no feature definitions version {version}")
            raise NotFound(f"{what}; run 'matih-lite features apply' in the folder holding the features repo")
        return _version(rows[0])

    def latest_feature_definition_version(self, tenant: str) -> int:
        with self.db.read() as cur:
            row = self.scoped(cur, tenant).first("feature_definitions", "max(version)")
        return int(row[0]) if row and row[0] is not None else 0

    def list_feature_definition_versions(self, tenant: str) -> list[DefinitionVersion]:
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("feature_definitions", "tenant, version, digest, '', actor, "
                                                   "created_at", order="version DESC")
        return [_version(r, with_document=False) for r in rows]

    def feature_audit(self, tenant: str, *, name: str | None = None,
                      max_results: int = 1000) -> list[FeatureAuditEntry]:
        paging = Paging(None, max_results)
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("feature_audit", _AUDIT_COLUMNS, "name = ?" if name else "",
                                                   (name,) if name else (), order="entry_id DESC", paging=paging)
        return [_audit(r) for r in paging.page(rows).items]

    def record_materialization(self, tenant: str, view: str, *, start: int, end: int, rows: int,
                               at: int) -> Materialization:
        if end < start:
            raise InvalidInput(f"a materialization ends ({end}) before it starts ({start})")

        def run(cur: Any) -> None:
            self.scoped(cur, tenant).insert("feature_materializations", {
                "view_name": view, "start_us": int(start), "end_us": int(end), "row_count": int(rows),
                "created_at": int(at)})

        self.db.write(run)
        return Materialization(tenant, view, int(start), int(end), int(rows), int(at))

    def materializations(self, tenant: str, view: str | None = None, *,
                         max_results: int = 100) -> list[Materialization]:
        paging = Paging(None, max_results)
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("feature_materializations", _MATERIALIZATION_COLUMNS,
                                                   "view_name = ?" if view else "", (view,) if view else (),
                                                   order="end_us DESC, created_at DESC, entry_id DESC", paging=paging)
        return [_materialization(r) for r in paging.page(rows).items]

    def claim_feature_alert(self, tenant: str, view: str, feature: str, window: str, bucket: int, at: int) -> bool:
        def run(cur: Any) -> bool:
            self.scoped(cur, tenant).insert(
                "feature_alerts", {"view_name": view, "feature": feature, "window_label": window,
                                   "bucket": int(bucket), "created_at": int(at)},
                on_conflict="(tenant, view_name, feature, window_label, bucket) DO NOTHING")
            return cur.rowcount == 1

        return bool(self.db.write(run))
