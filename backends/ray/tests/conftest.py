"""One real two-node Ray cluster per test module, in a loopback-only network namespace, with an ml-service beside it.

The module's tests run in that namespace (the main thread enters it; threads started meanwhile, such
as the ml-service's and the job supervisor's, are born there), so the service, the backend and the
cluster all talk over the namespace's 127.0.0.1. The service requires tokens (``[auth] enabled``), so
every job reports through a token made for it alone.
"""

from __future__ import annotations

import os

import pytest
from ray_helpers import Platform, serve_on

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """Head (1 CPU) + second node (1 CPU, resource ``second_node``); the module runs in its namespace."""
    from matih_lite.testing.raycluster import RayCluster

    cluster = RayCluster(tmp_path_factory.mktemp("ray-cluster-logs")).start()
    try:
        with cluster.namespace.entered():
            yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory):
    from matih_lite.auth.service import Accounts
    from matih_lite.host import Host
    from matih_lite.identity import Principal
    from matih_lite.testing.processes import free_port
    from matih_lite.training.jobs import JobSupervisor

    folder = tmp_path_factory.mktemp("platform")
    port = free_port()
    probe = Platform(None, f"http://127.0.0.1:{port}", folder, None, "", ray_cluster)
    (folder / "matih.toml").write_text(probe.config_text())
    host = Host.open(str(folder / "matih.toml"))
    accounts = Accounts(host)
    accounts.create_user("default", "ann", ["editor"])
    token = accounts.create_token("default", "ann", name="tests").secret
    server, thread = serve_on(host, port)
    try:
        yield Platform(host, probe.url, folder, Principal("default", "ann", ("editor",)), token, ray_cluster)
    finally:
        JobSupervisor.of(host, start=False).stop()
        server.should_exit = True
        thread.join(15)
        host.close()
