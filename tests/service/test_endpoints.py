"""The ml-service's platform endpoints: health, readiness, metrics, OpenAPI, problem details."""

from __future__ import annotations

import logging

import pytest
from litestar.testing import TestClient

from matih_lite.config import load_config
from matih_lite.contracts import Health
from matih_lite.host import Host, get_plugin_manager
from matih_lite.service import create_app


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(Host(load_config(cwd=tmp_path)))) as c:
        yield c


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["slots"]["metadata"]["ok"] and body["slots"]["artifacts"]["ok"]


def test_ready_is_503_when_a_backend_fails(tmp_path, monkeypatch):
    host = Host(load_config(cwd=tmp_path))
    monkeypatch.setattr(type(host.artifacts), "health", lambda self: Health(False, "disk gone"))
    with TestClient(create_app(host)) as c:
        r = c.get("/ready")
    assert r.status_code == 503
    assert r.json()["slots"]["artifacts"] == {"ok": False, "detail": "disk gone"}


def test_unknown_path_is_problem_json(client):
    r = client.get("/no/such/thing")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 404 and r.json()["instance"] == "/no/such/thing"


def test_method_not_allowed_is_problem_json(client):
    r = client.delete("/health")
    assert r.status_code == 405 and r.json()["title"] == "Method not allowed"


def test_metrics_count_requests_per_route_template(client):
    client.get("/health")
    client.get("/api/v1/runs/abc")  # 404 problem, counted under its template
    text = client.get("/metrics").text
    assert 'matih_http_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    assert 'route="/api/v1/runs/{run_id}",status="404"' in text
    assert "matih_http_request_duration_seconds_bucket" in text


def test_openapi_lists_the_routes(client):
    spec = client.get("/schema/openapi.json").json()
    for path in ("/health", "/ready", "/metrics", "/api/v1/experiments", "/api/v1/runs/{run_id}/batch"):
        assert path in spec["paths"], path


def test_one_access_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="matih_lite.access"):
        client.get("/health")
    lines = [r.getMessage() for r in caplog.records if r.name == "matih_lite.access"]
    assert len(lines) == 1 and '"GET /health" 200' in lines[0]


def test_unexpected_errors_are_500_problems_without_internals(tmp_path, monkeypatch):
    host = Host(load_config(cwd=tmp_path))
    monkeypatch.setattr(type(host.metadata), "get_run", lambda *a, **k: 1 / 0)
    with TestClient(create_app(host)) as c:
        r = c.get("/api/v1/runs/x")
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "ZeroDivision" not in r.text


def test_plugin_routes_are_mounted(tmp_path):
    import types

    from litestar import get

    from matih_lite.hookspecs import hookimpl

    @get("/api/v1/hello", sync_to_thread=False)
    def hello() -> dict[str, str]:
        return {"hello": "plugin"}

    mod = types.ModuleType("hello")
    mod.register_routes = hookimpl(lambda register: register("hello", hello))
    host = Host(load_config(cwd=tmp_path), plugins=get_plugin_manager(entry_points=False, plugins=[("hello", mod)]))
    with TestClient(create_app(host)) as c:
        assert c.get("/api/v1/hello").json() == {"hello": "plugin"}


def test_the_api_docs_page_works_offline(tmp_path, monkeypatch):
    """/schema loads Swagger UI from this service: no CDN, every script, style and icon answers here."""
    import re

    from litestar.testing import TestClient

    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.service import create_app

    monkeypatch.chdir(tmp_path)
    with TestClient(create_app(Host(load_config()))) as client:
        page = client.get("/schema")
        assert page.status_code == 200 and "swagger-ui" in page.text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
        assert urls and not [u for u in urls if "://" in u or u.startswith("//")], urls
        for url in urls:
            assert client.get(url).status_code == 200, url
        assert client.get("/schema/openapi.json").json()["info"]["title"] == "matih-lite ml-service"
