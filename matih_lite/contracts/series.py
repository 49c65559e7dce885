"""A metric series at chart resolution: buckets that keep each one's minimum and maximum.

A chart a thousand pixels wide cannot show a million points, and sampling a few hundred of them
(MLflow's 320) hides the spikes people look for. :func:`bucket_points` cuts the x range into
equal buckets and keeps, per bucket, the count, the NaN count, the minimum, the maximum and the
mean: drawn as a band (or a line through min and max), every spike stays visible at any width.

:func:`merge_summaries` does the same from per-block summaries (:class:`SeriesSummary`) that a
store keeps as points arrive, so a long series is bucketed without reading every point.

Both are pure (numpy only) and shared by the stores that answer ``metric_buckets`` and the
tracking domain's fallback for stores that do not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

AXES = ("step", "time")
"""What the x of a point is: its step, or its timestamp (ms)."""
MAX_BUCKETS = 4000


class SeriesBucket(NamedTuple):
    """One bucket of a series: ``x`` and ``x_end`` are the first and last x of its points."""

    x: int
    x_end: int
    points: int
    """Points in the bucket, NaNs included."""
    nans: int
    min: float | None
    """Over the non-NaN points; None when every point is NaN."""
    max: float | None
    mean: float | None


class SeriesSummary(NamedTuple):
    """What a store keeps per block of consecutive points of one series (see :func:`merge_summaries`)."""

    points: int
    nans: int
    min: float | None
    max: float | None
    total: float | None
    """Sum of the non-NaN values (None when all are NaN)."""
    first_step: int
    last_step: int
    first_time: int
    last_time: int


def check_buckets(buckets: int) -> int:
    """``buckets`` as an int in 1..MAX_BUCKETS, or ValueError saying the range."""
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets must be an integer from 1 to {MAX_BUCKETS}, got {buckets!r}")
    return buckets


def bucket_edges(lo: int, hi: int, buckets: int) -> tuple[int, float]:
    """The start and width of ``buckets`` equal buckets covering the integers ``lo..hi``."""
    return lo, max((hi - lo + 1) / buckets, 1.0)


def bucket_index(x: np.ndarray, lo: int, width: float, buckets: int) -> np.ndarray:
    """Which bucket each x falls in (values outside ``lo..`` clip to the first or last bucket)."""
    idx = np.floor((x.astype(np.float64) - lo) / width).astype(np.int64)
    return np.clip(idx, 0, buckets - 1)


def bucket_points(x: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray, buckets: int, *,
                  lo: int | None = None, hi: int | None = None) -> list[SeriesBucket]:
    """Points ``(x, value)`` in at most ``buckets`` equal-width buckets of x over ``lo..hi``.

    ``lo`` and ``hi`` default to the points' own range; points outside them are dropped. Empty
    buckets are left out, so a series of fewer points than buckets comes back point by point
    (count 1, min == max == mean). NaN values are counted, never compared.
    """
    check_buckets(buckets)
    xs = np.asarray(x, dtype=np.int64)
    vs = np.asarray(values, dtype=np.float64)
    if xs.shape != vs.shape:
        raise ValueError("x and values must have the same length")
    if xs.size == 0:
        return []
    lo = int(xs.min()) if lo is None else int(lo)
    hi = int(xs.max()) if hi is None else int(hi)
    keep = (xs >= lo) & (xs <= hi)
    if not keep.all():
        xs, vs = xs[keep], vs[keep]
    if xs.size == 0:
        return []
    order = np.argsort(xs, kind="stable")
    xs, vs = xs[order], vs[order]
    start, width = bucket_edges(lo, hi, buckets)
    idx = bucket_index(xs, start, width, buckets)
    # Boundaries of runs of equal bucket index (xs is sorted, so each bucket is one run).
    cuts = np.flatnonzero(np.diff(idx)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [xs.size]])
    nan = np.isnan(vs)
    finite_v = np.where(nan, 0.0, vs)
    counts = ends - starts
    nans = np.add.reduceat(nan.astype(np.int64), starts)
    with np.errstate(over="ignore", invalid="ignore"):  # sums of huge values overflow to inf: a mean of inf
        sums = np.add.reduceat(finite_v, starts)
    mins = np.minimum.reduceat(np.where(nan, np.inf, vs), starts)
    maxs = np.maximum.reduceat(np.where(nan, -np.inf, vs), starts)
    out = []
    for i in range(starts.size):
        real = int(counts[i] - nans[i])
        out.append(SeriesBucket(
            int(xs[starts[i]]), int(xs[ends[i] - 1]), int(counts[i]), int(nans[i]),
            float(mins[i]) if real else None, float(maxs[i]) if real else None,
            _mean(float(sums[i]), real)))
    return out


def merge_summaries(blocks: Sequence[SeriesSummary], buckets: int, *, axis: str = "step", lo: int | None = None,
                    hi: int | None = None) -> list[SeriesBucket]:
    """Block summaries in at most ``buckets`` equal-width buckets, each block in the bucket of its first x.

    The min and max of every bucket are exact over the blocks assigned to it; a bucket's x range is
    that of its blocks, so at a block boundary a bucket may reach into its neighbour's range by less
    than one block. Blocks wholly outside ``lo..hi`` are dropped.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)}, not {axis!r}")
    nan = math.nan
    columns = np.array([(b.points, b.nans, nan if b.min is None else b.min, nan if b.max is None else b.max,
                         nan if b.total is None else b.total,
                         b.first_step if axis == "step" else b.first_time,
                         b.last_step if axis == "step" else b.last_time) for b in blocks],
                       dtype=np.float64).reshape(-1, 7)
    return merge_block_columns(columns, buckets, lo=lo, hi=hi)


