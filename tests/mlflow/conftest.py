"""The MLflow suites' shared pieces: a real ml-service on a free loopback port, and the client's warnings."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlflow  # a test dependency ([test] extra): missing, these suites fail, they do not skip

MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID",
              "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


class Served:
    """A running service: its URL, its host, and a token secret per user (with auth on)."""

    def __init__(self, url: str, host: Any, folder: Path, secrets: dict[str, str]) -> None:
        self.url = url
        self.host = host
        self.folder = folder
        self.secrets = secrets

    def http(self, user: str | None = None) -> httpx.Client:
        """Plain HTTP to the service, as ``user`` (their bearer token) when given."""
        headers = {"Authorization": f"Bearer {self.secrets[user]}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def mlflow_service(folder: Path, *, users: dict[str, tuple[str, list[str]]] | None = None) -> Iterator[Served]:
    """The ml-service over ``folder`` under uvicorn on 127.0.0.1, the mlflow client pointed at it.

    With ``users`` (name -> (tenant, roles)) auth is on and each user gets a token; without, the
    service runs as lite does on loopback, unauthenticated. Stopped (and the client reset) on exit.
    """
    import uvicorn

    from matih_lite.auth import Accounts
    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.service import create_app

    home = folder / "home"
    home.mkdir(exist_ok=True)
    secrets: dict[str, str] = {}
    if users:
        (folder / "matih.toml").write_text("[auth]\nenabled = true\ncache_seconds = 1\n")
        bootstrap = Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))
        accounts = Accounts(bootstrap)
        for name, (tenant, roles) in users.items():
            accounts.create_user(tenant, name, roles)
            secrets[name] = accounts.create_token(tenant, name, name="tests").secret
        bootstrap.close()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        # Requirement inference runs a subprocess for ~10 s per model; the default requirements do here.
        mp.setenv("MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT", "1")
        for var in MLFLOW_ENV:
            mp.delenv(var, raising=False)
        host = Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(host), host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="on"))
        thread = threading.Thread(target=server.run, name="matih-mlflow-test-server", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the ml-service did not start")
            time.sleep(0.02)
        mlflow.set_tracking_uri(url)
        try:
            yield Served(url, host, folder, secrets)
        finally:
            mlflow.flush_trace_async_logging()
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)
            mlflow.tracking.fluent._active_experiment_id = None  # set_experiment's global and env variable
            for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
                os.environ.pop(var, None)
            server.should_exit = True
            thread.join(timeout=10)


class Records(logging.Handler):
    """Every record of WARNING or above that reaches it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records]


@pytest.fixture
def mlflow_warnings() -> Iterator[Records]:
    """The warnings the mlflow client logs (its loggers do not propagate to the root, so caplog misses them)."""
    handler = Records()
    logger = logging.getLogger("mlflow")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
