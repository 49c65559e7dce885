"""What a streaming-inference job running outside the service (a Flink job) is handed: plain data only.

The serving domain builds a :class:`StreamJobPlan` for one deployment (``matih_lite.serving.stream_plan``):
where the requests are read and the predictions written (the events backend's stored topic names), the
deployment's routes as of the job's start, and, per routed version, the folder of its verified model files
and its flavor. A backend runs it without importing the domain; :func:`sticky_bucket` is the very hash the
service's router uses (``matih_lite.serving.routing.bucket_of`` calls it), so a request key meets the same
variant in the job as over HTTP.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

BUCKETS = 10_000
"""Sticky routing resolution: weights are honoured to 0.01 %."""


def sticky_bucket(deployment: str, key: str) -> int:
    """The sticky bucket (0..9999) of a request key in a deployment: the same key, the same bucket."""
    digest = hashlib.blake2b(f"{deployment}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True)
class StreamRoute:
    """One routed version of the deployment: its weight (percent), its model files and flavor."""

    variant: str
    version: int
    weight: float
    model_dir: str
    """The materialized (checksum-verified) model folder, as the serving slot loads it."""
    flavor: str
    """The flavor name (``onnx`` runs in the job through onnxruntime)."""
    feature_names: tuple[str, ...] = ()
    """The input column names the inference log records the row's features under (``f0``... when empty)."""
    loader: str = ""
    """``module:Class`` of the flavor the service loads this version with; a job runs a non-ONNX version with
    it (``load(folder, options)``, the predictor the in-process backend calls), from the verified folder."""


@dataclass(frozen=True)
class StreamJobPlan:
    """One deployment's streaming inference, as data (see the module docstring)."""

    tenant: str
    deployment: str
    model: str
    source: str
    """The stored topic name of the requests (``tenant_stream``), as the events backend names it."""
    sink: str
    group: str
    """The consumer group, as the in-process consumer names it (one per tenant, deployment and group)."""
    inference_log: str
    """The deployment's inference-log stream (``inference.<deployment>``, tenant-qualified)."""
    log_name: str
    """The ``deployment`` field of its inference-log records (``TENANT.NAME`` outside the default tenant)."""
    routes: tuple[StreamRoute, ...]
    events: dict[str, Any] = field(default_factory=dict)
    """The events slot as the profile configures it (``{"backend": "kafka", "bootstrap_servers": ...}``)."""
    source_label: str = ""
    """The ``source`` field of each prediction record (the in-process consumer writes the stored topic name)."""
    revision: int = 0
    """When the routes were read (ms): a running job takes a plan with newer routes, never an older one."""
    shadows: tuple[StreamRoute, ...] = ()
    """The deployment's shadow versions (weight 0): each answered request's copy goes to every one, its answer
    logged to the inference log as a shadow's (``shadow`` true, the request's id) and never to the sink."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bucket_bounds(routes: tuple[StreamRoute, ...] | list[StreamRoute]) -> list[int]:
    """The upper bucket bound of each live route (weight > 0), as the service's ``TrafficSplit`` makes them."""
    bounds, total = [], 0.0
    for r in routes:
        if r.weight > 0:
            total += r.weight
            bounds.append(round(total * BUCKETS / 100))
    if bounds:
        bounds[-1] = BUCKETS
    return bounds


def routes_signature(routes: tuple[StreamRoute, ...] | list[StreamRoute]) -> tuple[tuple[str, int, float], ...]:
    """What a route change changes: each live route's variant, version and weight."""
    return tuple((r.variant, int(r.version), float(r.weight)) for r in routes if r.weight > 0)


def traffic_signature(routes: Any, shadows: Any) -> tuple[tuple[tuple[str, int, float], ...], tuple[int, ...]]:
    """What a job must follow: the live routes' :func:`routes_signature` and the shadow versions (``shadows``:
    version numbers or :class:`StreamRoute` s)."""
    return routes_signature(routes), tuple(int(getattr(v, "version", v)) for v in shadows)


@runtime_checkable
class StreamJobEngine(Protocol):
    """A backend that runs a deployment's streaming inference as a job of its own (``predict stream start
    --engine NAME``): the Flink drift runner is one. The serving domain hands it plans and keeps the record of
    which jobs run (the service starts them again when it restarts); the engine runs, supervises (a failed job
    restarted with a backoff, and reported by its ``health``) and stops them.
    """

    stream_engine: str
    """The ``--engine`` name (``flink``)."""

    def start_stream_job(self, plan: StreamJobPlan) -> dict[str, Any]:
        """Run ``plan`` (returns at once; idempotent for a running job of the same ``group``), going on from
        the job's last checkpoint; returns :meth:`stream_jobs`' entry for it. Raises ValueError for a plan it
        cannot run (the events slot is not one it reads, a flavor it cannot load)."""

    def update_stream_job(self, plan: StreamJobPlan) -> None:
        """New routes (and shadows) for the running job of ``plan.group``: it answers with them from now on,
        without a restart. Raises KeyError when no such job runs."""

    def stop_stream_job(self, group: str, *, drain: bool = True) -> bool:
        """Stop the job of ``group`` (with a savepoint when ``drain``); False when none ran."""

    def stream_jobs(self) -> list[dict[str, Any]]:
        """Each job: ``group``, ``deployment``, ``source``, ``sink``, ``state``, ``running``, ``lag`` (requests
        not yet committed), ``consumed``/``predicted``/``failed`` (None when the engine cannot say),
        ``last_checkpoint``, ``restarts``, ``last_error``, ``routes``."""
