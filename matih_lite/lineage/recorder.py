"""Platform events -> lineage edges: the recorder one host's events are told to.

``on_event`` receives only the event, and a plugin module is shared by every host in the
process (tests build many; an embedded SDK session and a service may live side by side).
So the recorder is not the module: :func:`attach_recorder` registers one
:class:`LineageRecorder` *object*, holding its host, in that host's own plugin manager. The
host's ``emit`` then reaches it like any plugin, and it writes to that host's store. No
globals, no host smuggled through ``PlatformEvent.data`` (events stay plain data that can be
stored and sent to Kafka).

Who attaches it: the ml-service, through the built-in plugin's ``startup`` hook
(:mod:`matih_lite.lineage.plugin`); embedded, every :class:`~matih_lite.lineage.Lineage`
built on a host (``ml.log_input``, the lineage CLI, model cards). Blocking the built-in
plugin (``pm.set_blocked("matih_lite.lineage.plugin")``) turns automatic recording off.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from matih_lite.hookspecs import hookimpl

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.lineage")

PLUGIN = "matih_lite.lineage.plugin"
"""The built-in plugin that asks for recording; when it is blocked, nothing is attached."""
RECORDER = "matih_lite.lineage.recorder"
"""The name a host's recorder is registered under (one per plugin manager)."""

VERSION_EVENTS = ("model.version.created", "model.version.registered")
DEPLOYMENT_EVENTS = ("deployment.created", "deployment.updated", "deployment.promoted", "deployment.rolled_back",
                     "deployment.version_changed")


def attach_recorder(host: Host) -> LineageRecorder | None:
    """Make ``host``'s events record lineage (idempotent); None when the built-in plugin is blocked."""
    pm = getattr(host, "pm", None)
    if pm is None:
        return None
    existing = pm.get_plugin(RECORDER)
    if existing is not None:
        return existing
    if pm.get_plugin(PLUGIN) is None:
        return None
    recorder = LineageRecorder(host)
    try:
        pm.register(recorder, name=RECORDER)
    except ValueError:  # another thread attached one meanwhile
        return pm.get_plugin(RECORDER)
    return recorder


def detach_recorder(host: Host) -> None:
    pm = getattr(host, "pm", None)
    if pm is not None and pm.get_plugin(RECORDER) is not None:
        pm.unregister(name=RECORDER)


class LineageRecorder:
    """Records the edges a platform event implies, into its host's metadata store."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @hookimpl
    def on_event(self, event: Any) -> None:
        record_event(self.host, event)

    def __repr__(self) -> str:
        return f"<LineageRecorder of {getattr(self.host, 'profile', '?')} host>"


def record_event(host: Host, event: Any) -> None:
    """The lineage a platform event implies, recorded through ``host`` (other events are ignored).

    ``model.version.registered`` (the registry's; ``data``: ``name``, ``version``, ``run_id``,
    ``source``, ``flavor``) links the run to the version; ``model.version.transitioned`` keeps
    the version node's ``stage``; ``deployment.*`` (``data``: ``deployment``, ``model``,
    ``version``; the serving work's, later) links the version to the deployment.
    """
    from matih_lite.lineage.service import Lineage

    etype = getattr(event, "type", "")
    data = getattr(event, "data", None) or {}
    tenant = getattr(event, "tenant", None) or "default"
    if etype in VERSION_EVENTS:
        model, version = _model_version(event, data)
        if model and version:
            lineage = Lineage(host, attach=False)
            props = {k: data[k] for k in ("source", "flavor", "stage") if isinstance(data.get(k), str)}
            lineage.record_version(tenant, data.get("run_id") or None, model, version, properties=props)
    elif etype in DEPLOYMENT_EVENTS or (etype.startswith("deployment.") and "version" in data):
        model, version = _model_version(event, data, subject_is_model=False)
        deployment = data.get("deployment") or data.get("deployment_name") or getattr(event, "subject", "")
        if model and version and deployment:
            Lineage(host, attach=False).record_deployment(tenant, model, version, str(deployment),
                                                          properties={"event": etype})
    elif etype.startswith("model.version.") and ("stage" in data or "to" in data):
        model, version = _model_version(event, data)
        if model and version:
            lineage = Lineage(host, attach=False)
            key = f"model:{model}/{version}"
            if key in lineage.store.get_lineage_nodes(tenant, [key]):
                stage = data.get("to") or data.get("stage")
                lineage.record_node(tenant, key, properties={"stage": str(stage)})


def _model_version(event: Any, data: dict[str, Any], *,
                   subject_is_model: bool = True) -> tuple[str | None, str | None]:
    """(model, version) from the event's data, else from a ``name/version`` subject."""
    model = data.get("model") or data.get("model_name") or data.get("name")
    version = data.get("version")
    if (not model or version is None) and subject_is_model:
        subject = str(getattr(event, "subject", "") or "")
        head, sep, tail = subject.rpartition("/")
        if sep and tail:
            model, version = model or head, version if version is not None else tail
    return (str(model) if model else None), (str(version) if version is not None else None)
