"""Training and tuning jobs written once, whatever backend computes them: submit, queue, quotas, watch, notify.

A submitted job is checked (:func:`~matih_lite.training.spec.parse_spec`), sized, and stored
QUEUED. A job that could never run (it needs more than its tenant's quota or the compute
backend's capacity) is refused at once, with what it needs and what there is.

Each process that submits jobs runs one :class:`JobSupervisor` thread (per host), which

* starts its queued jobs in order as soon as their tenant's quota has room (the store's
  :meth:`~matih_lite.contracts.jobs.JobStore.claim_job` decides that atomically, across
  processes), recording why a job still waits in its ``message`` (``jobs list`` shows it);
* creates the job's tracking run when it starts, and hands the compute backend the request;
* watches running jobs, passes on cancellations asked for from any process, and when a job
  ends: records it, ends its run, registers its best model (``register``), emits
  ``job.succeeded`` / ``job.failed`` / ``job.cancelled`` and calls the notifiers;
* keeps a heartbeat on its jobs, so that the jobs of a process that died stop holding quota
  and are marked FAILED by whoever looks next;
* keeps jobs queued, saying why, while the compute backend does not answer (a Ray head down),
  and starts them when it does again; fails a running job whose cluster has not answered for
  :data:`COMPUTE_LOST_AFTER_S` or no longer knows it (the cluster was replaced), with the reason.

A backend whose jobs run where this platform's stores are out of reach (a cluster:
:meth:`~matih_lite.contracts.slots.ComputeBackend.service_url` is set) gets the service's URL and,
when the service requires tokens, a token of the job's creator made for the job alone
(``job:<job_id>``), revoked when the job ends.

Quotas come from matih.toml::

    [quotas."*"]          # every tenant
    cpus = 8
    gpus = 1
    jobs = 4              # running at once
    [quotas.research]     # one tenant, over the defaults
    cpus = 16
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.alerts import send_alert
from matih_lite.contracts.clock import now_ms
from matih_lite.contracts.jobs import (
    ACTIVE_JOB_STATUSES,
    TERMINAL_JOB_STATUSES,
    Job,
    JobRequest,
    JobState,
    Limits,
    Resources,
    Usage,
)
from matih_lite.contracts.records import Page
from matih_lite.errors import ConfigError, Conflict, InvalidInput, MatihError, NotFound, StoreError
from matih_lite.events import PlatformEvent
from matih_lite.identity import Principal
from matih_lite.training.spec import JobSpec, parse_spec, trials_of

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.jobs")

HEARTBEAT_S = 2.0
STALE_AFTER_S = 30.0
"""A job whose supervisor has not been heard of for this long is taken as lost."""
COMPUTE_LOST_AFTER_S = 120.0
"""A running job whose compute backend has not answered for this long is failed (its cluster vanished)."""
HEALTH_EVERY_S = 2.0
"""How often a supervisor with queued jobs asks whether the compute backend can take them."""
JOB_TOKEN_DAYS = 7.0
"""A job-scoped token expires after this long even if the job is still running (and is revoked when it ends)."""
TICK_S = 0.25
MAX_RESULTS = 10_000
_FINAL_RUN_STATUS = {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "CANCELLED": "KILLED"}


# ---- quotas --------------------------------------------------------------------------------------
class _QuotaTable(msgspec.Struct, forbid_unknown_fields=True):
    cpus: float | None = None
    gpus: float | None = None
    jobs: int | None = None


ARTIFACT_KEYS = frozenset({"max_artifact_mb", "artifact_quota_gb"})
"""``[quotas]`` keys of artifact uploads (:mod:`matih_lite.tracking.quotas`), beside the jobs' ones."""


