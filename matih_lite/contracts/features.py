"""The features slot: parsed feature definitions, the requests a backend answers, and its contract.

The domain (:mod:`matih_lite.features`) parses the ``*.toml`` files of the repo folder, checks
them against their sources, versions them in the metadata slot (:class:`FeatureDefinitionStore`)
and hands a backend the applied :class:`FeatureDefinitions` with every call; a backend never
parses or keeps definitions of its own (the Feast backend mirrors them into a Feast registry).
Rules that must answer the same whatever the backend -- time-to-live against the clock online,
on-demand views, feature references, statuses -- live in the domain, above the contract.

Times crossing the contract are integer **microseconds since the epoch, UTC**. Tables are
``pyarrow`` objects (``Table`` or ``RecordBatchReader``); pyarrow loads only when one is built.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from matih_lite.contracts.records import Health

DTYPES: tuple[str, ...] = ("float64", "float32", "int64", "int32", "string", "bool", "timestamp")
"""Value types a feature (or a join key) may declare."""

PRESENT = "PRESENT"
"""An online value that exists and is younger than its view's ttl."""
NOT_FOUND = "NOT_FOUND"
"""No online row for that entity (the value is null), as Feast says it."""
OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"
"""An online row older than its view's ttl, judged against the clock (the value is null)."""

PushTarget = Literal["online", "offline", "online_and_offline"]


class Feature(msgspec.Struct, frozen=True):
    """A named, typed column of a feature view (or an on-demand view's output, or request data)."""

    name: str
    dtype: str


class Entity(msgspec.Struct, frozen=True):
    """What features describe; several join keys make a composite entity."""

    name: str
    join_keys: tuple[str, ...]
    dtypes: dict[str, str] = {}
    """Each join key's type: declared, else read from the sources at apply."""
    description: str = ""
    tags: dict[str, str] = {}


class Source(msgspec.Struct, frozen=True):
    """Rows of features over time: a parquet or CSV file, or a DuckDB query."""

    name: str
    format: Literal["parquet", "csv", "query"]
    timestamp_field: str
    location: str = ""
    """The file's absolute path (``path`` resolved against the repo folder); empty for a query."""
    path: str = ""
    """The path as written in the definitions."""
    query: str = ""
    created_timestamp_field: str | None = None
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = {}


class PushSource(msgspec.Struct, frozen=True):
    """Fresh rows written through the API; ``batch_source`` holds the same rows offline."""

    name: str
    batch_source: str
    description: str = ""


class FeatureView(msgspec.Struct, frozen=True):
    """Features of one entity (or several) read from one source, usable for ``ttl_seconds`` after their event time."""

    name: str
    entities: tuple[str, ...]
    join_keys: tuple[str, ...]
    """The join keys of ``entities``, in order."""
    source: str
    """The batch source (for a view fed by a push source, that source's ``batch_source``)."""
    features: tuple[Feature, ...]
    ttl_seconds: int = 0
    """0: values never expire."""
    push_source: str | None = None
    online: bool = True
    owner: str = ""
    description: str = ""
    tags: dict[str, str] = {}

    def feature(self, name: str) -> Feature | None:
        """The feature called ``name``, or None."""
        for f in self.features:
            if f.name == name:
                return f
        return None


class OnDemandView(msgspec.Struct, frozen=True):
    """Features computed by ``function`` (``module:function``) from other views' features and request data."""

    name: str
    function: str
    sources: tuple[str, ...]
    """Feature views whose features the function reads (all of each view's features)."""
    features: tuple[Feature, ...]
    request_schema: tuple[Feature, ...] = ()
    mode: Literal["pandas", "python"] = "pandas"
    owner: str = ""
    description: str = ""
    tags: dict[str, str] = {}

    def feature(self, name: str) -> Feature | None:
        """The output called ``name``, or None."""
        for f in self.features:
            if f.name == name:
                return f
        return None


