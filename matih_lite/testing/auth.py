"""The auth part of the metadata-slot contract."""

from __future__ import annotations

import pytest


class AuthStoreContract:
    """Override the ``store`` fixture to return a fresh, empty metadata backend."""

    @pytest.fixture
    def store(self):
        raise NotImplementedError("override the 'store' fixture to build your backend")
