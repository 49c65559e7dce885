"""Drift statistics and mergeable window aggregates, written with numpy alone.

This module imports nothing but numpy, so the same file runs inside the ml-service's scheduler
and inside a Flink job that lives in its own virtualenv (PyFlink cannot share one with the
rest of matih-lite). Everything here is a pure function of arrays or of the aggregates below.

Aggregates
----------
A baseline and a window are described the same way, one aggregate per feature:

:class:`NumericAggregate`
    counts and within-bin offsets on **fixed edges** (the baseline's quantiles: 1,000 bins by
    default, so each holds ~0.1 % of the baseline), the count of values below the first edge
    and at or above the last, null count, mean and second moment (Chan's parallel update),
    min, max, and **every value** while there are at most ``sample_cap`` of them (10,000 by
    default; none after that). No sketch, no t-digest: merging is adding arrays.
:class:`CategoricalAggregate`
    counts of the baseline's categories (its "edges"), counts of categories the baseline never
    saw, null count.
:class:`PerformanceAggregate`
    confusion counts (classification) or error sums (regression) of labelled rows.
:class:`WindowAggregate`
    a window's feature, prediction and performance aggregates.

``merge(a, b)`` is commutative and associative: counts, histograms and kept samples exactly,
float sums (moments, offsets) up to rounding. Hourly aggregates merge into the daily one.

Tests
-----
Every test takes a reference and a current aggregate (see :data:`BUILTIN_TESTS`):

=================  =====================================  ==============================  =========
test               statistic                              drift when                      default
=================  =====================================  ==============================  =========
``ks``             two-sample Kolmogorov-Smirnov D        p-value < threshold             0.05
``psi``            population stability index             statistic >= threshold          0.2
``chi2``           chi-squared test of homogeneity        p-value < threshold             0.05
``jensen_shannon`` Jensen-Shannon distance (natural log)  statistic >= threshold          0.1
``wasserstein``    W1 / max(std of reference, 0.001)      statistic >= threshold          0.1
=================  =====================================  ==============================  =========

``ks`` and ``wasserstein`` are **exact** when both sides kept all their values (they equal
``scipy.stats.ks_2samp`` -- statistic and p-value, exact or asymptotic as scipy picks -- and
``scipy.stats.wasserstein_distance`` divided by ``np.std(reference)``, Evidently's normed
Wasserstein); otherwise they are computed from the fixed-edge histograms and the result
carries ``bound``: for KS an upper bound of D (the true D lies in ``[statistic, bound]``), for
Wasserstein the largest possible error of the statistic (the true value lies within
``statistic +- bound``). With 1,000 quantile bins both are a few thousandths. ``psi``,
``chi2`` and ``jensen_shannon`` are defined on bins: the baseline's deciles for numeric
features (values below the baseline's minimum fall in the first, above its maximum in the
last) and the categories for categorical ones (categories either side has); these are exact.
PSI replaces an empty bin's share by :data:`PSI_EPSILON` (1e-4) on either side.
"""

from __future__ import annotations

import numpy as np

SCHEMA = "matih-lite/drift-aggregate/v1"
DEFAULT_BINS = 1000
"""Fine bins of a numeric baseline: edges at its 0.1 % quantiles."""
DEFAULT_COARSE_BINS = 10
"""Bins of PSI, chi-squared and Jensen-Shannon on numeric features: the baseline's deciles."""
DEFAULT_SAMPLE_CAP = 10_000
"""Values kept per numeric aggregate for exact tests (scipy's own exact-KS limit)."""
DEFAULT_MAX_CATEGORIES = 1000
"""Categories a baseline keeps by frequency; the rest are folded into :data:`OTHER`."""
DEFAULT_MAX_NEW = 1000
"""New categories a window counts one by one before folding them all into :data:`OTHER`."""
PSI_EPSILON = 1e-4
"""Share given to an empty bin in PSI, so that ``ln(a/e)`` stays finite."""
SMALL_SAMPLE = 1000
"""``auto``: at or below this many rows on either side, a p-value test (KS, chi-squared)."""
OTHER = "__other__"
KS_EXACT_MAX_N = 10_000
"""scipy's ``ks_2samp`` computes an exact p-value (method ``auto``) up to this sample size."""


# =====================================================================================================
# Distributions: Kolmogorov-Smirnov (scipy's algorithms, in numpy), chi-squared
# =====================================================================================================

_E128 = 128
_EP128 = np.ldexp(np.longdouble(1), _E128)
_EM128 = np.ldexp(np.longdouble(1), -_E128)
_SQRT2PI = np.sqrt(2 * np.pi)
_LOG_2PI = np.log(2 * np.pi)
_MIN_LOG = -708
_MINLOG_EXP = -708.3964185322641
_SQRT3 = np.sqrt(3)
_PI_SQUARED = np.pi ** 2
_PI_FOUR = np.pi ** 4
_PI_SIX = np.pi ** 6
_STIRLING_COEFFS = [-2.955065359477124183e-2, 6.4102564102564102564e-3, -1.9175269175269175269e-3,
                    8.4175084175084175084e-4, -5.952380952380952381e-4, 7.9365079365079365079e-4,
                    -2.7777777777777777778e-3, 8.3333333333333333333e-2]
_SMIRNOV_MAX_COMPUTE_N = 1_000_000


def _clip(p: float) -> float:
    return float(min(max(p, 0.0), 1.0))


def _log_nfactorial_div_n_pow_n(n: int) -> float:
    rn = 1.0 / n
    return float(np.log(n) / 2 - n + _LOG_2PI / 2 + rn * np.polyval(_STIRLING_COEFFS, rn / n))


def smirnov_sf(n: int, x: float) -> float:
    """P(D+_n > x): the one-sided Kolmogorov-Smirnov statistic of ``n`` samples (``scipy.special.smirnov``).

    The Birnbaum-Tingey sum, evaluated in log space (every term is positive).
    """
    n = int(n)
    if not (n > 0 and 0.0 <= x <= 1.0):
        return float("nan")
    if n == 1:
        return 1.0 - x
    if x == 0.0:
        return 1.0
    if x == 1.0:
        return 0.0
    nx = n * x
    nxfl = int(np.floor(nx))
    alpha = nx - nxfl
    if alpha >= 1.0:
        nxfl, alpha = nxfl + 1, 0.0
    if nxfl == 0 or (nxfl == 1 and alpha == 0):
        return 1.0 - x * (1.0 + x) ** (n - 1)
    if -2 * n * x * x < _MINLOG_EXP:
        return 0.0
    if nxfl >= n - 1:
        return (1.0 - x) ** n
    if n > _SMIRNOV_MAX_COMPUTE_N:
        logp = -((6.0 * n * x + 1) ** 2) / 18.0 / n
        return float(np.exp(logp)) if logp < -np.log(2) else 1.0 + float(np.expm1(logp))
    last = n - nxfl - 1  # terms v = 0 .. floor(n (1 - x)), the zero term at alpha == 0 left out
    v = np.arange(last + 1, dtype=np.float64)
    log_binom = np.concatenate([[0.0], np.cumsum(np.log((n - v[1:] + 1) / v[1:]))])
    with np.errstate(divide="ignore"):
        terms = log_binom + (n - v) * np.log1p(-(x + v / n)) + (v - 1) * np.log(x + v / n)
    top = terms.max()
    log_sf = np.log(x) + top + np.log(np.sum(np.exp(terms - top)))
    return _clip(float(np.exp(log_sf)))


