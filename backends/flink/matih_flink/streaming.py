"""Streaming inference on Flink: a deployment's :class:`~matih_lite.contracts.stream_jobs.StreamJobPlan` run as
the PyFlink job :mod:`matih_flink.job.predict_job` over the Kafka events backend's topics.

:class:`FlinkStreamJob` writes the job's spec from the plan (topics with the events backend's prefix, the
routes' bucket bounds, the consumer group, the checkpoint settings) and supervises one
:class:`~matih_flink.jobs.FlinkJob`: ``start`` (restoring from the job's newest checkpoint or savepoint, so a
restarted job goes on where its last checkpoint left it, skipping the requests the sink already answers
(``answered_through``: the last source offset answered; on a one-partition topic, which keeps the order)),
``stop`` (with a savepoint), ``describe``, and ``update`` (new routes or shadows, written to the control topic
the running job reads: applied without a restart). Shadow versions answer a copy of each request into the
inference log only (``shadow`` true), as the service's shadows do.

:class:`FlinkStreamJobs` is the drift runner's :class:`~matih_lite.contracts.stream_jobs.StreamJobEngine` side:
the deployments' jobs by consumer group, started from a supervisor thread (the environment is built there the
first time), a job that died restarted from its last checkpoint with a doubling backoff and reported
meanwhile, each one's lag and counts (the job's own metrics over Flink's REST API).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from matih_lite.contracts.stream_jobs import StreamJobPlan, StreamRoute, bucket_bounds

log = logging.getLogger("matih_flink.streaming")

CONTROL_TOPIC = "matih.stream.control"
"""Where route changes are published to the running jobs (one record per change, keyed by the job's group)."""
METRICS = ("consumed", "predicted", "failed", "shadowed", "shadow_failed")
"""The job's counters: requests read, answered, answered with an error; shadow answers logged, shadow failures."""

SKIP_TAIL = 20_000
"""Answers read back from the sink's end at each (re)start: the requests a restarted job must not answer again."""
GROUP_SUFFIX = ".flink"
"""The Flink job's own consumer group beside the in-process consumer's (its offsets go with its checkpoints)."""


def _plan_dict(plan: StreamJobPlan | dict[str, Any]) -> dict[str, Any]:
    return asdict(plan) if is_dataclass(plan) else dict(plan)


def _with_traffic(plan: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``plan`` with ``new``'s routes, shadows and revision (what a running job follows)."""
    return {**plan, "routes": new["routes"], "shadows": new.get("shadows") or [], "revision": new["revision"]}


class FlinkStreamJob:
    """One deployment's streaming-inference job (see the module docstring)."""

    def __init__(self, plan: StreamJobPlan | dict[str, Any], work_dir: str | Path, *, env: Any = None,
                 checkpoint_interval: str = "10s", start_from: str = "earliest", parallelism: int = 1) -> None:
        from matih_flink.runner import parse_ms

        self.plan = _plan_dict(plan)
        events = dict(self.plan.get("events") or {})
        if events.get("backend") != "kafka":
            raise ValueError(f"a Flink stream job reads its requests from Kafka, but the events slot is "
                             f"{events.get('backend') or 'unset'!r}: set events = {{ backend = \"kafka\", ... }}")
        if start_from not in ("earliest", "latest"):
            raise ValueError(f"start_from must be 'earliest' or 'latest', not {start_from!r}")
        self.events = events
        self.env = env
        self.checkpoint_ms = parse_ms(checkpoint_interval, "checkpoint_interval")
        self.start_from = start_from
        self.parallelism = parallelism
        self.name = f"matih-predict-{self.plan['tenant']}-{self.plan['deployment']}-{self.plan['group']}"
        self.folder = Path(work_dir) / "predict" / f"{self.plan['tenant']}.{self.plan['group']}"
        self.job: Any = None
        self.kafka: Any = None

    def _routes(self) -> list[StreamRoute]:
        return [StreamRoute(**{**r, "feature_names": tuple(r.get("feature_names") or ())}) for r in self.plan["routes"]]

    def spec(self) -> dict[str, Any]:
        from matih_flink.kafka import KafkaSide

        if self.kafka is None:
            self.kafka = KafkaSide(self.events["bootstrap_servers"], self.events.get("topic_prefix", ""),
                                   self.events.get("client"))
        kafka, plan = self.kafka, self.plan
        topics = {"source": kafka.topic(plan["source"]), "sink": kafka.topic(plan["sink"]),
                  "log": kafka.topic(plan["inference_log"]), "control": kafka.topic(CONTROL_TOPIC)}
        kafka.ensure_topics(topics.values())
        # Answers this job wrote after its last checkpoint are read again from there: skip what the sink holds.
        answered = [r.get("source_offset") for r in kafka.tail(topics["sink"], SKIP_TAIL)
                    if r.get("consumer") == plan["group"] and r.get("source") == (plan.get("source_label") or
                                                                                  plan["source"])]
        answered = [int(o) for o in answered if isinstance(o, (int, float)) and not isinstance(o, bool)]
        partitions = max(len(kafka.partitions(topics["source"])), 1)
        return {"kind": "predict", "plan": plan, "bounds": bucket_bounds(self._routes()),
                "bootstrap_servers": kafka.bootstrap_servers, "source_topic": topics["source"],
                "sink_topic": topics["sink"], "log_topic": topics["log"], "control_topic": topics["control"],
                "partitions": partitions,
                "group": f"{kafka.prefix}{plan['group']}{GROUP_SUFFIX}", "checkpoint_ms": self.checkpoint_ms,
                "answered_through": max(answered) if answered and partitions == 1 else -1,
                "start_from": self.start_from, "parallelism": self.parallelism,
                # Each request is answered on its own; short bundles and buffers keep end-to-end times to tens
                # of milliseconds, but too short ones cost both ways. 10 ms bundles (scripts/bench/flink_stream.py,
                # 2 cores): 5,758-6,801 predictions/s, p99 84-88 ms at 1,000/s; 5 ms ones flushed so often that
                # they did worse on both (4,820-5,461/s, p99 131-194 ms).
                "bundle_ms": 10, "bundle_size": 1000, "buffer_timeout_ms": 5, "linger_ms": 1, "fetch_wait_ms": 10}

    def start(self, *, restore: bool = True) -> None:
        """Start the job (returns at once), from its newest checkpoint or savepoint when ``restore``."""
        from matih_flink.environment import flink_env
        from matih_flink.jobs import FlinkJob
        from matih_flink.runner import source_roots

        if self.env is None:
            self.env = flink_env()
        if not self.env.ready:
            raise RuntimeError(f"the Flink environment is not ready: {self.env.missing()}")
        if self.job is not None and self.job.alive():
            return
        spec = self.spec()
        self.job = FlinkJob(self.name, "matih_flink.job.predict_job", self.env, self.folder,
                            python_path=source_roots())
        self.job.start(spec, restore=restore)

    def alive(self) -> bool:
        return self.job is not None and self.job.alive()

    def update(self, plan: StreamJobPlan | dict[str, Any]) -> bool:
        """Publish ``plan``'s routes to the running job (it takes them without a restart: see the job's
        control topic); a later start begins with them. False when they are the routes it has already."""
        new = _plan_dict(plan)
        if int(new.get("revision") or 0) <= int(self.plan.get("revision") or 0):
            return False
        self.plan = _with_traffic(self.plan, new)
        if self.kafka is None:
            self.spec()
        change = {"group": self.plan["group"], "revision": self.plan["revision"], "routes": self.plan["routes"],
                  "shadows": self.plan["shadows"], "bounds": bucket_bounds(self._routes()),
                  "timestamp": int(time.time() * 1000)}
        self.kafka.produce(self.kafka.topic(CONTROL_TOPIC), change)
        self.kafka.flush(5.0)
        return True

    def counts(self) -> dict[str, int | None]:
        """The job's own counters (requests consumed, predicted, failed since it started), None when it
        cannot say (not running, or its REST API not up yet)."""
        out: dict[str, int | None] = dict.fromkeys(METRICS)
        job = self.job
        if job is None or not job.alive() or (job.job_id is None and job.overview() is None):
            return out
        try:
            for vertex in (job.rest(f"/jobs/{job.job_id}") or {}).get("vertices", []):
                path = f"/jobs/{job.job_id}/vertices/{vertex['id']}/metrics"
                names = [m["id"] for m in job.rest(path) or [] if m.get("id", "").endswith(
                    tuple(f"matih_{n}" for n in METRICS))]
                if not names:
                    continue
                for m in job.rest(f"{path}?get={','.join(names)}") or []:
                    metric = m["id"].rsplit("matih_", 1)[-1]
                    out[metric] = (out[metric] or 0) + int(float(m.get("value") or 0))
        except (OSError, ValueError, KeyError):
            return dict.fromkeys(METRICS)
        if any(v is not None for v in out.values()):
            # PyFlink reports a counter once it has counted: one not listed yet by a job that reports is 0.
            out = {k: v or 0 for k, v in out.items()}
        return out

    def stop(self, *, drain: bool = True) -> str | None:
        """Stop the job (with a savepoint when ``drain``); returns the savepoint, if one was written."""
        if self.job is None:
            return None
        return self.job.stop(drain=drain)

    def kill(self) -> None:
        """End the job's processes at once (what a crash does): the next start goes on from its last checkpoint."""
        if self.job is not None:
            self.job.kill()

    def describe(self) -> dict[str, Any]:
        job = self.job
        overview = job.overview() if job is not None and job.alive() else None
        state = (overview or {}).get("state") or ("STOPPED" if not self.alive() else "STARTING")
        return {"name": self.name, "kind": "predict", "engine": "flink", "deployment": self.plan["deployment"],
                "source": self.plan["source"], "sink": self.plan["sink"], "group": self.plan["group"],
                "state": state, "pid": job.pid if job is not None else None,
                "routes": [{k: r[k] for k in ("variant", "version", "weight")} for r in self.plan["routes"]],
                "shadows": [{k: r[k] for k in ("variant", "version")} for r in self.plan.get("shadows") or ()],
                "last_checkpoint": job.last_checkpoint() if job is not None else None,
                "restored_from": job.restored_from if job is not None else None,
                "revision": self.plan.get("revision")}

    def close(self) -> None:
        self.stop()
        if self.kafka is not None:
            self.kafka.close()


class FlinkStreamJobs:
    """The deployments' streaming-inference jobs of one drift runner (see the module docstring)."""

    def __init__(self, work_dir: Path, settings: Any, env_factory: Any, *, held: Any = None) -> None:
        self.work_dir = Path(work_dir)
        self.settings = settings
        self.env_factory = env_factory
        self.held = held
        """``held()``: whether this replica holds the drift duty; jobs run only where it is held (None: here)."""
        self.leader = True
        self.jobs: dict[str, FlinkStreamJob] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, plan: StreamJobPlan | dict[str, Any]) -> dict[str, Any]:
        data = _plan_dict(plan)
        for route in [*data["routes"], *(data.get("shadows") or ())]:
            if route["flavor"] != "onnx" and not route.get("loader"):
                raise ValueError(f"version {route['version']} is a {route['flavor']!r} model with no flavor class "
                                 "named to load it: the Flink job cannot run it")
        group = data["group"]
        with self._lock:
            found = self.jobs.get(group)
            if found is None:
                found = self.jobs[group] = FlinkStreamJob(
                    data, self.work_dir, checkpoint_interval=self.settings.checkpoint_interval,
                    start_from=self.settings.start_from, parallelism=self.settings.parallelism)
                phase = "starting" if self.leader else "standby"
                self.status[group] = {"phase": phase, "restarts": 0, "failures": 0, "last_error": None,
                                      "next_restart_at": None, "backoff": self.settings.restart_backoff_seconds}
            elif int(data.get("revision") or 0) > int(found.plan.get("revision") or 0):
                found.plan = _with_traffic(found.plan, data)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="matih-flink-streams", daemon=True)
                self._thread.start()
        self._wake.set()
        return self.describe(group)

    def update(self, plan: StreamJobPlan | dict[str, Any]) -> None:
        data = _plan_dict(plan)
        with self._lock:
            job = self.jobs.get(data["group"])
        if job is None:
            raise KeyError(data["group"])
        if job.update(data):
            log.info("stream job %s: routes now %s, shadows %s", job.name,
                     [(r["variant"], r["weight"]) for r in data["routes"] if r["weight"] > 0],
                     [r["variant"] for r in data.get("shadows") or ()])

    def stop(self, group: str, *, drain: bool = True) -> bool:
        with self._lock:
            job = self.jobs.pop(group, None)
            self.status.pop(group, None)
        if job is None:
            return False
        job.stop(drain=drain)
        if job.kafka is not None:
            job.kafka.close()
        log.info("stream job %s stopped", job.name)
        return True

    def describe(self, group: str) -> dict[str, Any]:
        with self._lock:
            job, status = self.jobs[group], dict(self.status.get(group) or {})
        out = job.describe()
        lag: int | None = None
        try:
            if job.kafka is not None:
                spec = job.job.spec if job.job is not None else job.spec()
                lag = job.kafka.lag(spec["group"], [spec["source_topic"]]).get(spec["source_topic"])
        except Exception:  # the brokers are away: the listing still answers
            lag = None
        running = out["state"] == "RUNNING"
        return {**out, "group": job.plan["group"], "running": running, "lag": lag, **job.counts(),
                "phase": status.get("phase"), "restarts": status.get("restarts", 0),
                "failures": status.get("failures", 0), "last_error": status.get("last_error"),
                "next_restart_at": status.get("next_restart_at")}

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            groups = sorted(self.jobs)
        return [self.describe(g) for g in groups if g in self.jobs]

    def failing(self) -> list[tuple[str, dict[str, Any]]]:
        """The jobs that failed and wait for their restart (what health reports)."""
        with self._lock:
            return [(self.jobs[g].name, dict(s)) for g, s in self.status.items()
                    if s["phase"] in ("failed", "error") and g in self.jobs]

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        for group in list(self.jobs):
            self.stop(group, drain=True)

    # ---- the supervisor -------------------------------------------------------------------------
    def _run(self) -> None:
        next_lead = 0.0
        while not self._stop.is_set():
            with self._lock:
                entries = list(self.jobs.items())
            if self.held is not None and time.monotonic() >= next_lead:
                next_lead = time.monotonic() + self.settings.poll_seconds
                self._lead(entries)
            if not self.leader:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            for group, job in entries:
                try:
                    self._supervise(group, job)
                except Exception as exc:  # one job's trouble never stops the others'
                    status = self.status.get(group)
                    if status is not None:
                        status.update(phase="error", last_error=f"{type(exc).__name__}: {exc}",
                                      next_restart_at=time.time() + status["backoff"])
                        status["backoff"] = min(status["backoff"] * 2, self.settings.max_backoff_seconds)
                    log.warning("stream job %s: %s", job.name, exc)
            self._wake.wait(0.5)
            self._wake.clear()

    def _lead(self, entries: list[tuple[str, FlinkStreamJob]]) -> None:
        """Run the jobs only on the replica holding the drift duty: stopped here (with a savepoint) when
        another holds it, started again (from there) when this one takes it."""
        try:
            leader = bool(self.held())
        except Exception:  # the store is away: keep what runs as it is
            return
        if leader == self.leader:
            return
        self.leader = leader
        for group, job in entries:
            status = self.status.get(group)
            if status is None:
                continue
            if not leader:
                if job.alive():
                    job.stop(drain=True)
                status.update(phase="standby", next_restart_at=None)
            else:
                status["phase"] = "starting"
        log.info("stream jobs: %s", "this replica runs them now" if leader else
                 "another replica holds the drift duty and runs them")

    def _supervise(self, group: str, job: FlinkStreamJob) -> None:
        status = self.status.get(group)
        if status is None:
            return
        phase = status["phase"]
        if phase == "starting" or (phase in ("failed", "error") and time.time() >= (status["next_restart_at"] or 0)):
            if job.env is None:
                status["phase"] = "building the Flink environment" if phase == "starting" else phase
                job.env = self.env_factory()
            if phase != "starting":
                status["restarts"] += 1
            job.start(restore=True)
            status.update(phase="running", next_restart_at=None)
            return
        if phase == "running" and not job.alive():
            status["failures"] += 1
            code = job.job.returncode() if job.job is not None else None
            tail = job.job.log_tail(6)[-600:] if job.job is not None else ""
            status.update(phase="failed", last_error=f"the job exited with {code}: {tail}",
                          next_restart_at=time.time() + status["backoff"])
            log.warning("stream job %s died (%s); restarting in %.1f s", job.name, code, status["backoff"])
            status["backoff"] = min(status["backoff"] * 2, self.settings.max_backoff_seconds)
        elif phase == "running" and job.job is not None and job.job.started_at and \
                time.time() - job.job.started_at > 60:
            status["backoff"] = self.settings.restart_backoff_seconds  # it has stayed up: start over from the first
