"""Streaming inference for deployments: consumers that read requests from a topic of the events slot,
answer them through a deployment's routes, and write the answers to another topic.

A consumer (:class:`~matih_lite.serving.streaming.StreamingInference`) runs in a thread; its
``predict`` hands each batch to the :class:`~matih_lite.serving.traffic.TrafficManager` on
the service's event loop, so a streamed request meets the same routing as an HTTP one: the A/B
split (sticky by the record's ``request_key``), shadows, the canary's counts, micro-batching
with the HTTP traffic, and the inference log. The records::

    request     {"request_id": "r-1", "request_key": "user-7", "inputs": [[...]]}
                (one of dataframe_split, dataframe_records, instances or inputs, as over HTTP;
                request_id and request_key are optional)
    prediction  {"request_id": "r-1", "predictions": [...], "deployment": "churn", "version": 3,
                 "variant": "v3", "timestamp": ms, "source": "requests", "source_offset": 7,
                 "consumer": "churn"}   or   {..., "error": "why"} for a request that failed

Which consumers run is itself kept in the events slot (stream :data:`CONSUMERS`, the latest
start or stop of each wins), so the service starts them again when it restarts, from each
group's committed offset.

``engine = "flink"`` runs the consumer as a job outside the service instead: the deployment's
:class:`~matih_lite.contracts.stream_jobs.StreamJobPlan` (its routes as of now, each routed version's
verified files and flavor) goes to the backend that is a
:class:`~matih_lite.contracts.stream_jobs.StreamJobEngine` of that name (the Flink drift runner), which
runs and supervises it; the service watches the deployment's routes and hands the job each change
(:data:`WATCH_SECONDS`). Such a job answers with the routes (sticky by ``request_key``, with the very
hash of the service's router) but not through the traffic manager: no shadows, and the canary does not
count its answers. Its predictions and inference-log records have the in-process consumer's shape.

Topic names belong to the tenant: in tenants other than the default one they are stored as
``TENANT.NAME`` (:func:`tenant_stream`), as the inference log is.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np

from matih_lite.contracts.stream_jobs import StreamJobEngine, traffic_signature
from matih_lite.contracts.streams import STREAM_NAME
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.identity import Principal
from matih_lite.serving.routing import check_deployment_name
from matih_lite.serving.traffic import inference_log_name

log = logging.getLogger("matih_lite.serving.streams")

CONSUMERS = "matih.streaming.consumers"
"""The events stream recording which deployment consumers run (an append-only log of starts and stops)."""
MAX_BATCH = 5000
PREDICT_TIMEOUT_S = 300.0
IN_PROCESS = "inprocess"
"""The engine of a consumer the service runs itself (the default)."""
WATCH_SECONDS = 2.0
"""How often the service compares a stream job's deployment's routes with the job's, to hand it a change."""


def tenant_stream(tenant: str, name: Any, what: str = "stream") -> str:
    """The stored name of a tenant's topic ``name``; raises InvalidInput for a name a topic cannot have."""
    if not isinstance(name, str) or not STREAM_NAME.match(name) or name.startswith("matih."):
        raise InvalidInput(f"{what} {name!r} is not a topic name: 1 to 200 letters, digits, '.', '_' or '-', "
                           "not starting with 'matih.'", detail={"field": what})
    if len(name) > 200:
        raise InvalidInput(f"{what} is longer than 200 characters", detail={"field": what})
    return inference_log_name(tenant, name)


class StreamSpec(msgspec.Struct, frozen=True):
    """One deployment consumer: where it reads, where it writes, under which consumer group."""

    tenant: str
    deployment: str
    source: str
    sink: str
    group: str
    batch_size: int = 500
    started_by: str = ""
    started_at: int = 0
    engine: str = IN_PROCESS


def plain_outputs(outputs: Any) -> Any:
    """Model outputs as JSON values: arrays as lists, a dict of outputs as a dict of lists."""
    if isinstance(outputs, Mapping):
        return {str(k): plain_outputs(v) for k, v in outputs.items()}
    if isinstance(outputs, np.ndarray | np.generic):
        return outputs.tolist()
    return outputs