def _kolmogn_dmtw(n: int, d: float) -> float:
    """Pr(D_n <= d) by the Durbin matrix algorithm (Marsaglia, Tsang, Wang 2003)."""
    if d >= 1.0:
        return 1.0
    nd = n * d
    if nd <= 0.5:
        return 0.0
    k = int(np.ceil(nd))
    h = k - nd
    m = 2 * k - 1
    H = np.zeros([m, m])
    intm = np.arange(1, m + 1)
    v = 1.0 - h ** intm
    w = np.empty(m)
    fac = 1.0
    for j in intm:
        w[j - 1] = fac
        fac /= j
        v[j - 1] *= fac
    tt = max(2 * h - 1.0, 0) ** m - 2 * h ** m
    v[-1] = (1.0 + tt) * fac
    for i in range(1, m):
        H[i - 1:, i] = w[:m - i + 1]
    H[:, 0] = v
    H[-1, :] = np.flip(v, axis=0)
    Hpwr = np.eye(np.shape(H)[0])
    nn = n
    expnt = 0
    Hexpnt = 0
    while nn > 0:
        if nn % 2:
            Hpwr = np.matmul(Hpwr, H)
            expnt += Hexpnt
        H = np.matmul(H, H)
        Hexpnt *= 2
        if np.abs(H[k - 1, k - 1]) > _EP128:
            H /= _EP128
            Hexpnt += _E128
        nn = nn // 2
    p = Hpwr[k - 1, k - 1]
    for i in range(1, n + 1):
        p = i * p / n
        if np.abs(p) < _EM128:
            p *= _EP128
            expnt -= _E128
    if expnt != 0:
        p = np.ldexp(p, expnt)
    return _clip(float(p))


def _pomeranz_j1j2(i: int, n: int, ll: int, ceilf: int, roundf: int) -> tuple[int, int]:
    if i == 0:
        j1, j2 = -ll - ceilf - 1, ll + ceilf - 1
    else:
        ip1div2, ip1mod2 = divmod(i + 1, 2)
        if ip1mod2 == 0:
            if ip1div2 == n + 1:
                j1, j2 = n - ll - ceilf - 1, n + ll + ceilf - 1
            else:
                j1, j2 = ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1
        else:
            j1, j2 = ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1
    return max(j1 + 2, 0), min(j2, n)


def _kolmogn_pomeranz(n: int, x: float) -> float:
    """Pr(D_n <= x) by the Pomeranz recursion (1974)."""
    t = n * x
    ll = int(np.floor(t))
    f = 1.0 * (t - ll)
    g = min(f, 1.0 - f)
    ceilf = 1 if f > 0 else 0
    roundf = 1 if f > 0.5 else 0
    npwrs = 2 * (ll + 1)
    gpower = np.empty(npwrs)
    twogpower = np.empty(npwrs)
    onem2gpower = np.empty(npwrs)
    gpower[0] = twogpower[0] = onem2gpower[0] = 1.0
    expnt = 0
    g_over_n, two_g_over_n, one_minus_two_g_over_n = g / n, 2 * g / n, (1 - 2 * g) / n
    for m in range(1, npwrs):
        gpower[m] = gpower[m - 1] * g_over_n / m
        twogpower[m] = twogpower[m - 1] * two_g_over_n / m
        onem2gpower[m] = onem2gpower[m - 1] * one_minus_two_g_over_n / m
    V0 = np.zeros([npwrs])
    V1 = np.zeros([npwrs])
    V1[0] = 1
    V0s, V1s = 0, 0
    j1, j2 = _pomeranz_j1j2(0, n, ll, ceilf, roundf)
    for i in range(1, 2 * n + 2):
        k1 = j1
        V0, V1 = V1, V0
        V0s, V1s = V1s, V0s
        V1.fill(0.0)
        j1, j2 = _pomeranz_j1j2(i, n, ll, ceilf, roundf)
        pwrs = gpower if (i == 1 or i == 2 * n + 1) else (twogpower if i % 2 else onem2gpower)
        ln2 = j2 - k1 + 1
        if ln2 > 0:
            conv = np.convolve(V0[k1 - V0s:k1 - V0s + ln2], pwrs[:ln2])
            conv_start = j1 - k1
            conv_len = j2 - j1 + 1
            V1[:conv_len] = conv[conv_start:conv_start + conv_len]
            if 0 < np.max(V1) < _EM128:
                V1 *= _EP128
                expnt -= _E128
            V1s = V0s + j1 - k1
    ans = V1[n - V1s]
    for m in range(1, n + 1):
        if np.abs(ans) > _EP128:
            ans *= _EM128
            expnt += _E128
        ans *= m
    if expnt != 0:
        ans = np.ldexp(ans, expnt)
    return _clip(float(ans))


