"""The kuberay tests' world: a real two-node Ray cluster playing the one KubeRay would make, the fake Kubernetes
API server (with its operator) in front of it, and an ml-service the jobs report to, all in one loopback-only
network namespace that this module's tests run in."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

HERE = Path(__file__).resolve().parent


@dataclass
class World:
    cluster: object
    fake: object
    host: object
    url: str
    folder: Path
    principal: object
    token: str

    def settings(self, **overrides):
        """Backend settings on the fake API server, with the real cluster's dashboard for raycluster mode."""
        from matih_kuberay.settings import KubeRaySettings

        base = {"api_server": self.fake.url, "service_url": self.url, "image": "registry.example/matih-ray:2.60",
                "dashboard_url": self.cluster.dashboard_url, "ttl_seconds": 0}
        return KubeRaySettings(**{**base, **overrides})

    def config_text(self, quotas: str = "", **overrides) -> str:
        settings = {"backend": "kuberay", "api_server": self.fake.url, "service_url": self.url,
                    "image": "registry.example/matih-ray:2.60", "ttl_seconds": 0, **overrides}
        inline = ", ".join(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {str(v).lower()}"
                           for k, v in settings.items())
        return f"[auth]\nenabled = true\n\n{quotas}\n[profiles.lite]\ncompute = {{ {inline} }}\n"


def _serve_on(host, port: int):
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


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from k8s_fake import FakeKubernetes

    from matih_lite.auth.service import Accounts
    from matih_lite.host import Host
    from matih_lite.identity import Principal
    from matih_lite.testing.processes import free_port
    from matih_lite.testing.raycluster import RayCluster
    from matih_lite.training.jobs import JobSupervisor

    cluster = RayCluster(tmp_path_factory.mktemp("ray-cluster-logs")).start()
    try:
        with cluster.namespace.entered():
            fake = FakeKubernetes(cluster.dashboard_url).start()
            folder = tmp_path_factory.mktemp("platform")
            port = free_port()
            world = World(cluster, fake, None, f"http://127.0.0.1:{port}", folder, None, "")
            (folder / "matih.toml").write_text(world.config_text())
            host = Host.open(str(folder / "matih.toml"))
            accounts = Accounts(host)
            accounts.create_user("default", "ann", ["editor"])
            world.token = accounts.create_token("default", "ann", name="tests").secret
            world.host, world.principal = host, Principal("default", "ann", ("editor",))
            server, thread = _serve_on(host, port)
            try:
                yield world
            finally:
                JobSupervisor.of(host, start=False).stop()
                server.should_exit = True
                thread.join(15)
                host.close()
                fake.stop()
    finally:
        cluster.stop()
