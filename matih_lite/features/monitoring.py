"""Feature monitoring, per feature view: freshness, null rate, range, drift, and a quality score.

For a view, the **current window** is the last ``window`` of event time up to its newest row; the
**reference window** is the ``reference`` before it. Each feature gets its null rate and range in the
current window and a drift test of current against reference, computed with the drift statistics
of :mod:`matih_lite.monitoring.stats` (the same aggregates and tests the model drift checks use,
``auto`` picking the test as they do). **Freshness** is the age of the newest row, judged against the
clock and the view's ttl: older than the ttl is stale.

Quality score, 0 to 100: ``40 x fresh + 30 x (1 - mean null rate) + 30 x (1 - share of drifting features)``.

Stale views and drifting features raise alerts through the notifier hook (:func:`matih_lite.alerts.send_alert`),
once per (view, feature, window): the metadata slot's claim makes a second check of the same window silent.

Settings, in matih.toml::

    [features.monitoring]
    window = "1d"          # the current window
    reference = "7d"       # the reference window before it
    test = "auto"          # or ks, psi, chi2, jensen_shannon, wasserstein
    sample_rows = 100000   # rows read per window at most (the newest)
    alerts = true
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.errors import ConfigError, InvalidInput
from matih_lite.features.definitions import format_duration, parse_duration
from matih_lite.identity import Principal

if TYPE_CHECKING:
    from matih_lite.host import Host



class MonitorSettings(msgspec.Struct, forbid_unknown_fields=True):
    window: str = "1d"
    reference: str = "7d"
    test: str = "auto"
    thresholds: dict[str, float] = {}
    sample_rows: int = 100_000
    alerts: bool = True


def monitor_settings(host: Host) -> MonitorSettings:
    """``[features.monitoring]`` of matih.toml. Raises ConfigError with the key path."""
    section = host.config.section("features") or {}
    raw = section.get("monitoring", {}) if isinstance(section, dict) else {}
    try:
        settings = msgspec.convert(raw, MonitorSettings)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc), key="features.monitoring") from None
    for key in ("window", "reference"):
        try:
            if parse_duration(getattr(settings, key)) <= 0:
                raise ValueError(f'expected a duration like "1d", got "{getattr(settings, key)}"')
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"features.monitoring.{key}") from None
    return settings


def _aggregates(dtype: str, ref_values: list[Any], cur_values: list[Any]) -> tuple[Any, Any] | None:
    from matih_lite.monitoring.stats import CategoricalAggregate, NumericAggregate

    if dtype in ("float64", "float32", "int64", "int32"):
        ref = NumericAggregate.baseline(ref_values)
        return ref, ref.like(cur_values)
    if dtype in ("string", "bool"):
        ref = CategoricalAggregate.baseline([None if v is None else str(v) for v in ref_values])
        return ref, ref.like([None if v is None else str(v) for v in cur_values])
    return None


def _drift(settings: MonitorSettings, dtype: str, ref_values: list[Any],
           cur_values: list[Any]) -> dict[str, Any] | None:
    from matih_lite.monitoring import stats

    pair = _aggregates(dtype, ref_values, cur_values)
    if pair is None:
        return None
    ref, cur = pair
    if ref.n == 0 or cur.n == 0:
        return {"test": None, "drifted": False, "note": "a window has no values"}
    name = stats.auto_test(ref, cur) if settings.test == "auto" else settings.test
    tests = {t.name: t for t in stats.BUILTIN_TESTS}
    test = tests.get(name)
    if test is None:
        raise ConfigError(f"unknown drift test {name!r}; tests are: auto, {', '.join(tests)}",
                          key="features.monitoring.test")
    return test(ref, cur, settings.thresholds.get(name))


def monitor_view(features: Any, principal: Principal, view: str, *, now: int | None = None,
                 alert: bool = True) -> dict[str, Any]:
    """The monitoring report of ``view`` (see the module docstring); sends the alerts it raises unless ``alert``
    is False. Raises NotFound for an unknown view, InvalidInput for an unreadable source."""
    from matih_lite.features.service import now_us

    settings = monitor_settings(features.host)
    defs = features.definitions(principal.tenant)
    features.view_selection(principal.tenant, view)
    v = defs.feature_views[view]
    clock = now_us() if now is None else now
    window_us = parse_duration(settings.window) * 1_000_000
    reference_us = parse_duration(settings.reference) * 1_000_000
    store = features.store
    span = store.event_time_range(defs, view)
    report: dict[str, Any] = {"view": view, "ttl": format_duration(v.ttl_seconds), "checked_at": clock,
                              "window": settings.window, "reference": settings.reference}
    if span is None:
        report.update({"rows": 0, "freshness": {"newest": None, "age_seconds": None, "stale": bool(v.ttl_seconds)},
                       "features": [], "quality_score": 0, "alerts": []})
        return report
    oldest, newest, rows = span
    age = max(clock - newest, 0) / 1_000_000
    stale = bool(v.ttl_seconds) and age > v.ttl_seconds
    cur_start, ref_start = newest - window_us, newest - window_us - reference_us
    current = store.scan(defs, view, cur_start + 1, newest + 1, settings.sample_rows)
    reference = store.scan(defs, view, ref_start + 1, cur_start + 1, settings.sample_rows)
    out = []
    for f in v.features:
        cur_values = current.column(f.name).to_pylist()
        ref_values = reference.column(f.name).to_pylist()
        nulls = sum(1 for x in cur_values if x is None or isinstance(x, float) and math.isnan(x))
        numeric = [x for x in cur_values if isinstance(x, (int, float)) and not isinstance(x, bool)
                   and not (isinstance(x, float) and math.isnan(x))]
        entry: dict[str, Any] = {
            "feature": f.name, "dtype": f.dtype, "rows": len(cur_values),
            "null_rate": nulls / len(cur_values) if cur_values else None,
            "min": min(numeric) if numeric else None, "max": max(numeric) if numeric else None,
            "mean": sum(numeric) / len(numeric) if numeric else None,
        }
        if f.dtype not in ("float64", "float32", "int64", "int32"):
            entry.update({"min": None, "max": None, "mean": None})
        entry["drift"] = _drift(settings, f.dtype, ref_values, cur_values)
        out.append(entry)
    null_rates = [e["null_rate"] for e in out if e["null_rate"] is not None]
    drifting = [e["feature"] for e in out if (e["drift"] or {}).get("drifted")]
    score = (40 * (0 if stale else 1) + 30 * (1 - (sum(null_rates) / len(null_rates) if null_rates else 0))
             + 30 * (1 - (len(drifting) / len(out) if out else 0)))
    report.update({
        "rows": rows, "oldest": oldest, "newest": newest,
        "freshness": {"newest": newest, "age_seconds": age, "stale": stale, "ttl_seconds": v.ttl_seconds},
        "current_window": {"start": cur_start, "end": newest, "rows": current.num_rows},
        "reference_window": {"start": ref_start, "end": cur_start, "rows": reference.num_rows},
        "features": out, "drifting": drifting, "quality_score": round(score, 1), "alerts": [],
    })
    if alert and settings.alerts:
        report["alerts"] = _alert(features, principal, v, report, settings, window_us, clock)
    return report


def _alert(features: Any, principal: Principal, view: Any, report: dict[str, Any], settings: MonitorSettings,
           window_us: int, clock: int) -> list[dict[str, Any]]:
    from matih_lite.alerts import send_alert

    meta = features.metadata
    tenant = principal.tenant
    sent = []
    at = clock // 1000
    if report["freshness"]["stale"]:
        bucket = clock // window_us
        if meta.claim_feature_alert(tenant, view.name, "__freshness__", settings.window, bucket, at):
            alert = {"type": "features.stale", "severity": "warning", "tenant": tenant, "feature_view": view.name,
                     "window": settings.window, "age_seconds": report["freshness"]["age_seconds"],
                     "ttl_seconds": view.ttl_seconds, "newest": report["newest"], "timestamp": at}
            send_alert(features.host, alert)
            sent.append(alert)
    drifted = [e for e in report["features"] if (e["drift"] or {}).get("drifted")]
    bucket = report["newest"] // window_us
    fresh = [e for e in drifted
             if meta.claim_feature_alert(tenant, view.name, e["feature"], settings.window, bucket, at)]
    if fresh:
        alert = {"type": "features.drift", "severity": "warning", "tenant": tenant, "feature_view": view.name,
                 "window": settings.window, "start": report["current_window"]["start"],
                 "end": report["current_window"]["end"],
                 "features": [{"feature": e["feature"], **{k: e["drift"].get(k) for k in
                                                           ("test", "statistic", "p_value", "threshold")}}
                              for e in fresh], "quality_score": report["quality_score"], "timestamp": at}
        send_alert(features.host, alert)
        sent.append(alert)
    return sent


def check_all(features: Any, principal: Principal, *, now: int | None = None) -> list[dict[str, Any]]:
    """Monitor every feature view of the tenant (alerts included); a view whose source cannot be read is
    reported with its error, the others still checked."""
    defs = features.definitions(principal.tenant)
    out = []
    for name in defs.feature_views:
        try:
            out.append(monitor_view(features, principal, name, now=now))
        except InvalidInput as exc:
            out.append({"view": name, "error": exc.message})
    return out