def _kolmogn_pelz_good(n: int, x: float) -> float:
    """The Pelz-Good approximation of Pr(D_n <= x) (1976)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    z = np.sqrt(n) * x
    zsquared, zthree, zfour, zsix = z ** 2, z ** 3, z ** 4, z ** 6
    qlog = -_PI_SQUARED / 8 / zsquared
    if qlog < _MIN_LOG:
        return 0.0
    q = np.exp(qlog)
    k1a = -zsquared
    k1b = _PI_SQUARED / 4
    k2a = 6 * zsix + 2 * zfour
    k2b = (2 * zfour - 5 * zsquared) * _PI_SQUARED / 4
    k2c = _PI_FOUR * (1 - 2 * zsquared) / 16
    k3d = _PI_SIX * (5 - 30 * zsquared) / 64
    k3c = _PI_FOUR * (-60 * zsquared + 212 * zfour) / 16
    k3b = _PI_SQUARED * (135 * zfour - 96 * zsix) / 4
    k3a = -30 * zsix - 90 * z ** 8
    K0to3 = np.zeros(4)
    maxk = int(np.ceil(16 * z / np.pi))
    for k in range(maxk, 0, -1):
        m = 2 * k - 1
        msquared, mfour, msix = m ** 2, m ** 4, m ** 6
        qpower = np.power(q, 8 * k)
        coeffs = np.array([1.0, k1a + k1b * msquared, k2a + k2b * msquared + k2c * mfour,
                           k3a + k3b * msquared + k3c * mfour + k3d * msix])
        K0to3 *= qpower
        K0to3 += coeffs
    K0to3 *= q
    K0to3 *= _SQRT2PI
    K0to3 /= np.array([z, 6 * zfour, 72 * z ** 7, 6480 * z ** 10])
    q = np.exp(-_PI_SQUARED / 2 / zsquared)
    ks = np.arange(maxk, 0, -1)
    ksquared = ks ** 2
    sqrt3z = _SQRT3 * z
    kspi = np.pi * ks
    qpwers = q ** ksquared
    k2extra = np.sum(ksquared * qpwers) * _PI_SQUARED * _SQRT2PI / (-36 * zthree)
    K0to3[2] += k2extra
    k3extra = np.sum((sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpwers) * _PI_SQUARED * _SQRT2PI / (216 * zsix)
    K0to3[3] += k3extra
    K0to3 /= np.power(n * 1.0, np.arange(len(K0to3)) / 2.0)
    return float(sum(K0to3))


def kolmogn_sf(n: int, x: float) -> float:
    """P(D_n > x) for the two-sided one-sample KS statistic of ``n`` samples (``scipy.stats.kstwo.sf``).

    Simard and L'Ecuyer's (2011) choice of algorithm by ``n`` and ``x``, as scipy makes it.
    """
    n = int(n)
    if n <= 0:
        return float("nan")
    if x >= 1.0:
        return 0.0
    if x <= 0.0:
        return 1.0
    t = n * x
    if t <= 1.0:
        if t <= 0.5:
            return 1.0
        if n <= 140:
            prob = float(np.prod(np.arange(1, n + 1) * (1.0 / n) * (2 * t - 1)))
        else:
            prob = float(np.exp(_log_nfactorial_div_n_pow_n(n) + n * np.log(2 * t - 1)))
        return _clip(1.0 - prob)
    if t >= n - 1:
        return _clip(2 * (1.0 - x) ** n)
    if x >= 0.5:
        return _clip(2 * smirnov_sf(n, x))
    nxsquared = t * x
    if n <= 140:
        if nxsquared <= 0.754693:
            return _clip(1.0 - _kolmogn_dmtw(n, x))
        if nxsquared <= 4:
            return _clip(1.0 - _kolmogn_pomeranz(n, x))
        return _clip(2 * smirnov_sf(n, x))
    if nxsquared >= 370.0:
        return 0.0
    if nxsquared >= 2.2:
        return _clip(2 * smirnov_sf(n, x))
    if n <= 100000 and n * x ** 1.5 <= 1.4:
        cdf = _kolmogn_dmtw(n, x)
    else:
        cdf = _kolmogn_pelz_good(n, x)
    return _clip(1.0 - cdf)


def _prob_outside_square(n: int, h: int) -> float:
    """P(D_{n,n} >= h/n) for two samples of size n (Drion/Gnedenko/Korolyuk, Horner form as scipy)."""
    P = 0.0
    k = int(np.floor(n / h))
    while k >= 0:
        p1 = 1.0
        for j in range(h):
            p1 = (n - k * h - j) * p1 / (n + k * h + j + 1)
        P = p1 * (1.0 - P)
        k -= 1
    return 2 * P


def _outer_prob_inside(m: int, n: int, g: int, h: int) -> float:
    """The share of lattice paths (0,0) -> (m,n) that leave the band ``|x/m - y/n| < h/lcm(m,n)``.

    Hodges' inside method in Viehmann's 1-p form (as scipy), swept one anti-diagonal at a time
    so each step is a numpy operation: Q(i,j) = (i Q(i-1,j) + j Q(i,j-1)) / (i+j) inside the
    band, 1 outside it; the answer is Q(m,n).
    """
    if m < n:
        m, n = n, m
    mg, ng = m // g, n // g
    s = mg + ng
    # q[j + 1] holds Q(k - j, j) of the current diagonal; 1.0 wherever the point is outside the band.
    q = np.ones(n + 3)
    q[1] = 0.0
    jj = np.arange(-1, n + 2, dtype=np.float64)
    prev_lo, prev_hi = 0, 0
    for k in range(1, m + n + 1):
        lo = max((ng * k - h) // s + 1, 0, k - m)
        hi = min(-((-(ng * k + h)) // s) - 1, n, k)
        if hi < lo:
            return 1.0
        j = jj[lo + 1:hi + 2]
        # Q(i, j) = (i Q(i-1, j) + j Q(i, j-1)) / k, both read from the previous diagonal.
        new = ((k - j) * q[lo + 1:hi + 2] + j * q[lo:hi + 1]) / k
        if prev_lo < lo:
            q[prev_lo + 1:lo + 1] = 1.0
        if prev_hi > hi:
            q[hi + 2:prev_hi + 2] = 1.0
        q[lo + 1:hi + 2] = new
        prev_lo, prev_hi = lo, hi
    return float(q[n + 1])


def ks_pvalue(d: float, n1: int, n2: int) -> tuple[float, float, str]:
    """(p-value, statistic, method) of a two-sided two-sample KS statistic ``d``, as ``ks_2samp(method="auto")``.

    ``exact`` when both samples have at most 10,000 values (the statistic is then the lattice
    value ``h / lcm(n1, n2)`` scipy reports), else ``asymp``: ``kstwo.sf(d, round(n1 n2 / (n1 + n2)))``.
    """
    n1, n2 = int(n1), int(n2)
    if min(n1, n2) <= 0:
        raise ValueError("KS needs two non-empty samples")
    d = float(d)
    if max(n1, n2) <= KS_EXACT_MAX_N:
        g = int(np.gcd(n1, n2))
        lcm = (n1 // g) * n2
        h = int(np.round(d * lcm))
        d = h * 1.0 / lcm
        if h == 0:
            return 1.0, d, "exact"
        try:
            with np.errstate(invalid="raise", over="raise"):
                prob = _prob_outside_square(n1, h) if n1 == n2 else _outer_prob_inside(n1, n2, g, h)
        except (FloatingPointError, OverflowError):
            prob = float("nan")
        if 0 <= prob <= 1:
            return float(prob), d, "exact"
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return _clip(kolmogn_sf(int(np.round(en)), d)), d, "asymp"


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float, str]:
    """(statistic, p-value, method) of the two-sided two-sample KS test, equal to ``scipy.stats.ks_2samp``."""
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    if len(a) == 0 or len(b) == 0:
        raise ValueError("KS needs two non-empty samples")
    both = np.concatenate([a, b])
    diff = np.searchsorted(a, both, side="right") / len(a) - np.searchsorted(b, both, side="right") / len(b)
    d = max(float(np.clip(-diff.min(), 0, 1)), float(diff.max()))
    p, d, method = ks_pvalue(d, len(a), len(b))
    return d, p, method


def _lgamma(x: float) -> float:
    """log Gamma(x) for x > 0 (Lanczos, g=7: ~1e-15 relative)."""
    coef = (0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
            -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
            1.5056327351493116e-7)
    if x < 0.5:
        return float(np.log(np.pi / abs(np.sin(np.pi * x)))) - _lgamma(1 - x)
    x -= 1
    a = coef[0]
    t = x + 7.5
    for i in range(1, 9):
        a += coef[i] / (x + i)
    return float(0.5 * np.log(2 * np.pi) + (x + 0.5) * np.log(t) - t + np.log(a))


def gammaincc(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x)."""
    if x <= 0:
        return 1.0
    if not np.isfinite(x):
        return 0.0
    log_front = -x + a * np.log(x) - _lgamma(a)
    if x < a + 1:  # series for P
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return _clip(1.0 - float(np.exp(log_front)) * total)
    tiny = 1e-300  # modified Lentz continued fraction for Q
    b = x + 1 - a
    c = 1 / tiny
    dd = 1 / b
    hh = dd
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        dd = an * dd + b
        dd = tiny if abs(dd) < tiny else dd
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        dd = 1 / dd
        delta = dd * c
        hh *= delta
        if abs(delta - 1) < 1e-16:
            break
    return _clip(float(np.exp(log_front)) * hh)