class DeploymentStreams:
    """The consumers a host runs for its deployments (one per tenant, deployment and group)."""

    def __init__(self, host: Any, manager: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.host = host
        self.manager = manager
        self.loop = loop
        self._consumers: dict[tuple[str, str, str], tuple[StreamSpec, Any]] = {}
        self._jobs: dict[tuple[str, str, str], tuple[StreamSpec, Any, Any]] = {}
        """The stream jobs an engine runs: (spec, engine, the plan it runs)."""
        self._lock = threading.Lock()
        self._control = threading.RLock()
        """Held while a stream job is started or stopped here, or synced with the record (no half-seen change)."""
        self._watching = threading.Event()
        self._closed = threading.Event()
        self._said: dict[tuple[str, str, str], str] = {}
        """The last trouble logged per job (the watcher says a lasting one once, not every round)."""

    @property
    def events(self) -> Any:
        return self.host.backend("events")

    # ---- control ------------------------------------------------------------------------------
    def spec(self, principal: Principal, deployment: str, source: str, sink: str, *, group: str | None = None,
             batch_size: int = 500, engine: str = IN_PROCESS) -> StreamSpec:
        """A checked consumer spec. Raises NotFound (no such deployment in the caller's tenant), InvalidInput."""
        return stream_spec(self.manager.deployments, principal, deployment, source, sink, group=group,
                           batch_size=batch_size, engine=engine)

    def start(self, principal: Principal, deployment: str, source: str, sink: str, *, group: str | None = None,
              batch_size: int = 500, remember: bool = True, engine: str = IN_PROCESS) -> dict[str, Any]:
        """Start consuming ``source`` into ``sink`` for ``deployment`` in a thread, or as a job of ``engine``
        (idempotent for the same spec).

        Raises NotFound (no such deployment), InvalidInput (bad names, a group already consuming elsewhere, an
        engine no backend provides or that cannot run this deployment)."""
        spec = self.spec(principal, deployment, source, sink, group=group, batch_size=batch_size, engine=engine)
        group = spec.group
        key = (principal.tenant, deployment, group)
        with self._lock:
            found = self._consumers.get(key) or self._jobs.get(key)
            if found is not None:
                old = found[0]
                if (old.source, old.sink, old.batch_size, old.engine) == (source, sink, batch_size, engine):
                    return self._describe(old, found[1]) if key in self._consumers else self._describe_job(old)
                raise InvalidInput(f"group {group!r} of deployment {deployment!r} already consumes {old.source!r} "
                                   f"into {old.sink!r} ({old.engine}); stop it first or choose another group",
                                   detail={"field": "group"})
        if engine != IN_PROCESS:
            return self._start_job(principal, spec, remember=remember)
        with self._lock:
            consumer = self.consumer(spec)
            self._consumers[key] = (spec, consumer)
        if remember:
            self.events.append(CONSUMERS, [{"timestamp": spec.started_at, "action": "start",
                                            **msgspec.structs.asdict(spec)}])
        consumer.start()
        log.info("deployment %s: consuming %s into %s (group %s)", deployment, source, sink, group)
        return self._describe(spec, consumer)

    def stop(self, principal: Principal, deployment: str, group: str) -> None:
        """Stop a consumer (what it has not committed is read again if it starts again). Raises NotFound."""
        key = (principal.tenant, deployment, group)
        with self._lock:
            found = self._consumers.pop(key, None)
            job = self._jobs.pop(key, None)
        if found is None and job is None:
            raise NotFound(f"deployment {deployment!r} has no stream consumer in group {group!r}")
        if found is not None:
            found[1].stop()
            self._record_stop(principal, deployment, group)
        else:
            with self._control:
                self._record_stop(principal, deployment, group)
                _, engine, plan = job
                engine.stop_stream_job(plan.group, drain=True)
        log.info("deployment %s: stopped consuming (group %s)", deployment, group)

    def _record_stop(self, principal: Principal, deployment: str, group: str) -> None:
        self.events.append(CONSUMERS, [{"timestamp": int(time.time() * 1000), "action": "stop",
                                        "tenant": principal.tenant, "deployment": deployment, "group": group,
                                        "stopped_by": principal.user}])

    def list(self, principal: Principal, deployment: str | None = None) -> list[dict[str, Any]]:
        """The tenant's consumers (of one deployment), with what each has done and its lag."""
        with self._lock:
            found = [(s, c) for (t, d, _), (s, c) in sorted(self._consumers.items())
                     if t == principal.tenant and (deployment is None or d == deployment)]
            jobs = [s for (t, d, _), (s, _, _) in sorted(self._jobs.items())
                    if t == principal.tenant and (deployment is None or d == deployment)]
        return [self._describe(s, c) for s, c in found] + [self._describe_job(s) for s in jobs]

    def restore(self) -> int:
        """Start again the consumers the events slot says were running; returns how many."""
        started = 0
        for (tenant, deployment, group), data in recorded_consumers(self.events).items():
            who = Principal(tenant, str(data.get("started_by") or "streams"), ("editor",))
            try:
                self.start(who, deployment, str(data["source"]), str(data["sink"]), group=group,
                           batch_size=int(data.get("batch_size") or 500), remember=False,
                           engine=str(data.get("engine") or IN_PROCESS))
                started += 1
            except Exception as exc:  # a deployment deleted meanwhile: say so, start the others
                log.warning("stream consumer %s of deployment %s not restarted: %s", group, deployment,
                            getattr(exc, "message", exc))
        if self._has_engine():
            self._watch()  # jobs other replicas start or stop: known here too (their engine runs them once)
        return started

    def close(self) -> None:
        """Stop the consumers; stream jobs are stopped with a savepoint (they start again with the service)."""
        self._closed.set()
        with self._lock:
            consumers, self._consumers = list(self._consumers.values()), {}
            jobs, self._jobs = list(self._jobs.values()), {}
        for _, consumer in consumers:
            consumer.stop(timeout=5)
        for _, engine, plan in jobs:
            try:
                engine.stop_stream_job(plan.group, drain=True)
            except Exception:  # the engine closed first (it stops its jobs itself)
                log.exception("stream job %s did not stop cleanly", plan.group)

    # ---- stream jobs (engine != inprocess) -------------------------------------------------------
    def engine(self, name: str) -> Any:
        """The backend that runs stream jobs as ``name``. Raises InvalidInput naming what to configure."""
        return stream_engine(self.host, name)

    def _has_engine(self) -> bool:
        slot = self.host.active("drift")
        return slot is not None and isinstance(self.host.backend("drift"), StreamJobEngine)

    def _start_job(self, principal: Principal, spec: StreamSpec, *, remember: bool) -> dict[str, Any]:
        from matih_lite.serving.stream_plan import stream_job_plan

        engine = self.engine(spec.engine)
        plan = stream_job_plan(self.host, principal, spec.deployment, spec.source, spec.sink, group=spec.group)
        key = (principal.tenant, spec.deployment, spec.group)
        with self._control:
            try:
                engine.start_stream_job(plan)
            except ValueError as exc:
                raise InvalidInput(f"the {spec.engine} engine cannot run deployment {spec.deployment!r}: {exc}",
                                   detail={"field": "engine"}) from None
            if remember:
                self.events.append(CONSUMERS, [{"timestamp": spec.started_at, "action": "start",
                                                **msgspec.structs.asdict(spec)}])
            with self._lock:
                self._jobs[key] = (spec, engine, plan)
        self._watch()
        log.info("deployment %s: %s job consuming %s into %s (group %s)", spec.deployment, spec.engine, spec.source,
                 spec.sink, spec.group)
        return self._describe_job(spec)

    def _describe_job(self, spec: StreamSpec) -> dict[str, Any]:
        key = (spec.tenant, spec.deployment, spec.group)
        with self._lock:
            found = self._jobs.get(key)
        group = found[2].group if found is not None else _group_name(spec)
        entry = next((j for j in (found[1].stream_jobs() if found is not None else []) if j.get("group") == group),
                     None) or {}
        return {**msgspec.structs.asdict(spec), "running": bool(entry.get("running")), "lag": entry.get("lag"),
                "consumed": entry.get("consumed"), "predicted": entry.get("predicted"),
                "failed": entry.get("failed"), "duplicates": None, "last_error": entry.get("last_error"),
                "state": entry.get("state"), "routes": entry.get("routes"),
                "last_checkpoint": entry.get("last_checkpoint"), "restarts": entry.get("restarts")}

    def _watch(self) -> None:
        """Start the thread that hands each stream job its deployment's route changes (once)."""
        with self._lock:
            if self._watching.is_set():
                return
            self._watching.set()
        threading.Thread(target=self._follow_routes, name="matih-stream-routes", daemon=True).start()

    def _sync_recorded(self) -> None:
        """Start here the jobs another replica started (and stop those it stopped), as the record has them: each
        replica knows every job; the engine runs each once (only on the replica holding its duty)."""
        with self._control:
            recorded = {k: d for k, d in recorded_consumers(self.events).items()
                        if str(d.get("engine") or IN_PROCESS) != IN_PROCESS}
            with self._lock:
                local = dict(self._jobs)
            for key in recorded.keys() - local.keys():
                tenant, deployment, group = key
                data = recorded[key]
                who = Principal(tenant, str(data.get("started_by") or "streams"), ("editor",))
                try:
                    self.start(who, deployment, str(data["source"]), str(data["sink"]), group=group,
                               batch_size=int(data.get("batch_size") or 500), remember=False,
                               engine=str(data["engine"]))
                    self._said.pop(key, None)
                except Exception as exc:
                    self._say(key, f"stream job {group} of deployment {deployment} not started here: "
                                   f"{getattr(exc, 'message', exc)}")
            for key in local.keys() - recorded.keys():
                with self._lock:
                    found = self._jobs.pop(key, None)
                if found is not None:
                    found[1].stop_stream_job(found[2].group, drain=True)
                    log.info("deployment %s: stream job %s stopped (stopped elsewhere)", key[1], key[2])

    def _follow_routes(self) -> None:
        from matih_lite.serving.stream_plan import stream_job_plan

        while not self._closed.wait(WATCH_SECONDS):
            try:
                self._sync_recorded()
            except Exception as exc:  # the events store away: the jobs known here go on as they are
                log.warning("stream jobs: the record of consumers could not be read: %s", getattr(exc, "message", exc))
            with self._lock:
                jobs = list(self._jobs.items())
            for key, (spec, engine, plan) in jobs:
                try:
                    who = Principal(spec.tenant, spec.started_by or "streams", ("editor",))
                    current = self.manager.deployments.get(who, spec.deployment)
                    now = traffic_signature(current.routes, current.shadows)
                    if now == traffic_signature(plan.routes, plan.shadows) or not now[0]:
                        continue
                    new = stream_job_plan(self.host, who, spec.deployment, spec.source, spec.sink, group=spec.group)
                    engine.update_stream_job(new)
                    with self._lock:
                        if key in self._jobs:
                            self._jobs[key] = (spec, engine, new)
                    self._said.pop(key, None)
                    log.info("deployment %s: stream job %s follows its new routes %s%s", spec.deployment,
                             spec.group, [(r.variant, r.weight) for r in new.routes],
                             f" and shadows {[r.variant for r in new.shadows]}" if new.shadows else "")
                except Exception as exc:  # a deployment deleted, the engine away: try again at the next round
                    self._say(key, f"deployment {spec.deployment}: stream job {spec.group} keeps its routes: "
                                   f"{getattr(exc, 'message', exc)}")

    def _say(self, key: tuple[str, str, str], message: str) -> None:
        """Log a watcher's trouble once while it lasts (it is retried every round)."""
        if self._said.get(key) != message:
            self._said[key] = message
            log.warning("%s", message)

    # ---- internals ----------------------------------------------------------------------------
    def consumer(self, spec: StreamSpec) -> Any:
        """A :class:`~matih_lite.serving.streaming.StreamingInference` for ``spec``, not started (run it with
        ``start()``, or ``run_once()`` from a thread other than the loop's)."""
        from matih_lite.serving.streaming import StreamingInference

        def predict(records: list[dict[str, Any]]) -> list[Any]:
            future = asyncio.run_coroutine_threadsafe(self._answer(spec, records), self.loop)
            return future.result(timeout=PREDICT_TIMEOUT_S)

        return StreamingInference(self.events, predict, tenant_stream(spec.tenant, spec.source),
                                  tenant_stream(spec.tenant, spec.sink), _group_name(spec), batch_size=spec.batch_size)

    async def _answer(self, spec: StreamSpec, records: list[dict[str, Any]]) -> list[Any]:
        return await asyncio.gather(*(self._one(spec, r) for r in records), return_exceptions=True)

    async def _one(self, spec: StreamSpec, record: Mapping[str, Any]) -> dict[str, Any]:
        from matih_lite.serving.payload import FORMATS, parse_scoring_request

        if not isinstance(record, Mapping):
            raise InvalidInput("a request record must be a JSON object")
        key = record.get("request_key")
        if key is not None and (not isinstance(key, str) or not key or len(key) > 1024):
            raise InvalidInput("request_key must be a string of 1 to 1024 characters")
        request_id = record.get("request_id")
        body = {k: v for k, v in record.items() if k in FORMATS or k == "params"}
        target = await self.manager.target(spec.tenant, spec.deployment, key=key)
        inputs = parse_scoring_request(body, target.served.schema).inputs
        answer = await self.manager.infer(target, inputs,
                                          request_id=str(request_id) if request_id not in (None, "") else None)
        return {"predictions": plain_outputs(answer.outputs), "deployment": answer.deployment,
                "version": answer.version, "variant": answer.variant}

    def _describe(self, spec: StreamSpec, consumer: Any) -> dict[str, Any]:
        try:
            lag: int | None = consumer.lag
        except Exception:  # the store is down: the listing still answers
            lag = None
        return {**msgspec.structs.asdict(spec), "running": consumer.running, "lag": lag, **consumer.stats,
                "last_error": consumer.last_error}


class RecordedStreams:
    """The consumers of a folder no service is using, as the events slot records them (``predict stream start``
    and ``list`` without a running ``up``): a start or stop is recorded, and the service acts on it when it
    starts (:meth:`DeploymentStreams.restore`); a listing shows each recorded consumer as not running, with
    its lag. Answers have the shape of :class:`DeploymentStreams`' own."""

    def __init__(self, host: Any) -> None:
        from matih_lite.serving.deployments import Deployments

        self.host = host
        self.deployments = Deployments(host)

    @property
    def events(self) -> Any:
        return self.host.backend("events")

    def start(self, principal: Principal, deployment: str, source: str, sink: str, *, group: str | None = None,
              batch_size: int = 500, engine: str = IN_PROCESS) -> dict[str, Any]:
        """Record a consumer for the service to run (idempotent for the same spec).

        Raises NotFound (no such deployment), InvalidInput (bad names, a group already consuming elsewhere, an
        engine no backend of this profile provides)."""
        spec = stream_spec(self.deployments, principal, deployment, source, sink, group=group, batch_size=batch_size,
                           engine=engine)
        if engine != IN_PROCESS:
            stream_engine(self.host, engine)
        found = recorded_consumers(self.events).get((principal.tenant, deployment, spec.group))
        if found is not None:
            old = _recorded_spec(found)
            if (old.source, old.sink, old.batch_size, old.engine) == (source, sink, batch_size, engine):
                return self._describe(old)
            raise InvalidInput(f"group {spec.group!r} of deployment {deployment!r} already consumes {old.source!r} "
                               f"into {old.sink!r}; stop it first or choose another group", detail={"field": "group"})
        self.events.append(CONSUMERS, [{"timestamp": spec.started_at, "action": "start",
                                        **msgspec.structs.asdict(spec)}])
        return self._describe(spec)

    def stop(self, principal: Principal, deployment: str, group: str) -> None:
        """Record that a consumer no longer runs. Raises NotFound."""
        if (principal.tenant, deployment, group) not in recorded_consumers(self.events):
            raise NotFound(f"deployment {deployment!r} has no stream consumer in group {group!r}")
        self.events.append(CONSUMERS, [{"timestamp": int(time.time() * 1000), "action": "stop",
                                        "tenant": principal.tenant, "deployment": deployment, "group": group,
                                        "stopped_by": principal.user}])

    def list(self, principal: Principal, deployment: str | None = None) -> list[dict[str, Any]]:
        """The tenant's recorded consumers (of one deployment), none running, with their lag."""
        found = [data for (t, d, _), data in sorted(recorded_consumers(self.events).items())
                 if t == principal.tenant and (deployment is None or d == deployment)]
        return [self._describe(_recorded_spec(data)) for data in found]

    def _describe(self, spec: StreamSpec) -> dict[str, Any]:
        from matih_lite.serving.streaming import StreamingInference

        if spec.engine != IN_PROCESS:  # its engine keeps its offsets and counts: only a running service can say
            return {**msgspec.structs.asdict(spec), "running": False, "lag": None, "consumed": None,
                    "predicted": None, "failed": None, "duplicates": None, "last_error": None}

        def never(records: list[dict[str, Any]]) -> list[Any]:  # this consumer only measures; it never runs here
            raise RuntimeError("a recorded consumer does not predict")

        consumer = StreamingInference(self.events, never, tenant_stream(spec.tenant, spec.source),
                                      tenant_stream(spec.tenant, spec.sink), _group_name(spec),
                                      batch_size=spec.batch_size)
        try:
            lag: int | None = consumer.lag
        except Exception:  # the store is down: the listing still answers
            lag = None
        return {**msgspec.structs.asdict(spec), "running": False, "lag": lag, **consumer.stats, "last_error": None}


def stream_engine(host: Any, name: str) -> StreamJobEngine:
    """The backend of ``host`` that runs stream jobs as engine ``name``. Raises InvalidInput saying how to get one."""
    for slot in ("drift",):
        if host.active(slot) is None:
            continue
        backend = host.backend(slot)
        if isinstance(backend, StreamJobEngine) and backend.stream_engine == name:
            return backend
    raise InvalidInput(f"no backend of this profile runs stream jobs on {name!r}: the flink engine comes with "
                       "drift = { backend = \"flink\", ... } (matih-flink) and events = { backend = \"kafka\", ... }",
                       detail={"field": "engine"})


def stream_spec(deployments: Any, principal: Principal, deployment: str, source: str, sink: str, *,
                group: str | None = None, batch_size: int = 500, engine: str = IN_PROCESS) -> StreamSpec:
    """A checked consumer spec. Raises NotFound (no such deployment in the caller's tenant), InvalidInput."""
    check_deployment_name(deployment)
    deployments.get(principal, deployment)
    group = group if group is not None else deployment
    if not isinstance(group, str) or not STREAM_NAME.match(group) or len(group) > 200:
        raise InvalidInput(f"group {group!r} is not a consumer group name: letters, digits, '.', '_' or '-'",
                           detail={"field": "group"})
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise InvalidInput(f"batch_size must be a whole number from 1 to {MAX_BATCH}", detail={"field": "batch_size"})
    src, dst = tenant_stream(principal.tenant, source, "source"), tenant_stream(principal.tenant, sink, "sink")
    if src == dst:
        raise InvalidInput("the sink must be another topic than the source", detail={"field": "sink"})
    if not isinstance(engine, str) or not STREAM_NAME.match(engine) or len(engine) > 40:
        raise InvalidInput(f"engine {engine!r} is not an engine name (inprocess, flink)", detail={"field": "engine"})
    return StreamSpec(principal.tenant, deployment, source, sink, group, batch_size, principal.user,
                      int(time.time() * 1000), engine)


def recorded_consumers(events: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The consumers the events slot says run: each (tenant, deployment, group)'s last start not stopped since."""
    active: dict[tuple[str, str, str], dict[str, Any]] = {}
    offset, end = 0, events.end_offset(CONSUMERS)
    while offset < end:
        records = events.read_from(CONSUMERS, offset, 1000)
        if not records:
            break
        for record in records:
            data = record.data
            key = (str(data.get("tenant")), str(data.get("deployment")), str(data.get("group")))
            if data.get("action") == "start":
                active[key] = data
            else:
                active.pop(key, None)
        offset = records[-1].offset + 1
    return active


def _recorded_spec(data: Mapping[str, Any]) -> StreamSpec:
    return StreamSpec(str(data["tenant"]), str(data["deployment"]), str(data["source"]), str(data["sink"]),
                      str(data["group"]), int(data.get("batch_size") or 500), str(data.get("started_by") or ""),
                      int(data.get("started_at") or data.get("timestamp") or 0), str(data.get("engine") or IN_PROCESS))


def _group_name(spec: StreamSpec) -> str:
    """The consumer group as the events slot knows it: one per tenant, deployment and group."""
    return f"{inference_log_name(spec.tenant, spec.deployment)}.{spec.group}"


MANAGER = "matih_lite.serving.streams"


def attach_streams(host: Any) -> DeploymentStreams | None:
    """The host's deployment consumers (made on first call, on the traffic manager's loop); None before the
    traffic manager has a loop (the service starts it at startup)."""
    from matih_lite.serving.traffic import attach_traffic

    found = host.pm.get_plugin(MANAGER)
    if found is not None:
        return found
    manager = attach_traffic(host)
    loop = manager._loop
    if loop is None or loop.is_closed():
        return None
    streams = DeploymentStreams(host, manager, loop)
    try:
        host.pm.register(streams, name=MANAGER)
    except ValueError:  # another thread attached one meanwhile
        return host.pm.get_plugin(MANAGER)
    return streams


def detach_streams(host: Any) -> None:
    streams = host.pm.get_plugin(MANAGER)
    if streams is not None:
        host.pm.unregister(name=MANAGER)
        streams.close()
