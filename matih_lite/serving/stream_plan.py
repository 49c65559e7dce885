"""A deployment's streaming inference as a :class:`~matih_lite.contracts.stream_jobs.StreamJobPlan`: the data a
job outside the service (``predict stream start --engine flink``) needs to answer its requests topic.

The routes and shadows are the deployment's as of now (the job follows their changes while it runs); each
routed or shadow version's files are materialized here, checksums verified
(:func:`~matih_lite.serving.materialize.materialize`), and handed to the job as a folder with its flavor, so the
job loads the very files the service would serve.
"""

from __future__ import annotations

import time
from typing import Any

from matih_lite.contracts.stream_jobs import StreamJobPlan, StreamRoute
from matih_lite.errors import InvalidInput
from matih_lite.identity import Principal
from matih_lite.serving.inference_log import inference_stream
from matih_lite.serving.routing import variant_name
from matih_lite.serving.streams import _group_name, stream_spec, tenant_stream
from matih_lite.serving.traffic import inference_log_name


def stream_job_plan(host: Any, principal: Principal, deployment: str, source: str, sink: str, *,
                    group: str | None = None) -> StreamJobPlan:
    """The plan of ``deployment`` answering ``source`` into ``sink``. Raises NotFound (no such deployment),
    InvalidInput (bad names, a deployment that routes no traffic)."""
    from matih_lite.serving.deployments import Deployments

    deployments = Deployments(host)
    spec = stream_spec(deployments, principal, deployment, source, sink, group=group)
    d = deployments.get(principal, deployment)
    live = [r for r in d.routes if r.weight > 0]
    if not live:
        raise InvalidInput(f"deployment {deployment!r} routes no traffic yet: nothing for a stream job to call",
                           detail={"deployment": deployment})
    routes = tuple(_route(host, deployments, principal, d.model, r.variant, r.version, r.weight) for r in live)
    shadows = tuple(_route(host, deployments, principal, d.model, variant_name(v), v, 0.0) for v in d.shadows)
    events = dict(host.selection().get("events") or {})
    src = tenant_stream(principal.tenant, source, "source")
    log_name = inference_log_name(principal.tenant, deployment)
    return StreamJobPlan(tenant=principal.tenant, deployment=deployment, model=d.model, source=src,
                         sink=tenant_stream(principal.tenant, sink, "sink"), group=_group_name(spec),
                         inference_log=inference_stream(log_name), log_name=log_name, routes=routes, shadows=shadows,
                         events=events, source_label=src, revision=time.time_ns() // 1_000_000)


def _route(host: Any, deployments: Any, principal: Principal, model: str, variant: str, version: int,
           weight: float) -> StreamRoute:
    """One version of the plan: its verified folder, flavor, input names and flavor class."""
    from matih_lite.serving import model_load
    from matih_lite.serving.materialize import materialize

    mv = deployments.registry.get_version(principal, model, version)
    folder = materialize(host, principal.tenant, mv)
    load = model_load(host, folder, getattr(mv, "flavor", None), f"stream-plan/{model}/{version}")
    schema = load.input_schema
    names = tuple(schema.names) if schema is not None and schema.kind == "columns" else ()
    loader = type(load.loader) if load.loader is not None else None
    reference = f"{loader.__module__}:{loader.__qualname__}" if loader is not None else ""
    return StreamRoute(variant, int(version), float(weight), str(folder), load.flavor, names, reference)