def chi2_sf(x: float, df: float) -> float:
    """P(X > x) for a chi-squared variable with ``df`` degrees of freedom (``scipy.stats.chi2.sf``)."""
    if df <= 0:
        return float("nan")
    return gammaincc(df / 2.0, x / 2.0)


# =====================================================================================================
# Statistics of raw samples and of counts
# =====================================================================================================

def wasserstein_distance(u: np.ndarray, v: np.ndarray) -> float:
    """The first Wasserstein distance of two samples (``scipy.stats.wasserstein_distance``)."""
    u = np.sort(np.asarray(u, dtype=np.float64))
    v = np.sort(np.asarray(v, dtype=np.float64))
    if len(u) == 0 or len(v) == 0:
        raise ValueError("Wasserstein needs two non-empty samples")
    allv = np.sort(np.concatenate([u, v]))
    deltas = np.diff(allv)
    u_cdf = np.searchsorted(u, allv[:-1], side="right") / len(u)
    v_cdf = np.searchsorted(v, allv[:-1], side="right") / len(v)
    return float(np.sum(np.abs(u_cdf - v_cdf) * deltas))


def psi_from_counts(expected: np.ndarray, actual: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """PSI = sum (a - e) ln(a / e) over bins, with shares of the expected (baseline) and actual
    (current) counts; an empty bin's share is ``epsilon``."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("PSI needs counts on both sides")
    e = e / e.sum()
    a = a / a.sum()
    e = np.where(e == 0, epsilon, e)
    a = np.where(a == 0, epsilon, a)
    return float(np.sum((a - e) * np.log(a / e)))


def jensen_shannon_distance(p: np.ndarray, q: np.ndarray) -> float:
    """The Jensen-Shannon distance (natural log) of two count or share vectors (``scipy.spatial.distance``)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0)
        right = np.where(q > 0, q * np.log(q / m), 0.0)
    js = float(np.sum(left) + np.sum(right))
    return float(np.sqrt(max(js, 0.0) / 2.0))


