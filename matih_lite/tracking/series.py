"""A run's metric at chart resolution: at most one bucket per pixel, each keeping its min and max.

:func:`metric_series` asks the metadata store for the buckets when it can answer them itself
(``metric_buckets``: the SQL stores keep per-block summaries, so a million points answer in
milliseconds) and otherwise reads the history and buckets it here, with the same function
(:func:`matih_lite.contracts.series.bucket_points`), so every store gives the same shape.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import msgspec

from matih_lite.contracts.series import AXES, MAX_BUCKETS, SeriesBucket, bucket_points, check_buckets
from matih_lite.errors import InvalidInput


@runtime_checkable
class MetricBuckets(Protocol):
    """What a metadata store implements to bucket series itself (optional; see the module docstring)."""

    def metric_buckets(self, tenant: str, run_id: str, key: str, *, buckets: int = 1000, axis: str = "step",
                       lo: int | None = None, hi: int | None = None) -> tuple[int, list[SeriesBucket]]:
        """(points in ``lo..hi``, at most ``buckets`` buckets). Raises NotFound for the run."""


class MetricSeries(msgspec.Struct):
    """One run's metric as columns, ready for a chart (``None`` where a bucket holds only NaNs)."""

    run_id: str
    key: str
    axis: str
    points: int
    """Points in the range asked for; more than ``len(x)`` when downsampled."""
    downsampled: bool
    x: list[int]
    x_end: list[int]
    count: list[int]
    min: list[float | None]
    max: list[float | None]
    mean: list[float | None]


def _finite(v: float | None) -> float | None:
    # JSON has no infinities: an infinite min or max is drawn at the chart's edge, so None would hide it;
    # the largest finite double keeps its side.
    if v is None or math.isnan(v):
        return None
    if math.isinf(v):
        return math.copysign(1.7976931348623157e308, v)
    return v


def metric_series(tracking: Any, tenant: str, run_id: str, key: str, *, buckets: int = 1000, axis: str = "step",
                  lo: int | None = None, hi: int | None = None) -> MetricSeries:
    """``run_id``'s metric ``key`` in at most ``buckets`` buckets of x (step, or time in ms) over ``lo..hi``.

    Raises NotFound for the run, InvalidInput for an axis other than step or time or a bucket count
    outside 1..4000. A metric the run never logged is an empty series.
    """
    if axis not in AXES:
        raise InvalidInput(f"axis must be one of {', '.join(AXES)}, not {axis!r}", detail={"field": "axis"})
    try:
        check_buckets(buckets)
    except ValueError:
        raise InvalidInput(f"points must be an integer from 1 to {MAX_BUCKETS}, got {buckets!r}",
                           detail={"field": "points"}) from None
    if lo is not None and hi is not None and lo > hi:
        raise InvalidInput(f"the range is empty: lo ({lo}) is after hi ({hi})", detail={"field": "lo"})
    store = tracking.store
    if isinstance(store, MetricBuckets):
        points, out = store.metric_buckets(tenant, run_id, key, buckets=buckets, axis=axis, lo=lo, hi=hi)
    else:
        history = tracking.metric_history(tenant, run_id, key).items
        xs = [m.step if axis == "step" else m.timestamp for m in history]
        out = bucket_points(xs, [m.value for m in history], buckets, lo=lo, hi=hi)
        points = sum(b.points for b in out)
    return MetricSeries(run_id, key, axis, points, any(b.points > 1 for b in out), [b.x for b in out],
                        [b.x_end for b in out], [b.points for b in out], [_finite(b.min) for b in out],
                        [_finite(b.max) for b in out], [_finite(b.mean) for b in out])