def quota_for(section: Mapping[str, Any], tenant: str) -> Limits:
    """A tenant's :class:`Limits` from ``[quotas]``: top-level keys, then ``"*"``, then the tenant's table.

    Raises ConfigError with the key path for an unknown key or a wrong type.
    """
    fields = set(_QuotaTable.__struct_fields__)
    layers = [("quotas", {k: v for k, v in section.items() if k in fields})]
    for name in ("*", tenant):
        table = section.get(name)
        if table is not None:
            layers.append((f'quotas."{name}"' if name == "*" else f"quotas.{name}", table))
    merged: dict[str, Any] = {}
    for key, table in layers:
        if not isinstance(table, Mapping):
            raise ConfigError(f"expected a table like {{ cpus = 4, gpus = 1, jobs = 2 }}, got {table!r}", key=key)
        table = {k: v for k, v in table.items() if k not in ARTIFACT_KEYS}  # the tracking domain's
        try:
            msgspec.convert(dict(table), _QuotaTable, strict=False)
        except msgspec.ValidationError as exc:
            text = str(exc)
            if " - at `$." in text:
                text, path = text.split(" - at `$.", 1)
                key = f"{key}.{path.rstrip('`')}"
            if text.startswith("Object contains unknown field `"):
                key, text = f"{key}.{text.split('`')[1]}", "unknown key"
            raise ConfigError(f"{text}; quota keys are cpus, gpus and jobs", key=key) from None
        merged.update(table)
    return Limits(**{k: merged.get(k) for k in fields})


def quota_problems(section: Any) -> list[tuple[str, str]]:
    """``(key path, reason)`` for every jobs' value of ``[quotas]`` that :func:`quota_for` would refuse (for
    ``config validate`` and ``up``), and every top-level key that is neither a quota nor a tenant's table."""
    if not isinstance(section, Mapping):
        return [("quotas", f"expected a table, got {section!r}")]
    known = set(_QuotaTable.__struct_fields__) | ARTIFACT_KEYS
    problems = [(f"quotas.{k}", f"unknown key; quota keys are {', '.join(sorted(known))}, or a tenant's table")
                for k, v in section.items() if not isinstance(v, Mapping) and k not in known]
    for tenant in dict.fromkeys(["", *(k for k, v in section.items() if isinstance(v, Mapping))]):
        try:
            quota_for(section, tenant or "*")
        except ConfigError as exc:
            found = (exc.key or "quotas", exc.reason)
            if found not in problems:
                problems.append(found)
    return problems


def job_demand(spec: JobSpec, limits: Limits, capacity: Resources | None) -> tuple[Resources, int]:
    """What a job holds while it runs, and its tuning concurrency (1 for training).

    A tuning job runs ``max_concurrent`` trials at once, by default as many as fit in the
    tenant's quota and the backend's capacity (at least one, at most its number of trials).
    """
    r = spec.resources
    per = Resources(r.cpus * r.num_workers, r.gpus * r.num_workers, r.memory * r.num_workers)
    concurrency = 1
    if spec.tune is not None:
        concurrency = spec.tune.max_concurrent or _fitting(per, limits, capacity, trials_of(spec))
        if spec.tune.synch:  # synchronous PBT holds its whole population at once
            concurrency = max(concurrency, trials_of(spec))
    return Resources(per.cpus * concurrency, per.gpus * concurrency, per.memory * concurrency), concurrency


def _fitting(per: Resources, limits: Limits, capacity: Resources | None, trials: int) -> int:
    room = trials
    for need, caps in ((per.cpus, (limits.cpus, capacity.cpus if capacity else None)),
                       (per.gpus, (limits.gpus, capacity.gpus if capacity else None))):
        if need <= 0:
            continue
        for cap in caps:
            if cap is not None:
                room = min(room, int(math.floor(cap / need + 1e-9)))
    return max(1, room)


def check_fits(demand: Resources, limits: Limits, capacity: Resources | None, tenant: str,
               backend: str) -> None:
    """Raises InvalidInput when a job could never start: over its tenant's quota or the backend's size."""
    if limits.jobs is not None and limits.jobs < 1:
        raise InvalidInput(f"tenant {tenant!r} may not run jobs: its quota allows {limits.jobs} at once "
                           "([quotas] jobs in matih.toml)")
    for what, need, limit, cap in (("CPUs", demand.cpus, limits.cpus, capacity.cpus if capacity else None),
                                   ("GPUs", demand.gpus, limits.gpus, capacity.gpus if capacity else None)):
        if limit is not None and need > limit + 1e-9:
            raise InvalidInput(f"this job needs {need:g} {what} but tenant {tenant!r} may use at most {limit:g} "
                               f"at once ([quotas] {what.lower()} in matih.toml), so it could never run; ask for "
                               "fewer (resources, tune.max_concurrent) or raise the quota")
        if cap is not None and need > cap + 1e-9:
            raise InvalidInput(f"this job needs {need:g} {what} but the {backend} compute backend has {cap:g}, "
                               "so it could never run; ask for fewer (resources, tune.max_concurrent) or use a "
                               "bigger cluster")


