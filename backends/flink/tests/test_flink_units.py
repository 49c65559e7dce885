"""The Flink backend's parts that need no Flink: settings, the environment's layout, the window plan, health."""

from __future__ import annotations

import re
import shutil
import zipfile

import msgspec
import pytest
from matih_flink.environment import CONNECTOR_JARS, READY, FlinkEnv, extract_connectors, java_version, resolve
from matih_flink.job.drift_job import _version_number, _window_plan
from matih_flink.plugin import FlinkDriftSettings
from matih_flink.runner import FlinkDriftRunner, parse_ms

HOUR = 3_600_000


@pytest.mark.parametrize(("field", "value", "message"), [
    ("allowed_lateness", "ten seconds", "allowed_lateness must be a duration"),
    ("micro_batch", "5", "micro_batch must be a duration"),
    ("results_topic", "drift results", "is not a topic name"),
    ("start_from", "middle", "start_from must be 'earliest' or 'latest'"),
    ("service_url", "127.0.0.1:8000", "service_url must be an http(s) URL"),
])
def test_bad_settings_are_refused_with_the_field_named(field, value, message):
    with pytest.raises(msgspec.ValidationError, match=re.escape(message)):
        msgspec.convert({field: value}, FlinkDriftSettings)


def test_unknown_settings_and_out_of_range_parallelism_are_refused():
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"lateness": "10s"}, FlinkDriftSettings)
    with pytest.raises(msgspec.ValidationError, match="parallelism"):
        msgspec.convert({"parallelism": 0}, FlinkDriftSettings)


def test_durations_parse_to_milliseconds():
    assert [parse_ms(t, "x") for t in ("500ms", "10s", "2m", "1h", " 3 s ")] == [500, 10_000, 120_000, HOUR, 3000]
    with pytest.raises(ValueError, match="allowed_lateness must be a duration"):
        parse_ms("1d", "allowed_lateness")


def test_the_day_is_merged_from_the_hours_that_tile_it():
    plan = _window_plan([{"label": "1d", "size_ms": 24 * HOUR}, {"label": "1h", "size_ms": HOUR}])
    assert plan["sizes"] == [(HOUR, "1h"), (24 * HOUR, "1d")]
    assert plan["direct"] == [HOUR] and plan["fed_by"] == {HOUR: [24 * HOUR]} and plan["largest"] == 24 * HOUR
    # 1h and 90m do not tile each other: both read rows; 3h is tiled by both, merged from the larger.
    plan = _window_plan([{"label": "1h", "size_ms": HOUR}, {"label": "90m", "size_ms": 90 * 60_000},
                         {"label": "3h", "size_ms": 3 * HOUR}])
    assert plan["direct"] == [HOUR, 90 * 60_000] and plan["fed_by"] == {90 * 60_000: [3 * HOUR]}


def test_versions_are_read_as_the_inference_log_writes_them():
    assert [_version_number(v) for v in ("v3", "3", 3, "V12", None, "latest")] == [3, 3, 3, 12, None, None]


