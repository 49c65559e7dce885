"""The generated Feast repo is a real one: Feast's own CLI finds it matches what was applied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from matih_lite.testing.features import CUSTOMER, DAY, PUSHED, ROUTES, T0, Platform

pytestmark = pytest.mark.slow


def test_feast_plan_finds_nothing_to_change(tmp_path):
    import pyarrow as pa

    from matih_lite.config import load_config
    from matih_lite.host import Host

    (tmp_path / "features").mkdir()
    (tmp_path / "matih.toml").write_text('[profiles.lite]\nfeatures = { backend = "feast", online_store = "sqlite" }\n')
    host = Host(load_config(tmp_path / "matih.toml", cwd=tmp_path))
    try:
        p = Platform(host, tmp_path / "features")
        p.write("customer.toml", CUSTOMER)
        p.write("pushed.toml", PUSHED)
        p.write("routes.toml", ROUTES)
        p.customers([(1, T0 - DAY, T0 - DAY, 0.2, 2)])
        p.table("routes.parquet", {"origin": ["AMS"], "destination": ["BER"], "eta_minutes": [90.0],
                                   "event_timestamp": pa.array([T0 - DAY], pa.timestamp("us", "UTC"))})
        p.apply()
        repo = host.backend("features").repo_path("default")
    finally:
        host.close()
    assert {f.name for f in Path(repo).iterdir()} >= {"feature_store.yaml", "definitions.py", "registry.db"}
    done = subprocess.run([Path(sys.executable).parent / "feast", "-c", str(repo), "plan"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "No changes to registry" in done.stdout, done.stdout
