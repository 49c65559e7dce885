"""The records the metadata slot stores and returns. Plain data; no behaviour."""

from __future__ import annotations

import base64
import json
from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")

RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
LIFECYCLE_STAGES = ("active", "deleted")


class Health(msgspec.Struct, frozen=True):
    """What every backend's ``health()`` returns: ``ok`` and one line a person can act on."""

    ok: bool
    detail: str = ""


class Metric(msgspec.Struct, frozen=True):
    """One point of a metric. ``value`` may be NaN or +-inf; stores keep them exactly."""

    key: str
    value: float
    timestamp: int  # milliseconds since the epoch
    step: int = 0


class Experiment(msgspec.Struct):
    experiment_id: str
    tenant: str
    name: str
    description: str = ""
    artifact_location: str = ""
    lifecycle_stage: str = "active"
    creation_time: int = 0
    last_update_time: int = 0
    tags: dict[str, str] = msgspec.field(default_factory=dict)


class Run(msgspec.Struct):
    """A run with its params, tags and the latest value of each metric."""

    run_id: str
    experiment_id: str
    tenant: str
    name: str
    status: str
    start_time: int
    end_time: int | None = None
    lifecycle_stage: str = "active"
    parent_run_id: str | None = None
    artifact_uri: str = ""
    user_id: str = ""
    params: dict[str, str] = msgspec.field(default_factory=dict)
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    metrics: dict[str, Metric] = msgspec.field(default_factory=dict)


class Page(msgspec.Struct, Generic[T]):
    """One page of a listing; pass ``next_token`` back to get the next, ``None`` at the end."""

    items: list[T]
    next_token: str | None = None


def encode_page_token(offset: int) -> str:
    """The opaque token for the page starting at ``offset``."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    """The offset a page token stands for (0 for none). Raises InvalidInput for a token we did not issue."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode() + b"==="))["offset"]
        if isinstance(offset, int) and offset >= 0:
            return offset
    except (ValueError, KeyError, TypeError):
        pass
    from matih_lite.errors import InvalidInput

    raise InvalidInput(f"invalid page token {token[:40]!r}; pass back the next_token of a previous page")
