"""The built-in duckdb events backend: the contract kit, plus what only a file can show."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from matih_lite.builtin.duckdb_events import (
    DuckDBEventsSettings,
    DuckDBEventStore,
    create_store,
)
from matih_lite.contracts import BackendContext
from matih_lite.errors import StoreError
from matih_lite.host import Host
from matih_lite.testing.events import T0, EventStoreContract


class TestDuckDBEvents(EventStoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        s = DuckDBEventStore(tmp_path / "events.duckdb")
        yield s
        s.close()

    @pytest.fixture
    def reopen(self, store, tmp_path):
        def again():
            store.close()
            return DuckDBEventStore(tmp_path / "events.duckdb")
        return again


def test_host_fills_events_slot_with_duckdb_in_home(tmp_path):
    (tmp_path / "matih.toml").write_text("")
    host = Host.open(str(tmp_path / "matih.toml"))
    try:
        store = host.backend("events")
        assert isinstance(store, DuckDBEventStore)
        assert store.health().ok
        assert store.path == host.config.home / "events.duckdb"
    finally:
        host.close()


def test_relative_path_resolves_against_config_folder(tmp_path):
    ctx = BackendContext(home=tmp_path / ".matih", base_dir=tmp_path, profile="lite")
    store = create_store(DuckDBEventsSettings(path="data/ev.duckdb"), ctx)
    store.append("s", [{"timestamp": T0}])
    store.close()
    assert (tmp_path / "data" / "ev.duckdb").exists()


def test_streams_offsets_and_columns_survive_reopen(tmp_path):
    path = tmp_path / "e.duckdb"
    with DuckDBEventStore(path) as store:
        store.append("a", [{"timestamp": T0, "x": 1, "f": {"k": "v"}}])
        store.append("b", [{"timestamp": T0, "y": True}])
        store.commit("g", "a", 1)
    with DuckDBEventStore(path) as store:
        assert store.append("a", [{"timestamp": T0 + 1, "x": 2, "z": "new"}]) == 1
        assert store.end_offset("b") == 1
        assert store.committed("g", "a") == 1
        got = store.scan("a", 0, 2**62).to_pydict()
        assert got["x"] == [1.0, 2.0] and got["f.k"] == ["v", None] and got["z"] == [None, "new"]


def test_building_the_backend_opens_nothing(tmp_path):
    store = DuckDBEventStore(tmp_path / "lazy" / "e.duckdb")
    assert not (tmp_path / "lazy").exists()
    assert store.health().ok
    store.close()
    assert not store.health().ok
    with pytest.raises(StoreError, match="closed"):
        store.append("s", [{"timestamp": T0}])


def test_second_writer_process_gets_one_clear_line(tmp_path):
    path = tmp_path / "events.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from matih_lite.builtin.duckdb_events import DuckDBEventStore
        s = DuckDBEventStore({str(path)!r})
        s.append("x", [{{"timestamp": 1}}])
        print("ready", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        store = DuckDBEventStore(path)
        health = store.health()
        assert not health.ok
        with pytest.raises(StoreError) as caught:
            store.append("x", [{"timestamp": 2}])
        message = caught.value.message
        assert "\n" not in message
        assert f"PID {holder.pid}" in message and "MATIH_URL" in message
        assert health.detail == message
    finally:
        holder.communicate("\n", timeout=30)


def test_cli_reports_second_writer_as_one_red_line(tmp_path):
    path = tmp_path / "events.duckdb"
    (tmp_path / "matih.toml").write_text(f'[profiles.lite]\nevents = {{ backend = "duckdb", path = "{path}" }}\n')
    with DuckDBEventStore(path) as store:
        store.append("x", [{"timestamp": 1}])
        script = ("from matih_lite.host import Host\n"
                  "from matih_lite.cli.output import error_line\n"
                  "from matih_lite.errors import MatihError\n"
                  "h = Host.open('matih.toml')\n"
                  "try:\n    h.backend('events').read('x', 0, 10)\n"
                  "except MatihError as e:\n    error_line(e.message); raise SystemExit(e.exit_code)\n")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                              timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "another process" in done.stderr


def test_append_5000_records_is_fast(tmp_path):
    records = [{"timestamp": T0 + i, "request_id": f"r{i}", "variant": "a", "latency_ms": 1.5, "shadow": False,
                "prediction": 0.5, "features": {f"f{j}": float(i + j) for j in range(20)}} for i in range(5000)]
    with DuckDBEventStore(tmp_path / "e.duckdb") as store:
        store.append("warm", records[:10])
        started = time.perf_counter()
        store.append("s", records)
        elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"5000 records took {elapsed:.2f}s"
