"""Properties every statistic and aggregate keeps, whatever the data (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from matih_lite.monitoring import stats

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=64)
values = hnp.arrays(np.float64, st.integers(1, 300), elements=finite)
with_nulls = hnp.arrays(np.float64, st.integers(0, 200),
                        elements=st.one_of(finite, st.just(np.nan), st.sampled_from([0.0, 1.0, 2.0])))
words = st.lists(st.one_of(st.sampled_from(["a", "b", "c", "d", "e", "ü", ""]), st.none()), min_size=0, max_size=200)
counts = st.lists(st.integers(0, 1000), min_size=2, max_size=12)


def numeric_equal(a: stats.NumericAggregate, b: stats.NumericAggregate) -> None:
    """Counts, kept samples and extremes exactly; float sums up to rounding."""
    assert np.array_equal(a.counts, b.counts) and (a.n, a.nulls, a.min, a.max) == (b.n, b.nulls, b.min, b.max)
    assert (a.sample is None) == (b.sample is None)
    if a.sample is not None:
        assert np.array_equal(a.sample, b.sample)
    assert np.allclose(a.offsets, b.offsets, rtol=1e-9, atol=1e-6)
    assert a.mean == pytest.approx(b.mean, rel=1e-9, abs=1e-6)
    assert a.m2 == pytest.approx(b.m2, rel=1e-7, abs=1e-3)


def categorical_equal(a: stats.CategoricalAggregate, b: stats.CategoricalAggregate) -> None:
    assert a.to_dict() == b.to_dict()


# ---- statistics ---------------------------------------------------------------------------------------------
@FAST
@given(counts, counts)
def test_psi_is_never_negative(a, b):
    a, b = np.array(a[:len(b)]), np.array(b[:len(a)])
    if a.sum() == 0 or b.sum() == 0:
        return
    assert stats.psi_from_counts(a, b) >= 0


@FAST
@given(counts)
def test_psi_is_zero_for_identical_distributions(a):
    a = np.array(a)
    if a.sum() == 0:
        return
    assert stats.psi_from_counts(a, a) == 0
    assert stats.psi_from_counts(a, a * 7) == pytest.approx(0, abs=1e-15)


@FAST
@given(values)
def test_psi_of_a_baseline_against_itself_is_zero(x):
    ref = stats.NumericAggregate.baseline(x)
    assert stats.PSI(ref, ref.like(x))["statistic"] == 0
    assert stats.JENSEN_SHANNON(ref, ref.like(x))["statistic"] == 0


@FAST
@given(values, values)
def test_ks_statistic_is_between_zero_and_one(a, b):
    d, p, _ = stats.ks_2samp(a, b)
    assert 0 <= d <= 1 and 0 <= p <= 1
    ref = stats.NumericAggregate.baseline(a, sample_cap=0)  # forces the binned path
    result = stats.KS(ref, ref.like(b))
    assert 0 <= result["statistic"] <= result["bound"] <= 1 and 0 <= result["p_value"] <= 1


@FAST
@given(values, values, st.randoms(use_true_random=False))
def test_every_statistic_is_invariant_to_row_order(a, b, rnd):
    shuffled = list(b)
    rnd.shuffle(shuffled)
    for cap in (stats.DEFAULT_SAMPLE_CAP, 0):  # exact and binned
        ref = stats.NumericAggregate.baseline(a, sample_cap=cap)
        one, two = ref.like(b), ref.like(np.array(shuffled))
        for test in stats.BUILTIN_TESTS:
            x, y = test(ref, one), test(ref, two)
            assert x["drifted"] == y["drifted"] or abs((x["statistic"] or 0) - x["threshold"]) < 1e-9
            if x["statistic"] is None:
                assert y["statistic"] is None
            else:
                assert x["statistic"] == pytest.approx(y["statistic"], rel=1e-9, abs=1e-12)


@FAST
@given(words, words, st.randoms(use_true_random=False))
def test_categorical_statistics_are_invariant_to_row_order(a, b, rnd):
    if not any(v is not None for v in a) or not any(v is not None for v in b):
        return
    shuffled = list(b)
    rnd.shuffle(shuffled)
    ref = stats.CategoricalAggregate.baseline(a)
    for test in (stats.PSI, stats.CHI2, stats.JENSEN_SHANNON):
        assert test(ref, ref.like(b)) == test(ref, ref.like(shuffled))


# ---- merging ---------------------------------------------------------------------------------------------
@FAST
@given(values, with_nulls, with_nulls, with_nulls, st.sampled_from([0, 50, 10_000]))
def test_numeric_aggregates_merge_associatively_and_commutatively(base, x, y, z, cap):
    ref = stats.NumericAggregate.baseline(base, bins=40, sample_cap=cap)
    a, b, c = ref.like(x), ref.like(y), ref.like(z)
    left, right = a.merge(b.merge(c)), a.merge(b).merge(c)
    numeric_equal(left, right)
    numeric_equal(a.merge(b), b.merge(a))
    numeric_equal(left, ref.like(np.concatenate([x, y, z])))  # merging equals aggregating the union


@FAST
@given(words, words, words, words, st.integers(1, 4))
def test_categorical_aggregates_merge_associatively_and_commutatively(base, x, y, z, max_new):
    ref = stats.CategoricalAggregate.baseline(base, max_new=max_new)
    a, b, c = ref.like(x), ref.like(y), ref.like(z)
    categorical_equal(a.merge(b.merge(c)), a.merge(b).merge(c))
    categorical_equal(a.merge(b), b.merge(a))
    categorical_equal(a.merge(b).merge(c), ref.like(x + y + z))


labels = st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.sampled_from([0, 1, 2])), max_size=50)


@FAST
@given(labels, labels, labels)
def test_performance_aggregates_merge_associatively_and_commutatively(x, y, z):
    def agg(rows):
        return stats.PerformanceAggregate.of("classification", [r[0] for r in rows], [r[1] for r in rows])

    a, b, c = agg(x), agg(y), agg(z)
    assert a.merge(b.merge(c)).to_dict() == a.merge(b).merge(c).to_dict() == agg(x + y + z).to_dict()
    assert a.merge(b).to_dict() == b.merge(a).to_dict()


@FAST
@given(values, with_nulls, with_nulls, with_nulls, words, words, words)
def test_window_aggregates_merge_hourly_into_daily(base, x, y, z, u, v, w):
    ref_num = stats.NumericAggregate.baseline(base, bins=20)
    ref_cat = stats.CategoricalAggregate.baseline(u or ["a"])

    def window(start, nums, cats):
        return stats.WindowAggregate(start, start + 10, len(nums), {"x": ref_num.like(nums), "c": ref_cat.like(cats)})

    a, b, c = window(0, x, u), window(10, y, v), window(20, z, w)
    left, right = a.merge(b.merge(c)), a.merge(b).merge(c)
    rows = len(x) + len(y) + len(z)
    assert (left.start, left.end, left.rows) == (right.start, right.end, right.rows) == (0, 30, rows)
    numeric_equal(left.features["x"], right.features["x"])
    categorical_equal(left.features["c"], right.features["c"])
    assert stats.WindowAggregate.from_dict(left.to_dict()).to_dict() == left.to_dict()


@FAST
@given(with_nulls, with_nulls)
def test_aggregates_survive_json(x, y):
    ref = stats.NumericAggregate.baseline(np.concatenate([x, [0.0]]), bins=30)
    agg = ref.like(y)
    again = stats.NumericAggregate.from_dict(agg.to_dict())
    numeric_equal(agg, again)
    assert np.array_equal(again.edges, agg.edges) and np.array_equal(again.splits, agg.splits)
