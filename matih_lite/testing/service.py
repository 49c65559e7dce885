"""The ml-service for a test: uvicorn on a free 127.0.0.1 port, in a thread, stopped on exit.

    from matih_lite.testing.service import ServiceThread, serve

    with serve(host) as url:          # "http://127.0.0.1:PORT", lifespan run (startup hooks and all)
        httpx.get(f"{url}/ready")

    service = ServiceThread(host).start()   # the same, for a test that stops it itself
    try:
        ...service.url...
    finally:
        service.stop()

The socket is bound before uvicorn starts, so there is no window in which another process could
take the port; the lifespan runs, so what ``matih-lite up`` starts at startup runs here too.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class ServiceThread:
    """``host``'s ml-service under uvicorn in a daemon thread, on a socket bound before it starts."""

    def __init__(self, host: Any) -> None:
        import uvicorn

        from matih_lite.service import create_app

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(host), log_level="warning", access_log=False,
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="matih-test-service", daemon=True)

    def start(self, timeout: float = 30.0) -> ServiceThread:
        """Start serving; returns once the service answers (RuntimeError after ``timeout`` seconds)."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the ml-service did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Shut the service down (its lifespan's shutdown runs) and free the port."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.sock.close()


@contextmanager
def serve(host: Any, *, start_timeout: float = 30.0, stop_timeout: float = 15.0) -> Iterator[str]:
    """Serve ``host``'s ml-service until the block ends; yields its base URL. Raises RuntimeError if it does
    not start within ``start_timeout`` seconds."""
    service = ServiceThread(host).start(start_timeout)
    try:
        yield service.url
    finally:
        service.stop(stop_timeout)