def waiting_reason(job: Job, usage: Usage, limits: Limits) -> str:
    """Why a queued job has not started, in the words ``jobs list`` shows."""
    if usage.ahead:
        return f"queued: {usage.ahead} earlier job(s) of tenant {job.tenant!r} wait first"
    parts = []
    if limits.jobs is not None and usage.jobs + 1 > limits.jobs:
        parts.append(f"{usage.jobs} of {limits.jobs} jobs running")
    if limits.cpus is not None and usage.cpus + job.demand.cpus > limits.cpus + 1e-9:
        parts.append(f"{usage.cpus:g} of {limits.cpus:g} CPUs in use, needs {job.demand.cpus:g}")
    if limits.gpus is not None and usage.gpus + job.demand.gpus > limits.gpus + 1e-9:
        parts.append(f"{usage.gpus:g} of {limits.gpus:g} GPUs in use, needs {job.demand.gpus:g}")
    return f"waiting for quota of tenant {job.tenant!r}: " + "; ".join(parts or ["capacity"])


# ---- the service -----------------------------------------------------------------------------------
class Jobs:
    """Submit, list, show, read logs of and cancel jobs for one platform (a :class:`~matih_lite.host.Host`)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @property
    def store(self) -> Any:
        return self.host.metadata

    @property
    def compute(self) -> Any:
        return self.host.backend("compute")

    @property
    def supervisor(self) -> JobSupervisor:
        return JobSupervisor.of(self.host)

    def limits(self, tenant: str) -> Limits:
        return quota_for(self.host.config.section("quotas") or {}, tenant)

    def submit(self, principal: Principal, spec: JobSpec | Mapping[str, Any], *, kind: str | None = None,
               register: str | None = None) -> Job:
        """Check, size and queue a job; it starts as soon as its tenant's quota allows.

        Raises InvalidInput for a bad spec or a job that could never fit.
        """
        checked, limits, demand = self._sized(principal, spec, kind, register)
        now = now_ms()
        supervisor = self.supervisor
        job = Job(tenant=principal.tenant, job_id=uuid.uuid4().hex, name=checked.display_name, kind=checked.kind,
                  spec=checked.to_dict(), demand=demand, created_by=principal.user,
                  created_at=now, heartbeat_at=now, owner=supervisor.owner, register=checked.register,
                  message="queued")
        self.store.create_job(job)
        self._emit(job, "job.queued", {"name": job.name, "kind": job.kind})
        supervisor.wake()
        return job

    def manifest(self, principal: Principal, spec: JobSpec | Mapping[str, Any], *, kind: str | None = None,
                 register: str | None = None) -> list[dict[str, Any]]:
        """What the compute backend would apply for this spec (``matih-lite jobs manifest``), applying nothing.

        The spec is checked and sized as :meth:`submit` does; the run id and the job's token do not
        exist yet and are shown as placeholders. Raises InvalidInput as :meth:`submit` does.
        """
        checked, limits, _ = self._sized(principal, spec, kind, register)
        compute = self.compute
        url = compute.service_url()
        target = ({"url": url, "token": "<a token of the job alone, made when it starts>"} if url
                  else JobSupervisor.of(self.host, start=False).embedded_target())
        request = JobRequest(job_id=uuid.uuid4().hex, tenant=principal.tenant, kind=checked.kind,
                             spec=checked.to_dict(), run_id="<the job's run, made when it starts>", tracking=target,
                             limits=limits)
        return compute.render(request)

    def _sized(self, principal: Principal, spec: JobSpec | Mapping[str, Any], kind: str | None,
               register: str | None) -> tuple[JobSpec, Limits, Resources]:
        """The checked spec (its tuning concurrency set), the tenant's limits and the job's demand.

        Raises InvalidInput for a bad spec or a job that could never fit.
        """
        checked = parse_spec(spec, kind=kind)
        if register:
            checked = parse_spec({**checked.to_dict(), "register": register}, kind=kind)
        limits = self.limits(principal.tenant)
        capacity = self.compute.capacity()
        demand, concurrency = job_demand(checked, limits, capacity)
        if checked.tune is not None:
            checked.tune.max_concurrent = concurrency
        backend = self.host.selection().get("compute", {}).get("backend", "compute")
        check_fits(demand, limits, capacity, principal.tenant, backend)
        return checked, limits, demand

    def get(self, principal: Principal, job_id: str) -> Job:
        """A job by id, or by a unique prefix of at least 4 characters (as ``jobs list`` shows them)."""
        try:
            return self._reaped(self.store.get_job(principal.tenant, job_id))
        except NotFound:
            if len(job_id) < 4 or len(job_id) >= 32:
                raise
        found = [j for j in self.store.list_jobs(principal.tenant, max_results=MAX_RESULTS).items
                 if j.job_id.startswith(job_id)]
        if not found:
            raise NotFound(f"no job has the id {job_id!r}, nor an id starting with it; see 'matih-lite jobs list'")
        if len(found) > 1:
            raise InvalidInput(f"job id prefix {job_id!r} is ambiguous; give more characters")
        return self._reaped(found[0])

    def list(self, principal: Principal, *, statuses: Sequence[str] | None = None, max_results: int = 100,
             page_token: str | None = None) -> Page[Job]:
        """The tenant's jobs, newest first; a queued job's ``message`` says why it waits."""
        if statuses:
            bad = [s for s in statuses if s not in ACTIVE_JOB_STATUSES + TERMINAL_JOB_STATUSES]
            if bad:
                raise InvalidInput(f"unknown job status {bad[0]!r}; statuses are "
                                   f"{', '.join(ACTIVE_JOB_STATUSES + TERMINAL_JOB_STATUSES)}")
        if not isinstance(max_results, int) or not 1 <= max_results <= MAX_RESULTS:
            raise InvalidInput(f"max_results must be between 1 and {MAX_RESULTS}, got {max_results!r}")
        page = self.store.list_jobs(principal.tenant, statuses=statuses, max_results=max_results,
                                    page_token=page_token)
        return Page([self._reaped(j) for j in page.items], page.next_token)

    def logs(self, principal: Principal, job_id: str, offset: int = 0) -> str:
        """The job's output from character ``offset`` on ("" before it starts)."""
        job = self.get(principal, job_id)
        if offset < 0:
            raise InvalidInput(f"offset must be 0 or more, got {offset}")
        try:
            return self.compute.logs(job.job_id, offset)
        except NotFound:
            return ""

    def cancel(self, principal: Principal, job_id: str) -> Job:
        """Cancel a job: a queued one at once, a running one through its supervisor; a finished one is left as is."""
        job = self.get(principal, job_id)
        if job.status in TERMINAL_JOB_STATUSES:
            return job
        if job.status == "QUEUED":
            try:
                job = self.store.update_job(job.tenant, job.job_id, status="CANCELLED", ended_at=now_ms(),
                                            message=f"cancelled by {principal.user} while queued",
                                            expect=["QUEUED"])
                self._announce(job)
                return job
            except Conflict:
                job = self.store.get_job(job.tenant, job.job_id)
                if job.status in TERMINAL_JOB_STATUSES:
                    return job
        job = self.store.update_job(job.tenant, job.job_id, cancel_requested=True,
                                    message=f"cancel requested by {principal.user}")
        JobSupervisor.wake_all(self.host)
        return job

    def wait(self, principal: Principal, job_id: str, *, timeout: float | None = None, poll: float = 0.5,
             on_update: Callable[[Job], None] | None = None) -> Job:
        """Block until the job ends (or ``timeout`` seconds pass); ``on_update`` sees it at each poll."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(principal, job_id)
            if on_update is not None:
                on_update(job)
            if job.status in TERMINAL_JOB_STATUSES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                return job
            time.sleep(poll)

    def progress(self, principal: Principal, job: Job) -> dict[str, Any]:
        """How far a job is: trials started/finished (tuning) or the last step logged (training)."""
        out: dict[str, Any] = {"status": job.status}
        if job.kind == "tune":
            out["trials_total"] = trials_of(parse_spec(job.spec))
        if not job.run_id:
            return out
        from matih_lite.tracking.service import Tracking

        tracking = Tracking(self.host)
        try:
            run = tracking.get_run(job.tenant, job.run_id)
        except NotFound:
            return out
        if job.kind == "tune":
            children = tracking.search_runs(job.tenant, [run.experiment_id],
                                            filter=f"tags.`mlflow.parentRunId` = '{job.run_id}'",
                                            max_results=MAX_RESULTS, columns=["tags.mlflow.parentRunId"]).items
            out["trials_started"] = len(children)
            out["trials_done"] = sum(1 for c in children if c.status != "RUNNING")
        else:
            out["step"] = max((m.step for m in run.metrics.values()), default=None)
        return out

    # ---- helpers ---------------------------------------------------------------------------------
    def _reaped(self, job: Job) -> Job:
        """The job, marked FAILED first if the process supervising it went away."""
        if job.status in ACTIVE_JOB_STATUSES and job.heartbeat_at < now_ms() - STALE_AFTER_S * 1000 and \
                job.owner != JobSupervisor.of(self.host, start=False).owner:
            try:
                job = self.store.update_job(job.tenant, job.job_id, status="FAILED", ended_at=now_ms(),
                                            message="lost: the process supervising it stopped "
                                                    f"(last heard of {job.owner or 'nobody'})",
                                            expect=list(ACTIVE_JOB_STATUSES))
                if job.run_id:
                    from matih_lite.tracking.service import Tracking

                    try:
                        Tracking(self.host).update_run(job.tenant, job.run_id, status="FAILED")
                    except MatihError:
                        pass
                self._announce(job)
            except Conflict:
                job = self.store.get_job(job.tenant, job.job_id)
        return job

    def _emit(self, job: Job, kind: str, data: dict[str, Any]) -> None:
        self.host.emit(PlatformEvent(kind, job.job_id, job.tenant, data))

    def _announce(self, job: Job) -> None:
        """The platform event and the notifiers for a job that ended."""
        kind = f"job.{job.status.lower()}"
        data = {"name": job.name, "kind": job.kind, "status": job.status, "message": job.message,
                "run_id": job.run_id, "created_by": job.created_by, "result": job.result}
        self._emit(job, kind, data)
        # INFO when no notifier is configured: the service log shows it; a CLI run prints the outcome itself.
        send_alert(self.host, {"type": kind, "severity": "info" if job.status == "SUCCEEDED" else "warning",
                               "title": f"{job.kind} job {job.name} {job.status.lower()}", "job_id": job.job_id,
                               "tenant": job.tenant, **{k: v for k, v in data.items() if k != "result"}},
                   level="INFO")


# ---- the supervisor --------------------------------------------------------------------------------
_supervisors: weakref.WeakKeyDictionary[Any, JobSupervisor] = weakref.WeakKeyDictionary()
_supervisors_lock = threading.Lock()


class JobSupervisor:
    """Starts, watches and finishes the jobs this process submitted (one per host, a daemon thread)."""

    def __init__(self, host: Host) -> None:
        self.jobs = Jobs(host)
        self.host = host
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat = 0.0
        self._lock = threading.Lock()
        self._compute_checked = 0.0
        self._compute_health: tuple[bool, str] = (True, "")
        self._unanswered: dict[str, tuple[float, str]] = {}
        """Running jobs whose status the compute backend could not tell: since when (monotonic), and why."""

    @classmethod
    def of(cls, host: Host, *, start: bool = True) -> JobSupervisor:
        with _supervisors_lock:
            found = _supervisors.get(host)
            if found is None:
                found = _supervisors[host] = cls(host)
        if start:
            found.start()
        return found

    @classmethod
    def wake_all(cls, host: Host) -> None:
        found = _supervisors.get(host)
        if found is not None:
            found.wake()

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, name="matih-job-supervisor", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        idle_since: float | None = None
        while not self._stop.is_set():
            try:
                busy = self.tick()
            except Exception:
                log.exception("job supervisor tick failed")
                busy = True
            # With nothing to watch for a while the thread ends; the next submit starts it again.
            if busy:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 5:
                with self._lock:
                    self._thread = None
                return
            self._wake.wait(TICK_S)
            self._wake.clear()

    def owned(self) -> list[Job]:
        jobs = self.jobs.store.list_jobs(None, statuses=list(ACTIVE_JOB_STATUSES), max_results=MAX_RESULTS).items
        return sorted((j for j in jobs if j.owner == self.owner), key=lambda j: (j.created_at, j.job_id))

    def tick(self) -> bool:
        """One round: heartbeats, starts, cancellations, completions. Returns whether any job is active."""
        jobs = self.owned()
        if time.monotonic() - self._beat > HEARTBEAT_S:
            now = now_ms()
            for job in jobs:
                try:
                    self.jobs.store.update_job(job.tenant, job.job_id, heartbeat_at=now,
                                               expect=list(ACTIVE_JOB_STATUSES))
                except (Conflict, NotFound):
                    pass
            self._beat = time.monotonic()
        for job in jobs:
            try:
                if job.status == "QUEUED":
                    self._try_start(job)
                elif job.status in ("STARTING", "RUNNING"):
                    self._watch(job)
            except MatihError as exc:
                log.warning("job %s: %s", job.job_id, exc.message)
        return bool(jobs)

    # ---- starting ----------------------------------------------------------------------------------
    def _try_start(self, job: Job) -> None:
        store = self.jobs.store
        if job.cancel_requested:
            self._finish(job, JobState("CANCELLED", job.message or "cancelled while queued"))
            return
        ok, detail = self.compute_health()
        if not ok:
            reason = f"waiting for the compute backend: {detail}"
            if reason != job.message:
                store.update_job(job.tenant, job.job_id, message=reason, expect=["QUEUED"])
            return
        limits = self.jobs.limits(job.tenant)
        now = now_ms()
        claim = store.claim_job(job.tenant, job.job_id, limits, live_after=now - int(STALE_AFTER_S * 1000),
                                owner=self.owner, now=now)
        if not claim.claimed:
            reason = waiting_reason(job, claim.usage, limits)
            if reason != job.message:
                store.update_job(job.tenant, job.job_id, message=reason, expect=["QUEUED"])
            return
        try:
            self._launch(claim.job or job)
        except StoreError as exc:
            self._requeue(store.get_job(job.tenant, job.job_id), exc.message)
        except MatihError as exc:
            self._finish(store.get_job(job.tenant, job.job_id), JobState("FAILED", f"could not start: {exc.message}"))
        except Exception as exc:
            log.exception("job %s could not start", job.job_id)
            self._finish(store.get_job(job.tenant, job.job_id),
                         JobState("FAILED", f"could not start: {type(exc).__name__}: {exc}"))

    def _launch(self, job: Job) -> None:
        from matih_lite.tracking.service import Tracking

        spec = job.spec
        tracking = Tracking(self.host)
        run_id = job.run_id  # set when an earlier launch found the cluster away and put the job back in the queue
        if run_id is None:
            experiment = tracking.get_or_create_experiment(job.tenant, spec.get("experiment") or "Default")
            run = tracking.create_run(job.tenant, experiment.experiment_id, name=job.name, user_id=job.created_by,
                                      tags={"matih.job_id": job.job_id, "matih.job_kind": job.kind,
                                            "matih.framework": spec.get("framework", "custom"),
                                            "matih.entrypoint": spec.get("entrypoint", "")})
            run_id = run.run_id
            params = {f"job.{k}": v for k, v in _flat(spec.get("resources") or {}).items() if v not in (None, [], {})}
            if job.kind == "tune":
                tune = spec.get("tune") or {}
                params.update({f"tune.{k}": v for k, v in tune.items() if k != "space" and v is not None})
                params.update({f"tune.space.{k}": v for k, v in (tune.get("space") or {}).items()})
            params.update({k: v for k, v in (spec.get("params") or {}).items()})
            tracking.log_batch(job.tenant, run_id, params={k: str(v)[:6000] for k, v in list(params.items())[:100]})
        if any(isinstance(v, Mapping) for v in (spec.get("inputs") or {}).values()):
            from matih_lite.features.job_inputs import prepare_feature_inputs

            # Joined here, where the feature store is, so the compute backend gets a plain artifact input.
            creator = Principal(job.tenant, job.created_by or "local", ("editor",))
            spec = prepare_feature_inputs(self.host, creator, run_id, spec)
        job = self.jobs.store.update_job(job.tenant, job.job_id, status="RUNNING", run_id=run_id,
                                         started_at=now_ms(), message="running", expect=["STARTING"])
        compute = self.jobs.compute
        url = compute.service_url()
        target = {"url": url, "token": self._job_token(job)} if url else self.embedded_target()
        request = JobRequest(job_id=job.job_id, tenant=job.tenant, kind=job.kind, spec=spec, run_id=run_id,
                             tracking=target, limits=self.jobs.limits(job.tenant))
        try:
            compute.submit(request)
        except BaseException:
            self._revoke_job_token(job)
            raise
        self.jobs._emit(job, "job.started", {"name": job.name, "run_id": run_id})
        log.info("job %s (%s) started; run %s", job.job_id, job.name, run_id)

    def embedded_target(self) -> dict[str, str]:
        """How a job's processes on this machine open the platform's stores themselves."""
        config = self.host.config
        return {"config": str(config.path.resolve()) if config.path else "", "home": str(config.home),
                "cwd": str(config.base_dir), "profile": self.host.profile}

    def compute_health(self) -> tuple[bool, str]:
        """Whether the compute backend can take jobs now (asked at most every :data:`HEALTH_EVERY_S`)."""
        if time.monotonic() - self._compute_checked > HEALTH_EVERY_S:
            try:
                health = self.jobs.compute.health()
                self._compute_health = (bool(health.ok), health.detail)
            except Exception as exc:  # health must not raise; one that does is as good as down
                self._compute_health = (False, f"{type(exc).__name__}: {exc}")
            self._compute_checked = time.monotonic()
        return self._compute_health

    def _requeue(self, job: Job, why: str) -> None:
        """Put a job the compute backend could not take back in the queue (its run is kept for the next try)."""
        self._compute_checked = 0.0
        try:
            self.jobs.store.update_job(job.tenant, job.job_id, status="QUEUED", started_at=None,
                                       message=f"waiting for the compute backend: {why}",
                                       expect=["STARTING", "RUNNING"])
        except Conflict:
            pass
        log.warning("job %s back in the queue: the compute backend could not take it: %s", job.job_id, why)

    # ---- the job's token -------------------------------------------------------------------------
    def _job_token(self, job: Job) -> str:
        """A token of the job's creator for this job alone, when the service requires tokens ("" otherwise)."""
        from matih_lite.auth import auth_enabled
        from matih_lite.auth.service import Accounts

        if not auth_enabled(self.host):
            return ""
        self._revoke_job_token(job)  # a token from an earlier try that the cluster never took
        issued = Accounts(self.host).create_token(job.tenant, job.created_by, name=f"job:{job.job_id}",
                                                  description=f"{job.kind} job {job.name}, revoked when it ends",
                                                  expires_in_days=JOB_TOKEN_DAYS)
        return issued.secret

    def _revoke_job_token(self, job: Job) -> None:
        from matih_lite.auth import auth_enabled
        from matih_lite.auth.service import Accounts

        try:
            if not auth_enabled(self.host):
                return
            accounts = Accounts(self.host)
            for token in accounts.list_tokens(job.tenant, user=job.created_by):
                if token.name == f"job:{job.job_id}" and not token.revoked:
                    accounts.revoke_token(job.tenant, token.token_id)
        except MatihError as exc:
            log.warning("job %s: could not revoke its token: %s", job.job_id, exc.message)

    # ---- watching ----------------------------------------------------------------------------------
    def _watch(self, job: Job) -> None:
        compute = self.jobs.compute
        if job.status == "STARTING":
            return  # between claim and launch in this thread; nothing to ask yet
        if job.cancel_requested:
            try:
                compute.cancel(job.job_id)
            except NotFound:
                self._finish(job, JobState("CANCELLED", job.message))
                return
        try:
            state = compute.status(job.job_id)
        except NotFound as exc:
            state = JobState("FAILED", "lost: the compute backend no longer knows this job (its cluster was "
                                       f"replaced, or the job deleted there): {exc.message}")
        except StoreError as exc:
            self._unanswered_for(job, exc.message)
            return
        if job.job_id in self._unanswered:
            del self._unanswered[job.job_id]
            if job.message.startswith("running; the compute backend"):
                self.jobs.store.update_job(job.tenant, job.job_id, message="running", expect=["RUNNING"])
        if state.status in TERMINAL_JOB_STATUSES:
            self._finish(job, state)

    def _unanswered_for(self, job: Job, why: str) -> None:
        """The compute backend could not say how a running job is: note it, and fail the job once it lasts."""
        since, _ = self._unanswered.setdefault(job.job_id, (time.monotonic(), why))
        self._unanswered[job.job_id] = (since, why)
        waited = time.monotonic() - since
        if waited >= COMPUTE_LOST_AFTER_S:
            del self._unanswered[job.job_id]
            self._finish(job, JobState("FAILED", f"lost: the compute backend has not answered for {waited:.0f} s, "
                                                 f"so its cluster is taken as gone: {why}"))
            return
        message = f"running; the compute backend has not answered for {waited:.0f} s: {why}"
        if not job.message.startswith("running; the compute backend") or waited - _seconds(job.message) >= 10:
            self.jobs.store.update_job(job.tenant, job.job_id, message=message, expect=["RUNNING"])

    def _finish(self, job: Job, state: JobState) -> None:
        from matih_lite.tracking.service import Tracking

        tracking = Tracking(self.host)
        status = state.status
        message = state.message or {"SUCCEEDED": "succeeded", "CANCELLED": "cancelled"}.get(status, "failed")
        if status == "CANCELLED" and job.cancel_requested and job.message.startswith("cancel requested by"):
            message = job.message.replace("cancel requested by", "cancelled by")
        result: dict[str, Any] = dict(job.result)
        if job.run_id:
            result.update(self._result(tracking, job))
            if status == "SUCCEEDED" and job.register:
                result.update(self._register(job, result))
                if "register_error" in result:
                    message = f"succeeded, but registering the model failed: {result['register_error']}"
            self._end_runs(tracking, job, _FINAL_RUN_STATUS[status])
        try:
            job = self.jobs.store.update_job(job.tenant, job.job_id, status=status, ended_at=now_ms(),
                                             message=message, result=result, expect=list(ACTIVE_JOB_STATUSES))
        except Conflict:
            return  # someone else finished it (a cancel of a queued job)
        finally:
            self._unanswered.pop(job.job_id, None)
        if job.run_id:
            self._revoke_job_token(job)
        self.jobs._announce(job)
        log.info("job %s %s: %s", job.job_id, status.lower(), message)

    def _result(self, tracking: Any, job: Job) -> dict[str, Any]:
        try:
            run = tracking.get_run(job.tenant, job.run_id)
        except NotFound:
            return {}
        out: dict[str, Any] = {"run_id": job.run_id}
        for tag, key in (("matih.best_run_id", "best_run_id"), ("matih.best_trial_id", "best_trial_id"),
                         ("matih.trials", "trials"), ("matih.model_path", "model_path"),
                         ("matih.worker_failures", "worker_failures")):
            if tag in run.tags:
                out[key] = run.tags[tag]
        metric = (job.spec.get("tune") or {}).get("metric")
        if metric and metric in run.metrics:
            out["best_value"] = run.metrics[metric].value
        model_run = (out.get("best_run_id") or job.run_id) if "model_path" in out else None
        if model_run:
            out["model_uri"] = f"runs:/{model_run}/model"
        return out

    def _register(self, job: Job, result: dict[str, Any]) -> dict[str, Any]:
        from matih_lite.registry.service import Registry

        source = result.get("model_uri")
        if not source:
            return {"register_error": "the job logged no model (call matih_lite.training.log_model in the "
                                      "entrypoint)"}
        principal = Principal(job.tenant, job.created_by or "local", ("editor",))
        try:
            mv = Registry(self.host).register_version(principal, job.register, source,
                                                      description=f"best model of {job.kind} job {job.job_id}",
                                                      tags={"matih.job_id": job.job_id})
        except MatihError as exc:
            return {"register_error": exc.message}
        return {"registered": {"name": mv.name, "version": mv.version, "stage": mv.stage}}

    def _end_runs(self, tracking: Any, job: Job, status: str) -> None:
        """End the job's run, and any trial run left RUNNING (the job was cancelled or its driver died)."""
        try:
            run = tracking.get_run(job.tenant, job.run_id)
            if job.kind == "tune":
                children = tracking.search_runs(
                    job.tenant, [run.experiment_id], filter=f"tags.`mlflow.parentRunId` = '{job.run_id}' "
                                                            "and attributes.status = 'RUNNING'",
                    max_results=MAX_RESULTS, columns=["tags.mlflow.parentRunId"]).items
                for child in children:
                    tracking.update_run(job.tenant, child.run_id, status="KILLED" if status != "FINISHED" else
                                        "FINISHED")
            if run.status == "RUNNING":
                tracking.update_run(job.tenant, job.run_id, status=status)
        except MatihError as exc:
            log.warning("job %s: could not end its runs: %s", job.job_id, exc.message)


def _seconds(message: str) -> float:
    """The seconds a "has not answered for N s" message states (0 when it states none)."""
    import re

    found = re.search(r"for (\d+) s", message)
    return float(found.group(1)) if found else 0.0


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
