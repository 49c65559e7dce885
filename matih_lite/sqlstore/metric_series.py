"""Metric series at chart resolution over SQL: block summaries kept as points arrive, buckets read from them.

Reading a million points to draw a line a thousand pixels wide takes a second on SQLite however
the query is written (every point is decoded). So each series is also kept as blocks of
consecutive points in arrival order (``metric_blocks``), at three sizes (:data:`LEVELS`: 64, 512
and 4,096 points): count, NaN count, min, max and sum of the values, and the step and time range.
:func:`fold_points` updates them in the same transaction that stores the points (``log_batch``):
one query and one upsert per batch.

:meth:`SqlMetricSeries.metric_buckets` answers a chart of ``buckets`` pixels from the coarsest
level that still has at least ``buckets / 2`` blocks in the range (so at most ``4 * buckets``
rows are read: a million points are 1,953 rows), and from the points themselves when even the
finest level has fewer (a series of under ``32 * buckets`` points). Every bucket's min and max
are exact; each block goes to the bucket of its first point
(:func:`matih_lite.contracts.series.merge_block_columns`). A range (a zoomed chart) takes the
blocks inside it and, of the two blocks its edges cut, the points inside it; with steps logged
out of order, blocks overlap in steps and a point near an edge may be counted twice.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from matih_lite.contracts.records import Metric
from matih_lite.contracts.series import AXES, SeriesBucket, bucket_points, check_buckets, merge_block_columns
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.sqlstore.scope import Child, ScopedStore

LEVELS = (64, 512, 4096)
"""Points per block at each level; each level's block is a run of whole blocks of the one below."""
BLOCK_POINTS = LEVELS[0]

TABLES = {"metric_blocks": Child("runs")}
"""How this module's tables belong to a tenant (see :mod:`matih_lite.sqlstore.scope`)."""


def _backfill_points() -> str:
    # Series logged before this table existed, in step order (their arrival order is not kept).
    return f"""INSERT INTO metric_blocks (run_id, key, level, block, {_SUMMARY_COLUMNS})
        SELECT run_id, key, 0, blk, COUNT(*), SUM(is_nan), MIN(CASE WHEN is_nan = 0 THEN value END),
               MAX(CASE WHEN is_nan = 0 THEN value END), SUM(CASE WHEN is_nan = 0 THEN value END),
               MIN(step), MAX(step), MIN(timestamp), MAX(timestamp)
        FROM (SELECT run_id, key, value, is_nan, step, timestamp,
                     (ROW_NUMBER() OVER (PARTITION BY run_id, key ORDER BY step, timestamp) - 1) / {BLOCK_POINTS} AS blk
              FROM metrics) numbered
        GROUP BY run_id, key, blk"""


def _backfill_level(level: int) -> str:
    # Coarser levels hold the full level-0 blocks only (the open one is added when they are read).
    per = LEVELS[level] // BLOCK_POINTS
    return f"""INSERT INTO metric_blocks (run_id, key, level, block, {_SUMMARY_COLUMNS})
        SELECT run_id, key, {level}, block / {per}, SUM(points), SUM(nans), MIN(min_value), MAX(max_value),
               SUM(total), MIN(first_step), MAX(last_step), MIN(first_time), MAX(last_time)
        FROM metric_blocks WHERE level = 0 AND points >= {BLOCK_POINTS}
        GROUP BY run_id, key, block / {per}"""


_SUMMARY_COLUMNS = "points, nans, min_value, max_value, total, first_step, last_step, first_time, last_time"

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (102, "metric series blocks", [
        """CREATE TABLE metric_blocks (
            run_id {text} NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            key {text} NOT NULL,
            level {bigint} NOT NULL,
            block {bigint} NOT NULL,
            points {bigint} NOT NULL,
            nans {bigint} NOT NULL,
            min_value {double},
            max_value {double},
            total {double},
            first_step {bigint} NOT NULL,
            last_step {bigint} NOT NULL,
            first_time {bigint} NOT NULL,
            last_time {bigint} NOT NULL,
            PRIMARY KEY (run_id, key, level, block))""",
        _backfill_points(),
        *(_backfill_level(level) for level in range(1, len(LEVELS))),
    ]),
]

_UPSERT = (
    "INSERT INTO metric_blocks (run_id, key, level, block, points, nans, min_value, max_value, total, first_step, "
    "last_step, first_time, last_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, key, level, block) DO UPDATE SET "
    "points = metric_blocks.points + excluded.points, nans = metric_blocks.nans + excluded.nans, "
    "min_value = CASE WHEN metric_blocks.min_value IS NULL OR excluded.min_value < metric_blocks.min_value "
    "THEN COALESCE(excluded.min_value, metric_blocks.min_value) ELSE metric_blocks.min_value END, "
    "max_value = CASE WHEN metric_blocks.max_value IS NULL OR excluded.max_value > metric_blocks.max_value "
    "THEN COALESCE(excluded.max_value, metric_blocks.max_value) ELSE metric_blocks.max_value END, "
    "total = CASE WHEN metric_blocks.total IS NULL THEN excluded.total WHEN excluded.total IS NULL "
    "THEN metric_blocks.total ELSE metric_blocks.total + excluded.total END, "
    "first_step = CASE WHEN excluded.first_step < metric_blocks.first_step THEN excluded.first_step "
    "ELSE metric_blocks.first_step END, "
    "last_step = CASE WHEN excluded.last_step > metric_blocks.last_step THEN excluded.last_step "
    "ELSE metric_blocks.last_step END, "
    "first_time = CASE WHEN excluded.first_time < metric_blocks.first_time THEN excluded.first_time "
    "ELSE metric_blocks.first_time END, "
    "last_time = CASE WHEN excluded.last_time > metric_blocks.last_time THEN excluded.last_time "
    "ELSE metric_blocks.last_time END")