def chi2_homogeneity(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """(statistic, p-value, degrees of freedom) of the chi-squared test that two samples' counts over
    the same bins come from one distribution (``scipy.stats.chi2_contingency(..., correction=False)``)."""
    table = np.vstack([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return stat, chi2_sf(stat, dof), dof


# =====================================================================================================
# Aggregates
# =====================================================================================================

def as_float(values: object) -> np.ndarray:
    """Values as float64, with None (and anything numpy reads as NaN) as NaN."""
    arr = np.asarray(values)
    if arr.dtype == np.float64:
        return arr
    if arr.dtype.kind in "iub":
        return arr.astype(np.float64)
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        out = np.full(len(arr), np.nan)
        for i, v in enumerate(arr.tolist()):
            try:
                out[i] = float(v) if v is not None else np.nan
            except (TypeError, ValueError):
                pass
        return out


def _quantile_sorted(s: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``np.quantile(s, probs)`` (linear) for an already sorted ``s``."""
    pos = (len(s) - 1) * probs
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(s) - 1)
    frac = pos - lo
    return s[lo] + frac * (s[hi] - s[lo])


class NumericAggregate:
    """A numeric feature's values summarized on fixed edges ``e_0 < ... < e_K`` (see the module docstring).

    ``counts[0]`` counts values below ``e_0``, ``counts[j]`` (1..K) those in ``[e_{j-1}, e_j)``,
    ``counts[K+1]`` those at or above ``e_K``; ``offsets[j]`` sums ``x - anchor_j`` over bin ``j``
    (anchor: ``e_0`` for bin 0, else ``e_{j-1}``), which makes the Wasserstein distance and the
    KS statistic exact inside bins where the two distributions do not cross. ``splits`` are the
    bin indices where the coarse (PSI) bins start.
    """

    kind = "numeric"
    __slots__ = ("edges", "splits", "counts", "offsets", "n", "nulls", "mean", "m2", "min", "max", "sample",
                 "sample_cap", "distinct")

    def __init__(self, edges: np.ndarray, splits: np.ndarray, counts: np.ndarray, offsets: np.ndarray, n: int,
                 nulls: int, mean: float, m2: float, min: float | None, max: float | None,
                 sample: np.ndarray | None, sample_cap: int, distinct: int | None = None) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        self.splits = np.asarray(splits, dtype=np.int64)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.float64)
        self.n = int(n)
        self.nulls = int(nulls)
        self.mean = float(mean)
        self.m2 = float(m2)
        self.min = None if min is None else float(min)
        self.max = None if max is None else float(max)
        self.sample = None if sample is None else np.asarray(sample, dtype=np.float64)
        self.sample_cap = int(sample_cap)
        self.distinct = None if distinct is None else int(distinct)

    # ---- building ------------------------------------------------------------------------------
    @classmethod
    def empty(cls, edges: np.ndarray, splits: np.ndarray, sample_cap: int = DEFAULT_SAMPLE_CAP) -> NumericAggregate:
        k = len(edges) + 1
        return cls(edges, splits, np.zeros(k, np.int64), np.zeros(k), 0, 0, 0.0, 0.0, None, None,
                   np.empty(0), sample_cap)

    @classmethod
    def of(cls, values: object, edges: np.ndarray, splits: np.ndarray,
           sample_cap: int = DEFAULT_SAMPLE_CAP) -> NumericAggregate:
        """The aggregate of ``values`` (NaN, None and infinities count as nulls) on ``edges``."""
        x = as_float(values)
        finite = np.isfinite(x)
        nulls = int(len(x) - np.count_nonzero(finite))
        if nulls:
            x = x[finite]
        edges = np.asarray(edges, dtype=np.float64)
        k = len(edges) + 1
        if len(x) == 0:
            agg = cls.empty(edges, splits, sample_cap)
            agg.nulls = nulls
            return agg
        # Sorting once and finding the edges in the sorted values is ~4x faster than finding each
        # value among the edges (and leaves the kept sample sorted, as merging wants it).
        x = np.sort(x)
        if len(edges):
            below = np.searchsorted(x, edges, side="left")
            counts = np.diff(np.concatenate([[0], below, [len(x)]]))
            idx = np.repeat(np.arange(k), counts)
            anchors = np.concatenate([edges[:1], edges])
            offsets = np.bincount(idx, weights=x - anchors[idx], minlength=k)
        else:
            counts = np.array([len(x)], np.int64)
            offsets = np.zeros(1)
        mean = float(x.mean())
        m2 = float(np.sum((x - mean) ** 2))
        sample = x if len(x) <= sample_cap else None
        return cls(edges, splits, counts, offsets, len(x), nulls, mean, m2, float(x.min()), float(x.max()),
                   sample, sample_cap)

    @classmethod
    def baseline(cls, values: object, bins: int = DEFAULT_BINS, coarse_bins: int = DEFAULT_COARSE_BINS,
                 sample_cap: int = DEFAULT_SAMPLE_CAP) -> NumericAggregate:
        """A baseline: edges at the values' ``1/bins`` quantiles (unique), coarse bins at their
        ``1/coarse_bins`` quantiles, and the values aggregated on those edges."""
        x = as_float(values)
        finite = np.isfinite(x)
        nulls = int(len(x) - np.count_nonzero(finite))
        s = np.sort(x[finite])
        n = len(s)
        if n == 0:
            agg = cls.empty(np.empty(0), np.empty(0, np.int64), sample_cap)
            agg.nulls = nulls
            agg.distinct = 0
            return agg
        bins = max(int(bins), 1)
        coarse_bins = max(int(coarse_bins), 1)
        fine = _quantile_sorted(s, np.arange(bins + 1) / bins)
        # One more edge just above the maximum: the maximum gets a bin of its own and only values
        # beyond the baseline's range land in the last bin (discrete data stays exact).
        edges = np.unique(np.concatenate([fine, [np.nextafter(s[-1], np.inf)]]))
        if len(edges) <= coarse_bins + 1:
            # Few distinct values: every fine bin is a coarse bin (values below the minimum join the first).
            splits = np.arange(2, len(edges) + 1, dtype=np.int64)
        else:
            picks = fine[np.round(np.arange(1, coarse_bins) * bins / coarse_bins).astype(np.int64)]
            at = np.searchsorted(edges, picks)
            at = np.unique(at[at > 0])
            splits = at + 1
        below = np.searchsorted(s, edges, side="left")
        k = len(edges) + 1
        counts = np.diff(np.concatenate([[0], below, [n]]))
        idx = np.repeat(np.arange(k), counts)
        anchors = np.concatenate([edges[:1], edges])
        offsets = np.bincount(idx, weights=s - anchors[idx], minlength=k)
        mean = float(s.mean())
        m2 = float(np.sum((s - mean) ** 2))
        distinct = int(np.count_nonzero(np.diff(s))) + 1
        return cls(edges, splits, counts, offsets, n, nulls, mean, m2, float(s[0]), float(s[-1]),
                   s if n <= sample_cap else None, sample_cap, distinct)

    def like(self, values: object) -> NumericAggregate:
        """``values`` aggregated on this aggregate's edges (a window against this baseline)."""
        return NumericAggregate.of(values, self.edges, self.splits, self.sample_cap)

    # ---- reading -------------------------------------------------------------------------------
    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else 0.0

    @property
    def null_rate(self) -> float:
        total = self.n + self.nulls
        return self.nulls / total if total else 0.0

    @property
    def complete(self) -> bool:
        """Whether every value is kept (exact tests possible)."""
        return self.sample is not None and len(self.sample) == self.n

    def coarse_counts(self) -> np.ndarray:
        return np.add.reduceat(self.counts, np.concatenate([[0], self.splits]).astype(np.int64))

    def coarse_edges(self) -> np.ndarray:
        """The inner edges of the coarse bins (the first is open below, the last open above)."""
        return self.edges[self.splits - 1]

    def compatible(self, other: NumericAggregate) -> bool:
        return np.array_equal(self.edges, other.edges) and np.array_equal(self.splits, other.splits)

    # ---- merging -------------------------------------------------------------------------------
    def merge(self, other: NumericAggregate) -> NumericAggregate:
        if not isinstance(other, NumericAggregate) or not self.compatible(other):
            raise ValueError("numeric aggregates merge only on the same edges")
        n = self.n + other.n
        if n == 0:
            mean, m2 = 0.0, 0.0
        elif self.n == 0:
            mean, m2 = other.mean, other.m2
        elif other.n == 0:
            mean, m2 = self.mean, self.m2
        else:
            # Chan et al.; the result is symmetric in (self, other) so merging commutes exactly.
            delta = other.mean - self.mean
            mean = (self.n * self.mean + other.n * other.mean) / n
            m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        cap = min(self.sample_cap, other.sample_cap)
        sample = None
        if self.sample is not None and other.sample is not None and n <= cap:
            sample = np.sort(np.concatenate([self.sample, other.sample]))
        lo = [v for v in (self.min, other.min) if v is not None]
        hi = [v for v in (self.max, other.max) if v is not None]
        return NumericAggregate(self.edges, self.splits, self.counts + other.counts, self.offsets + other.offsets,
                                n, self.nulls + other.nulls, mean, m2, min(lo) if lo else None,
                                max(hi) if hi else None, sample, cap)

    # ---- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"kind": "numeric", "edges": self.edges.tolist(), "splits": self.splits.tolist(),
                "counts": self.counts.tolist(), "offsets": self.offsets.tolist(), "n": self.n, "nulls": self.nulls,
                "mean": self.mean, "m2": self.m2, "min": self.min, "max": self.max,
                "sample": None if self.sample is None else self.sample.tolist(), "sample_cap": self.sample_cap,
                "distinct": self.distinct}

    @classmethod
    def from_dict(cls, d: dict) -> NumericAggregate:
        return cls(np.array(d["edges"], np.float64), np.array(d["splits"], np.int64), np.array(d["counts"], np.int64),
                   np.array(d["offsets"], np.float64), d["n"], d["nulls"], d["mean"], d["m2"], d.get("min"),
                   d.get("max"), None if d.get("sample") is None else np.array(d["sample"], np.float64),
                   d.get("sample_cap", DEFAULT_SAMPLE_CAP), d.get("distinct"))

    def __repr__(self) -> str:
        return (f"NumericAggregate(n={self.n}, nulls={self.nulls}, bins={len(self.counts)}, mean={self.mean:.6g}, "
                f"sample={'all' if self.complete else 'none'})")


def category_key(value: object) -> str | None:
    """A category's canonical text: None for nulls, ``true``/``false``, ``3`` for 3 and 3.0, else ``str``."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        if value != value:
            return None
        if float(value).is_integer():
            return str(int(value))
        return repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def count_categories(values: object) -> tuple[dict[str, int], int]:
    """({category: count}, nulls) of raw values, with keys as :func:`category_key` writes them."""
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if arr.dtype.kind in "US":
        uniq, cnt = np.unique(arr, return_counts=True)
        return {category_key(u.item()): int(c) for u, c in zip(uniq, cnt)}, 0
    if arr.dtype.kind == "f":
        nulls = int(np.count_nonzero(~np.isfinite(arr)))
        uniq, cnt = np.unique(arr[np.isfinite(arr)], return_counts=True)
        return {category_key(float(u)): int(c) for u, c in zip(uniq, cnt)}, nulls
    if arr.dtype.kind in "iub":
        uniq, cnt = np.unique(arr, return_counts=True)
        return {category_key(u.item()): int(c) for u, c in zip(uniq, cnt)}, 0
    counts: dict[str, int] = {}
    nulls = 0
    keys = [category_key(v) for v in arr.tolist()]
    for key in keys:
        if key is None:
            nulls += 1
        else:
            counts[key] = counts.get(key, 0) + 1
    return counts, nulls


class CategoricalAggregate:
    """A categorical feature's counts over the baseline's categories, plus categories it never saw.

    ``categories`` play the part numeric edges play: fixed by the baseline, the same in every
    window. A category outside them is counted in ``new`` -- or, when the baseline folded its
    rare categories into :data:`OTHER`, in that. Past ``max_new`` new categories every new one
    is folded into ``new[OTHER]`` (whatever the merge order, so merging stays associative).
    """

    kind = "categorical"
    __slots__ = ("categories", "counts", "new", "folded", "n", "nulls", "max_new", "_index")

    def __init__(self, categories: tuple[str, ...], counts: np.ndarray, new: dict[str, int], folded: bool, n: int,
                 nulls: int, max_new: int = DEFAULT_MAX_NEW) -> None:
        self.categories = tuple(categories)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.new = dict(new)
        self.folded = bool(folded)
        self.n = int(n)
        self.nulls = int(nulls)
        self.max_new = int(max_new)
        self._index: dict[str, int] | None = None

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {c: i for i, c in enumerate(self.categories)}
        return self._index

    @classmethod
    def baseline(cls, values: object = None, *, counts: dict[str, int] | None = None, nulls: int = 0,
                 max_categories: int = DEFAULT_MAX_CATEGORIES, max_new: int = DEFAULT_MAX_NEW) -> CategoricalAggregate:
        """A baseline from raw values or from ``counts``: its categories by frequency (ties by name),
        the rarer ones past ``max_categories`` folded into :data:`OTHER`."""
        if counts is None:
            counts, nulls = count_categories(values)
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = ordered[:max_categories]
        rest = sum(c for _, c in ordered[max_categories:])
        cats = [k for k, _ in kept]
        cnt = [c for _, c in kept]
        if rest:
            cats.append(OTHER)
            cnt.append(rest)
        return cls(tuple(cats), np.array(cnt, np.int64), {}, False, int(sum(cnt)), nulls, max_new)

    def like(self, values: object = None, *, counts: dict[str, int] | None = None,
             nulls: int = 0) -> CategoricalAggregate:
        """Values (or their ``counts``) aggregated on this aggregate's categories."""
        if counts is None:
            counts, nulls = count_categories(values)
        own = np.zeros(len(self.categories), np.int64)
        new: dict[str, int] = {}
        other = self.index.get(OTHER)
        for key, c in counts.items():
            i = self.index.get(key)
            if i is not None:
                own[i] += c
            elif other is not None:
                own[other] += c
            else:
                new[key] = new.get(key, 0) + int(c)
        folded = len(new) > self.max_new
        if folded:
            new = {OTHER: sum(new.values())}
        return CategoricalAggregate(self.categories, own, new, folded, int(sum(counts.values())), nulls,
                                    self.max_new)

    @property
    def null_rate(self) -> float:
        total = self.n + self.nulls
        return self.nulls / total if total else 0.0

    def frequencies(self) -> dict[str, int]:
        out = {c: int(v) for c, v in zip(self.categories, self.counts)}
        for k, v in self.new.items():
            out[k] = out.get(k, 0) + v
        return out

    def compatible(self, other: CategoricalAggregate) -> bool:
        return self.categories == other.categories

    def merge(self, other: CategoricalAggregate) -> CategoricalAggregate:
        if not isinstance(other, CategoricalAggregate) or not self.compatible(other):
            raise ValueError("categorical aggregates merge only over the same categories")
        new = dict(self.new)
        for k, v in other.new.items():
            new[k] = new.get(k, 0) + v
        max_new = min(self.max_new, other.max_new)
        folded = self.folded or other.folded or len(new) > max_new
        if folded:
            new = {OTHER: sum(new.values())} if new else {}
        return CategoricalAggregate(self.categories, self.counts + other.counts, new, folded, self.n + other.n,
                                    self.nulls + other.nulls, max_new)

    def to_dict(self) -> dict:
        return {"kind": "categorical", "categories": list(self.categories), "counts": self.counts.tolist(),
                "new": dict(sorted(self.new.items())), "folded": self.folded, "n": self.n, "nulls": self.nulls,
                "max_new": self.max_new}

    @classmethod
    def from_dict(cls, d: dict) -> CategoricalAggregate:
        return cls(tuple(d["categories"]), np.array(d["counts"], np.int64), d.get("new", {}), d.get("folded", False),
                   d["n"], d["nulls"], d.get("max_new", DEFAULT_MAX_NEW))

    def __repr__(self) -> str:
        return (f"CategoricalAggregate(n={self.n}, nulls={self.nulls}, categories={len(self.categories)}, "
                f"new={len(self.new)})")


def aligned_counts(ref: CategoricalAggregate, cur: CategoricalAggregate) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(categories, reference counts, current counts) over every category either side has."""
    a = ref.frequencies()
    b = cur.frequencies()
    keys = list(ref.categories) + sorted(k for k in set(a) | set(b) if k not in ref.index)
    return keys, np.array([a.get(k, 0) for k in keys], np.float64), np.array([b.get(k, 0) for k in keys], np.float64)


class PerformanceAggregate:
    """What the labelled rows say about a model: confusion counts or regression error sums.

    Classification keeps ``pairs[(label, prediction)] = count`` (keys as :func:`category_key`);
    regression keeps the count and sums of error, absolute error, squared error, label and
    squared label. Both merge by adding.
    """

    __slots__ = ("task", "pairs", "sums")
    _SUMS = ("n", "err", "abs", "sq", "y", "y2")

    def __init__(self, task: str, pairs: dict[tuple[str, str], int] | None = None,
                 sums: dict[str, float] | None = None) -> None:
        if task not in ("classification", "regression"):
            raise ValueError("task is classification or regression")
        self.task = task
        self.pairs = dict(pairs or {})
        self.sums = {k: float((sums or {}).get(k, 0.0)) for k in self._SUMS}

    @classmethod
    def of(cls, task: str, labels: object, predictions: object) -> PerformanceAggregate:
        """The aggregate of rows where both the label and the prediction are known."""
        if task == "regression":
            y = as_float(labels)
            p = as_float(predictions)
            ok = np.isfinite(y) & np.isfinite(p)
            y, p = y[ok], p[ok]
            err = p - y
            return cls(task, sums={"n": float(len(y)), "err": float(err.sum()), "abs": float(np.abs(err).sum()),
                                   "sq": float((err ** 2).sum()), "y": float(y.sum()), "y2": float((y ** 2).sum())})
        pairs: dict[tuple[str, str], int] = {}
        truths = np.asarray(labels, dtype=object).tolist()
        for label, pred in zip(truths, np.asarray(predictions, dtype=object).tolist()):
            a, b = category_key(label), category_key(pred)
            if a is None or b is None:
                continue
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
        return cls(task, pairs)

    @property
    def n(self) -> int:
        if self.task == "regression":
            return int(self.sums["n"])
        return int(sum(self.pairs.values()))

    def merge(self, other: PerformanceAggregate) -> PerformanceAggregate:
        if not isinstance(other, PerformanceAggregate) or other.task != self.task:
            raise ValueError("performance aggregates merge only for the same task")
        pairs = dict(self.pairs)
        for k, v in other.pairs.items():
            pairs[k] = pairs.get(k, 0) + v
        return PerformanceAggregate(self.task, pairs, {k: self.sums[k] + other.sums[k] for k in self._SUMS})

    def metrics(self) -> dict[str, float]:
        """``accuracy`` (and ``precision``, ``recall``, ``f1`` of the positive class for 0/1 or
        false/true labels), or ``rmse``, ``mae`` and ``r2``; empty without labelled rows."""
        n = self.n
        if n == 0:
            return {}
        if self.task == "regression":
            s = self.sums
            out = {"rmse": float(np.sqrt(s["sq"] / n)), "mae": s["abs"] / n}
            sst = s["y2"] - s["y"] ** 2 / n
            if sst > 0:
                out["r2"] = 1.0 - s["sq"] / sst
            return out
        correct = sum(v for (a, b), v in self.pairs.items() if a == b)
        out = {"accuracy": correct / n}
        labels = {a for a, _ in self.pairs} | {b for _, b in self.pairs}
        positive = "1" if labels <= {"0", "1"} else "true" if labels <= {"false", "true"} else None
        if positive is not None:
            tp = self.pairs.get((positive, positive), 0)
            fp = sum(v for (a, b), v in self.pairs.items() if b == positive and a != positive)
            fn = sum(v for (a, b), v in self.pairs.items() if a == positive and b != positive)
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            out.update(precision=precision, recall=recall,
                       f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        return out

    def to_dict(self) -> dict:
        return {"task": self.task, "pairs": [[a, b, c] for (a, b), c in sorted(self.pairs.items())],
                "sums": dict(self.sums)}

    @classmethod
    def from_dict(cls, d: dict) -> PerformanceAggregate:
        return cls(d["task"], {(a, b): int(c) for a, b, c in d.get("pairs", [])}, d.get("sums"))


PRIMARY_METRIC = {"classification": ("accuracy", True), "regression": ("rmse", False)}
"""The metric performance drift is judged on, and whether higher is better."""


def aggregate_from_dict(d: dict | None) -> NumericAggregate | CategoricalAggregate | None:
    if d is None:
        return None
    return NumericAggregate.from_dict(d) if d.get("kind") == "numeric" else CategoricalAggregate.from_dict(d)


class WindowAggregate:
    """One window of one model version: rows, feature aggregates, prediction, labelled performance."""

    __slots__ = ("start", "end", "rows", "features", "prediction", "performance")

    def __init__(self, start: int, end: int, rows: int, features: dict, prediction: object = None,
                 performance: PerformanceAggregate | None = None) -> None:
        self.start = int(start)
        self.end = int(end)
        self.rows = int(rows)
        self.features = dict(features)
        self.prediction = prediction
        self.performance = performance

    def merge(self, other: WindowAggregate) -> WindowAggregate:
        names = list(self.features) + [k for k in other.features if k not in self.features]
        features = {k: merge(self.features.get(k), other.features.get(k)) for k in names}
        return WindowAggregate(min(self.start, other.start), max(self.end, other.end), self.rows + other.rows,
                               features, merge(self.prediction, other.prediction),
                               merge(self.performance, other.performance))

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "start": self.start, "end": self.end, "rows": self.rows,
                "features": {k: v.to_dict() for k, v in self.features.items()},
                "prediction": None if self.prediction is None else self.prediction.to_dict(),
                "performance": None if self.performance is None else self.performance.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> WindowAggregate:
        return cls(d["start"], d["end"], d["rows"], {k: aggregate_from_dict(v) for k, v in d["features"].items()},
                   aggregate_from_dict(d.get("prediction")),
                   None if d.get("performance") is None else PerformanceAggregate.from_dict(d["performance"]))


def merge(a: object, b: object) -> object:
    """Merge two aggregates of one kind (None is the identity)."""
    if a is None:
        return b
    if b is None:
        return a
    return a.merge(b)


# =====================================================================================================
# Drift tests on aggregates
# =====================================================================================================

def _shares(agg: NumericAggregate) -> tuple[np.ndarray, float]:
    total = float(agg.counts.sum())
    return agg.counts / total, total


def ks_binned(ref: NumericAggregate, cur: NumericAggregate) -> tuple[float, float]:
    """(D, upper bound of D) from two aggregates on the same edges.

    The empirical CDFs are known exactly at every edge (just left of it); inside a bin each can
    only rise by its bin's share, so ``|F - G|`` there lies within known limits. A bin whose
    values all sit on its left edge (``offsets == 0``: discrete data) is a step, known exactly.
    """
    p, _ = _shares(ref)
    q, _ = _shares(cur)
    fb = np.concatenate([[0.0], np.cumsum(p)[:-1]])
    gb = np.concatenate([[0.0], np.cumsum(q)[:-1]])
    d_edge = fb - gb
    lo = float(np.max(np.abs(d_edge)))
    step = (ref.offsets == 0) & (cur.offsets == 0)
    step[0] = False
    inside = d_edge + p - q
    lo = max(lo, float(np.max(np.abs(inside[step]), initial=0.0)))
    hi_each = np.maximum(np.abs(d_edge + p), np.abs(d_edge - q))
    hi_each = np.where(step, np.abs(inside), hi_each)
    hi = max(lo, float(hi_each.max()))
    return lo, hi


def wasserstein_binned(ref: NumericAggregate, cur: NumericAggregate) -> tuple[float, float]:
    """(W1, largest possible error) from two aggregates on the same edges.

    Over a bin ``[a, b)`` the integral of each CDF is known exactly from the bin's count and
    offset sum; when ``F - G`` cannot change sign inside the bin, ``int |F - G| = |int F - int G|``
    exactly. Where it can (a bin where the two distributions cross), the error is at most the
    bin's width times the two bins' shares, summed into the bound.
    """
    p, nr = _shares(ref)
    q, nc = _shares(cur)
    e = ref.edges
    fb = np.concatenate([[0.0], np.cumsum(p)[:-1]])
    gb = np.concatenate([[0.0], np.cumsum(q)[:-1]])
    total = 0.0
    bound = 0.0
    # below e_0: int F = sum(e_0 - x) / N
    f_under, g_under = -ref.offsets[0] / nr, -cur.offsets[0] / nc
    total += abs(f_under - g_under)
    if ref.counts[0] and cur.counts[0]:
        bound += f_under + g_under
    # at or above e_K: int (1 - F) = sum(x - e_K) / N
    f_over, g_over = ref.offsets[-1] / nr, cur.offsets[-1] / nc
    total += abs(f_over - g_over)
    if ref.counts[-1] and cur.counts[-1] and (ref.offsets[-1] and cur.offsets[-1]):
        bound += f_over + g_over
    if len(e) > 1:
        w = np.diff(e)
        pi, qi = p[1:-1], q[1:-1]
        d0 = (fb - gb)[1:-1]
        int_f = fb[1:-1] * w + (pi * w - ref.offsets[1:-1] / nr)
        int_g = gb[1:-1] * w + (qi * w - cur.offsets[1:-1] / nc)
        diff = np.abs(int_f - int_g)
        # Bins where both sides' values all sit on the left edge are steps: known exactly.
        crossing = (d0 - qi < 0) & (d0 + pi > 0) & ~((ref.offsets[1:-1] == 0) & (cur.offsets[1:-1] == 0))
        if crossing.any():
            # Where they may cross, model each bin's mass as a point at its mean (exact first moments).
            with np.errstate(divide="ignore", invalid="ignore"):
                at_f = np.where(ref.counts[1:-1] > 0, ref.offsets[1:-1] / ref.counts[1:-1], w)
                at_g = np.where(cur.counts[1:-1] > 0, cur.offsets[1:-1] / cur.counts[1:-1], w)
            first = np.minimum(at_f, at_g)
            second = np.maximum(at_f, at_g)
            middle = np.where(at_f <= at_g, d0 + pi, d0 - qi)
            model = (np.abs(d0) * first + np.abs(middle) * (second - first)
                     + np.abs(d0 + pi - qi) * (w - second))
            diff = np.where(crossing, model, diff)
        total += float(diff.sum())
        bound += float(np.sum(np.where(crossing, w * (pi + qi), 0.0)))
    return total, bound


def _not_applicable(name: str, threshold: float, why: str, ref: object = None, cur: object = None) -> dict:
    return {"test": name, "statistic": None, "p_value": None, "threshold": threshold, "drifted": False,
            "method": None, "bound": None, "n_reference": getattr(ref, "n", 0), "n_current": getattr(cur, "n", 0),
            "note": why}


def _result(name: str, statistic: float, p_value: float | None, threshold: float, drifted: bool, method: str,
            bound: float | None, ref: object, cur: object, note: str = "") -> dict:
    return {"test": name, "statistic": float(statistic), "p_value": None if p_value is None else float(p_value),
            "threshold": float(threshold), "drifted": bool(drifted), "method": method,
            "bound": None if bound is None else float(bound), "n_reference": int(ref.n), "n_current": int(cur.n),
            "note": note}


def _counts_pair(ref: object, cur: object) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    if isinstance(ref, NumericAggregate):
        return ref.coarse_counts().astype(np.float64), cur.coarse_counts().astype(np.float64), None
    keys, a, b = aligned_counts(ref, cur)
    return a, b, keys


def drift_ks(ref: object, cur: object, threshold: float) -> dict:
    if not isinstance(ref, NumericAggregate):
        return _not_applicable("ks", threshold, "KS applies to numeric features", ref, cur)
    if ref.complete and cur.complete:
        d, p, method = ks_2samp(ref.sample, cur.sample)
        return _result("ks", d, p, threshold, p < threshold, f"exact ({method} p-value)", None, ref, cur)
    d, hi = ks_binned(ref, cur)
    p, _, method = ks_pvalue(d, ref.n, cur.n)
    return _result("ks", d, p, threshold, p < threshold, f"binned ({method} p-value)", hi, ref, cur,
                   "statistic from the baseline's fine bins; the true D is between it and bound")


def drift_wasserstein(ref: object, cur: object, threshold: float) -> dict:
    if not isinstance(ref, NumericAggregate):
        return _not_applicable("wasserstein", threshold, "Wasserstein applies to numeric features", ref, cur)
    if ref.complete and cur.complete:
        norm = max(float(np.std(ref.sample)), 0.001)
        w = wasserstein_distance(ref.sample, cur.sample) / norm
        return _result("wasserstein", w, None, threshold, w >= threshold, "exact", None, ref, cur)
    norm = max(ref.std, 0.001)
    w, err = wasserstein_binned(ref, cur)
    return _result("wasserstein", w / norm, None, threshold, w / norm >= threshold, "binned", err / norm, ref, cur,
                   "normalized by the reference's standard deviation; the true value is within +- bound")


def drift_psi(ref: object, cur: object, threshold: float) -> dict:
    a, b, _ = _counts_pair(ref, cur)
    value = psi_from_counts(a, b)
    return _result("psi", value, None, threshold, value >= threshold, "exact", None, ref, cur)


def drift_jensen_shannon(ref: object, cur: object, threshold: float) -> dict:
    a, b, _ = _counts_pair(ref, cur)
    value = jensen_shannon_distance(a, b)
    return _result("jensen_shannon", value, None, threshold, value >= threshold, "exact", None, ref, cur)


def drift_chi2(ref: object, cur: object, threshold: float) -> dict:
    a, b, _ = _counts_pair(ref, cur)
    stat, p, dof = chi2_homogeneity(a, b)
    return _result("chi2", stat, p, threshold, p < threshold, "exact", None, ref, cur, f"{dof} degrees of freedom")


class DriftTest:
    """A named drift statistic with its default threshold: ``test(reference, current, threshold=None) -> dict``.

    The result has ``test``, ``statistic``, ``p_value`` (None for distances), ``threshold``,
    ``drifted``, ``method`` (``exact`` or ``binned ...``), ``bound`` (see the module docstring),
    ``n_reference``, ``n_current`` and ``note``. ``kind`` is ``p_value`` (drift when below the
    threshold) or ``distance`` (drift at or above it); ``applies_to`` names the feature kinds.
    """

    __slots__ = ("name", "function", "threshold", "kind", "applies_to", "description")

    def __init__(self, name: str, function: object, threshold: float, kind: str, applies_to: tuple[str, ...],
                 description: str) -> None:
        self.name = name
        self.function = function
        self.threshold = float(threshold)
        self.kind = kind
        self.applies_to = tuple(applies_to)
        self.description = description

    def __call__(self, reference: object, current: object, threshold: float | None = None) -> dict:
        limit = self.threshold if threshold is None else float(threshold)
        if reference is None or current is None:
            return _not_applicable(self.name, limit, "no aggregate to compare", reference, current)
        if getattr(reference, "kind", None) not in self.applies_to:
            return _not_applicable(self.name, limit, f"{self.name} applies to {' and '.join(self.applies_to)} "
                                                     "features", reference, current)
        if reference.n == 0 or current.n == 0:
            side = "baseline" if reference.n == 0 else "window"
            return _not_applicable(self.name, limit, f"the {side} has no values", reference, current)
        return self.function(reference, current, limit)

    def __repr__(self) -> str:
        return f"DriftTest({self.name!r}, threshold={self.threshold:g})"


KS = DriftTest("ks", drift_ks, 0.05, "p_value", ("numeric",),
               "two-sample Kolmogorov-Smirnov; drift when p < 0.05")
PSI = DriftTest("psi", drift_psi, 0.2, "distance", ("numeric", "categorical"),
                "population stability index on baseline deciles or categories; drift when >= 0.2")
CHI2 = DriftTest("chi2", drift_chi2, 0.05, "p_value", ("numeric", "categorical"),
                 "chi-squared test of homogeneity on baseline deciles or categories; drift when p < 0.05")
JENSEN_SHANNON = DriftTest("jensen_shannon", drift_jensen_shannon, 0.1, "distance", ("numeric", "categorical"),
                           "Jensen-Shannon distance (natural log) on baseline deciles or categories; drift when >= 0.1")
WASSERSTEIN = DriftTest("wasserstein", drift_wasserstein, 0.1, "distance", ("numeric",),
                        "Wasserstein distance divided by the reference's std (Evidently's normed); drift when >= 0.1")

BUILTIN_TESTS: tuple[DriftTest, ...] = (KS, PSI, CHI2, JENSEN_SHANNON, WASSERSTEIN)


def auto_test(reference: object, current: object, small: int = SMALL_SAMPLE) -> str:
    """The test ``auto`` picks, as Evidently does for the reference's size (and, here, the window's too):

    at most ``small`` rows on either side: ``ks`` (numeric), ``chi2`` (categorical, or numeric
    with at most 5 distinct values); more: ``wasserstein`` (numeric), ``jensen_shannon``
    (categorical, or numeric with at most 5 distinct values).
    """
    few = min(getattr(reference, "n", 0), getattr(current, "n", 0)) <= small
    if isinstance(reference, NumericAggregate):
        distinct = reference.distinct if reference.distinct is not None else len(reference.edges)
        discrete = distinct <= 5
        if few:
            return "chi2" if discrete else "ks"
        return "jensen_shannon" if discrete else "wasserstein"
    return "chi2" if few else "jensen_shannon"
