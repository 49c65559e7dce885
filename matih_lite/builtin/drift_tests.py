"""Built-in drift tests: ``ks``, ``psi``, ``chi2``, ``jensen_shannon`` and ``wasserstein``.

Each is a :class:`~matih_lite.monitoring.stats.DriftTest`: a pure function of a baseline's and a
window's aggregates, with a default threshold (override it in ``[drift] thresholds``):

==================  ==========================================================  ==================
test                statistic                                                   drift when
==================  ==========================================================  ==================
``ks``              two-sample Kolmogorov-Smirnov D and its p-value             p < 0.05
``psi``             population stability index (baseline deciles / categories)  PSI >= 0.2
``chi2``            chi-squared test of homogeneity (deciles / categories)      p < 0.05
``jensen_shannon``  Jensen-Shannon distance, natural log                        distance >= 0.1
``wasserstein``     W1 divided by the reference's standard deviation            distance >= 0.1
==================  ==========================================================  ==================

A plugin adds its own the same way: ``register(name, test)`` where ``test(reference, current,
threshold=None)`` returns the same dict and has ``threshold``, ``kind`` and ``applies_to``.
"""

from __future__ import annotations

from matih_lite.hookspecs import hookimpl
from matih_lite.monitoring.stats import BUILTIN_TESTS


@hookimpl
def register_drift_tests(register):
    for test in BUILTIN_TESTS:
        register(test.name, test)