def _summary(points: Sequence[Metric]) -> list[Any]:
    """count, nans, min, max, total, first/last step, first/last time of consecutive points."""
    first = points[0]
    if len(points) == 1:  # what log_metric sends, one point at a time
        v = None if math.isnan(first.value) else first.value
        return [1, 1 if v is None else 0, v, v, v, first.step, first.step, first.timestamp, first.timestamp]
    lo = hi = total = None
    nans = 0
    s0 = s1 = first.step
    t0 = t1 = first.timestamp
    for m in points:
        v = m.value
        if math.isnan(v):
            nans += 1
        elif lo is None:
            lo = hi = total = v
        else:
            lo = min(lo, v)
            hi = max(hi, v)
            total += v
        s0, s1 = min(s0, m.step), max(s1, m.step)
        t0, t1 = min(t0, m.timestamp), max(t1, m.timestamp)
    return [len(points), nans, lo, hi, total, s0, s1, t0, t1]


def _merge(a: list[Any], b: list[Any]) -> list[Any]:
    """Two summaries of one block (the upsert's arithmetic, for rows of one batch)."""
    def pick(x: Any, y: Any, fn: Any) -> Any:
        return y if x is None else x if y is None else fn(x, y)

    return [a[0] + b[0], a[1] + b[1], pick(a[2], b[2], min), pick(a[3], b[3], max),
            pick(a[4], b[4], lambda x, y: x + y), min(a[5], b[5]), max(a[6], b[6]), min(a[7], b[7]),
            max(a[8], b[8])]


_SUMMARY = _SUMMARY_COLUMNS


@functools.lru_cache(maxsize=64)
def _open_blocks_sql(placeholder: str, n: int) -> str:
    """The newest level-0 block of each of ``n`` series of a run and how full it is."""
    marks = ", ".join("?" for _ in range(n))
    return _placed(placeholder, f"SELECT b.key, b.block, b.points FROM metric_blocks b WHERE b.run_id = ? AND b.level = 0 "
             f"AND b.key IN ({marks}) AND b.block = (SELECT MAX(l.block) FROM metric_blocks l "
             "WHERE l.run_id = b.run_id AND l.key = b.key AND l.level = 0)")


@functools.lru_cache(maxsize=8)
def _upsert_sql(placeholder: str) -> str:
    return _placed(placeholder, _UPSERT)


def _placed(placeholder: str, text: str) -> str:
    return text if placeholder == "?" else text.replace("?", placeholder)


