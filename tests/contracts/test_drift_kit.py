"""The in-process drift runner passes the drift-runner contract kit."""

from __future__ import annotations

import pytest

from matih_lite.builtin.inprocess_drift import InProcessDriftRunner, InProcessDriftSettings
from matih_lite.testing import DriftRunnerContract


class TestInProcessDriftRunner(DriftRunnerContract):
    @pytest.fixture
    def runner(self):
        runner = InProcessDriftRunner(InProcessDriftSettings(poll_seconds=0.05, startup_delay_seconds=0))
        yield runner
        runner.close()
