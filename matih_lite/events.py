"""Platform events: what happened, to what, when. Recorded and told to every ``on_event`` hook."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec


class PlatformEvent(msgspec.Struct, frozen=True):
    """``type`` is dotted (``run.finished``, ``model.promoted``, ``drift.detected``)."""

    type: str
    subject: str
    tenant: str = "default"
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    timestamp: int = msgspec.field(default_factory=lambda: int(time.time() * 1000))
    event_id: str = msgspec.field(default_factory=lambda: uuid.uuid4().hex)
