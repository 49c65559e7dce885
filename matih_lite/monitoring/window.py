"""A window's drift report from its aggregates: the part of a check that any drift runner computes.

Numpy only (with :mod:`~matih_lite.monitoring.stats` and :mod:`~matih_lite.monitoring.profile`'s
aggregation, which need no more), so the in-process check and a Flink job that lives in its own
virtualenv call these very functions and reach the same verdicts by construction:

- :func:`compare_window`: one version's window aggregate against its baseline (features, data,
  concept and performance drift), with the configured tests and thresholds;
- :func:`window_report`: the deployment's report of one window from its versions' comparisons;
- :func:`label_task`: how labels are read when the baseline does not say (classification or regression);
- :class:`WindowSettings`: ``[drift]`` as plain values, for a runner that has no msgspec or config
  (a :class:`~matih_lite.monitoring.settings.DriftSettings` serves as it is).

A remote runner imports this module alone (its plan names it: ``DriftPlan.kernel``) and finds here, besides,
``stats`` (the aggregates), ``Profile`` (a baseline from its JSON) and ``window_aggregate`` (a window's
values of one feature on its baseline's edges): the functions the in-process check aggregates with.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from matih_lite.errors import ConfigError
from matih_lite.monitoring import stats
from matih_lite.monitoring.profile import Profile, window_aggregate  # noqa: F401  (a remote runner's API)

REPORT_SCHEMA = "matih-lite/drift-report/v1"


@dataclass(frozen=True)
class FeatureChoice:
    """``[drift.features.NAME]`` as plain values: one feature's test and threshold, or ``ignore``."""

    test: str | None = None
    threshold: float | None = None
    kind: str | None = None
    ignore: bool = False


_ANY_FEATURE = FeatureChoice()


@dataclass(frozen=True)
class WindowSettings:
    """What :func:`compare_window` reads of ``[drift]``, as plain values (``from_dict`` of
    ``msgspec.to_builtins(DriftSettings)``, which is how a remote runner receives them)."""

    test: str = "auto"
    prediction_test: str = "auto"
    thresholds: dict[str, float] = field(default_factory=dict)
    features: dict[str, FeatureChoice] = field(default_factory=dict)
    drift_share: float = 0.5
    min_rows: int = 100
    small_sample: int = stats.SMALL_SAMPLE
    performance_threshold: float = 0.05
    min_labels: int = 100

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WindowSettings:
        """From the builtins of a :class:`~matih_lite.monitoring.settings.DriftSettings`; other keys are ignored."""
        names = {f for f in cls.__dataclass_fields__ if f != "features"}
        values = {k: v for k, v in d.items() if k in names}
        features = {str(k): FeatureChoice(**{n: v[n] for n in ("test", "threshold", "kind", "ignore") if n in v})
                    for k, v in (d.get("features") or {}).items()}
        return cls(**values, features=features)


def compare_window(agg: stats.WindowAggregate, profile: Any, settings: Any,
                   tests: Mapping[str, Any] | None = None, version: int | None = None) -> dict[str, Any]:
    """One version's drift in one window against its baseline (a :class:`~matih_lite.monitoring.profile.Profile`):
    features (drifting first), data drift, concept drift and performance drift. Pure: no I/O, no actions;
    ``tests`` default to the built-ins. ``settings`` is a DriftSettings or a :class:`WindowSettings`."""
    tests = tests if tests is not None else {t.name: t for t in stats.BUILTIN_TESTS}
    out: dict[str, Any] = {"version": version, "rows": agg.rows, "status": "unknown", "features": [],
                           "data_drift": None, "concept_drift": None, "performance": None, "notes": []}
    if profile is None:
        out["notes"].append("no baseline for this version; build one with 'matih-lite models baseline "
                            f"MODEL {version} --data train.parquet'")
        return out
    out["baseline"] = {"rows": profile.rows, "created_at": profile.created_at}
    enough = agg.rows >= settings.min_rows
    if not enough:
        out["notes"].append(f"{agg.rows} rows, fewer than min_rows = {settings.min_rows}: reported, not acted on")
    features = []
    for name, ref in profile.features.items():
        fs = settings.features.get(name) or _ANY_FEATURE
        if fs.ignore:
            continue
        cur = agg.features.get(name)
        result = _run_test(fs.test or settings.test, fs.threshold, ref, cur, settings, tests)
        result.update(feature=name, kind=ref.kind, null_rate={"baseline": ref.null_rate,
                                                               "current": cur.null_rate if cur else None})
        features.append(result)
    features.sort(key=lambda r: (not r["drifted"], -_severity(r), r["feature"]))
    out["features"] = features
    tested = [r for r in features if r["statistic"] is not None]
    drifted = [r for r in tested if r["drifted"]]
    share = len(drifted) / len(tested) if tested else 0.0
    out["data_drift"] = {"drifted": len(drifted), "tested": len(tested), "share": share,
                         "threshold": settings.drift_share,
                         "detected": bool(tested) and share >= settings.drift_share,
                         "drifted_features": [r["feature"] for r in drifted]}
    if profile.prediction is not None and agg.prediction is not None:
        result = _run_test(settings.prediction_test, None, profile.prediction, agg.prediction, settings, tests)
        result["kind"] = profile.prediction.kind
        out["concept_drift"] = result
    out["performance"] = _performance(agg, profile, settings)
    if not enough:
        out["status"] = "unknown"
    elif out["performance"] and out["performance"]["detected"]:
        out["status"] = "degraded"
    elif out["data_drift"]["detected"] or (out["concept_drift"] or {}).get("drifted"):
        out["status"] = "drifting"
    elif drifted:
        out["status"] = "warning"
    else:
        out["status"] = "healthy"
    return out


