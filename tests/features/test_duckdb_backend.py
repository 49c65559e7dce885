"""The built-in ``duckdb`` features backend passes the features contract kit."""

from __future__ import annotations

import pytest

from matih_lite.testing.features import FeatureStoreContract


class TestDuckDBFeatureStore(FeatureStoreContract):
    @pytest.fixture
    def features_backend(self, tmp_path):
        return {"backend": "duckdb"}


def test_nothing_heavy_loads_with_the_platform(tmp_path):
    """duckdb and pyarrow load on the first feature request, not with ``import matih_lite`` or the host."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        import matih_lite, matih_lite.features
        from matih_lite.host import Host
        host = Host.open()
        host.backend("features")
        heavy = sorted(m for m in ("duckdb", "pyarrow", "pandas", "feast") if m in sys.modules)
        assert not heavy, heavy
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_source_rewritten_with_ties_is_checked_again(applied):
    import pyarrow as pa

    from matih_lite.testing.features import DAY, T0

    applied.customers([(1, T0 - DAY, T0 - DAY, 0.2, 2)])
    assert applied.historical({"customer_id": [1], "event_timestamp": [T0]})["trips"] == [2]
    applied.customers([(1, T0 - DAY, T0 - DAY, 0.2, 2), (1, T0 - DAY, T0 - DAY + DAY / 24, 0.9, 9)])
    assert applied.historical({"customer_id": [1], "event_timestamp": [T0]})["trips"] == [9]
    del pa


def test_bad_settings_name_their_key(tmp_path):
    from matih_lite.config import load_config
    from matih_lite.host import Host

    (tmp_path / "matih.toml").write_text('[profiles.lite]\nfeatures = { backend = "duckdb", repoo = "x" }\n')
    host = Host(load_config(tmp_path / "matih.toml", cwd=tmp_path), strict=False)
    assert any(key.startswith("profiles.lite.features") and "repoo" in msg for key, msg in host.config_problems)


def test_a_query_source_reads_files_relative_to_the_repo(applied):
    from matih_lite.testing.features import T0

    applied.write("query.toml", """
        [sources.doubled]
        query = "SELECT customer_id, event_timestamp, trips * 2 AS twice FROM read_parquet('customer_stats.parquet')"

        [feature_views.doubled]
        entities = ["customer"]
        source = "doubled"
        schema = { twice = "int64" }
        """)
    applied.apply()
    assert applied.historical({"customer_id": [1, 2], "event_timestamp": [T0, T0]}, ["doubled:twice"])["twice"] in (
        [4, 8], [4, 6])
