"""SDK fixtures: an ml-service in a thread for the HTTP transport, and a clean SDK state per test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from matih_lite import sdk


def serve(folder) -> tuple[str, object, threading.Thread]:
    """Start the ml-service on a free 127.0.0.1 port over a store in ``folder``; returns (url, server, thread)."""
    import uvicorn

    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.service import create_app

    host = Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(host), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the ml-service did not start")
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture(scope="module")
def service_url(tmp_path_factory) -> Iterator[str]:
    url, server, thread = serve(tmp_path_factory.mktemp("service"))
    yield url
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(timeout=10)


@pytest.fixture(autouse=True)
def clean_sdk(monkeypatch) -> Iterator[None]:
    """No run, experiment or seed carries over from one test to the next."""
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)  # seed_everything sets it; restored afterwards
    yield
    while sdk.active_run() is not None:
        try:
            sdk.end_run()
        except Exception:
            with sdk._state.lock:
                if sdk._state.stack:
                    sdk._state.stack.pop()
    with sdk._state.lock:
        sdk._state.seeds = {}
        sdk._state.experiment_name = sdk._state.experiment_id = None
        sdk._state.unfinished.clear()
