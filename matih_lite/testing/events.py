"""The events-slot contract: every EventStore backend passes these.

Subclass :class:`EventStoreContract` and override the ``store`` fixture to return a fresh, empty
backend (closing it after the test)::

    class TestMyEvents(EventStoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            s = MyEventStore(tmp_path)
            yield s
            s.close()

        @pytest.fixture
        def reopen(self, store, tmp_path):
            def again():              # what a restarted process sees: the same data, a new instance
                store.close()
                return MyEventStore(tmp_path)
            return again

Without ``reopen`` the tests of what survives a restart are skipped. The tests marked ``slow``
append tens of thousands of records.
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matih_lite.contracts import EventStore
from matih_lite.contracts.streams import EventRecord
from matih_lite.errors import InvalidInput

T0 = 1_700_000_000_000


def _records(n: int, start: int = T0, step: int = 10, **extra):
    return [{"timestamp": start + i * step, "i": i, **extra} for i in range(n)]


class EventStoreContract:
    """Override the ``store`` fixture to return a fresh, empty backend."""

    @pytest.fixture
    def store(self) -> EventStore:
        raise NotImplementedError("override the 'store' fixture to build your backend")

    @pytest.fixture
    def reopen(self, store):
        """A callable closing ``store`` and returning a new instance on the same data (a restart)."""
        pytest.skip("override the 'reopen' fixture to test what survives a restart")

    # ---- shape -------------------------------------------------------------------------------
    def test_satisfies_protocol(self, store):
        assert isinstance(store, EventStore)
        assert store.health().ok

    def test_empty_stream_reads_nothing(self, store):
        assert store.end_offset("nothing.here") == 0
        assert store.read("nothing.here", 0, 2**62) == []
        assert store.read_from("nothing.here", 0) == []
        assert store.scan("nothing.here", 0, 2**62).num_rows == 0
        assert store.committed("g", "nothing.here") is None

    # ---- append and offsets ------------------------------------------------------------------
    def test_offsets_start_at_zero_and_grow_per_stream(self, store):
        assert store.append("a", _records(3)) == 0
        assert store.append("a", _records(2)) == 3
        assert store.append("b", _records(1)) == 0
        assert store.end_offset("a") == 5
        assert store.end_offset("b") == 1
        assert [r.offset for r in store.read_from("a", 0)] == [0, 1, 2, 3, 4]

    def test_append_nothing_is_a_no_op(self, store):
        assert store.append("a", []) == 0
        store.append("a", _records(2))
        assert store.append("a", []) == 2
        assert store.end_offset("a") == 2

    def test_records_round_trip(self, store):
        record = {"timestamp": T0, "text": "héllo ✓ \"quoted\"", "n": 2**53 + 1, "x": 1.5, "ok": True,
                  "none": None, "list": [1, "two", None, [3]], "nested": {"a": {"b": [1.25]}, "c": "d"}}
        store.append("s", [record])
        [got] = store.read_from("s", 0)
        assert got == EventRecord(0, T0, record)
        assert store.read("s", T0, T0 + 1)[0].data == record

    @pytest.mark.parametrize("bad", [{"x": 1}, {"timestamp": "2024-01-01"}, {"timestamp": 1.5},
                                     {"timestamp": True}, {"timestamp": None}])
    def test_record_without_integer_timestamp_is_refused(self, store, bad):
        with pytest.raises(InvalidInput, match="timestamp"):
            store.append("s", [{"timestamp": T0}, bad])
        assert store.end_offset("s") == 0  # all or none

    def test_record_that_is_not_json_is_refused(self, store):
        with pytest.raises(InvalidInput):
            store.append("s", [{"timestamp": T0, "x": object()}])
        with pytest.raises(InvalidInput):
            store.append("s", ["not an object"])
        assert store.end_offset("s") == 0

    @pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 250, "ünicode", "semi;colon", "quo\"te"])
    def test_invalid_stream_names_are_refused(self, store, name):
        with pytest.raises(InvalidInput, match="stream"):
            store.append(name, _records(1))
        with pytest.raises(InvalidInput):
            store.read(name, 0, 1)

    def test_concurrent_appends_get_distinct_contiguous_offsets(self, store):
        def work(k: int) -> None:
            for _ in range(10):
                store.append("c", _records(5, writer=k))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        offsets = [r.offset for r in store.read_from("c", 0, 1000)]
        assert offsets == list(range(200))
        assert store.end_offset("c") == 200

    # ---- reads -------------------------------------------------------------------------------
    def test_read_window_is_half_open_and_in_time_order(self, store):
        store.append("w", [{"timestamp": T0 + 30, "k": "late"}, {"timestamp": T0 + 10, "k": "early"},
                           {"timestamp": T0 + 20, "k": "mid"}, {"timestamp": T0 + 10, "k": "early2"}])
        got = store.read("w", T0 + 10, T0 + 30)
        assert [r.data["k"] for r in got] == ["early", "early2", "mid"]
        assert [r.offset for r in got] == [1, 3, 2]
        assert store.read("w", T0 + 31, T0 + 100) == []

    def test_read_from_pages_by_offset(self, store):
        store.append("p", _records(25))
        assert [r.data["i"] for r in store.read_from("p", 10, limit=5)] == [10, 11, 12, 13, 14]
        assert [r.offset for r in store.read_from("p", 20)] == [20, 21, 22, 23, 24]
        assert store.read_from("p", 25) == []
        assert store.read_from("p", 3, limit=0) == []
        with pytest.raises(InvalidInput):
            store.read_from("p", -1)

    def test_streams_are_independent(self, store):
        store.append("one", _records(3, tag="one"))
        store.append("two", _records(2, tag="two"))
        assert {r.data["tag"] for r in store.read("one", 0, 2**62)} == {"one"}
        assert len(store.read("two", 0, 2**62)) == 2

    # ---- columns -----------------------------------------------------------------------------
    def test_scan_gives_typed_columns(self, store):
        store.append("t", [
            {"timestamp": T0, "variant": "a", "latency_ms": 3, "shadow": False,
             "features": {"age": 31, "plan": "pro"}, "skip": [1, 2]},
            {"timestamp": T0 + 1, "variant": "b", "latency_ms": 2.5, "shadow": True,
             "features": {"age": 40.5, "plan": "free", "extra": 7}},
        ])
        table = store.scan("t", T0, T0 + 10)
        assert table.column_names[:2] == ["_offset", "timestamp"]
        got = table.to_pydict()
        assert got["_offset"] == [0, 1]
        assert got["timestamp"] == [T0, T0 + 1]
        assert got["variant"] == ["a", "b"]
        assert got["latency_ms"] == [3.0, 2.5]
        assert got["shadow"] == [False, True]
        assert got["features.age"] == [31.0, 40.5]
        assert got["features.plan"] == ["pro", "free"]
        assert got["features.extra"] == [None, 7.0]
        assert "skip" not in got
        assert str(table.schema.field("features.age").type) == "double"
        assert str(table.schema.field("shadow").type) == "bool"

    def test_scan_value_of_another_type_is_null_but_kept_in_record(self, store):
        store.append("m", [{"timestamp": T0, "v": 1.0}, {"timestamp": T0 + 1, "v": "text"}])
        assert store.scan("m", 0, 2**62).column("v").to_pylist() == [1.0, None]
        assert store.read("m", 0, 2**62)[1].data["v"] == "text"

    def test_scan_window_and_column_choice(self, store):
        store.append("s", [{"timestamp": T0 + i, "a": i, "b": str(i), "c": i % 2 == 0} for i in range(100)])
        table = store.scan("s", T0 + 10, T0 + 20, columns=["b", "a", "never"])
        assert table.column_names == ["_offset", "timestamp", "b", "a"]
        assert table.column("a").to_pylist() == [float(i) for i in range(10, 20)]

    def test_scan_in_time_order(self, store):
        store.append("o", [{"timestamp": T0 + 5, "k": 1}, {"timestamp": T0, "k": 2}])
        assert store.scan("o", 0, 2**62).column("k").to_pylist() == [2.0, 1.0]

    def test_field_names_differing_in_case_are_distinct_columns(self, store):
        store.append("case", [{"timestamp": T0, "A": 1, "a": 2, 'q"uote': 3, "sp ace": 4}])
        got = store.scan("case", 0, 2**62).to_pydict()
        assert (got["A"], got["a"], got['q"uote'], got["sp ace"]) == ([1.0], [2.0], [3.0], [4.0])

    # ---- appending a table ------------------------------------------------------------------
    def test_append_table_reads_back_as_records(self, store):
        import pyarrow as pa

        table = pa.table({"timestamp": pa.array([T0, T0 + 1], pa.int64()), "request_id": ["r1", "r2"],
                          "row": pa.array([0, 3], pa.int32()), "shadow": [False, True],
                          "features.age": [31.5, None], "features.plan": ["pro", "free"]})
        assert store.append("t", table) == 0
        assert store.append("t", [{"timestamp": T0 + 2, "request_id": "r3", "features": {"age": 7}}]) == 2
        got = [r.data for r in store.read("t", 0, 2**62)]
        assert got[0] == {"timestamp": T0, "request_id": "r1", "row": 0.0, "shadow": False,
                          "features": {"age": 31.5, "plan": "pro"}}
        assert got[1] == {"timestamp": T0 + 1, "request_id": "r2", "row": 3.0, "shadow": True,
                          "features": {"plan": "free"}}
        assert got[2]["features"] == {"age": 7}
        columns = store.scan("t", 0, 2**62).to_pydict()
        assert columns["features.age"] == [31.5, None, 7.0]
        assert columns["row"] == [0.0, 3.0, None]
        assert [r.offset for r in store.read_from("t", 1)] == [1, 2]

    def test_append_table_with_a_column_of_another_type_keeps_its_values(self, store):
        import pyarrow as pa

        store.append("t", [{"timestamp": T0, "prediction": 0.5}])
        store.append("t", pa.table({"timestamp": pa.array([T0 + 1], pa.int64()), "prediction": ["yes"]}))
        assert [r.data["prediction"] for r in store.read("t", 0, 2**62)] == [0.5, "yes"]
        assert store.scan("t", 0, 2**62).column("prediction").to_pylist() == [0.5, None]

    def test_append_table_needs_integer_timestamps_and_scalar_columns(self, store):
        import pyarrow as pa

        with pytest.raises(InvalidInput, match="timestamp"):
            store.append("t", pa.table({"x": [1.0]}))
        with pytest.raises(InvalidInput, match="timestamp"):
            store.append("t", pa.table({"timestamp": [1.5]}))
        with pytest.raises(InvalidInput, match="vec"):
            store.append("t", pa.table({"timestamp": pa.array([T0], pa.int64()), "vec": [[1.0, 2.0]]}))
        assert store.end_offset("t") == 0
        assert store.append("t", pa.table({"timestamp": pa.array([], pa.int64())})) == 0

    # ---- consumer groups ---------------------------------------------------------------------
    def test_consumer_group_offsets(self, store):
        store.append("q", _records(5))
        assert store.committed("g1", "q") is None
        store.commit("g1", "q", 3)
        store.commit("g2", "q", 1)
        assert store.committed("g1", "q") == 3
        assert store.committed("g2", "q") == 1
        store.commit("g1", "q", 5)
        assert store.committed("g1", "q") == 5
        assert store.committed("g1", "other") is None
        with pytest.raises(InvalidInput):
            store.commit("g1", "q", -1)
        with pytest.raises(InvalidInput):
            store.commit("", "q", 1)

    def test_commit_of_zero_and_past_the_end(self, store):
        store.append("q", _records(3))
        store.commit("g", "q", 0)
        assert store.committed("g", "q") == 0
        store.commit("g", "q", 10)  # a group may commit ahead; reading from there gives nothing yet
        assert store.committed("g", "q") == 10
        assert store.read_from("q", 10) == []

    # ---- what a lenient backend would not notice ---------------------------------------------
    def test_appends_read_back_in_append_order_across_calls(self, store):
        """However the backend spreads a stream (partitions, files), offset order is append order."""
        sizes = [1, 7, 2, 13, 1, 5, 11]
        i = 0
        for size in sizes:
            first = store.append("o", [{"timestamp": T0 + 1000 - k, "i": k} for k in range(i, i + size)])
            assert first == i
            i += size
        got = store.read_from("o", 0, 1000)
        assert [r.offset for r in got] == list(range(i))
        assert [r.data["i"] for r in got] == list(range(i))
        # by time the order is the timestamps' (here the reverse), ties by offset
        window = store.read("o", T0 + 1000 - i + 1, T0 + 1001)
        assert [r.data["i"] for r in window] == list(range(i - 1, -1, -1))
        assert store.scan("o", 0, 2**62).column("i").to_pylist() == [float(k) for k in range(i - 1, -1, -1)]

    def test_every_read_sees_the_append_before_it(self, store):
        for n in range(1, 6):
            store.append("raw", [{"timestamp": T0 + n, "n": n}])
            assert store.end_offset("raw") == n
            assert store.read_from("raw", n - 1)[0].data["n"] == n
            assert store.read("raw", T0 + n, T0 + n + 1)[0].data["n"] == n
            assert store.scan("raw", T0 + n, T0 + n + 1).column("n").to_pylist() == [float(n)]

    def test_reads_from_another_thread_see_a_finished_append(self, store):
        seen: list[int] = []
        done = threading.Event()

        def reader() -> None:
            while not done.is_set():
                seen.append(store.end_offset("rt"))
                time.sleep(0.001)
            seen.append(store.end_offset("rt"))  # the last append has returned

        thread = threading.Thread(target=reader)
        thread.start()
        for k in range(10):
            store.append("rt", _records(5, start=T0 + 100 * k))
        done.set()
        thread.join(timeout=60)
        assert seen == sorted(seen), "end_offset went backwards"
        assert seen[-1] == 50
        assert len(store.read_from("rt", 0, 100)) == 50

    def test_read_from_pages_through_a_stream_with_every_page_size(self, store):
        store.append("pg", _records(97))
        for page in (1, 10, 32, 96, 97, 1000):
            offset, got = 0, []
            while records := store.read_from("pg", offset, page):
                assert len(records) <= page
                assert records[0].offset == offset
                got.extend(r.data["i"] for r in records)
                offset = records[-1].offset + 1
            assert got == list(range(97)), f"page size {page}"
        assert store.read_from("pg", 96, 10)[0].data["i"] == 96
        assert store.read_from("pg", 500) == []

    def test_window_column_takes_the_kind_the_stream_first_gave_it(self, store):
        """Drift windows of one stream must agree on each column's type, whatever the window holds."""
        store.append("k", [{"timestamp": T0, "v": 1.5, "s": "first"}])
        store.append("k", [{"timestamp": T0 + 10, "v": "text", "s": 7, "late": True}])
        later = store.scan("k", T0 + 10, T0 + 11)
        assert str(later.schema.field("v").type) == "double"
        assert later.column("v").to_pylist() == [None]
        assert str(later.schema.field("s").type) == "string"
        assert later.column("s").to_pylist() == [None]
        assert later.column("late").to_pylist() == [True]
        early = store.scan("k", T0, T0 + 1)
        assert early.column_names == ["_offset", "timestamp", "v", "s", "late"]
        assert early.column("late").to_pylist() == [None]  # a column of the stream, empty in this window
        assert store.read("k", T0 + 10, T0 + 11)[0].data["v"] == "text"

    def test_a_failed_append_in_a_busy_stream_leaves_no_record(self, store):
        store.append("busy", _records(4))
        with pytest.raises(InvalidInput):
            store.append("busy", [*_records(3, start=T0 + 100), {"timestamp": "soon"}])
        assert store.end_offset("busy") == 4
        assert store.append("busy", _records(1, start=T0 + 200)) == 4
        assert [r.offset for r in store.read_from("busy", 0)] == [0, 1, 2, 3, 4]

    @settings(max_examples=10, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])
    @given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6), page=st.integers(1, 60),
           table=st.booleans())
    def test_offsets_are_contiguous_and_pages_rebuild_the_stream(self, store, sizes, page, table):
        import itertools
        import uuid

        import pyarrow as pa

        stream = f"prop-{uuid.uuid4().hex[:12]}"
        counter = itertools.count()
        expected = []
        for size in sizes:
            items = [next(counter) for _ in range(size)]
            expected.extend(items)
            if table:
                batch = pa.table({"timestamp": pa.array([T0 + i for i in items], pa.int64()),
                                  "i": pa.array(items, pa.int64())})
            else:
                batch = [{"timestamp": T0 + i, "i": i} for i in items]
            assert store.append(stream, batch) == items[0]
        assert store.end_offset(stream) == len(expected)
        offset, got = 0, []
        while records := store.read_from(stream, offset, page):
            got.extend(int(r.data["i"]) for r in records)
            offset = records[-1].offset + 1
        assert got == expected

    @pytest.mark.slow
    def test_large_appends_of_records_and_tables(self, store):
        import pyarrow as pa

        n = 6_000  # 12,000 in all: more than a page, a read's default limit, a Kafka producer batch
        assert store.append("big", [{"timestamp": T0 + i, "i": i, "pad": "x" * 40} for i in range(n)]) == 0
        table = pa.table({"timestamp": pa.array(range(T0 + n, T0 + 2 * n), pa.int64()),
                          "i": pa.array(range(n, 2 * n), pa.float64()), "features.f": pa.array([0.5] * n)})
        assert store.append("big", table) == n
        assert store.end_offset("big") == 2 * n
        offset, seen = 0, 0
        while records := store.read_from("big", offset, 5000):
            assert [r.data["i"] for r in records] == list(range(offset, offset + len(records)))
            seen += len(records)
            offset = records[-1].offset + 1
        assert seen == 2 * n
        scanned = store.scan("big", T0, T0 + 2 * n, columns=["i", "features.f"])
        assert scanned.num_rows == 2 * n
        assert scanned.column("_offset").to_pylist() == list(range(2 * n))
        assert scanned.column("features.f").null_count == n
        assert len(store.read("big", T0 + n - 5, T0 + n + 5)) == 10

    # ---- restarts ----------------------------------------------------------------------------
    def test_offsets_commits_and_columns_survive_a_restart(self, store, reopen):
        store.append("r", _records(6, kind="a"))
        store.commit("g", "r", 4)
        store.commit("other", "r", 1)
        again = reopen()
        try:
            assert again.end_offset("r") == 6
            assert again.committed("g", "r") == 4
            assert again.committed("other", "r") == 1
            assert [r.data["i"] for r in again.read_from("r", 4)] == [4, 5]
            assert again.append("r", [{"timestamp": T0 + 99, "kind": 3}]) == 6
            assert again.scan("r", 0, 2**62).column("kind").to_pylist() == ["a"] * 6 + [None]
            again.commit("g", "r", 7)
            assert again.committed("g", "r") == 7
        finally:
            again.close()
