"""Metric series at chart resolution: buckets keep every min and max, from points or from block summaries.

The pure functions (matih_lite.contracts.series) are checked against a brute-force reading of the
points; the SQL store's ``metric_buckets`` (blocks kept as points arrive) against the pure function.
"""

from __future__ import annotations

import math
import os
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matih_lite.contracts import Metric
from matih_lite.contracts.series import SeriesSummary, bucket_points, merge_summaries
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.sqlstore import metric_series
from matih_lite.testing.processes import engine_missing
from matih_lite.tracking import Tracking
from matih_lite.tracking.series import metric_series as series_of

T = "default"

values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.floats(min_value=-1e6, max_value=1e6))
points = st.lists(st.tuples(st.integers(min_value=-1000, max_value=100_000), values), min_size=0, max_size=400)


def brute_force(pts: list[tuple[int, float]], buckets: int) -> dict[int, list[float]]:
    """Each bucket's values by the definition: equal-width buckets over [min x, max x]."""
    lo, hi = min(x for x, _ in pts), max(x for x, _ in pts)
    width = max((hi - lo + 1) / buckets, 1.0)
    out: dict[int, list[float]] = {}
    for x, v in pts:
        out.setdefault(min(int((x - lo) // width), buckets - 1), []).append(v)
    return out


@settings(max_examples=150, deadline=None)
@given(pts=points, buckets=st.integers(min_value=1, max_value=300))
def test_each_bucket_keeps_the_min_and_max_of_its_points(pts, buckets):
    got = bucket_points([x for x, _ in pts], [v for _, v in pts], buckets)
    if not pts:
        assert got == []
        return
    expected = brute_force(pts, buckets)
    assert len(got) == len(expected) <= buckets
    assert sum(b.points for b in got) == len(pts)
    for b, (_, vs) in zip(got, sorted(expected.items())):
        real = [v for v in vs if not math.isnan(v)]
        assert b.points == len(vs)
        assert b.nans == len(vs) - len(real)
        assert b.min == (min(real) if real else None)
        assert b.max == (max(real) if real else None)
    assert [b.x for b in got] == sorted(b.x for b in got)
    assert all(b.x <= b.x_end for b in got)


@settings(max_examples=100, deadline=None)
@given(pts=points.filter(bool), buckets=st.integers(min_value=1, max_value=300))
def test_a_spike_is_never_lost(pts, buckets):
    """The series' largest and smallest values appear as some bucket's max and min, at any width."""
    got = bucket_points([x for x, _ in pts], [v for _, v in pts], buckets)
    real = [v for _, v in pts if not math.isnan(v)]
    if real:
        assert max(b.max for b in got if b.max is not None) == max(real)
        assert min(b.min for b in got if b.min is not None) == min(real)


def test_fewer_points_than_buckets_come_back_point_by_point():
    got = bucket_points([0, 1, 2, 5], [1.0, 3.0, 2.0, math.nan], 100)
    assert [(b.x, b.points, b.min, b.max) for b in got] == [(0, 1, 1.0, 1.0), (1, 1, 3.0, 3.0), (2, 1, 2.0, 2.0),
                                                           (5, 1, None, None)]
    assert got[-1].nans == 1


def test_a_range_drops_the_points_outside_it():
    got = bucket_points(list(range(100)), [float(i) for i in range(100)], 10, lo=20, hi=29)
    assert sum(b.points for b in got) == 10
    assert got[0].min == 20.0 and got[-1].max == 29.0


def test_bad_bucket_counts_are_refused():
    with pytest.raises(ValueError, match="1 to 4000"):
        bucket_points([1], [1.0], 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pts=st.lists(st.tuples(st.integers(0, 10_000), st.floats(-1e3, 1e3)), min_size=1, max_size=600),
       block=st.integers(1, 50), buckets=st.integers(1, 100))
def test_merged_blocks_keep_exact_extremes(pts, block, buckets):
    """Summaries of consecutive points, merged: the overall min and max and the count are exact."""
    pts.sort()
    blocks = []
    for i in range(0, len(pts), block):
        chunk = pts[i:i + block]
        vs = [v for _, v in chunk]
        blocks.append(SeriesSummary(len(chunk), 0, min(vs), max(vs), sum(vs), chunk[0][0], chunk[-1][0], 0, 0))
    got = merge_summaries(blocks, buckets)
    assert len(got) <= buckets
    assert sum(b.points for b in got) == len(pts)
    assert max(b.max for b in got) == max(v for _, v in pts)
    assert min(b.min for b in got) == min(v for _, v in pts)


# ---- the SQL store ------------------------------------------------------------------------------------------
PG_DSN = os.environ.get("MATIH_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_host(folder):
    """A host on a fresh schema of the test PostgreSQL server, or skip (fail under CI=true) saying why."""
    from matih_lite.host import Host

    try:
        import matih_postgres  # noqa: F401
        import psycopg
    except ImportError as exc:
        engine_missing(f"PostgreSQL for the series tests: {exc} (pip install -e backends/postgres)")
    try:
        psycopg.connect(PG_DSN, connect_timeout=5).close()
    except psycopg.Error as exc:
        engine_missing(f"PostgreSQL for the series tests at {PG_DSN}: {exc}")
    schema = f"matih_series_{uuid.uuid4().hex[:8]}"
    (folder / "matih.toml").write_text(f'default_profile = "pg"\n[profiles.pg]\n'
                                       f'metadata = {{ backend = "postgres", dsn = "{PG_DSN}", schema = "{schema}" }}\n'
                                       f'artifacts = {{ backend = "local", root = "{folder}/artifacts" }}\n')
    return Host.open(str(folder / "matih.toml")), schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def tracking(request, hermetic):
    from matih_lite.host import Host

    if request.param == "sqlite":
        host = Host.open()
        yield Tracking(host)
        host.close()
        return
    host, schema = _postgres_host(hermetic)
    yield Tracking(host)
    host.close()
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def logged(tracking, points, key="loss"):
    exp = tracking.get_or_create_experiment(T, "series")
    run = tracking.create_run(T, exp.experiment_id)
    tracking.log_points(T, run.run_id, [Metric(key, v, 1_700_000_000_000 + i * 10, s)
                                        for i, (s, v) in enumerate(points)])
    return run


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pts=st.lists(st.tuples(st.integers(0, 5000), st.floats(-1e6, 1e6) | st.just(math.nan)), min_size=1,
                    max_size=700), buckets=st.integers(1, 60))
def test_the_store_keeps_every_extreme_and_matches_the_reference_on_short_series(tracking, pts, buckets):
    run = logged(tracking, pts)
    n, got = tracking.store.metric_buckets(T, run.run_id, "loss", buckets=buckets)
    assert n == len(pts) == sum(b.points for b in got)
    assert len(got) <= buckets
    assert [b.x for b in got] == sorted(b.x for b in got)
    real = [v for _, v in pts if not math.isnan(v)]
    if real:
        assert max(b.max for b in got if b.max is not None) == max(real)
        assert min(b.min for b in got if b.min is not None) == min(real)
    assert sum(b.nans for b in got) == len(pts) - len(real)
    if math.ceil(len(pts) / metric_series.BLOCK_POINTS) * 2 < buckets:  # read from the points themselves
        assert got == bucket_points([s for s, _ in pts], [v for _, v in pts], buckets)


def test_blocks_follow_arrival_and_hold_every_point(tracking):
    rng = np.random.default_rng(3)
    pts = [(i, float(v)) for i, v in enumerate(rng.normal(size=1000))]
    run = logged(tracking, pts)
    for extra in range(5):  # single points after the batches, as log_metric sends them
        tracking.log_batch(T, run.run_id, metrics=[Metric("loss", 100.0 + extra, 1, 1000 + extra)])
    q = tracking.store.db.dialect.sql
    with tracking.store.db.read() as cur:
        cur.execute(q("SELECT block, points, min_value, max_value FROM metric_blocks WHERE run_id = ? AND level = 0 "
                      "ORDER BY block"), (run.run_id,))
        rows = cur.fetchall()
    assert sum(r[1] for r in rows) == 1005
    assert all(r[1] <= metric_series.BLOCK_POINTS for r in rows)
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert max(r[3] for r in rows) == 104.0
    with tracking.store.db.read() as cur:
        cur.execute(q("SELECT level, SUM(points), MAX(max_value), COUNT(*) FROM metric_blocks WHERE run_id = ? "
                      "GROUP BY level ORDER BY level"), (run.run_id,))
        levels = cur.fetchall()
    # level 0 holds every point; levels 1 and 2 (blocks of 512 and 4,096) the 15 full blocks of 64,
    # and the one still filling is added to them when they are read
    assert [(lv, n) for lv, n, _, _ in levels] == [(0, 1005), (1, 960), (2, 960)]
    assert [c for *_, c in levels] == [16, 2, 1]
    n, coarse = tracking.store.metric_buckets(T, run.run_id, "loss", buckets=2)
    assert n == 1005 == sum(b.points for b in coarse)
    assert max(b.max for b in coarse) == 104.0


def test_a_long_series_is_bucketed_from_blocks_and_keeps_its_spike(tracking):
    pts = [(i, math.sin(i / 50)) for i in range(5000)]
    pts[3217] = (3217, 42.0)  # one spike among thousands of points
    pts[100] = (100, math.nan)
    run = logged(tracking, pts)
    n, got = tracking.store.metric_buckets(T, run.run_id, "loss", buckets=40)
    assert n == 5000
    assert len(got) <= 40
    assert max(b.max for b in got) == 42.0
    spike = next(b for b in got if b.max == 42.0)
    assert spike.x <= 3217 <= spike.x_end
    assert sum(b.nans for b in got) == 1
    by_time = tracking.store.metric_buckets(T, run.run_id, "loss", buckets=40, axis="time")[1]
    assert max(b.max for b in by_time) == 42.0
    tracking.log_batch(T, run.run_id, metrics=[Metric("loss", -7.0, 1, 5000)])  # lands in the block still filling
    n, coarse = tracking.store.metric_buckets(T, run.run_id, "loss", buckets=4)  # from the 512-point level
    assert n == 5001 == sum(b.points for b in coarse)
    assert (max(b.max for b in coarse), min(b.min for b in coarse)) == (42.0, -7.0)
    assert coarse[-1].x_end == 5000


def test_series_logged_before_the_blocks_existed_are_backfilled(tracking):
    from matih_lite.sqlstore.metric_series import MIGRATIONS

    pts = [(i, float((i * 7919) % 1000)) for i in range(3000)]
    run = logged(tracking, pts)
    before = tracking.store.metric_buckets(T, run.run_id, "loss", buckets=20)
    db = tracking.store.db

    def rebuild(cur):
        cur.execute("DELETE FROM metric_blocks")
        for statement in MIGRATIONS[0][2][1:]:
            cur.execute(db.dialect.ddl(statement))

    db.write(rebuild)
    after = tracking.store.metric_buckets(T, run.run_id, "loss", buckets=20)
    assert after == before  # points logged in step order: the backfill builds the same blocks


def test_zooming_in_reads_only_the_range(tracking):
    run = logged(tracking, [(i, float(i)) for i in range(3000)])
    n, got = tracking.store.metric_buckets(T, run.run_id, "loss", buckets=10, lo=1000, hi=1999)
    assert n == 1000
    assert got[0].x == 1000 and got[-1].x_end == 1999


def test_series_of_another_tenant_is_not_found(tracking):
    run = logged(tracking, [(0, 1.0)])
    with pytest.raises(NotFound):
        tracking.store.metric_buckets("other", run.run_id, "loss")


def test_the_domain_function_checks_its_arguments_and_shapes_the_answer(tracking):
    run = logged(tracking, [(i, float(i)) for i in range(10)] + [(10, math.inf)])
    s = series_of(tracking, T, run.run_id, "loss", buckets=5)
    assert s.points == 11 and s.downsampled
    assert s.max[-1] == 1.7976931348623157e308  # infinity, kept at the top of the chart
    assert series_of(tracking, T, run.run_id, "never-logged").points == 0
    with pytest.raises(InvalidInput, match="axis"):
        series_of(tracking, T, run.run_id, "loss", axis="epoch")
    with pytest.raises(InvalidInput, match="points"):
        series_of(tracking, T, run.run_id, "loss", buckets=5000)
    with pytest.raises(InvalidInput, match="empty"):
        series_of(tracking, T, run.run_id, "loss", lo=5, hi=1)


def test_a_store_without_metric_buckets_gets_the_same_answer(tracking):
    run = logged(tracking, [(i, float(i % 7)) for i in range(500)])

    class PlainStore:
        def __init__(self, inner):
            self.inner = inner

        def get_metric_history(self, *a, **k):
            return self.inner.get_metric_history(*a, **k)

    class Plain(Tracking):
        @property
        def store(self):
            return PlainStore(self.host.metadata)

    plain = series_of(Plain(tracking.host), T, run.run_id, "loss", buckets=30)
    native = series_of(tracking, T, run.run_id, "loss", buckets=30)
    assert plain == native
