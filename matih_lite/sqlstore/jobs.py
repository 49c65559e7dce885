"""The jobs part of the metadata contract over SQL: one row per job.

The spec and the result are JSON documents in the row (read and written whole); the demand
is three columns so a quota check sums them in SQL. :meth:`SqlJobStore.claim_job` runs in one
write transaction (``BEGIN IMMEDIATE`` on SQLite, a per-tenant advisory lock on PostgreSQL),
so two processes never both start jobs that together exceed a tenant's quota.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from matih_lite.contracts.jobs import (
    HOLDING_JOB_STATUSES,
    JOB_STATUSES,
    Claim,
    Job,
    Limits,
    Resources,
    Usage,
)
from matih_lite.contracts.records import Page
from matih_lite.errors import Conflict, InvalidInput, NotFound
from matih_lite.sqlstore.scope import EVERY_TENANT, OWNED, Paging, ScopedStore

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (6, "jobs", [
        """CREATE TABLE jobs (
            job_id {text} PRIMARY KEY,
            tenant {text} NOT NULL,
            name {text} NOT NULL,
            kind {text} NOT NULL,
            status {text} NOT NULL,
            spec {text} NOT NULL DEFAULT '{{}}',
            cpus {double} NOT NULL DEFAULT 0,
            gpus {double} NOT NULL DEFAULT 0,
            memory {bigint} NOT NULL DEFAULT 0,
            created_by {text} NOT NULL DEFAULT '',
            created_at {bigint} NOT NULL,
            started_at {bigint},
            ended_at {bigint},
            heartbeat_at {bigint} NOT NULL DEFAULT 0,
            owner {text} NOT NULL DEFAULT '',
            run_id {text},
            message {text} NOT NULL DEFAULT '',
            register {text},
            result {text} NOT NULL DEFAULT '{{}}',
            cancel_requested {bigint} NOT NULL DEFAULT 0)""",
        "CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at)",
        "CREATE INDEX jobs_by_status ON jobs (status, tenant, created_at)",
    ]),
]
"""Schema for jobs: version 6 (and 601, 602... for later changes)."""

TABLES = {"jobs": OWNED}

_COLUMNS = ("job_id, tenant, name, kind, status, spec, cpus, gpus, memory, created_by, created_at, started_at, "
            "ended_at, heartbeat_at, owner, run_id, message, register, result, cancel_requested")
_NAMES = tuple(c.strip() for c in _COLUMNS.split(","))
_VALUE_COLUMNS = (_NAMES[0], *_NAMES[2:])  # all but the tenant, which the scope adds
_UPDATABLE = {"name", "status", "demand", "created_by", "started_at", "ended_at", "heartbeat_at", "owner", "run_id",
              "message", "register", "result", "cancel_requested"}


def _job(row: Sequence[Any]) -> Job:
    return Job(tenant=row[1], job_id=row[0], name=row[2], kind=row[3], status=row[4], spec=json.loads(row[5] or "{}"),
               demand=Resources(float(row[6]), float(row[7]), int(row[8])), created_by=row[9],
               created_at=int(row[10]), started_at=None if row[11] is None else int(row[11]),
               ended_at=None if row[12] is None else int(row[12]), heartbeat_at=int(row[13]), owner=row[14],
               run_id=row[15], message=row[16], register=row[17], result=json.loads(row[18] or "{}"),
               cancel_requested=bool(row[19]))


def _row(j: Job) -> tuple:
    return (j.job_id, j.tenant, j.name, j.kind, j.status, json.dumps(j.spec, sort_keys=True), float(j.demand.cpus),
            float(j.demand.gpus), int(j.demand.memory), j.created_by, int(j.created_at), j.started_at, j.ended_at,
            int(j.heartbeat_at), j.owner, j.run_id, j.message, j.register, json.dumps(j.result, sort_keys=True),
            1 if j.cancel_requested else 0)


def _fits(used: float, need: float, limit: float | None) -> bool:
    return limit is None or used + need <= limit + 1e-9


class SqlJobStore(ScopedStore):
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; uses ``self.db`` and ``self._q``."""

    db: Any
    _q: Any

    def create_job(self, job: Job) -> Job:
        if job.status not in JOB_STATUSES:
            raise InvalidInput(f"job status must be one of {', '.join(JOB_STATUSES)}, not {job.status!r}")

        def run(cur: Any) -> None:
            # Job ids are unique across tenants (a compute backend knows a job by its id alone).
            if self.scoped(cur, EVERY_TENANT).exists("jobs", "job_id = ?", (job.job_id,)):
                raise Conflict(f"job {job.job_id!r} already exists")
            row = _row(job)
            self.scoped(cur, job.tenant).insert_many("jobs", _VALUE_COLUMNS, [(row[0], *row[2:])])

        self.db.write(run)
        return job

    def _get(self, cur: Any, tenant: str, job_id: str) -> Job:
        row = self.scoped(cur, tenant).first("jobs", _COLUMNS, "job_id = ?", (job_id,))
        if row is None:
            raise NotFound(f"job {job_id!r} does not exist; see 'matih-lite jobs list'")
        return _job(row)

    def get_job(self, tenant: str, job_id: str) -> Job:
        with self.db.read() as cur:
            return self._get(cur, tenant, job_id)

    def list_jobs(self, tenant: str | None, *, statuses: Sequence[str] | None = None, max_results: int = 1000,
                  page_token: str | None = None) -> Page[Job]:
        paging = Paging(page_token, max_results)
        where = f"status IN ({', '.join('?' for _ in statuses)})" if statuses else ""
        with self.db.read() as cur:
            # tenant None: every tenant's, for the supervisors that look after all of them.
            rows = self.scoped(cur, EVERY_TENANT if tenant is None else tenant).select(
                "jobs", _COLUMNS, where, tuple(statuses or ()), order="created_at DESC, job_id DESC", paging=paging)
        return paging.page([_job(r) for r in rows])

    def update_job(self, tenant: str, job_id: str, *, expect: Sequence[str] | None = None, **changes: Any) -> Job:
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise InvalidInput(f"cannot update job field(s) {', '.join(sorted(unknown))}")
        if "status" in changes and changes["status"] not in JOB_STATUSES:
            raise InvalidInput(f"job status must be one of {', '.join(JOB_STATUSES)}, not {changes['status']!r}")

        def run(cur: Any) -> Job:
            job = self._get(cur, tenant, job_id)
            if expect is not None and job.status not in expect:
                raise Conflict(f"job {job_id!r} is {job.status}, not {' or '.join(expect)}")
            for key, value in changes.items():
                setattr(job, key, value)
            row = _row(job)
            sets = ", ".join(f"{n} = ?" for n in _NAMES[2:])
            self.scoped(cur, tenant).update("jobs", sets, row[2:], "job_id = ?", (job_id,))
            return job

        return self.db.write(run)

    def claim_job(self, tenant: str, job_id: str, limits: Limits, *, live_after: int, owner: str,
                  now: int) -> Claim:
        q = self._q

        def run(cur: Any) -> Claim:
            if self.db.dialect.name == "postgres":
                # Writers of one tenant's jobs queue here; SQLite's BEGIN IMMEDIATE already serializes them.
                cur.execute(q("SELECT pg_advisory_xact_lock(hashtext(?))"), (f"matih_lite.jobs:{tenant}",))
            job = self._get(cur, tenant, job_id)
            if job.status != "QUEUED":
                raise Conflict(f"job {job_id!r} is {job.status}, not QUEUED")
            mine = self.scoped(cur, tenant)
            holding = ", ".join(f"'{s}'" for s in HOLDING_JOB_STATUSES)
            cpus, gpus, count = mine.first("jobs", "COALESCE(SUM(cpus), 0), COALESCE(SUM(gpus), 0), COUNT(*)",
                                           f"status IN ({holding}) AND heartbeat_at >= ?", (live_after,))
            ahead = int(mine.first("jobs", "COUNT(*)", "status = 'QUEUED' AND heartbeat_at >= ? "
                                   "AND (created_at < ? OR (created_at = ? AND job_id < ?))",
                                   (live_after, job.created_at, job.created_at, job.job_id))[0])
            usage = Usage(float(cpus), float(gpus), int(count), ahead)
            fits = (ahead == 0 and _fits(usage.cpus, job.demand.cpus, limits.cpus)
                    and _fits(usage.gpus, job.demand.gpus, limits.gpus)
                    and (limits.jobs is None or usage.jobs + 1 <= limits.jobs))
            if not fits:
                return Claim(False, usage)
            mine.update("jobs", "status = 'STARTING', owner = ?, heartbeat_at = ?, message = ''", (owner, now),
                        "job_id = ?", (job_id,))
            job.status, job.owner, job.heartbeat_at, job.message = "STARTING", owner, now, ""
            return Claim(True, usage, job)

        return self.db.write(run)
