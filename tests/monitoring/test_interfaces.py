"""Drift from the outside: the CLI, the REST API, the HTML report and the webhook notifier."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest
from drift_helpers import HOUR, T0, deploy, log_traffic, make_host, register_model, traffic, training_data
from litestar.testing import TestClient
from typer.testing import CliRunner

from matih_lite.alerts.webhook import SIGNATURE_HEADER, WebhookNotifier, sign, verify
from matih_lite.cli import load_commands
from matih_lite.errors import ConfigError, StoreError
from matih_lite.monitoring import Monitoring
from matih_lite.monitoring.report import render_report


@pytest.fixture
def cli(hermetic):
    app = load_commands()
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    return run


@pytest.fixture
def drifted(hermetic):
    """churn v1 deployed, with traffic whose age and plan drifted in the hour [T0, T0+1h)."""
    host = make_host(hermetic, "[canary]\ntick_seconds = 0\n")  # the CLI's host has no test notifier
    register_model(host)
    deploy(host)
    log_traffic(host, traffic(3000, age_shift=6, plan_p=(0.2, 0.3, 0.5)), start=T0, end=T0 + HOUR)
    host.close()
    return hermetic


def write_parquet(path, data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({k: list(v) for k, v in data.items()}), str(path))


# ---- CLI ---------------------------------------------------------------------------------------------------
def test_models_baseline_then_drift_check_and_report_from_the_cli(cli, drifted):
    write_parquet(drifted / "train.parquet", training_data(5000))
    out = cli("models", "baseline", "churn", "1", "--data", "train.parquet", "--target", "y", "--prediction", "pred",
              "--json")
    summary = json.loads(out)
    assert summary["rows"] == 5000 and set(summary["features"]) == {"age", "income", "plan"}
    assert summary["metrics"]["accuracy"] > 0.5
    report = json.loads(cli("drift", "check", "--deployment", "churn", "--window", "1h", "--end", str(T0 + HOUR),
                            "--json"))
    assert report["status"] == "drifting" and report["versions"][0]["features"][0]["drifted"]
    text = cli("drift", "check", "-d", "churn", "--end", "2027-01-15T08:00Z")
    assert "no requests in this window" in text
    cli("drift", "check", "-d", "churn", "--end", str(T0 + HOUR), "--no-act", "--fail-on-drift", code=3)
    # not judged is not "no drift": an empty window, and one below [drift] min_rows, exit 4 saying why
    cli("drift", "check", "-d", "churn", "--end", "2027-01-15T08:00Z", "--fail-on-drift", code=4)
    log_traffic_rows = 14
    host = make_host(drifted, "[canary]\ntick_seconds = 0\n")
    log_traffic(host, traffic(log_traffic_rows, age_shift=6, plan_p=(0.2, 0.3, 0.5)), start=T0 + 2 * HOUR,
                end=T0 + 3 * HOUR)
    host.close()
    small = cli("drift", "check", "-d", "churn", "--end", str(T0 + 3 * HOUR), "--no-act", "--fail-on-drift", code=4)
    assert "not judged" in small and "14 rows, fewer than min_rows = 100" in small and "would drift" in small
    out = cli("drift", "report", "--deployment", "churn", "--end", str(T0 + HOUR), "--output", "report.html")
    page = (drifted / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 4  # 3 features + the prediction
    assert "<script" not in page and "src=" not in page and "href=" not in page  # self-contained
    history = json.loads(cli("drift", "history", "-d", "churn", "--json"))
    assert T0 + HOUR in [r["end"] for r in history]
    tests = {t["name"]: t for t in json.loads(cli("drift", "tests", "--json"))}
    assert tests["wasserstein"]["threshold"] == 0.1 and tests["psi"]["threshold"] == 0.2


def test_cli_errors_are_one_line_with_the_fix(cli, drifted):
    from matih_lite.cli import main

    with pytest.raises(SystemExit) as info:
        main(["drift", "check", "-d", "nope"])
    assert info.value.code == 1
    with pytest.raises(SystemExit) as info:
        main(["drift", "check", "-d", "churn", "--window", "an hour"])
    assert info.value.code == 2


# ---- REST --------------------------------------------------------------------------------------------------
def test_rest_builds_baselines_checks_and_reports(drifted):
    from matih_lite.host import Host
    from matih_lite.service import create_app

    host = Host.open(str(drifted / "matih.toml"), plugins=None)
    data = training_data(3000)
    columns = {k: v.tolist() for k, v in data.items()}
    with TestClient(create_app(host)) as client:
        resp = client.post("/api/v1/drift/baselines/churn/versions/1", json={"columns": columns, "target": "y",
                                                                             "prediction": "pred"})
        assert resp.status_code == 201, resp.text
        assert resp.json()["rows"] == 3000
        assert client.get("/api/v1/drift/baselines/churn/versions/1").json()["features"]["plan"]["kind"] == \
            "categorical"
        report = client.post("/api/v1/drift/deployments/churn/check",
                             json={"window": "1h", "end": T0 + HOUR}).json()
        assert report["status"] == "drifting" and {a["action"] for a in report["actions"]} == {"alert", "health"}
        assert client.get("/api/v1/drift/deployments/churn/reports").json()["reports"][0]["end"] == T0 + HOUR
        page = client.get("/api/v1/drift/deployments/churn/report", params={"end": T0 + HOUR})
        assert page.headers["content-type"].startswith("text/html") and "<svg" in page.text
        problem = client.post("/api/v1/drift/deployments/churn/check", json={"window": "soon"})
        assert problem.status_code == 400 and "30m, 1h or 1d" in problem.json()["detail"]
        assert client.post("/api/v1/drift/deployments/nope/check", json={}).status_code == 404
        assert client.get("/api/v1/drift/baselines/churn/versions/9").status_code == 404
        assert {t["name"] for t in client.get("/api/v1/drift/tests").json()["tests"]} >= {
            "ks", "psi", "chi2", "jensen_shannon", "wasserstein"}


def test_report_renders_without_a_baseline_or_rows():
    report = {"schema": "s", "deployment": "d", "model": "m", "window": "1h", "start": 0, "end": 3_600_000,
              "rows": 0, "status": "unknown", "versions": [], "checked_at": 0, "note": "no requests in this window"}
    assert "no requests in this window" in render_report(report, {})


# ---- webhook ---------------------------------------------------------------------------------------------------
def test_webhook_signs_the_body_with_hmac_sha256():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(204)

    notifier = WebhookNotifier({"url": "https://hooks.example/matih", "secret": "s3cret"},
                               transport=httpx.MockTransport(handler))
    notifier.notify({"type": "drift.detected", "model": "churn"})
    (request,) = seen
    body = request.content
    want = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == want == sign("s3cret", body) and verify("s3cret", body, want)
    assert not verify("other", body, want)
    payload = json.loads(body)
    assert payload["model"] == "churn" and payload["delivery_id"] == request.headers["X-Matih-Delivery"]
    assert request.headers["X-Matih-Event"] == "drift.detected"


def test_webhook_retries_with_exponential_backoff_then_succeeds():
    answers = iter([httpx.Response(503), httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200)])
    deliveries, sleeps = [], []

    def handler(request):
        deliveries.append(request.headers["X-Matih-Delivery"])
        return next(answers)

    notifier = WebhookNotifier({"url": "https://h.example", "secret": "k", "backoff_seconds": 1},
                               transport=httpx.MockTransport(handler), sleep=sleeps.append)
    notifier.notify({"type": "drift.detected"})
    assert len(deliveries) == 3 and len(set(deliveries)) == 1  # one delivery id for every attempt
    assert 1.0 <= sleeps[0] <= 1.1 and sleeps[1] == 3.0  # 1 s, then Retry-After over the 2 s backoff


def test_webhook_gives_up_after_max_attempts_and_never_retries_a_client_error():
    calls = []

    def failing(request):
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    sleeps = []
    notifier = WebhookNotifier({"url": "https://h.example", "max_attempts": 4, "backoff_seconds": 0.5},
                               transport=httpx.MockTransport(failing), sleep=sleeps.append)
    with pytest.raises(StoreError, match="not delivered after 4 attempts"):
        notifier.notify({"type": "x"})
    assert len(calls) == 4 and [round(s, 1) for s in sleeps] == [pytest.approx(0.5, abs=0.06),
                                                                  pytest.approx(1.0, abs=0.11),
                                                                  pytest.approx(2.0, abs=0.21)]
    refused = WebhookNotifier({"url": "https://h.example"}, sleep=sleeps.append,
                              transport=httpx.MockTransport(lambda r: httpx.Response(400)))
    with pytest.raises(StoreError, match="not retried"):
        refused.notify({"type": "x"})


def test_webhook_settings_are_checked():
    with pytest.raises(ConfigError, match="notifiers.webhook.url"):
        WebhookNotifier({"secret": "x"})
    with pytest.raises(ConfigError, match="unknown setting 'retries'"):
        WebhookNotifier({"url": "https://h.example", "retries": 3})


def test_drift_alerts_reach_a_configured_webhook(hermetic, monkeypatch):
    import matih_lite.alerts.webhook as webhook

    received = []

    class Recording(webhook.WebhookNotifier):
        def __init__(self, settings):
            transport = httpx.MockTransport(lambda r: received.append(r) or httpx.Response(200))
            super().__init__(settings, transport=transport)

    monkeypatch.setattr(webhook, "WebhookNotifier", Recording)
    monkeypatch.setenv("HOOK_SECRET", "topsecret")
    host = make_host(hermetic, '[notifiers.webhook]\nurl = "https://hooks.example/drift"\n'
                               'secret = "${HOOK_SECRET}"\n')
    register_model(host)
    Monitoring(host).build_baseline(__import__("drift_helpers").P, "churn", 1, training_data(5000), target="y",
                                    prediction="pred")
    deploy(host)
    log_traffic(host, traffic(2000, age_shift=6), start=T0, end=T0 + HOUR)
    Monitoring(host).check(__import__("drift_helpers").P, "churn", "1h", end=T0 + HOUR)
    (request,) = received
    assert verify("topsecret", request.content, request.headers[SIGNATURE_HEADER])
    assert json.loads(request.content)["type"] == "drift.detected"
    host.close()