class FeatureService(msgspec.Struct, frozen=True):
    """A named set of feature references (``view:feature``), what a model consumes."""

    name: str
    features: tuple[str, ...]
    owner: str = ""
    description: str = ""
    tags: dict[str, str] = {}


class FeatureDefinitions(msgspec.Struct, frozen=True):
    """Everything declared in one repo folder, parsed and checked; what a backend is handed."""

    project: str
    """The namespace of this tenant's features in the backend (a Feast project name)."""
    root: str = ""
    """The repo folder (absolute); on-demand functions import from it."""
    entities: dict[str, Entity] = {}
    sources: dict[str, Source] = {}
    push_sources: dict[str, PushSource] = {}
    feature_views: dict[str, FeatureView] = {}
    on_demand_views: dict[str, OnDemandView] = {}
    services: dict[str, FeatureService] = {}
    files: dict[str, str] = {}
    """Where each object was declared: ``"feature_views.customer_stats" -> "customer.toml"``."""

    def document(self) -> dict[str, Any]:
        """The definitions as plain JSON data (what the metadata slot stores)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @property
    def digest(self) -> str:
        """sha256 of the definitions that change answers (not where they were written down)."""
        doc = self.document()
        doc.pop("files", None)
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> FeatureDefinitions:
        """The definitions back from :meth:`document`. Raises msgspec.ValidationError when malformed."""
        return msgspec.convert(doc, cls)


# ---- requests and answers --------------------------------------------------------------------------
class ViewSelection(msgspec.Struct, frozen=True):
    """Some features of one feature view."""

    view: str
    features: tuple[str, ...]


class HistoricalRequest(msgspec.Struct, frozen=True):
    """A point-in-time join: entity rows (a table, or a parquet/CSV file read as a stream), or, with
    neither, every entity having rows with ``start <= event time <= end``, each joined as of ``end``."""

    views: tuple[ViewSelection, ...]
    entities: Any = None
    """A ``pyarrow.Table`` with the join keys and ``timestamp_column`` (UTC; naive means UTC)."""
    entity_path: str | None = None
    timestamp_column: str = "event_timestamp"
    start: int | None = None
    end: int | None = None
    full_feature_names: bool = False
    """Name output columns ``view__feature`` instead of ``feature``."""


class OnlineRow(msgspec.Struct, frozen=True, array_like=True):
    """One entity's stored online values: its event time (µs) and the requested features' values, in order."""

    event_ts: int
    values: tuple[Any, ...]


class DefinitionVersion(msgspec.Struct, frozen=True):
    """One applied version of a tenant's feature definitions."""

    tenant: str
    version: int
    digest: str
    document: dict[str, Any]
    actor: str
    created_at: int
    """Milliseconds since the epoch."""


class DefinitionChange(msgspec.Struct, frozen=True):
    """One object an apply added, changed or removed, with the fields that differ (``{field: [old, new]}``)."""

    action: Literal["added", "changed", "removed"]
    kind: str
    """``entities``, ``sources``, ``push_sources``, ``feature_views``, ``on_demand_views`` or ``services``."""
    name: str
    diff: dict[str, Any] = {}


class FeatureAuditEntry(msgspec.Struct, frozen=True):
    """A change an apply recorded: which version, who, when (ms), what."""

    entry_id: int
    tenant: str
    version: int
    actor: str
    timestamp: int
    change: DefinitionChange


class Materialization(msgspec.Struct, frozen=True):
    """One materialization of a view: the event-time interval copied (µs) and the rows written."""

    tenant: str
    view: str
    start: int
    end: int
    rows: int
    at: int
    """Milliseconds since the epoch."""


