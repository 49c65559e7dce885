"""matih-feast against the real Redis at 127.0.0.1:6379: the features contract kit, Feast's duckdb and file stores."""

from __future__ import annotations

import pytest
from conftest import REDIS

from matih_lite.testing.features import FeatureStoreContract

pytestmark = pytest.mark.slow  # Feast takes ~5 s to import and a second per Feast join


class TestFeastRedisDuckDB(FeatureStoreContract):
    @pytest.fixture
    def features_backend(self, tmp_path, redis_db):
        return {"backend": "feast", "redis": REDIS, "db": redis_db}


class TestFeastFileStore(FeatureStoreContract):
    """Feast's file (dask) store drops entity rows without a feature row; the backend puts them back."""

    @pytest.fixture
    def features_backend(self, tmp_path, redis_db):
        return {"backend": "feast", "redis": REDIS, "db": redis_db, "offline_store": "file"}
