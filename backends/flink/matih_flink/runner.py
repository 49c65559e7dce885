"""``drift = { backend = "flink" }``: the drift windows computed by a PyFlink job, their reports recorded here.

:class:`FlinkDriftRunner` is the drift slot's :class:`~matih_lite.contracts.DriftRunner`. Started with the
monitoring domain's :class:`~matih_lite.contracts.slots.DriftPlan`, a supervisor thread in the ml-service:

- builds (once, cached) or finds the PyFlink environment (:mod:`matih_flink.environment`);
- submits the drift job (:mod:`matih_flink.job.drift_job`) on the plan's targets (every active deployment, its
  model's ``[drift]`` settings), with a job-scoped token per tenant for the baselines and the results keys
  already published (so a restarted job publishes none twice);
- ticks the clock topic every second (event time goes on for deployments with no traffic);
- reads ``drift.results`` back and hands each window's report to ``plan.record`` (alerts, health tags,
  history, retraining, rollback, as for an in-process check; idempotent per window);
- watches the job: a job that died is reported in :meth:`health` (and so on ``/ready``) and restarted from its
  latest checkpoint with a backoff (doubling from ``restart_backoff_seconds`` to ``max_backoff_seconds``);
  a change of targets (a new deployment, a new tenant) restarts it from a savepoint;
- on :meth:`stop`, stops the job with a savepoint (its state and offsets kept), records what it published
  until then, and returns.

It is also the :class:`~matih_lite.contracts.stream_jobs.StreamJobEngine` named ``flink``: ``predict stream start
--engine flink`` hands it a deployment's plan, run by :class:`~matih_flink.streaming.FlinkStreamJobs` (its own
supervisor thread, whether or not drift jobs run); their state shows in :meth:`jobs` and their failures in
:meth:`health`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from matih_lite.contracts import BackendContext, Health
from matih_lite.contracts.slots import DriftPlan

log = logging.getLogger("matih_flink.runner")

RECORDER_GROUP = "matih-flink-recorder"
JOB_GROUP = "matih-flink-drift"
SKIP_TAIL = 20_000
"""Results read back from the results topic's end at each (re)start: the keys the job must not publish again."""