def test_only_the_connector_jars_come_out_of_the_connector_wheel(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in CONNECTOR_JARS:
            zf.writestr(f"pyflink/lib/{name}", f"jar {name}")
        zf.writestr("pyflink/lib/flink-dist-2.0.jar", "core jars of another Flink")
    got = extract_connectors(wheel, tmp_path / "connectors")
    assert sorted(p.name for p in (tmp_path / "connectors").iterdir()) == sorted(CONNECTOR_JARS)
    assert [p.read_text() for p in got] == [f"jar {name}" for name in CONNECTOR_JARS]


def test_an_environment_says_what_it_lacks(tmp_path):
    env = resolve(tmp_path / "env" / "bin" / "python")  # its Python names the environment too
    assert env == FlinkEnv(tmp_path / "env")
    assert not env.ready and env.missing().startswith("no Python at")
    (env.root / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("true") or "/bin/true", env.python)
    assert "connector jars missing" in env.missing() and "kafka-clients.jar" in env.missing()
    env.connectors.mkdir()
    for jar in env.jars:
        jar.write_text("jar")
    assert env.missing() == f"PyFlink is not installed in {env.root}"
    (env.root / READY).write_text("built\n")
    assert env.ready and env.missing() == ""


def test_java_is_found_and_its_version_read():
    major, line = java_version()
    if major is None:
        pytest.fail(f"Java is installed on every machine this runs on: {line}")
    assert major >= 11 and "version" in line
    assert java_version("no-such-java-here")[0] is None


class _Context:
    def __init__(self, home):
        self.home = home

    def resolve(self, path):
        return self.home / path


def test_health_reports_a_missing_environment_it_may_not_build(tmp_path):
    settings = msgspec.convert({"environment": str(tmp_path / "nothing"), "build": False}, FlinkDriftSettings)
    runner = FlinkDriftRunner(settings, _Context(tmp_path))
    health = runner.health()
    assert not health.ok and "not ready" in health.detail and "build = false" in health.detail
    assert runner.jobs() == []
    settings = msgspec.convert({"environment": str(tmp_path / "nothing")}, FlinkDriftSettings)
    health = FlinkDriftRunner(settings, _Context(tmp_path)).health()
    assert health.ok and "will be built at start" in health.detail


def test_a_disabled_runner_is_healthy_and_runs_nothing(tmp_path):
    settings = msgspec.convert({"enabled": False}, FlinkDriftSettings)
    runner = FlinkDriftRunner(settings, _Context(tmp_path))
    assert runner.health().ok and "disabled" in runner.health().detail
    runner.start(plan=None)
    assert runner._thread is None and runner.jobs() == []


def test_intervals_are_written_as_flink_sql_reads_them():
    from matih_flink.job.common import interval

    assert interval(10_000) == "INTERVAL '0 00:00:10.000' DAY TO SECOND(3)"
    assert interval(500) == "INTERVAL '0 00:00:00.500' DAY TO SECOND(3)"
    assert interval(26 * HOUR + 61_001) == "INTERVAL '1 02:01:01.001' DAY TO SECOND(3)"
    with pytest.raises(ValueError, match="negative"):
        interval(-1)


def test_drift_jobs_from_a_terminal_without_the_service_says_where_they_run(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from matih_lite.cli import load_commands

    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "matih.toml").write_text(
        f'[profiles.lite]\ndrift = {{ backend = "flink", build = false, environment = "{tmp_path / "env"}" }}\n')
    app, runner = load_commands(), CliRunner()
    result = runner.invoke(app, ["drift", "jobs", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"backend": "flink", "jobs": [], "embedded": True}
    result = runner.invoke(app, ["drift", "jobs"], catch_exceptions=False)
    assert result.exit_code == 0 and "the jobs run inside 'matih-lite up'" in " ".join(result.output.split())


def test_doctor_checks_java_and_the_flink_environment(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from matih_lite.cli import load_commands

    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "matih.toml"
    config.write_text(
        f'[profiles.lite]\ndrift = {{ backend = "flink", build = false, environment = "{tmp_path}/env" }}\n')
    app, runner = load_commands(), CliRunner()
    result = runner.invoke(app, ["doctor", "--json"], catch_exceptions=False)
    (drift,) = [s for s in json.loads(result.output)["slots"] if s["slot"] == "drift"]
    assert result.exit_code != 0 and drift["status"] == "failed", result.output
    assert f"no Python at {tmp_path}/env/bin/python" in drift["detail"] and "build = false" in drift["detail"]
    config.write_text(f'[profiles.lite]\ndrift = {{ backend = "flink", java = "{tmp_path}/no-java" }}\n')
    result = runner.invoke(app, ["doctor", "--json"], catch_exceptions=False)
    (drift,) = [s for s in json.loads(result.output)["slots"] if s["slot"] == "drift"]
    assert drift["status"] == "failed" and "Java 11+ is needed for Flink" in drift["detail"], result.output
