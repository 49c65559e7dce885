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


def _platform(base, entry: str):
    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.testing.features import Platform

    (base / "features").mkdir(parents=True)
    (base / "matih.toml").write_text(f"[profiles.lite]\nfeatures = {{ repo = \"features\", {entry} }}\n")
    return Platform(Host(load_config(base / "matih.toml", cwd=base)), base / "features")


@pytest.mark.parametrize("full", [False, True])
def test_feast_and_duckdb_answer_the_same_columns_for_the_same_request(tmp_path, redis_db, full):
    """The slot asked directly, as promote asks both sides: the same table, column names included."""
    import pyarrow as pa

    from matih_lite.contracts.features import HistoricalRequest, ViewSelection
    from matih_lite.testing.features import CUSTOMER, DAY, T0

    rows = [(1, T0 - 2 * DAY, T0 - 2 * DAY, 0.1, 1), (1, T0 - DAY, T0 - DAY, 0.2, 2), (2, T0 - DAY, T0 - DAY, 0.3, 3)]
    entities = pa.table({"customer_id": pa.array([2, 1, 1, 3], pa.int64()), "row": [0, 1, 2, 3],
                         "event_timestamp": pa.array([T0, T0, T0 - DAY - DAY / 2, T0], pa.timestamp("us", "UTC"))})
    answers = []
    for name, entry in (("duckdb", 'backend = "duckdb"'),
                        ("feast", f'backend = "feast", redis = "{REDIS}", db = {redis_db}')):
        platform = _platform(tmp_path / name, entry)
        try:
            platform.write("customer.toml", CUSTOMER)
            platform.customers(rows)
            platform.apply()
            defs = platform.features.definitions(platform.who.tenant)
            request = HistoricalRequest(views=(ViewSelection("customer_stats", ("trips", "conv_rate")),),
                                        entities=entities, full_feature_names=full)
            answers.append(platform.host.backend("features").historical(defs, request).read_all().to_pydict())
        finally:
            platform.host.close()
    duckdb, feast = answers
    assert list(feast) == list(duckdb) == ["customer_id", "row", "event_timestamp",
                                           *(["customer_stats__trips", "customer_stats__conv_rate"] if full
                                             else ["trips", "conv_rate"])]
    assert feast == duckdb
    assert duckdb[list(duckdb)[-1]] == [0.3, 0.2, 0.1, None]
