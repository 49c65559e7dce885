"""Training tests: one real local Ray for the whole session (started only by tests that need it)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from job_helpers import write_config


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs shared by the tests; the ray-local backend uses it instead of starting one."""
    import ray

    temp = tempfile.mkdtemp(prefix="matih-ray-test-")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _temp_dir=temp, log_to_driver=False,
             configure_logging=False, namespace="matih-lite-tests")
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def open_host(hermetic):
    """Open hosts on matih.toml text in the test's folder; their job supervisors are stopped at the end."""
    from matih_lite.host import Host
    from matih_lite.training.jobs import JobSupervisor

    hosts = []

    def open_(config_text: str = "", plugins=None):
        path = write_config(hermetic, config_text)
        kwargs = {"plugins": plugins} if plugins is not None else {}
        host = Host.open(str(path), **kwargs)
        hosts.append(host)
        return host

    yield open_
    for host in hosts:
        JobSupervisor.of(host, start=False).stop()
        host.close()
