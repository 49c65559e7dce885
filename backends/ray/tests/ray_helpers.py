"""Helpers of the cluster tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
"""This folder: the cluster jobs' code (``cluster_jobs``), uploaded as each job's working dir."""


@dataclass
class Platform:
    """An ml-service on the namespace's loopback, its host, and a user who submits jobs."""

    host: object
    url: str
    folder: Path
    principal: object
    token: str
    cluster: object

    def config_text(self, **compute) -> str:
        """matih.toml text with the ray backend on this cluster and service (``compute`` adds settings)."""
        settings = {"backend": "ray", "address": self.cluster.dashboard_url, "service_url": self.url, **compute}
        inline = ", ".join(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {str(v).lower()}"
                           for k, v in settings.items())
        return f"[auth]\nenabled = true\n\n[profiles.lite]\ncompute = {{ {inline} }}\n"


def serve_on(host, port: int):
    """The host's ml-service under uvicorn on 127.0.0.1:``port`` (of the namespace), in a thread."""
    import uvicorn

    from matih_lite.service import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(host), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name="matih-test-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the ml-service did not start")
        time.sleep(0.02)
    return server, thread



def spec(entrypoint: str, **kw) -> dict:
    """A job spec whose code is this folder."""
    kw.setdefault("base_dir", str(HERE))
    kw.setdefault("experiment", "cluster")
    return {"entrypoint": f"cluster_jobs:{entrypoint}", **kw}
