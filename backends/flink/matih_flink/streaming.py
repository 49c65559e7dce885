"""Streaming inference on Flink: a deployment's :class:`~matih_lite.contracts.stream_jobs.StreamJobPlan` run as
the PyFlink job :mod:`matih_flink.job.predict_job` over the Kafka events backend's topics.

:class:`FlinkStreamJob` writes the job's spec from the plan (topics with the events backend's prefix, the
routes' bucket bounds, the consumer group, the checkpoint settings) and supervises one
:class:`~matih_flink.jobs.FlinkJob`: ``start`` (restoring from the job's newest checkpoint or savepoint, so a
restarted job goes on where its last checkpoint left it, skipping the requests the sink already answers
(``answered_through``: the last source offset answered; on a one-partition topic, which keeps the order)),
``stop`` (with a savepoint), ``describe``.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from matih_lite.contracts.stream_jobs import StreamJobPlan, StreamRoute, bucket_bounds

SKIP_TAIL = 20_000
"""Answers read back from the sink's end at each (re)start: the requests a restarted job must not answer again."""
GROUP_SUFFIX = ".flink"
"""The Flink job's own consumer group beside the in-process consumer's (its offsets go with its checkpoints)."""


def _plan_dict(plan: StreamJobPlan | dict[str, Any]) -> dict[str, Any]:
    return asdict(plan) if is_dataclass(plan) else dict(plan)


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

    def spec(self) -> dict[str, Any]:
        from matih_flink.kafka import KafkaSide

        if self.kafka is None:
            self.kafka = KafkaSide(self.events["bootstrap_servers"], self.events.get("topic_prefix", ""),
                                   self.events.get("client"))
        kafka, plan = self.kafka, self.plan
        topics = {"source": kafka.topic(plan["source"]), "sink": kafka.topic(plan["sink"]),
                  "log": kafka.topic(plan["inference_log"])}
        kafka.ensure_topics(topics.values())
        # Answers this job wrote after its last checkpoint are read again from there: skip what the sink holds.
        answered = [r.get("source_offset") for r in kafka.tail(topics["sink"], SKIP_TAIL)
                    if r.get("consumer") == plan["group"] and r.get("source") == (plan.get("source_label") or
                                                                                  plan["source"])]
        answered = [int(o) for o in answered if isinstance(o, (int, float)) and not isinstance(o, bool)]
        partitions = max(len(kafka.partitions(topics["source"])), 1)
        routes = [StreamRoute(**{**r, "feature_names": tuple(r.get("feature_names") or ())}) for r in plan["routes"]]
        return {"kind": "predict", "plan": plan, "bounds": bucket_bounds(routes),
                "bootstrap_servers": kafka.bootstrap_servers, "source_topic": topics["source"],
                "sink_topic": topics["sink"], "log_topic": topics["log"],
                "partitions": partitions,
                "group": f"{kafka.prefix}{plan['group']}{GROUP_SUFFIX}", "checkpoint_ms": self.checkpoint_ms,
                "answered_through": max(answered) if answered and partitions == 1 else -1,
                "start_from": self.start_from, "parallelism": self.parallelism, "bundle_ms": 50,
                "bundle_size": 1000}

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
                "last_checkpoint": job.last_checkpoint() if job is not None else None,
                "restored_from": job.restored_from if job is not None else None}

    def close(self) -> None:
        self.stop()
        if self.kafka is not None:
            self.kafka.close()
