"""The feature store: definitions declared once in files, point-in-time training data, the latest values online.

Declare entities, sources, feature views, on-demand views and feature services in ``*.toml`` files in
the repo folder of the profile (``features = { backend = "duckdb", repo = "features" }``; see
:mod:`matih_lite.features.definitions` for the shape), then ``matih-lite features plan`` and
``matih-lite features apply``. From Python::

    from matih_lite import features

    train = features.get_historical_features(labels, feature_service="churn_v1")   # pandas in, pandas out
    features.materialize("2025-01-01", "2025-02-01")
    online = features.get_online_features([{"customer_id": 5}], features=["customer_stats:conv_rate"])
    online.to_dict()   # {"customer_id": [5], "conv_rate": [0.42]}

**Point in time.** For each entity row, each view gives its newest row with ``event time <= the row's
time`` and ``>= that time - ttl``; ties on event time go to the newest created timestamp; a row with no
such feature row keeps nulls; every entity column is carried through, one output row per input row.
Timestamps are UTC; naive ones are taken as UTC.

**Online.** A value older than its view's ttl, judged against the clock, comes back null with status
``OUTSIDE_MAX_AGE`` (Feast's SQLite store would serve it as ``PRESENT``), so serving agrees with the
point-in-time training data; an unknown entity comes back null with ``NOT_FOUND``.

Each function works on this folder's platform, or through the ml-service at ``MATIH_URL`` (with
``MATIH_TOKEN``) when that is set; pass ``client=`` to use one of your own
(:class:`~matih_lite.features.client.FeatureClient`). Names load lazily: importing this package loads
neither pyarrow nor duckdb.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["FeatureClient", "Features", "apply", "get_historical_features", "get_online_features", "materialize",
           "materialize_incremental", "plan", "push"]

_default: Any = None
_default_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name == "FeatureClient":
        from matih_lite.features.client import FeatureClient

        return FeatureClient
    if name == "Features":
        from matih_lite.features.service import Features

        return Features
    raise AttributeError(f"module 'matih_lite.features' has no attribute {name!r}")


def _client(client: Any) -> Any:
    global _default
    if client is not None:
        return client
    with _default_lock:
        if _default is None:
            from matih_lite.features.client import FeatureClient

            _default = FeatureClient()
            atexit.register(_default.close)
        return _default


def get_historical_features(entity_df: Any = None, features: Sequence[str] | None = None, *,
                            feature_service: str | None = None, timestamp_column: str = "event_timestamp",
                            start: Any = None, end: Any = None, full_feature_names: bool = False,
                            client: Any = None) -> Any:
    """Point-in-time correct ``features`` (``["view:feature", ...]``) or ``feature_service`` joined onto
    ``entity_df`` (pandas or Arrow; the same kind comes back), or, without it, every entity's values as of
    ``end`` for those with rows between ``start`` and ``end`` (Arrow). Raises InvalidInput naming what is wrong."""
    return _client(client).historical(entity_df, features, feature_service, timestamp_column=timestamp_column,
                                      start=start, end=end, full_feature_names=full_feature_names)


def get_online_features(entity_rows: Any, features: Sequence[str] | None = None, *,
                        feature_service: str | None = None, full_feature_names: bool = False,
                        client: Any = None) -> Any:
    """The materialized values of each entity (``[{"customer_id": 5}]`` or ``{"customer_id": [5, 6]}``) as an
    :class:`~matih_lite.features.retrieval.OnlineFeatures` (``to_dict()``, ``to_df()``, ``statuses``)."""
    return _client(client).online(entity_rows, features, feature_service, full_feature_names=full_feature_names)


def materialize(start: Any, end: Any, views: Sequence[str] | None = None, *, client: Any = None) -> dict[str, int]:
    """Copy each entity's newest row with ``start <= event time <= end`` online; returns rows per view."""
    return _client(client).materialize(start, end, views)


def materialize_incremental(end: Any, views: Sequence[str] | None = None, *, client: Any = None) -> dict[str, Any]:
    """Materialize each view from where it last ended (or ``end - ttl``) up to ``end``."""
    return _client(client).materialize_incremental(end, views)


def push(push_source: str, rows: Any, to: str = "online", *, client: Any = None) -> int:
    """Write fresh rows through a push source: ``online``, ``offline`` or ``online_and_offline``."""
    return _client(client).push(push_source, rows, to)


def plan(*, client: Any = None) -> dict[str, Any]:
    """What ``apply`` would change."""
    return _client(client).plan()


def apply(*, client: Any = None) -> dict[str, Any]:
    """Record the repo folder's definitions as the next version (all or nothing)."""
    return _client(client).apply()