def fold_points(cur: Any, q: Any, run_id: str, metrics: Sequence[Metric]) -> None:
    """Fold a batch's points into their series' blocks (inside the transaction that stores the points).

    Level 0 takes every point at once. A level-0 block that this batch fills to 64 points is then
    folded into levels 1 and 2, so a single point costs one upsert; the one block not yet full is
    added to the coarser levels when they are read.
    """
    by_key: dict[str, list[Metric]] = {}
    for m in metrics:
        by_key.setdefault(m.key, []).append(m)
    keys = sorted(by_key)
    filled_before: dict[str, int] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        cur.execute(_open_blocks_sql(q("?"), len(chunk)), (run_id, *chunk))
        for key, block, points in cur.fetchall():
            filled_before[key] = int(block) * BLOCK_POINTS + min(int(points), BLOCK_POINTS)
    rows: dict[tuple[str, int, int], list[Any]] = {}
    completed: list[tuple[str, int, list[Any] | None]] = []  # (key, level-0 block, its summary if all of it is here)
    for key in keys:
        points = by_key[key]
        position = filled_before.get(key, 0)  # points of the series before this batch (in whole blocks of 64)
        i = 0
        while i < len(points):
            block, within = divmod(position, BLOCK_POINTS)
            chunk = points[i:i + BLOCK_POINTS - within]
            summary = _summary(chunk)
            at = (key, 0, block)
            rows[at] = _merge(rows[at], summary) if at in rows else summary
            if within + len(chunk) == BLOCK_POINTS:
                completed.append((key, block, summary if within == 0 else None))
            i += len(chunk)
            position += len(chunk)
    cur.executemany(_upsert_sql(q("?")), [(run_id, key, level, block, *summary)
                                     for (key, level, block), summary in rows.items()])
    upper: dict[tuple[str, int, int], list[Any]] = {}
    for key, block, summary in completed:
        if summary is None:  # begun by an earlier batch: read the whole block back
            cur.execute(q(f"SELECT {_SUMMARY} FROM metric_blocks WHERE run_id = ? AND key = ? AND level = 0 "
                          "AND block = ?"), (run_id, key, block))
            summary = list(cur.fetchone())
        for level in range(1, len(LEVELS)):
            at = (key, level, block * BLOCK_POINTS // LEVELS[level])
            upper[at] = _merge(upper[at], summary) if at in upper else summary
    if upper:
        cur.executemany(_upsert_sql(q("?")), [(run_id, key, level, block, *summary)
                                         for (key, level, block), summary in upper.items()])


class SqlMetricSeries(ScopedStore):
    """``metric_buckets`` for :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore` (mixed in beside tracking)."""

    def metric_buckets(self, tenant: str, run_id: str, key: str, *, buckets: int = 1000, axis: str = "step",
                       lo: int | None = None, hi: int | None = None) -> tuple[int, list[SeriesBucket]]:
        """A metric of a run as at most ``buckets`` buckets over x in ``lo..hi`` (the whole series by default).

        Returns (points in the range, buckets). ``axis`` is ``step`` or ``time`` (the timestamp in ms).
        Raises NotFound for the run (or a run of another tenant), InvalidInput for a bad axis or bucket count.
        """
        if axis not in AXES:
            raise InvalidInput(f"axis must be one of {', '.join(AXES)}, not {axis!r}")
        try:
            check_buckets(buckets)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        q = self.db.dialect.sql
        first, last = ("first_step", "last_step") if axis == "step" else ("first_time", "last_time")
        column = "step" if axis == "step" else "timestamp"
        where, params = "run_id = ? AND key = ? AND level = ?", [run_id, key]
        if lo is not None:
            where += f" AND {last} >= ?"
            params.append(int(lo))
        if hi is not None:
            where += f" AND {first} <= ?"
            params.append(int(hi))
        blocks_sql = q(f"SELECT points, nans, min_value, max_value, total, {first}, {last}, first_step, last_step "
                       f"FROM metric_blocks WHERE {where}")
        open_sql = q(f"SELECT points, nans, min_value, max_value, total, {first}, {last}, first_step, last_step "
                     f"FROM metric_blocks WHERE {where.replace('level = ?', 'level = 0')} AND points < {BLOCK_POINTS} "
                     "AND block = (SELECT MAX(l.block) FROM metric_blocks l WHERE l.run_id = ? AND l.key = ? "
                     "AND l.level = 0)")
        edge_sql = q(f"SELECT {column}, value, is_nan FROM metrics WHERE run_id = ? AND key = ? AND step >= ? "
                     f"AND step <= ? AND {column} >= ? AND {column} <= ?")
        with self.db.read() as cur:
            if not self.scoped(cur, tenant).exists("runs", "run_id = ?", (run_id,)):
                raise NotFound(f"run {run_id!r} does not exist")
            # From the coarsest level down: the first with at least buckets / 2 blocks in the range.
            for level in range(len(LEVELS) - 1, -1, -1):
                cur.execute(blocks_sql, (run_id, key, level, *params[2:]))
                rows = cur.fetchall()
                if len(rows) * 2 < buckets or len(rows) < 2:
                    continue
                if level > 0:  # the level-0 block still filling is not folded into the coarser levels yet
                    cur.execute(open_sql, (run_id, key, *params[2:], run_id, key))
                    rows += cur.fetchall()
                inside = [r[:7] for r in rows if (lo is None or r[5] >= lo) and (hi is None or r[6] <= hi)]
                # A block cut by the range's edge: its points inside the range instead (found by its steps).
                for r in rows:
                    if (lo is not None and r[5] < lo) or (hi is not None and r[6] > hi):
                        cur.execute(edge_sql, (run_id, key, r[7], r[8], -2**63 if lo is None else int(lo),
                                               2**63 - 1 if hi is None else int(hi)))
                        for x, value, is_nan in cur.fetchall():
                            v = None if is_nan else value
                            inside.append((1, 1 if is_nan else 0, v, v, v, x, x))
                columns = np.array(inside, dtype=np.float64).reshape(-1, 7)  # NULL (no value) becomes NaN
                return int(columns[:, 0].sum()), merge_block_columns(columns, buckets, lo=lo, hi=hi)
            where, raw = "run_id = ? AND key = ?", [run_id, key]
            if lo is not None:
                where += f" AND {column} >= ?"
                raw.append(int(lo))
            if hi is not None:
                where += f" AND {column} <= ?"
                raw.append(int(hi))
            cur.execute(q(f"SELECT {column}, value, is_nan FROM metrics WHERE {where}"), tuple(raw))
            rows = cur.fetchall()
        xs = [r[0] for r in rows]
        values = [math.nan if r[2] else r[1] for r in rows]
        return len(rows), bucket_points(xs, values, buckets, lo=lo, hi=hi)