def source_roots() -> list[str]:
    """The folders the jobs import ``matih_lite`` and ``matih_flink`` from (a checkout or site-packages)."""
    roots = []
    for name in ("matih_lite", "matih_flink"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            root = str(Path(spec.origin).resolve().parent.parent)
            if root not in roots:
                roots.append(root)
    return roots


def parse_ms(text: str, what: str) -> int:
    """``500ms``, ``10s``, ``2m``, ``1h`` in milliseconds. Raises ValueError naming ``what``."""
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    value = str(text).strip()
    for unit in ("ms", "s", "m", "h"):
        if value.endswith(unit) and value[: -len(unit)].strip().isdigit():
            return int(value[: -len(unit)]) * units[unit]
    raise ValueError(f"{what} must be a duration like 500ms, 10s or 2m, not {text!r}")


class FlinkDriftRunner:
    """The drift slot's runner over a PyFlink job (see the module docstring)."""

    stream_engine = "flink"

    def __init__(self, settings: Any, context: BackendContext) -> None:
        self.settings = settings
        self.context = context
        self.work_dir = context.resolve(settings.work_dir) if settings.work_dir else context.home / "flink"
        self.plan: DriftPlan | None = None
        self.kafka: Any = None
        self.job: Any = None
        self.env: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._java: tuple[int | None, str] | None = None
        self._targets_signature: str | None = None
        self._position: dict[int, int] | None = None
        self._caught_up = False
        self.status: dict[str, Any] = {"phase": "not started", "restarts": 0, "failures": 0, "last_error": None,
                                       "recorded": 0, "replayed": 0, "results": 0, "last_window": None,
                                       "next_restart_at": None, "targets": 0}
        self._streams: Any = None
        self._operated_spec: dict[str, Any] | None = None
        """The job's spec as the runner would start it, in operator mode (what the clock follows)."""

    # ---- streaming inference (the StreamJobEngine contract) -------------------------------------
    @property
    def streams(self) -> Any:
        if self._streams is None:
            from matih_flink.environment import flink_env
            from matih_flink.streaming import FlinkStreamJobs

            def env() -> Any:
                if self.env is None:
                    self.env = flink_env(self.settings.environment or None, build=self.settings.build)
                if not self.env.ready:
                    raise RuntimeError(f"the Flink environment is not ready: {self.env.missing()}")
                return self.env

            def held() -> bool:
                plan = self.plan
                return bool(plan.held()) if plan is not None and plan.held is not None else True

            self._streams = FlinkStreamJobs(self.work_dir, self.settings, env, held=held)
        return self._streams

    def start_stream_job(self, plan: Any) -> dict[str, Any]:
        events = dict(getattr(plan, "events", None) or {})
        if events.get("backend") != "kafka":
            raise ValueError(f"a Flink stream job reads its requests from Kafka, but the events slot is "
                             f"{events.get('backend') or 'unset'!r}: set events = {{ backend = \"kafka\", ... }}")
        major, line = self.java()
        if major is None or major < 11:
            raise ValueError(f"Java 11+ is needed for Flink: {line}")
        return self.streams.start(plan)

    def update_stream_job(self, plan: Any) -> None:
        self.streams.update(plan)

    def stop_stream_job(self, group: str, *, drain: bool = True) -> bool:
        return self._streams.stop(group, drain=drain) if self._streams is not None else False

    def stream_jobs(self) -> list[dict[str, Any]]:
        return self._streams.list() if self._streams is not None else []

    # ---- the contract -------------------------------------------------------------------------
    def health(self) -> Health:
        """Java, the environment, and the job: running (with its last checkpoint), or failed and when it restarts."""
        failing = self._streams.failing() if self._streams is not None else []
        if failing:
            name, status = failing[0]
            when = status.get("next_restart_at")
            again = f"; restarting in {max(when - time.time(), 0):.0f} s" if when else ""
            return Health(False, f"stream job {name} {status['phase']}: {status['last_error']}{again} "
                                 f"({status['failures']} failures)")
        if not self.settings.enabled:
            return Health(True, "disabled ([profiles.*.drift] enabled = false): no drift job runs")
        if self.operated:
            status = self.status
            if status["phase"] == "error":
                return Health(False, f"drift results not read: {status['last_error']}")
            last = status["last_window"]
            return Health(True, f"drift job run by the Flink operator; {status['targets']} deployments watched, "
                                f"{status['recorded']} windows recorded"
                                + (f", last {last['deployment']} to {last['end']}" if last else ""))
        major, line = self.java()
        if major is None or major < 11:
            return Health(False, f"Java 11+ is needed for Flink: {line}")
        from matih_flink.environment import resolve

        env = self.env or resolve(self.settings.environment or None)
        status = self.status
        if not env.ready and status["phase"] != "building the Flink environment":
            if not self.settings.build:
                return Health(False, f"the Flink environment is not ready: {env.missing()} (build = false)")
            if self.plan is None:
                return Health(True, f"{line}; the Flink environment will be built at start in {env.root}")
        if self.plan is None:
            return Health(True, f"{line}; PyFlink environment {env.root}; not started")
        phase = status["phase"]
        if status["last_error"] and phase in ("failed", "restarting", "error"):
            when = status.get("next_restart_at")
            again = f"; restarting in {max(when - time.time(), 0):.0f} s" if when else ""
            return Health(False, f"drift job {phase}: {status['last_error']}{again} "
                                 f"({status['failures']} failures)")
        if phase == "standby":
            return Health(True, "standby: another replica holds the drift duty and runs the drift job")
        job = self.job
        detail = f"drift job {phase}"
        if job is not None and job.alive():
            overview = job.overview()
            if overview is not None:
                detail = f"drift job {overview.get('state', '?').lower()}"
        detail += (f"; {status['targets']} deployments watched, {status['recorded']} windows recorded, "
                   f"{status['restarts']} restarts")
        return Health(True, detail)

    def start(self, plan: DriftPlan) -> None:
        """Begin supervising the drift job (returns at once); idempotent while running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self.plan = plan
            if not self.settings.enabled:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(plan,), name="matih-flink-drift", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the job with a savepoint, record what it published, stop supervising; idempotent."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=180)

    def close(self) -> None:
        self.stop()
        if self._streams is not None:
            self._streams.close()
        if self.kafka is not None:
            self.kafka.close()

    @property
    def operated(self) -> bool:
        """Whether the Flink operator runs the drift job (``mode = "operator"``), not this runner."""
        return self.settings.mode == "operator"

    # ---- what `drift jobs` shows --------------------------------------------------------------
    def jobs(self) -> list[dict[str, Any]]:
        """The Flink jobs this runner supervises: state, last checkpoint, lag per topic, last window."""
        streams = [{**j, "kind": "predict", "lag": {j["source"]: j["lag"]}} for j in self.stream_jobs()]
        if self.operated and self._operated_spec is not None:
            spec = self._operated_spec
            try:
                lag: dict[str, Any] = self.kafka.lag(spec["group"], list(spec["topics"]))
            except Exception as exc:  # the brokers are away: the listing still answers
                lag = {"error": f"{type(exc).__name__}: {exc}"}
            return [{"name": "matih-drift", "kind": "drift", "state": "OPERATOR", "phase": self.status["phase"],
                     "pid": None, "job_id": None, "started_at": None, "restored_from": None, "last_checkpoint": None,
                     "lag": lag, "last_window": self.status["last_window"], "recorded": self.status["recorded"],
                     "restarts": 0, "last_error": self.status["last_error"]}, *streams]
        job = self.job
        if job is None:
            return streams
        overview = job.overview() if job.alive() else None
        state = (overview or {}).get("state") or ("STOPPED" if not job.alive() else "STARTING")
        lag: dict[str, Any] = {}
        if self.kafka is not None and job.spec:
            try:
                lag = self.kafka.lag(job.spec["group"], list(job.spec["topics"]))
            except Exception as exc:  # the brokers are away: the listing still answers
                lag = {"error": f"{type(exc).__name__}: {exc}"}
        return [{"name": job.name, "kind": "drift", "state": state, "phase": self.status["phase"], "pid": job.pid,
                 "job_id": job.job_id,
                 "started_at": int(job.started_at * 1000) if job.started_at else None,
                 "restored_from": job.restored_from, "last_checkpoint": job.last_checkpoint(), "lag": lag,
                 "last_window": self.status["last_window"], "recorded": self.status["recorded"],
                 "restarts": self.status["restarts"], "last_error": self.status["last_error"]}, *streams]

    def java(self) -> tuple[int | None, str]:
        if self._java is None:
            from matih_flink.environment import java_version

            self._java = java_version(self.settings.java)
        return self._java

    # ---- the supervisor -----------------------------------------------------------------------
    def _run(self, plan: DriftPlan) -> None:
        from matih_lite.threads import lower_priority

        lower_priority()
        try:
            self._prepare(plan)
        except Exception as exc:  # no Kafka, no environment: said in health, nothing else to do
            self.status.update(phase="error", last_error=f"{type(exc).__name__}: {exc}")
            log.exception("the flink drift runner cannot start")
            return
        backoff = self.settings.restart_backoff_seconds
        next_targets = 0.0
        last_tick = 0.0
        leader = True
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_targets and plan.held is not None:
                    leader = self._lead(plan)
                if not leader:
                    next_targets = max(next_targets, now + self.settings.poll_seconds)
                    self._stop.wait(0.2)
                    continue
                if now - last_tick >= 1.0:
                    self._tick()
                    last_tick = now
                self._record(plan)
                if now >= next_targets:
                    self._follow_targets(plan)
                    next_targets = now + self.settings.poll_seconds
                job = self.job
                if job is not None and not job.alive() and self.status["phase"] == "running":
                    self.status["failures"] += 1
                    self.status.update(phase="failed", last_error=f"the job exited with {job.returncode()}: "
                                                                  f"{job.log_tail(6)[-600:]}")
                    self.status["next_restart_at"] = time.time() + backoff
                    log.warning("flink drift job died (%s); restarting in %.1f s", job.returncode(), backoff)
                if self.status["phase"] == "failed" and time.time() >= (self.status["next_restart_at"] or 0):
                    self.status["phase"] = "restarting"
                    self._start_job(plan, restart=True)
                    backoff = min(backoff * 2, self.settings.max_backoff_seconds)
                elif self.status["phase"] == "running" and job is not None and job.started_at and \
                        time.time() - job.started_at > 60:
                    backoff = self.settings.restart_backoff_seconds  # it has stayed up: start over from the first
            except Exception as exc:  # the supervisor outlives any one failure (brokers away, say)
                self.status["last_error"] = f"{type(exc).__name__}: {exc}"
                log.warning("flink drift runner: %s", self.status["last_error"])
            self._stop.wait(0.2)
        self._shutdown(plan)

    def _lead(self, plan: DriftPlan) -> bool:
        """Whether this replica holds the drift duty; the job runs only on the one that does (stopped here, with
        a savepoint, when another takes it: that one starts it from there)."""
        held = bool(plan.held()) if plan.held is not None else True
        if held and self.status["phase"] == "standby":
            log.info("flink drift runner: this replica holds the drift duty now; starting the job")
            self._targets_signature = None  # start the job afresh (from the newest savepoint or checkpoint)
            self.status["phase"] = "waiting for deployments"
        elif not held and self.status["phase"] != "standby":
            if self.job is not None and self.job.alive():
                log.info("flink drift runner: another replica holds the drift duty; stopping the job here")
                self.job.stop(drain=True)
            self.status["phase"] = "standby"
        return held

    def _prepare(self, plan: DriftPlan) -> None:
        from matih_flink.environment import flink_env
        from matih_flink.kafka import KafkaSide

        events = dict(plan.events or {})
        if events.get("backend") != "kafka":
            raise RuntimeError(f"the flink drift runner reads the inference log from Kafka, but the events slot is "
                               f"{events.get('backend') or 'unset'!r}: set events = {{ backend = \"kafka\", "
                               "bootstrap_servers = \"...\" }} in the same profile")
        self.kafka = KafkaSide(events["bootstrap_servers"], events.get("topic_prefix", ""), events.get("client"))
        if self.operated:  # the job runs elsewhere: only its topics are needed here
            s = self.settings
            self.topics = {"results": self.kafka.topic(s.results_topic), "alerts": self.kafka.topic(s.alerts_topic),
                           "clock": self.kafka.topic(s.clock_topic)}
            self.kafka.ensure_topics(self.topics.values())
            self.status["phase"] = "waiting for deployments"
            return
        self.status["phase"] = "building the Flink environment"
        self.env = flink_env(self.settings.environment or None, build=self.settings.build)
        if not self.env.ready:
            raise RuntimeError(f"the Flink environment is not ready: {self.env.missing()}")
        s = self.settings
        self.topics = {"results": self.kafka.topic(s.results_topic), "alerts": self.kafka.topic(s.alerts_topic),
                       "clock": self.kafka.topic(s.clock_topic)}
        self.kafka.ensure_topics(self.topics.values())
        self.status["phase"] = "waiting for deployments"

    def _tick(self) -> None:
        """One clock record: the wall clock once the job has read every watched topic to its end, before
        that the time of the oldest record it has not checkpointed past (so the clock never carries the
        watermark past a backlog the job is still reading, which would drop that backlog as late)."""
        if self.operated:
            spec = self._operated_spec
            if spec is None:
                return
        else:
            job = self.job
            if job is None or not job.alive() or not job.spec:
                return
            spec = job.spec
        now = int(time.time() * 1000)
        stamp = now if self._caught_up else self._backlog_time(spec, now)
        self.kafka.produce(self.topics["clock"], {"timestamp": stamp, "tick": True})
        self.kafka.flush(2.0)

    def _backlog_time(self, spec: dict[str, Any], now: int) -> int:
        """The timestamp of the oldest record past the job's committed offsets, over its watched topics;
        ``now`` (and caught up from then on) when there is none. Read from the records themselves, not
        from end offsets (tansu's high watermark can stop short of the last record)."""
        topics = list(spec["topics"])
        committed = self.kafka.committed(spec["group"], topics)
        oldest = None
        for topic in topics:
            parts = self.kafka.partitions(topic)
            if spec.get("start_from") == "latest" and not any((topic, p) in committed for p in parts):
                continue  # a first start from the end: what is there now is not read at all
            start = {p: committed.get((topic, p), 0) for p in parts}
            for _, _, record in self.kafka.read(topic, start, limit=len(start), wait_s=0.2):
                ts = record.get("timestamp")
                if isinstance(ts, (int, float)) and (oldest is None or ts < oldest):
                    oldest = int(ts)
        if oldest is None:
            self._caught_up = True
            log.info("flink drift job: every watched topic read; the clock follows the wall clock")
            return now
        return min(oldest, now)

    def _follow_targets(self, plan: DriftPlan) -> None:
        targets = plan.targets() if plan.targets is not None else []
        self.status["targets"] = len(targets)
        signature = json.dumps(targets, sort_keys=True, default=str)
        if signature == self._targets_signature:
            return
        first = self._targets_signature is None
        self._targets_signature = signature
        self._targets = targets
        if not targets:
            if self.job is not None:
                self.job.stop(drain=True)
            self.status["phase"] = "waiting for deployments"
            return
        if not first:
            log.info("flink drift job: the watched deployments changed; restarting it from a savepoint")
        self._start_job(plan, restart=not first)

    def _spec(self, plan: DriftPlan) -> dict[str, Any]:
        s, kafka = self.settings, self.kafka
        topics: dict[str, dict[str, str]] = {}
        targets: dict[str, dict[str, Any]] = {}
        for t in self._targets:
            key = f"{t['tenant']}/{t['deployment']}"
            targets[key] = t
            topics[kafka.topic(t["stream"])] = {"key": key, "kind": "inference"}
            topics[kafka.topic(t["labels"])] = {"key": key, "kind": "labels"}
        kafka.ensure_topics(topics)
        skip = [r["key"] for r in kafka.tail(self.topics["results"], SKIP_TAIL) if isinstance(r.get("key"), str)]
        lateness = parse_ms(s.allowed_lateness, "allowed_lateness")
        return {"kind": "drift", "bootstrap_servers": kafka.bootstrap_servers, "topics": topics, "targets": targets,
                "clock_topic": self.topics["clock"], "results_topic": self.topics["results"],
                "alerts_topic": self.topics["alerts"], "group": f"{kafka.prefix}{JOB_GROUP}",
                "lateness_ms": lateness, "idle_ms": parse_ms(s.idle_timeout, "idle_timeout"),
                "micro_batch_ms": parse_ms(s.micro_batch, "micro_batch"),
                "checkpoint_ms": parse_ms(s.checkpoint_interval, "checkpoint_interval"),
                "service_url": s.service_url, "kernel": plan.kernel, "skip_keys": skip,
                "parallelism": s.parallelism, "start_from": s.start_from}

    def _start_job(self, plan: DriftPlan, *, restart: bool) -> None:
        from matih_flink.jobs import FlinkJob

        if self.operated:  # the operator runs it (re-render the manifests when the deployments change)
            self._operated_spec = self._spec(plan)
            self._caught_up = False
            self.status.update(phase="running", next_restart_at=None)
            return
        if self.job is not None and self.job.alive():
            self.job.stop(drain=True)
        spec = self._spec(plan)
        tokens = {t["tenant"]: plan.token(t["tenant"]) for t in self._targets} if plan.token else {}
        job = FlinkJob("matih-drift", "matih_flink.job.drift_job", self.env, self.work_dir / "drift",
                       python_path=source_roots(), environ={"MATIH_DRIFT_TOKENS": json.dumps(tokens)})
        job.start(spec)
        self.job = job
        self._caught_up = False  # a (re)started job may have a backlog to read first: see _tick
        if restart:
            self.status["restarts"] += 1
        self.status.update(phase="running", next_restart_at=None)

    def _record(self, plan: DriftPlan) -> None:
        """Hand every window report the job published since the last call to ``plan.record``."""
        kafka, topic = self.kafka, self.topics["results"]
        if self._position is None:
            committed = kafka.committed(f"{kafka.prefix}{RECORDER_GROUP}", [topic])
            self._position = {p: committed.get((topic, p), 0) for p in kafka.partitions(topic)}
        records = kafka.read(topic, self._position, limit=5000, wait_s=0.05)
        if not records:
            return
        for partition, offset, record in records:
            self.status["results"] += 1
            report = record.get("report")
            if isinstance(report, dict):
                if plan.record(report) is None:
                    self.status["replayed"] += 1
                else:
                    self.status["recorded"] += 1
                self.status["last_window"] = {"deployment": report.get("deployment"), "window": report.get("window"),
                                              "end": report.get("end"), "status": report.get("status")}
            self._position[partition] = offset + 1
        kafka.commit(f"{kafka.prefix}{RECORDER_GROUP}", {(topic, p): o for p, o in self._position.items()})

    def _shutdown(self, plan: DriftPlan) -> None:
        job = self.job
        if job is not None and job.alive():
            self.status["phase"] = "stopping"
            job.stop(drain=True)
        try:
            if self.kafka is not None and self._position is not None:
                for _ in range(3):
                    self._record(plan)
        except Exception:
            log.exception("flink drift runner: the last results were not recorded (they will be at the next start)")
        self.status["phase"] = "stopped"
