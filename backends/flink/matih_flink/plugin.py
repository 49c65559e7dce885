"""``drift = { backend = "flink", ... }``: drift windows (and streaming inference) as PyFlink jobs over Kafka.

The settings are validated without importing PyFlink or confluent-kafka: the runner loads its clients when it
starts, and the jobs run in the PyFlink environment's own Python (:mod:`matih_flink.environment`).

``GET /api/v1/drift/jobs`` (the core's) lists the runner's Flink jobs through :meth:`FlinkDriftRunner.jobs`
(what ``matih-lite drift jobs`` shows).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from matih_lite.contracts import BackendContext
from matih_lite.hookspecs import hookimpl

_DURATION = re.compile(r"^\s*\d+\s*(ms|s|m|h)\s*$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class FlinkDriftSettings(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    """False: no job runs (checks still run on demand)."""
    mode: str = "local"
    """``local``: the runner starts the drift job itself, a PyFlink mini-cluster beside the ml-service.
    ``operator``: the Flink Kubernetes operator runs it (the ``FlinkDeployment`` that ``promote --manifests``
    renders); the runner starts no job, only ticks the clock topic and records the results the job publishes."""
    environment: str = ""
    """An existing PyFlink virtualenv (its folder or its ``bin/python``); empty: built once and cached
    (``$MATIH_FLINK_ENV``, else ``~/.cache/matih-lite/flink-env-<hash>``)."""
    build: bool = True
    """Build the environment when it is missing (a few minutes, once); False reports it missing instead."""
    java: str = "java"
    """The Java 11+ runtime Flink runs on."""
    service_url: str = "http://127.0.0.1:8000"
    """The ml-service as the job reaches it (baselines over REST, with the job's token)."""
    work_dir: str = ""
    """Where the jobs keep their specs, checkpoints, savepoints and logs (default ``<state>/flink``)."""
    allowed_lateness: str = "10s"
    """How far behind the newest record (or the clock) the watermark trails: a record later than that is
    dropped as late. A window closes once records or the clock pass its end by this much."""
    idle_timeout: str = "5s"
    """A topic silent this long holds no one's watermark back (the clock topic carries it on)."""
    micro_batch: str = "1s"
    """Event-time slices in which the records of a topic reach the job's Python (one element per slice)."""
    checkpoint_interval: str = "10s"
    parallelism: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    start_from: str = "earliest"
    """Where a job with no checkpoint and no committed offsets starts reading: ``earliest`` or ``latest``."""
    results_topic: str = "drift.results"
    alerts_topic: str = "drift.alerts"
    clock_topic: str = "drift.clock"
    poll_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """How often the runner looks for new deployments (a change restarts the job from a savepoint)."""
    restart_backoff_seconds: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    """The first wait before a failed job is restarted from its latest checkpoint; doubles each time."""
    max_backoff_seconds: Annotated[float, msgspec.Meta(gt=0)] = 120.0

    def __post_init__(self) -> None:
        for name in ("allowed_lateness", "idle_timeout", "micro_batch", "checkpoint_interval"):
            if not _DURATION.match(getattr(self, name)):
                raise ValueError(f"{name} must be a duration like 500ms, 10s or 2m, not {getattr(self, name)!r}")
        for name in ("results_topic", "alerts_topic", "clock_topic"):
            if not _TOPIC.match(getattr(self, name)):
                raise ValueError(f"{name} {getattr(self, name)!r} is not a topic name")
        if self.mode not in ("local", "operator"):
            raise ValueError(f"mode must be 'local' or 'operator', not {self.mode!r}")
        if self.start_from not in ("earliest", "latest"):
            raise ValueError(f"start_from must be 'earliest' or 'latest', not {self.start_from!r}")
        if not self.service_url.startswith(("http://", "https://")):
            raise ValueError(f"service_url must be an http(s) URL, not {self.service_url!r}")


def create_runner(settings: FlinkDriftSettings, context: BackendContext) -> Any:
    from matih_flink.runner import FlinkDriftRunner

    return FlinkDriftRunner(settings, context)


@hookimpl
def register_backends(register):
    register("drift", "flink", create_runner, settings=FlinkDriftSettings,
             summary="a PyFlink job over the Kafka inference log; reports recorded by the ml-service")