def merge_block_columns(columns: np.ndarray, buckets: int, *, lo: int | None = None,
                        hi: int | None = None) -> list[SeriesBucket]:
    """:func:`merge_summaries` over a float array of rows (count, nans, min, max, total, first x, last x),
    NaN where a summary has no value: what a store builds straight from its query's rows."""
    check_buckets(buckets)
    if columns.size == 0:
        return []
    first, last = columns[:, 5], columns[:, 6]
    lo = int(first.min()) if lo is None else int(lo)
    hi = int(last.max()) if hi is None else int(hi)
    keep = (last >= lo) & (first <= hi)
    if not keep.all():
        columns, first, last = columns[keep], first[keep], last[keep]
    if columns.shape[0] == 0:
        return []
    start, width = bucket_edges(lo, hi, buckets)
    idx = bucket_index(np.maximum(first, lo), start, width, buckets)
    order = np.argsort(idx, kind="stable")
    idx, columns = idx[order], columns[order]
    first, last = columns[:, 5], columns[:, 6]
    cuts = np.flatnonzero(np.diff(idx)) + 1
    starts = np.concatenate([[0], cuts])
    counts = np.add.reduceat(columns[:, 0], starts)
    nans = np.add.reduceat(columns[:, 1], starts)
    mins = np.minimum.reduceat(np.where(np.isnan(columns[:, 2]), np.inf, columns[:, 2]), starts)
    maxs = np.maximum.reduceat(np.where(np.isnan(columns[:, 3]), -np.inf, columns[:, 3]), starts)
    has_total = np.add.reduceat((~np.isnan(columns[:, 4])).astype(np.int64), starts)
    with np.errstate(over="ignore", invalid="ignore"):
        totals = np.add.reduceat(np.where(np.isnan(columns[:, 4]), 0.0, columns[:, 4]), starts)
    x0 = np.minimum.reduceat(first, starts)
    x1 = np.maximum.reduceat(last, starts)
    out = []
    for i in range(starts.size):
        real = int(counts[i] - nans[i])
        out.append(SeriesBucket(int(x0[i]), int(x1[i]), int(counts[i]), int(nans[i]),
                                float(mins[i]) if real else None, float(maxs[i]) if real else None,
                                _mean(float(totals[i]), real) if has_total[i] else None))
    return out


def _mean(total: float | None, n: int) -> float | None:
    if total is None or n <= 0:
        return None
    value = total / n
    return value if not math.isnan(value) else None
