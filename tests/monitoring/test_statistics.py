"""The drift statistics agree with scipy and with their textbook definitions; binned ones keep their bounds."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as ss
from scipy.spatial import distance

from matih_lite.monitoring import stats

# ---- KS against scipy ------------------------------------------------------------------------------------
SIZES = [(1, 4), (3, 3), (7, 13), (50, 50), (30, 70), (999, 1000), (2000, 3000), (7, 10_000), (10_000, 10_000),
         (12_000, 30_000), (20_000, 140)]


@pytest.mark.parametrize("n1,n2", SIZES)
@pytest.mark.parametrize("shift", [0.0, 0.1, 3.0])
def test_ks_statistic_and_pvalue_equal_scipy(n1, n2, shift):
    rng = np.random.default_rng(n1 * 31 + n2)
    a, b = rng.normal(size=n1), rng.normal(shift, size=n2)
    want = ss.ks_2samp(a, b)
    d, p, method = stats.ks_2samp(a, b)
    assert d == want.statistic
    assert p == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
    assert method == ("exact" if max(n1, n2) <= 10_000 else "asymp")


@pytest.mark.parametrize("n1,n2", [(5, 7), (10, 10), (40, 25), (3000, 2000), (15_000, 20_000)])
def test_ks_with_ties_equals_scipy(n1, n2):
    rng = np.random.default_rng(n1)
    a, b = rng.integers(0, 4, n1).astype(float), rng.integers(0, 5, n2).astype(float)
    want = ss.ks_2samp(a, b)
    d, p, _ = stats.ks_2samp(a, b)
    assert d == want.statistic
    assert p == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)


def test_ks_on_large_samples_uses_the_asymptotic_distribution_as_scipy():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=200_000), rng.normal(0.01, size=300_000)
    want = ss.ks_2samp(a, b)
    d, p, method = stats.ks_2samp(a, b)
    assert (d, method) == (want.statistic, "asymp")
    assert p == pytest.approx(want.pvalue, rel=1e-8)


@pytest.mark.parametrize("n", [1, 2, 5, 50, 139, 141, 500, 5000, 60_000])
@pytest.mark.parametrize("x", [0.001, 0.006, 0.01, 0.05, 0.2, 0.5, 0.7, 0.99])
def test_kolmogorov_distribution_equals_scipy_kstwo(n, x):
    # Every branch of Simard and L'Ecuyer's choice is met here (DMTW, Pomeranz, Pelz-Good, Smirnov's sum).
    assert stats.kolmogn_sf(n, x) == pytest.approx(ss.kstwo.sf(x, n), rel=1e-8, abs=1e-300)


def test_chi2_survival_equals_scipy():
    for df in (1, 2, 3, 9, 30, 100):
        for x in (0.01, 0.5, 3.0, 20.0, 100.0, 400.0):
            assert stats.chi2_sf(x, df) == pytest.approx(ss.chi2.sf(x, df), rel=1e-10, abs=1e-300)


# ---- the other statistics against scipy and textbook definitions ----------------------------------------------
def test_wasserstein_equals_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=3000), rng.exponential(size=2000)
    assert stats.wasserstein_distance(a, b) == pytest.approx(ss.wasserstein_distance(a, b), rel=1e-12)


def test_exact_wasserstein_test_is_evidentlys_normed_distance():
    rng = np.random.default_rng(4)
    a, b = rng.normal(3, 2, size=4000), rng.normal(3.5, 2, size=5000)
    ref = stats.NumericAggregate.baseline(a)
    result = stats.WASSERSTEIN(ref, ref.like(b))
    assert result["method"] == "exact"
    assert result["statistic"] == pytest.approx(ss.wasserstein_distance(a, b) / np.std(a), rel=1e-12)
    assert result["drifted"] is (result["statistic"] >= 0.1)


def test_exact_ks_test_from_aggregates_equals_scipy():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=800), rng.normal(0.2, size=600)
    ref = stats.NumericAggregate.baseline(a)
    result = stats.KS(ref, ref.like(b))
    want = ss.ks_2samp(a, b)
    assert result["method"].startswith("exact")
    assert (result["statistic"], result["p_value"]) == (pytest.approx(want.statistic), pytest.approx(want.pvalue))


def test_jensen_shannon_equals_scipy():
    p, q = np.array([10, 0, 5, 3.0]), np.array([1, 4, 5, 0.0])
    assert stats.jensen_shannon_distance(p, q) == pytest.approx(distance.jensenshannon(p, q), rel=1e-12)


def test_chi2_homogeneity_equals_chi2_contingency():
    a, b = np.array([120, 80, 40, 0]), np.array([100, 95, 30, 7])
    stat, p, dof = stats.chi2_homogeneity(a, b)
    want = ss.chi2_contingency(np.vstack([a, b])[:, (a + b) > 0], correction=False)
    assert (stat, dof) == (pytest.approx(want.statistic), want.dof)
    assert p == pytest.approx(want.pvalue, rel=1e-9)


def textbook_psi(expected, actual, edges, eps=1e-4):
    """PSI as written in the textbooks: shares per bin, sum (A - E) ln(A / E)."""
    bins = np.concatenate([[-np.inf], edges, [np.inf]])
    e = np.histogram(expected, bins)[0] / len(expected)
    a = np.histogram(actual, bins)[0] / len(actual)
    e, a = np.where(e == 0, eps, e), np.where(a == 0, eps, a)
    return float(np.sum((a - e) * np.log(a / e)))


def test_numeric_psi_is_the_textbook_definition_on_baseline_deciles():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=50_000), rng.normal(0.3, 1.2, size=30_000)
    ref = stats.NumericAggregate.baseline(a)
    deciles = np.quantile(a, np.arange(1, 10) / 10)
    assert np.allclose(ref.coarse_edges(), deciles)
    # np.histogram's bins are [a, b): a value equal to an edge goes right, as in the aggregate.
    assert stats.PSI(ref, ref.like(b))["statistic"] == pytest.approx(textbook_psi(a, b, ref.coarse_edges()), rel=1e-12)


def test_categorical_psi_is_the_textbook_definition_with_epsilon_for_empty_bins():
    ref = stats.CategoricalAggregate.baseline(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    cur = ref.like(["a"] * 40 + ["b"] * 40 + ["d"] * 20)  # no "c", a new "d"
    e, a = np.array([.5, .3, .2, 1e-4]), np.array([.4, .4, 1e-4, .2])
    assert stats.PSI(ref, cur)["statistic"] == pytest.approx(float(np.sum((a - e) * np.log(a / e))), rel=1e-12)


# ---- binned statistics and their bounds --------------------------------------------------------------------
DISTRIBUTIONS = {
    "same": lambda r, n: (r.normal(size=n), r.normal(size=n)),
    "shift": lambda r, n: (r.normal(size=n), r.normal(0.08, size=n)),
    "scale": lambda r, n: (r.normal(size=n), r.normal(0, 1.3, size=n)),
    "lognormal": lambda r, n: (r.lognormal(size=n), r.lognormal(0.1, size=n)),
    "integers": lambda r, n: (r.integers(0, 4, n).astype(float), r.integers(0, 5, n).astype(float)),
    "outside": lambda r, n: (r.uniform(size=n), r.uniform(-0.2, 1.2, size=n)),
}


@pytest.mark.parametrize("kind", sorted(DISTRIBUTIONS))
def test_binned_ks_and_wasserstein_hold_their_stated_bounds(kind):
    rng = np.random.default_rng(7)
    a, b = DISTRIBUTIONS[kind](rng, 60_000)
    ref = stats.NumericAggregate.baseline(a)
    cur = ref.like(b)
    ks, w = stats.KS(ref, cur), stats.WASSERSTEIN(ref, cur)
    assert ks["method"].startswith("binned") and w["method"] == "binned"
    exact_d = ss.ks_2samp(a, b).statistic
    assert ks["statistic"] - 1e-12 <= exact_d <= ks["bound"] + 1e-12
    assert ks["bound"] - ks["statistic"] <= 2 * 1.2 / 1000 + 1e-12  # a bin holds ~1/1000 of the baseline
    exact_w = ss.wasserstein_distance(a, b) / np.std(a)
    assert abs(w["statistic"] - exact_w) <= w["bound"] + 1e-12
    assert abs(w["statistic"] - exact_w) <= 1e-3  # and in practice far inside it


def test_auto_picks_tests_by_size_and_kind_as_evidently():
    rng = np.random.default_rng(8)
    big = stats.NumericAggregate.baseline(rng.normal(size=5000))
    small = stats.NumericAggregate.baseline(rng.normal(size=500))
    assert stats.auto_test(big, big.like(rng.normal(size=5000))) == "wasserstein"
    assert stats.auto_test(big, big.like(rng.normal(size=200))) == "ks"
    assert stats.auto_test(small, small.like(rng.normal(size=5000))) == "ks"
    binary = stats.NumericAggregate.baseline(rng.integers(0, 2, 5000))
    assert stats.auto_test(binary, binary.like(rng.integers(0, 2, 5000))) == "jensen_shannon"
    cat = stats.CategoricalAggregate.baseline(rng.choice(["a", "b"], 5000))
    assert stats.auto_test(cat, cat.like(["a"] * 5000)) == "jensen_shannon"
    assert stats.auto_test(cat, cat.like(["a"] * 50)) == "chi2"


def test_tests_that_do_not_apply_say_why():
    cat = stats.CategoricalAggregate.baseline(["a", "b"])
    result = stats.KS(cat, cat.like(["a"]))
    assert result["statistic"] is None and not result["drifted"] and "numeric" in result["note"]
    num = stats.NumericAggregate.baseline([1.0, 2.0])
    assert "no values" in stats.WASSERSTEIN(num, num.like([None, float("nan")]))["note"]


def test_stats_module_imports_nothing_but_numpy():
    source = Path(stats.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            imported.add((node.module or "").split(".")[0])
    assert imported == {"numpy"}