# ---- contracts -------------------------------------------------------------------------------------
@runtime_checkable
class FeatureDefinitionStore(Protocol):
    """What the metadata slot keeps for features, per tenant (another tenant's records are never visible)."""

    def put_feature_definitions(self, tenant: str, document: dict[str, Any], *, digest: str, actor: str, at: int,
                                changes: Sequence[DefinitionChange],
                                expected_version: int | None = None) -> DefinitionVersion:
        """Record the next version and one audit entry per change, all or nothing. Raises Conflict when
        ``expected_version`` is given and is not the latest version (0: none yet)."""

    def get_feature_definitions(self, tenant: str, version: int | None = None) -> DefinitionVersion:
        """The latest version (or ``version``). Raises NotFound."""

    def latest_feature_definition_version(self, tenant: str) -> int:
        """The latest version number, 0 when none (a cheap check that a cached version is still current)."""

    def list_feature_definition_versions(self, tenant: str) -> list[DefinitionVersion]:
        """Every version, newest first, without their documents (``document`` is ``{}``)."""

    def feature_audit(self, tenant: str, *, name: str | None = None,
                      max_results: int = 1000) -> list[FeatureAuditEntry]:
        """Audit entries newest first, only those of objects called ``name`` when given."""

    def record_materialization(self, tenant: str, view: str, *, start: int, end: int, rows: int,
                               at: int) -> Materialization:
        """Remember that ``view`` was materialized over ``[start, end]``."""

    def materializations(self, tenant: str, view: str | None = None, *,
                         max_results: int = 100) -> list[Materialization]:
        """Materializations newest first (by ``end``, then ``at``), only ``view``'s when given."""

    def claim_feature_alert(self, tenant: str, view: str, feature: str, window: str, bucket: int, at: int) -> bool:
        """True the first time (view, feature, window, bucket) is claimed, False ever after: alerts go out once."""


@runtime_checkable
class FeatureStore(Protocol):
    """Offline point-in-time retrieval, materialization and the online store, over applied definitions."""

    def health(self) -> Health:
        """Whether the offline and online stores answer; never raises."""

    def apply(self, definitions: FeatureDefinitions, previous: FeatureDefinitions | None) -> None:
        """Get ready to serve ``definitions``, dropping what only ``previous`` had. Raises InvalidInput, StoreError."""

    def historical(self, definitions: FeatureDefinitions, request: HistoricalRequest) -> Any:
        """The join as a ``pyarrow.RecordBatchReader``: one row per entity row, in their order, entity columns
        first. Raises InvalidInput (a source missing or of the wrong type), StoreError."""

    def materialize(self, definitions: FeatureDefinitions, view: str, start: int, end: int) -> int:
        """Copy each entity's newest row with ``start <= event time <= end`` online unless a newer one is
        there; returns the entities written. Raises InvalidInput, StoreError."""

    def read_online(self, definitions: FeatureDefinitions, view: str, keys: Sequence[tuple[Any, ...]],
                    features: Sequence[str]) -> list[OnlineRow | None]:
        """Each key's stored row (None when absent), in the order given. Raises StoreError."""

    def write_online(self, definitions: FeatureDefinitions, view: str, rows: Any) -> int:
        """Upsert a ``pyarrow.Table`` (join keys, the source's timestamp field, features) unless newer rows are
        held; returns rows written. Raises InvalidInput, StoreError."""

    def write_offline(self, definitions: FeatureDefinitions, push_source: str, rows: Any) -> int:
        """Append a ``pyarrow.Table`` of pushed rows to the push source's offline rows. Raises InvalidInput,
        StoreError."""

    def scan(self, definitions: FeatureDefinitions, view: str, start: int | None, end: int | None,
             limit: int) -> Any:
        """At most ``limit`` rows (``pyarrow.Table``: ``event_ts`` µs, then the features) with
        ``start <= event time < end``, newest first. Raises InvalidInput, StoreError."""

    def event_time_range(self, definitions: FeatureDefinitions, view: str) -> tuple[int, int, int] | None:
        """(oldest, newest event time, rows) of the view's source; None when it has none. Raises InvalidInput."""

    def close(self) -> None:
        """Release connections and files (idempotent)."""