def window_report(*, tenant: str, deployment: str, model: str, window: str, start: int, end: int, aligned: bool,
                  versions: Sequence[Mapping[str, Any]], started: float | None = None) -> dict[str, Any]:
    """The report of one window of a deployment from its versions' :func:`compare_window` results (largest
    first), as :meth:`Monitoring.check` stores it and ``Monitoring.record`` takes it. ``started``
    (``time.perf_counter()`` when the work began) gives ``seconds``."""
    ordered = sorted((dict(v) for v in versions), key=lambda v: -v["rows"])
    report = {
        "schema": REPORT_SCHEMA, "tenant": tenant, "deployment": deployment, "model": model,
        "window": window, "start": int(start), "end": int(end), "aligned": aligned,
        "checked_at": int(time.time() * 1000), "rows": sum(v["rows"] for v in ordered),
        "status": _worst([v["status"] for v in ordered]) if ordered else "unknown",
        "versions": ordered, "actions": [],
    }
    if not ordered:
        report["note"] = "no requests in this window"
    report["seconds"] = round(time.perf_counter() - started, 4) if started is not None else 0.0
    return report


def label_task(labels: Sequence[Any]) -> str:
    """``regression`` when the labels are numbers and some of the first 10,000 are not whole, else
    ``classification`` (how labels are read when the baseline names no task)."""
    sample = [v for v in labels[:10_000] if v is not None]
    if not sample or any(isinstance(v, (bool, str)) or not isinstance(v, (int, float, np.integer, np.floating))
                         for v in sample):
        return "classification"
    values = np.asarray(sample, dtype=np.float64)
    return "regression" if bool(np.any(values != np.round(values))) else "classification"


def _run_test(name: str, threshold: float | None, ref: Any, cur: Any, settings: Any,
              tests: Mapping[str, Any]) -> dict[str, Any]:
    chosen = stats.auto_test(ref, cur, settings.small_sample) if name == "auto" else name
    test = tests.get(chosen)
    if test is None:
        raise ConfigError(f"unknown drift test {chosen!r}; installed: {', '.join(sorted(tests))}",
                          key="drift.test")
    limit = threshold if threshold is not None else settings.thresholds.get(chosen)
    result = dict(test(ref, cur, limit))
    result.setdefault("test", chosen)
    return result


def _performance(agg: stats.WindowAggregate, profile: Any, settings: Any) -> dict[str, Any] | None:
    perf = agg.performance
    if perf is None:
        return {"labelled": 0, "metrics": {}, "baseline": profile.metrics, "detected": False,
                "note": "no labelled rows in this window"} if profile.metrics else None
    metrics = perf.metrics()
    name, higher = stats.PRIMARY_METRIC[perf.task]
    base = profile.metrics.get(name)
    out = {"labelled": perf.n, "task": perf.task, "metrics": metrics, "baseline": profile.metrics,
           "metric": name, "threshold": settings.performance_threshold, "change": None, "detected": False}
    if base is None or name not in metrics:
        out["note"] = f"the baseline has no {name} to compare with"
        return out
    change = (metrics[name] - base) / abs(base) if base else 0.0
    worse = -change if higher else change
    out["change"] = change
    if perf.n < settings.min_labels:
        out["note"] = f"{perf.n} labelled rows, fewer than min_labels = {settings.min_labels}: not judged"
        return out
    out["detected"] = worse > settings.performance_threshold
    return out


def _severity(result: Mapping[str, Any]) -> float:
    """How far past (or short of) its threshold a result is, comparable across tests."""
    if result.get("statistic") is None:
        return -1.0
    threshold = result.get("threshold") or 0.0
    p = result.get("p_value")
    if p is not None:
        return float(np.log10(max(threshold, 1e-300)) / np.log10(max(p, 1e-300))) if p < 1 else 0.0
    return float(result["statistic"] / threshold) if threshold else float(result["statistic"])


def _worst(statuses: Sequence[str]) -> str:
    order = {"degraded": 4, "drifting": 3, "warning": 2, "healthy": 1, "unknown": 0}
    return max(statuses, key=lambda s: order.get(s, 0))
