"""The built-in ``duckdb`` features backend passes the features contract kit."""

from __future__ import annotations

import pytest

from matih_lite.testing.features import FeatureStoreContract


class TestDuckDBFeatureStore(FeatureStoreContract):
    @pytest.fixture
    def features_backend(self, tmp_path):
        return {"backend": "duckdb"}
