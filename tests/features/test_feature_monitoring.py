"""Feature monitoring per view: freshness against the ttl, null rate, range, drift, a quality score, and alerts
through the notifier hook once per (view, feature, window)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from matih_lite.hookspecs import hookimpl
from matih_lite.testing.features import T0, micros

DEFS = """
[entities.customer]
join_keys = ["customer_id"]

[sources.activity]
path = "activity.parquet"
timestamp_field = "event_timestamp"

[feature_views.activity]
entities = ["customer"]
source = "activity"
ttl = "2d"
schema = { spend = "float64", visits = "int64", plan = "string" }
"""


class Capture:
    """A notifier plugin keeping every alert it is sent."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []

    @hookimpl
    def register_notifiers(self, register):
        register("capture", lambda settings: self)

    def notify(self, alert: dict) -> None:
        self.alerts.append(alert)


@pytest.fixture
def monitored(hermetic):
    """14 days of hourly rows for 50 customers; on the last day spend shifts by 3 sigma and 20% of visits are null."""
    from matih_lite.config import load_config
    from matih_lite.features.service import Features
    from matih_lite.host import Host, get_plugin_manager
    from matih_lite.identity import LOCAL_ADMIN

    repo = hermetic / "features"
    repo.mkdir()
    (repo / "activity.toml").write_text(DEFS)
    (hermetic / "matih.toml").write_text('[notifiers.capture]\n\n[features.monitoring]\nwindow = "1d"\n'
                                         'reference = "7d"\n')
    rng = np.random.default_rng(1)
    hours = 14 * 24
    times = [T0 - timedelta(hours=hours - h) for h in range(hours) for _ in range(50)]
    last_day = np.array([t > T0 - timedelta(days=1) for t in times])
    spend = rng.normal(10, 1, len(times)) + np.where(last_day, 3.0, 0.0)
    visits = rng.integers(0, 5, len(times)).astype(object)
    visits[last_day & (rng.random(len(times)) < 0.2)] = None
    pa_table = pa.table({"customer_id": np.tile(np.arange(50), hours),
                         "event_timestamp": pa.array(times, pa.timestamp("us", "UTC")), "spend": spend,
                         "visits": pa.array(list(visits), pa.int64()),
                         "plan": rng.choice(["free", "pro"], len(times))})
    import pyarrow.parquet as pq

    pq.write_table(pa_table, repo / "activity.parquet")
    capture = Capture()
    host = Host(load_config(), plugins=get_plugin_manager(plugins=[("capture", capture)]))
    features = Features.of(host)
    features.apply(LOCAL_ADMIN)
    yield features, LOCAL_ADMIN, capture
    host.close()


def report_at(features, who, now):
    from matih_lite.features.monitoring import monitor_view

    return monitor_view(features, who, "activity", now=micros(now))


def test_null_rate_range_and_drift_of_the_latest_window(monitored):
    features, who, _ = monitored
    report = report_at(features, who, T0 + timedelta(hours=1))
    by_name = {f["feature"]: f for f in report["features"]}
    assert report["current_window"]["rows"] == 24 * 50 and report["reference_window"]["rows"] == 7 * 24 * 50
    assert by_name["visits"]["null_rate"] == pytest.approx(0.2, abs=0.04)
    assert by_name["spend"]["null_rate"] == 0
    assert by_name["spend"]["min"] < by_name["spend"]["mean"] < by_name["spend"]["max"]
    assert by_name["spend"]["mean"] == pytest.approx(13, abs=0.3)  # the last day's rows shifted by 3
    assert by_name["spend"]["drift"]["drifted"] and by_name["spend"]["drift"]["test"] == "wasserstein"
    assert not by_name["plan"]["drift"]["drifted"] and by_name["plan"]["drift"]["test"] == "jensen_shannon"
    assert report["drifting"] == ["spend"]
    assert not report["freshness"]["stale"]
    assert report["quality_score"] == pytest.approx(40 + 30 * (1 - by_name["visits"]["null_rate"] / 3) + 20, abs=0.1)


def test_freshness_against_the_ttl(monitored):
    features, who, _ = monitored
    newest = T0 - timedelta(hours=1)
    fresh = report_at(features, who, newest + timedelta(days=2))
    stale = report_at(features, who, newest + timedelta(days=2, seconds=1))
    assert fresh["freshness"]["age_seconds"] == 2 * 86400 and not fresh["freshness"]["stale"]
    assert stale["freshness"]["stale"] and stale["quality_score"] == pytest.approx(fresh["quality_score"] - 40)


def test_alerts_go_out_once_per_view_feature_and_window(monitored):
    features, who, capture = monitored
    later = T0 + timedelta(days=3)
    report_at(features, who, later)
    report_at(features, who, later + timedelta(minutes=5))
    kinds = [(a["type"], tuple(f["feature"] for f in a.get("features", []))) for a in capture.alerts]
    assert kinds == [("features.stale", ()), ("features.drift", ("spend",))]
    assert capture.alerts[1]["feature_view"] == "activity" and capture.alerts[1]["features"][0]["test"] == "wasserstein"
    report_at(features, who, later + timedelta(days=1))  # the next day's freshness window: stale again
    assert [a["type"] for a in capture.alerts] == ["features.stale", "features.drift", "features.stale"]


def test_show_reports_monitoring_and_bad_settings_name_the_key(monitored, hermetic):
    from matih_lite.errors import ConfigError
    from matih_lite.features.views import show

    features, who, _ = monitored
    doc = show(features, who, "activity")
    assert doc["kind"] == "feature_views" and "quality_score" in doc["monitoring"]
    (hermetic / "matih.toml").write_text('[features.monitoring]\nwindow = "a day"\n')
    from matih_lite.config import load_config

    features.host.config = load_config()
    with pytest.raises(ConfigError, match="features.monitoring.window"):
        report_at(features, who, T0)
