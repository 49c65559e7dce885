"""The SDK over HTTP to an ml-service (in a thread), plus what only the HTTP transport does."""

from __future__ import annotations

import socket

import pytest
from sdk_scenarios import SdkScenarios

import matih_lite as ml
from matih_lite.errors import (
    Conflict,
    Forbidden,
    GovernanceRefused,
    InvalidInput,
    NotFound,
    StoreError,
    Unauthorized,
)
from matih_lite.tracking.client import Client, error_from_response


class TestHttp(SdkScenarios):
    @pytest.fixture
    def transport(self, service_url, monkeypatch) -> str:
        monkeypatch.setenv("MATIH_URL", service_url)
        return "http"



def test_nothing_is_written_to_the_working_folder(service_url, monkeypatch, hermetic):
    monkeypatch.setenv("MATIH_URL", service_url)
    with ml.start_run(experiment="remote", capture=False):
        ml.log_metric("auc", 0.9)
    assert not (hermetic / ".matih").exists()


@pytest.mark.parametrize(("status", "cls"), [
    (400, InvalidInput), (401, Unauthorized), (403, Forbidden), (404, NotFound), (409, Conflict),
    (422, GovernanceRefused), (500, StoreError), (503, StoreError), (429, StoreError), (413, InvalidInput),
])
def test_problem_details_map_back_to_the_same_errors(status, cls):
    exc = error_from_response(status, {"type": "about:blank", "title": "t", "status": status, "detail": "what happened",
                                       "instance": "/x", "unmet": ["auc >= 0.9"]})
    assert type(exc) is cls
    assert exc.message == "what happened" and exc.detail == {"unmet": ["auc >= 0.9"]}


def test_a_response_without_problem_details_still_says_what_failed():
    exc = error_from_response(502, "<html>bad gateway</html>", method="GET", url="http://x/api/v1/runs/1")
    assert isinstance(exc, StoreError) and "502" in exc.message and "bad gateway" in exc.message


def test_the_token_is_sent_as_a_bearer_header(monkeypatch):
    monkeypatch.setenv("MATIH_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MATIH_TOKEN", "s3cret")
    client = Client()
    assert client.transport == "http"
    assert client._t.http.headers["Authorization"] == "Bearer s3cret"
    client.close()


def test_an_unreachable_service_says_how_to_fix_it(monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", timeout=2) as client:
        with pytest.raises(StoreError, match="matih-lite up"):
            client.get_run("0" * 32)


def test_validation_errors_of_the_service_are_invalid_input(service_url):
    with Client(service_url) as client:
        with pytest.raises(InvalidInput):
            client.search_experiments(max_results=0)
