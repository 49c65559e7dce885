"""Logged models and run inputs/outputs over SQL (the :class:`~matih_lite.contracts.logged_models.LoggedModelStore`).

Each change is one write transaction that first stamps the model's row (``_touch``): that finds
the model, sets ``last_update_time`` and, on PostgreSQL, holds the row lock until commit, so
writers of one model queue instead of both reading and then overwriting (SQLite's
``BEGIN IMMEDIATE`` serializes all writers anyway). Tags upsert, params are checked then
inserted under that lock, and metric points and run inputs/outputs are inserted with
``ON CONFLICT DO NOTHING`` on their identity, so a point sent twice is kept once.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from matih_lite.contracts.logged_models import (
    Dataset,
    DatasetInput,
    LoggedModel,
    LoggedModelMetric,
    ModelOutput,
    RunIO,
)
from matih_lite.contracts.records import Page
from matih_lite.errors import Conflict, InvalidInput, NotFound
from matih_lite.sqlstore.scope import EVERY_TENANT, OWNED, Child, Paging, ScopedStore
from matih_lite.sqlstore.tracking import _chunks, _id, _marks

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (300, "logged models", [
        """CREATE TABLE logged_models (
            model_id {text} PRIMARY KEY,
            tenant {text} NOT NULL,
            experiment_id {bigint} NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
            name {text} NOT NULL,
            artifact_uri {text} NOT NULL DEFAULT '',
            status {text} NOT NULL,
            status_message {text},
            model_type {text},
            source_run_id {text},
            creator {text} NOT NULL DEFAULT '',
            lifecycle_stage {text} NOT NULL DEFAULT 'active',
            creation_time {bigint} NOT NULL,
            last_update_time {bigint} NOT NULL)""",
        ("CREATE INDEX logged_models_by_experiment ON logged_models (tenant, experiment_id, lifecycle_stage, "
         "creation_time)"),
        "CREATE INDEX logged_models_by_run ON logged_models (tenant, source_run_id)",
        """CREATE TABLE logged_model_tags (
            model_id {text} NOT NULL REFERENCES logged_models (model_id) ON DELETE CASCADE,
            key {text} NOT NULL, value {text} NOT NULL,
            PRIMARY KEY (model_id, key))""",
        """CREATE TABLE logged_model_params (
            model_id {text} NOT NULL REFERENCES logged_models (model_id) ON DELETE CASCADE,
            key {text} NOT NULL, value {text} NOT NULL,
            PRIMARY KEY (model_id, key))""",
        # run_id '' for a point of no run: NULLs are all distinct to a unique index.
        """CREATE TABLE logged_model_metrics (
            point_id {serial},
            model_id {text} NOT NULL REFERENCES logged_models (model_id) ON DELETE CASCADE,
            key {text} NOT NULL,
            value {double} NOT NULL,
            is_nan {bigint} NOT NULL DEFAULT 0,
            timestamp {bigint} NOT NULL,
            step {bigint} NOT NULL DEFAULT 0,
            run_id {text} NOT NULL DEFAULT '',
            dataset_name {text},
            dataset_digest {text},
            UNIQUE (model_id, key, timestamp, step, run_id))""",
    ]),
    (301, "run inputs and outputs", [
        # context '' for a dataset input without an mlflow.data.context tag.
        """CREATE TABLE run_dataset_inputs (
            input_id {serial},
            run_id {text} NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            name {text} NOT NULL,
            digest {text} NOT NULL,
            context {text} NOT NULL DEFAULT '',
            source_type {text} NOT NULL,
            source {text} NOT NULL,
            dataset_schema {text},
            profile {text},
            tags {text} NOT NULL DEFAULT '{{}}',
            UNIQUE (run_id, name, digest, context))""",
        """CREATE TABLE run_model_inputs (
            input_id {serial},
            run_id {text} NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            model_id {text} NOT NULL,
            UNIQUE (run_id, model_id))""",
        """CREATE TABLE run_model_outputs (
            output_id {serial},
            run_id {text} NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            model_id {text} NOT NULL,
            step {bigint} NOT NULL DEFAULT 0,
            UNIQUE (run_id, model_id, step))""",
    ]),
]
"""Schema for logged models and run inputs/outputs: versions 300 and 301 (300-349 are this module's)."""

TABLES = {
    "logged_models": OWNED,
    "logged_model_tags": Child("logged_models"),
    "logged_model_params": Child("logged_models"),
    "logged_model_metrics": Child("logged_models"),
    "run_dataset_inputs": Child("runs"),
    "run_model_inputs": Child("runs"),
    "run_model_outputs": Child("runs"),
}

_COLUMNS = ("model_id, tenant, experiment_id, name, artifact_uri, status, status_message, model_type, source_run_id, "
            "creator, lifecycle_stage, creation_time, last_update_time")
_VALUE_COLUMNS = tuple(c.strip() for c in _COLUMNS.split(",") if c.strip() != "tenant")
_METRIC_INSERT = ("INSERT INTO logged_model_metrics (model_id, key, value, is_nan, timestamp, step, run_id, "
                  "dataset_name, dataset_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                  "ON CONFLICT (model_id, key, timestamp, step, run_id) DO NOTHING")
_LIFECYCLES = ("active", "deleted", "all")


def _now() -> int:
    return int(time.time() * 1000)


def _metric_row(model_id: str, m: LoggedModelMetric) -> tuple:
    nan = m.value != m.value
    return (model_id, m.key, 0.0 if nan else float(m.value), 1 if nan else 0, int(m.timestamp), int(m.step),
            m.run_id or "", m.dataset_name, m.dataset_digest)


def _model(row: Sequence[Any]) -> LoggedModel:
    return LoggedModel(model_id=row[0], tenant=row[1], experiment_id=str(row[2]), name=row[3], artifact_uri=row[4],
                       status=row[5], status_message=row[6], model_type=row[7], source_run_id=row[8], creator=row[9],
                       lifecycle_stage=row[10], creation_time=int(row[11]), last_update_time=int(row[12]))


class SqlLoggedModelStore(ScopedStore):
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db`` and ``self._q``."""

    _q: Any

    # ---- helpers ------------------------------------------------------------------------------------
    def _touch(self, cur: Any, tenant: str, model_id: str) -> None:
        """Stamp an active model's row (locking it until commit on PostgreSQL); NotFound if there is none."""
        found = self.scoped(cur, tenant).update("logged_models", "last_update_time = ?", (_now(),),
                                                "model_id = ? AND lifecycle_stage = 'active'", (model_id,),
                                                returning="model_id")
        if not found:
            raise NotFound(f"logged model {model_id!r} does not exist")

    def _with_details(self, cur: Any, models: list[LoggedModel]) -> list[LoggedModel]:
        by_id = {m.model_id: m for m in models}
        for chunk in _chunks(list(by_id)) if by_id else []:
            marks = _marks(chunk)
            cur.execute(self._q(f"SELECT model_id, key, value FROM logged_model_tags WHERE model_id IN ({marks})"),
                        tuple(chunk))
            for mid, key, value in cur.fetchall():
                by_id[mid].tags[key] = value
            cur.execute(self._q(f"SELECT model_id, key, value FROM logged_model_params WHERE model_id IN ({marks})"),
                        tuple(chunk))
            for mid, key, value in cur.fetchall():
                by_id[mid].params[key] = value
            cur.execute(self._q(f"SELECT model_id, key, value, is_nan, timestamp, step, run_id, dataset_name, "
                                f"dataset_digest FROM logged_model_metrics WHERE model_id IN ({marks}) "
                                "ORDER BY point_id"), tuple(chunk))
            for mid, key, value, is_nan, ts, step, run_id, dname, ddigest in cur.fetchall():
                by_id[mid].metrics.append(LoggedModelMetric(
                    key, math.nan if is_nan else float(value), int(ts), int(step), run_id or None, dname, ddigest))
        return models

    # ---- logged models --------------------------------------------------------------------------------
    def create_logged_model(self, model: LoggedModel) -> LoggedModel:
        eid = _id(model.experiment_id)
        now = _now()
        created = model.creation_time or now
        updated = model.last_update_time or created

        def run(cur: Any) -> None:
            mine = self.scoped(cur, model.tenant)
            if not mine.exists("experiments", "experiment_id = ?", (eid,)):
                raise NotFound(f"experiment {model.experiment_id!r} does not exist")
            # Model ids are unique across tenants (the primary key): say so instead of a driver error.
            if self.scoped(cur, EVERY_TENANT).exists("logged_models", "model_id = ?", (model.model_id,)):
                raise Conflict(f"logged model {model.model_id!r} already exists")
            mine.insert_many("logged_models", _VALUE_COLUMNS, [(
                model.model_id, eid, model.name, model.artifact_uri, model.status, model.status_message,
                model.model_type, model.source_run_id, model.creator, model.lifecycle_stage, created, updated)])
            q = self._q
            if model.tags:
                cur.executemany(q("INSERT INTO logged_model_tags (model_id, key, value) VALUES (?, ?, ?)"),
                                [(model.model_id, k, v) for k, v in model.tags.items()])
            if model.params:
                cur.executemany(q("INSERT INTO logged_model_params (model_id, key, value) VALUES (?, ?, ?)"),
                                [(model.model_id, k, v) for k, v in model.params.items()])
            if model.metrics:
                cur.executemany(q(_METRIC_INSERT), [_metric_row(model.model_id, m) for m in model.metrics])

        self.db.write(run)
        return self.get_logged_model(model.tenant, model.model_id, allow_deleted=True)

    def get_logged_model(self, tenant: str, model_id: str, *, allow_deleted: bool = False) -> LoggedModel:
        where = "model_id = ?" if allow_deleted else "model_id = ? AND lifecycle_stage = 'active'"
        with self.db.read() as cur:
            row = self.scoped(cur, tenant).first("logged_models", _COLUMNS, where, (model_id,))
            if row is None:
                raise NotFound(f"logged model {model_id!r} does not exist")
            return self._with_details(cur, [_model(row)])[0]

    def search_logged_models(self, tenant: str, experiment_ids: Sequence[str], *, source_run_id: str | None = None,
                             name: str | None = None, lifecycle: str = "active", max_results: int = 1000,
                             page_token: str | None = None) -> Page[LoggedModel]:
        if lifecycle not in _LIFECYCLES:
            raise InvalidInput(f"lifecycle must be active, deleted or all, not {lifecycle!r}")
        paging: Paging[LoggedModel] = Paging(page_token, max_results)
        ids = []
        for e in experiment_ids:
            try:
                ids.append(_id(e))
            except NotFound:
                continue  # an id that cannot exist has no models
        if not ids:
            return Page([], None)
        where: list[str] = [f"experiment_id IN ({_marks(ids)})"]
        params: list[Any] = list(ids)
        for column, value in (("source_run_id", source_run_id), ("name", name),
                              ("lifecycle_stage", None if lifecycle == "all" else lifecycle)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        with self.db.read() as cur:
            rows = self.scoped(cur, tenant).select("logged_models", _COLUMNS, " AND ".join(where), params,
                                                   order="creation_time DESC, model_id", paging=paging)
            page = paging.page([_model(r) for r in rows])
            return Page(self._with_details(cur, page.items), page.next_token)

    def update_logged_model(self, tenant: str, model_id: str, *, status: str | None = None,
                            status_message: str | None = None, lifecycle_stage: str | None = None) -> LoggedModel:
        sets: list[str] = ["last_update_time = ?"]
        params: list[Any] = [_now()]
        for column, value in (("status", status), ("status_message", status_message),
                              ("lifecycle_stage", lifecycle_stage)):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)

        def run(cur: Any) -> None:
            if self.scoped(cur, tenant).update("logged_models", ", ".join(sets), params,
                                               "model_id = ? AND lifecycle_stage = 'active'", (model_id,)) == 0:
                raise NotFound(f"logged model {model_id!r} does not exist")

        self.db.write(run)
        return self.get_logged_model(tenant, model_id, allow_deleted=True)

    def set_logged_model_tags(self, tenant: str, model_id: str, tags: Mapping[str, str]) -> None:
        def run(cur: Any) -> None:
            self._touch(cur, tenant, model_id)
            if tags:
                cur.executemany(self._q("INSERT INTO logged_model_tags (model_id, key, value) VALUES (?, ?, ?) "
                                        "ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value"),
                                [(model_id, k, v) for k, v in sorted(tags.items())])

        self.db.write(run)

    def delete_logged_model_tag(self, tenant: str, model_id: str, key: str) -> None:
        def run(cur: Any) -> None:
            self._touch(cur, tenant, model_id)
            cur.execute(self._q("DELETE FROM logged_model_tags WHERE model_id = ? AND key = ?"), (model_id, key))
            if cur.rowcount == 0:
                raise NotFound(f"logged model {model_id!r} has no tag {key!r}")

        self.db.write(run)

    def log_logged_model_params(self, tenant: str, model_id: str, params: Mapping[str, str]) -> None:
        def run(cur: Any) -> None:
            self._touch(cur, tenant, model_id)
            if not params:
                return
            keys = sorted(params)
            have: dict[str, str] = {}
            for chunk in _chunks(keys):
                cur.execute(self._q(f"SELECT key, value FROM logged_model_params WHERE model_id = ? "
                                    f"AND key IN ({_marks(chunk)})"), (model_id, *chunk))
                have.update(dict(cur.fetchall()))
            for k in keys:
                if k in have and have[k] != params[k]:
                    raise Conflict(f"param {k!r} of logged model {model_id} is already {have[k]!r}; params are "
                                   f"write-once and cannot change to {params[k]!r}")
            fresh = [(model_id, k, params[k]) for k in keys if k not in have]
            if fresh:
                cur.executemany(self._q("INSERT INTO logged_model_params (model_id, key, value) VALUES (?, ?, ?)"),
                                fresh)

        self.db.write(run)

    def log_logged_model_metrics(self, tenant: str, model_id: str, metrics: Sequence[LoggedModelMetric]) -> None:
        def run(cur: Any) -> None:
            self._touch(cur, tenant, model_id)
            if metrics:
                cur.executemany(self._q(_METRIC_INSERT), [_metric_row(model_id, m) for m in metrics])

        self.db.write(run)

    # ---- run inputs and outputs ----------------------------------------------------------------------
    def log_run_io(self, tenant: str, run_id: str, *, datasets: Sequence[DatasetInput] = (),
                   model_inputs: Sequence[str] = (), model_outputs: Sequence[ModelOutput] = ()) -> None:
        q = self._q

        def run(cur: Any) -> None:
            if not self.scoped(cur, tenant).exists("runs", "run_id = ?", (run_id,)):
                raise NotFound(f"run {run_id!r} does not exist")
            if datasets:
                cur.executemany(q(
                    "INSERT INTO run_dataset_inputs (run_id, name, digest, context, source_type, source, "
                    "dataset_schema, profile, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (run_id, name, digest, context) DO NOTHING"),
                    [(run_id, d.dataset.name, d.dataset.digest, d.context, d.dataset.source_type, d.dataset.source,
                      d.dataset.schema, d.dataset.profile, json.dumps(d.tags)) for d in datasets])
            if model_inputs:
                cur.executemany(q("INSERT INTO run_model_inputs (run_id, model_id) VALUES (?, ?) "
                                  "ON CONFLICT (run_id, model_id) DO NOTHING"),
                                [(run_id, m) for m in model_inputs])
            if model_outputs:
                cur.executemany(q("INSERT INTO run_model_outputs (run_id, model_id, step) VALUES (?, ?, ?) "
                                  "ON CONFLICT (run_id, model_id, step) DO NOTHING"),
                                [(run_id, o.model_id, int(o.step)) for o in model_outputs])

        self.db.write(run)

    def get_run_io(self, tenant: str, run_id: str) -> RunIO:
        q = self._q
        with self.db.read() as cur:
            if not self.scoped(cur, tenant).exists("runs", "run_id = ?", (run_id,)):
                raise NotFound(f"run {run_id!r} does not exist")
            cur.execute(q("SELECT name, digest, source_type, source, dataset_schema, profile, tags "
                          "FROM run_dataset_inputs WHERE run_id = ? ORDER BY input_id"), (run_id,))
            datasets = [DatasetInput(Dataset(r[0], r[1], r[2], r[3], r[4], r[5]), json.loads(r[6] or "{}"))
                        for r in cur.fetchall()]
            cur.execute(q("SELECT model_id FROM run_model_inputs WHERE run_id = ? ORDER BY input_id"), (run_id,))
            inputs = [r[0] for r in cur.fetchall()]
            cur.execute(q("SELECT model_id, step FROM run_model_outputs WHERE run_id = ? ORDER BY output_id"),
                        (run_id,))
            outputs = [ModelOutput(r[0], int(r[1])) for r in cur.fetchall()]
        return RunIO(datasets, inputs, outputs)
