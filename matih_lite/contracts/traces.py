"""MLflow 3's traces in the metadata slot: what a traced call recorded, minus its spans.

A :class:`TraceInfo` is one trace of an experiment: when the request came, how long it ran, its
state, short previews of its request and response, its tags (mutable) and metadata (written
when it starts), and the :class:`Assessment` records (feedback, expectations) people and judges
attach to it. The spans themselves are a file in the artifacts slot, under the trace's folder;
every rule (ids, limits, what MLflow's filter means, where the spans live) is the tracking
domain's (:mod:`matih_lite.tracking.traces`).

Scoped by tenant like the rest of the slot; times are milliseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

import msgspec

from matih_lite.contracts.records import Page

TRACE_STATES = ("OK", "ERROR", "IN_PROGRESS", "STATE_UNSPECIFIED")
"""A trace's state, as MLflow's ``TraceInfoV3.State``."""
TRACE_COLUMNS = ("trace_id", "request_time", "execution_duration", "end_time", "state", "client_request_id")
"""The attributes a :class:`TraceClause` or :class:`TraceOrder` may name (``end_time`` is request time + duration)."""


class Assessment(msgspec.Struct):
    """Feedback, an expectation or an issue attached to a trace (or one of its spans).

    ``body`` is the kind's own part as JSON text (a feedback's ``{"value": ..., "error": ...}``,
    an expectation's ``{"value": ...}`` or ``{"serialized_value": ...}``), kept as sent.
    """

    assessment_id: str
    trace_id: str
    name: str
    kind: Literal["feedback", "expectation", "issue"]
    body: str = "{}"
    source_type: str = "SOURCE_TYPE_UNSPECIFIED"
    source_id: str = ""
    span_id: str | None = None
    rationale: str | None = None
    error: str | None = None
    """JSON text of an assessment-level error, when the assessment could not be made."""
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    overrides: str | None = None
    """The id of the assessment this one replaces (which becomes invalid)."""
    valid: bool = True
    create_time: int = 0
    last_update_time: int = 0


class TraceInfo(msgspec.Struct):
    """One trace of an experiment, without its spans."""

    trace_id: str
    tenant: str
    experiment_id: str
    request_time: int
    execution_duration: int | None = None
    state: str = "OK"
    client_request_id: str | None = None
    request_preview: str | None = None
    response_preview: str | None = None
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    assessments: list[Assessment] = msgspec.field(default_factory=list)
    """In the order they were created."""


class TraceClause(msgspec.Struct, frozen=True):
    """``kind.key op value``: an attribute of :data:`TRACE_COLUMNS`, or a tag's or a metadata entry's value.

    ``op`` is ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` (times, and text), ``LIKE``, ``ILIKE``,
    ``IN``, ``NOT IN`` (``value`` a tuple), ``IS NULL`` or ``IS NOT NULL`` (tags and metadata:
    the key is absent or present). A tag or metadata clause holds when the trace has the key and
    its value compares true.
    """

    kind: Literal["attribute", "tag", "metadata"]
    key: str
    op: str
    value: int | str | tuple[str, ...] | None = None


class TraceOrder(msgspec.Struct, frozen=True):
    """Order by an attribute of :data:`TRACE_COLUMNS`, or by a tag's or a metadata entry's value (absent last)."""

    kind: Literal["attribute", "tag", "metadata"]
    key: str
    ascending: bool = True


@runtime_checkable
class TraceStore(Protocol):
    """Methods every metadata backend provides for traces and their assessments; scoped by tenant."""

    def start_trace(self, trace: TraceInfo) -> TraceInfo:
        """Store a trace with its tags, metadata and assessments; the tenant's own trace of that id is updated
        (its fields replaced, tags and metadata merged: a client's retry). Raises NotFound for the experiment
        (one of ``trace.tenant``'s), Conflict when another tenant holds the id."""

    def get_trace(self, tenant: str, trace_id: str) -> TraceInfo:
        """The trace with its tags, metadata and assessments. Raises NotFound."""

    def get_traces(self, tenant: str, trace_ids: Sequence[str]) -> list[TraceInfo]:
        """The tenant's traces among ``trace_ids``, in that order; ids it does not hold are left out."""

    def search_traces(
        self, tenant: str, experiment_ids: Sequence[str], *, clauses: Sequence[TraceClause] = (),
        order_by: Sequence[TraceOrder] = (), max_results: int = 100, page_token: str | None = None,
    ) -> Page[TraceInfo]:
        """Traces of the experiments holding every clause; by ``order_by``, then newest request first, then id.
        Raises InvalidInput on a bad page token or clause."""

    def delete_traces(
        self, tenant: str, experiment_id: str, *, trace_ids: Sequence[str] | None = None,
        max_request_time: int | None = None, max_traces: int | None = None,
    ) -> list[str]:
        """Delete the experiment's traces named (or older than ``max_request_time``, the oldest ``max_traces``
        of them); returns the ids deleted, with their tags, metadata and assessments."""

    def set_trace_tags(self, tenant: str, trace_id: str, tags: Mapping[str, str]) -> None:
        """Upsert tags. Raises NotFound."""

    def delete_trace_tag(self, tenant: str, trace_id: str, key: str) -> None:
        """Raises NotFound for the trace or the tag."""

    def create_assessment(self, tenant: str, assessment: Assessment) -> Assessment:
        """Store it (a time of 0 means now); the one it ``overrides`` becomes invalid in the same write.
        Raises NotFound for the trace or the overridden assessment, Conflict on a taken id."""

    def get_assessment(self, tenant: str, trace_id: str, assessment_id: str) -> Assessment:
        """Raises NotFound."""

    def update_assessment(self, tenant: str, assessment: Assessment) -> Assessment:
        """Replace the stored assessment's name, body, rationale, error, metadata and validity; stamps its
        update time. Raises NotFound."""

    def delete_assessment(self, tenant: str, trace_id: str, assessment_id: str) -> None:
        """Delete it; the one it overrode is valid again. Raises NotFound."""
