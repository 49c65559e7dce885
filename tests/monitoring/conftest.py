"""Fixtures of the drift tests (helpers live in drift_helpers.py, imported the same way by the tests)."""

from __future__ import annotations

import pytest
from drift_helpers import DEFAULT_TOML, make_host


@pytest.fixture
def host(hermetic):
    h = make_host(hermetic, DEFAULT_TOML)
    yield h
    h.close()
