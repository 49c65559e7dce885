"""ray-local passes the compute contract kit on the tests' long-lived local Ray (cancel frees CPUs included)."""

from __future__ import annotations

import pytest

from matih_lite.builtin.ray_local import RayLocalBackend, RayLocalSettings
from matih_lite.contracts import BackendContext
from matih_lite.testing.compute import ComputeBackendContract


class TestRayLocal(ComputeBackendContract):
    @pytest.fixture
    def compute(self, tmp_path, request):
        if "slow" in request.keywords:
            request.getfixturevalue("ray_session")  # the shared Ray, started once, as a long-lived cluster is
        backend = RayLocalBackend(RayLocalSettings(num_cpus=2), BackendContext(tmp_path, tmp_path, "lite"))
        yield backend
        backend.close()

    @pytest.fixture
    def free_cpus(self, ray_session):
        return lambda: float(ray_session.available_resources().get("CPU", 0.0))
