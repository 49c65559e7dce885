"""The inference log: requests recorded off the request path, labels joined later, windows read fast."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matih_lite.builtin.duckdb_events import DuckDBEventStore
from matih_lite.errors import InvalidInput, StoreError
from matih_lite.serving.inference_log import InferenceLog, inference_stream

T0 = 1_700_000_000_000
HOUR = 3_600_000
NAMES = ["age", "income", "tenure"]


@pytest.fixture
def store(tmp_path):
    s = DuckDBEventStore(tmp_path / "events.duckdb")
    yield s
    s.close()


@pytest.fixture
def log(store):
    with InferenceLog(store, flush_interval_ms=50) as inference_log:
        yield inference_log


def test_record_returns_at_once_and_writer_flushes_in_background(log, store):
    started = time.perf_counter()
    for i in range(2000):
        log.record("churn", f"r{i}", "primary", 3, np.array([[30.0 + i, 1e3, 2.0]]), np.array([1]), 1.5,
                   timestamp=T0 + i, feature_names=NAMES)
    per_call = (time.perf_counter() - started) / 2000
    assert per_call < 100e-6, f"record() took {per_call * 1e6:.1f} us"
    deadline = time.time() + 10
    while store.end_offset(inference_stream("churn")) < 2000 and time.time() < deadline:
        time.sleep(0.02)
    assert store.end_offset(inference_stream("churn")) == 2000
    assert log.stats["written"] == 2000 and log.stats["dropped"] == 0


def test_window_gives_features_predictions_and_metadata_in_time_order(log):
    log.record("churn", "b", "candidate", 4, np.array([[41.0, 2e3, 5.0]]), np.array([0]), 2.5, timestamp=T0 + 20,
               feature_names=NAMES)
    log.record("churn", "a", "primary", 3, np.array([[30.0, 1e3, 1.0]]), np.array([1]), 1.5, timestamp=T0 + 10,
               feature_names=NAMES)
    log.record("churn", "late", "primary", 3, np.array([[1.0, 1.0, 1.0]]), np.array([1]), 1.0,
               timestamp=T0 + HOUR, feature_names=NAMES)
    window = log.window("churn", T0, T0 + HOUR)
    assert len(window) == 2
    assert window.feature_names == NAMES
    np.testing.assert_array_equal(window.features()["age"], [30.0, 41.0])
    np.testing.assert_array_equal(window.prediction, [1, 0])
    assert window.variant.tolist() == ["primary", "candidate"]
    assert window.version.tolist() == ["3", "4"]
    np.testing.assert_array_equal(window.latency_ms, [1.5, 2.5])
    assert window.table.column("request_id").to_pylist() == ["a", "b"]
    assert window.table.column_names[:10] == ["timestamp", "request_id", "row", "variant", "version", "latency_ms",
                                              "shadow", "prediction", "label", "label_timestamp"]
    assert not window.labelled.any()


def test_a_request_of_several_rows_is_one_record_per_row(log):
    rows = np.arange(9, dtype=float).reshape(3, 3)
    outputs = {"label": np.array(["no", "yes", "no"]), "probabilities": np.array([[.9, .1], [.2, .8], [.6, .4]])}
    log.record("churn", "multi", "primary", 1, rows, outputs, 3.0, timestamp=T0, feature_names=NAMES)
    window = log.window("churn", T0, T0 + 1)
    assert window.table.column("row").to_pylist() == [0, 1, 2]
    assert window.prediction.tolist() == ["no", "yes", "no"]
    np.testing.assert_array_equal(window.features()["tenure"], [2.0, 5.0, 8.0])
    assert window.output_names == ["probabilities_0", "probabilities_1"]
    np.testing.assert_allclose(window.column("outputs.probabilities_1"), [.1, .8, .4])


@pytest.mark.parametrize("inputs", [
    {"age": 30, "plan": "pro"},
    [{"age": 30, "plan": "pro"}],
    {"age": np.array([30]), "plan": np.array(["pro"])},
])
def test_inputs_as_records_or_columns(log, inputs):
    log.record("churn", "r", "primary", 1, inputs, 0.25, 1.0, timestamp=T0)
    window = log.window("churn", T0, T0 + 1)
    assert window.features()["age"].tolist() == [30.0]
    assert window.features()["plan"].tolist() == ["pro"]
    assert window.prediction.tolist() == [0.25]


def test_requests_of_different_shapes_in_one_batch(log):
    log.record("churn", "a", "primary", 1, np.array([1.0, 2.0]), np.array([1.0]), 1.0, timestamp=T0)
    log.record("churn", "b", "primary", 1, {"f0": 3.0, "extra": "x"}, 0.0, 1.0, timestamp=T0 + 1)
    log.record("churn", "c", "primary", 1, [[5.0, 6.0], [7.0, 8.0]], [1, 0], 1.0, timestamp=T0 + 2)
    window = log.window("churn", T0, T0 + 10)
    features = window.features()
    assert features["f0"].tolist() == [1.0, 3.0, 5.0, 7.0]
    np.testing.assert_array_equal(features["f1"], [2.0, np.nan, 6.0, 8.0])
    assert features["extra"].tolist() == [None, "x", None, None]
    assert window.prediction.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_shadow_answers_only_when_asked(log):
    x = np.array([[1.0, 2.0, 3.0]])
    log.record("churn", "r", "primary", 3, x, np.array([1]), 1.0, timestamp=T0, feature_names=NAMES)
    log.record("churn", "r", "shadow-4", 4, x, np.array([0]), 4.0, timestamp=T0, shadow=True, feature_names=NAMES)
    assert len(log.window("churn", T0, T0 + 1)) == 1
    both = log.window("churn", T0, T0 + 1, shadow=True)
    assert sorted(both.version.tolist()) == ["3", "4"]
    assert sorted(both.table.column("shadow").to_pylist()) == [False, True]


def test_labels_join_by_request_id_latest_wins(log):
    for i in range(4):
        log.record("churn", f"r{i}", "primary", 3, np.array([[float(i), 0.0, 0.0]]), np.array([i % 2]), 1.0,
                   timestamp=T0 + i, feature_names=NAMES)
    log.flush()
    log.record_label("churn", "r1", 0, timestamp=T0 + 100)
    log.record_label("churn", "r1", 1, timestamp=T0 + 200)  # corrected later: the latest counts
    log.record_label("churn", "r3", 1, timestamp=T0 + 300)
    log.record_label("churn", "unknown", 1, timestamp=T0 + 300)
    window = log.window("churn", T0, T0 + 10)
    assert window.labelled.tolist() == [False, True, False, True]
    assert window.table.column("label").to_pylist() == [None, 1.0, None, 1.0]
    assert window.table.column("label_timestamp").to_pylist() == [None, T0 + 200, None, T0 + 300]


def test_labels_for_each_row_of_a_request(log):
    log.record("churn", "m", "primary", 3, np.zeros((3, 3)), np.array([0, 1, 0]), 1.0, timestamp=T0)
    log.record_label("churn", "m", ["a", "b", "c"], timestamp=T0 + 5)
    assert log.window("churn", T0, T0 + 1).label.tolist() == ["a", "b", "c"]


def test_unreadable_request_is_counted_not_raised(log):
    log.record("churn", "bad", "primary", 1, {"a": [1.0, 2.0], "b": [1.0]}, [1, 1], 1.0, timestamp=T0)
    log.record("churn", "good", "primary", 1, {"a": 1.0}, 1, 1.0, timestamp=T0 + 1)
    window = log.window("churn", T0, T0 + 10)
    assert window.table.column("request_id").to_pylist() == ["good"]
    assert log.stats["invalid"] == 1


def test_invalid_deployment_name_is_refused_at_once(log):
    with pytest.raises(InvalidInput, match="deployment"):
        log.record("has space", "r", "primary", 1, [1.0], 1, 1.0)


def test_close_writes_what_is_pending_and_later_records_are_dropped(store):
    log = InferenceLog(store, flush_interval_ms=60_000)
    log.record("churn", "r", "primary", 1, [1.0], 1, 1.0, timestamp=T0)
    log.close()
    assert store.end_offset(inference_stream("churn")) == 1
    log.record("churn", "r2", "primary", 1, [1.0], 1, 1.0, timestamp=T0)
    assert log.stats["dropped"] == 1
    log.close()  # idempotent


def test_a_failing_store_never_reaches_the_caller():
    class Broken:
        def append(self, stream, records):
            raise StoreError("disk full")

    log = InferenceLog(Broken(), flush_interval_ms=10)
    log.record("churn", "r", "primary", 1, [1.0], 1, 1.0)
    log.flush()
    log.record("churn", "r", "primary", 1, [1.0], 1, 1.0)
    log.close()
    assert log.stats["failed"] == 2 and log.stats["written"] == 0


def test_full_queue_drops_newest_and_counts(store):
    log = InferenceLog(store, flush_interval_ms=60_000, max_pending=10)
    for i in range(15):
        log.record("churn", f"r{i}", "primary", 1, [1.0], 1, 1.0, timestamp=T0 + i)
    assert log.stats["dropped"] == 5
    log.close()
    assert store.end_offset(inference_stream("churn")) == 10


@pytest.mark.slow
def test_window_of_100k_requests_reads_in_under_a_second(store):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100_000, 20))
    names = [f"x{j}" for j in range(20)]
    log = InferenceLog(store, max_batch=5000, max_pending=200_000)
    for i in range(100_000):
        log.record("churn", f"r{i}", "primary" if i % 10 else "candidate", 3, x[i:i + 1],
                   np.array([float(x[i, 0] > 0)]), 1.0, timestamp=T0 + i * 30, feature_names=names)
    for i in range(0, 100_000, 4):
        log.record_label("churn", f"r{i}", int(x[i, 0] > 0), timestamp=T0 + HOUR + i)
    log.flush()
    log.window("churn", T0, T0 + 1000)  # warm: the file's catalogue, pyarrow.compute
    started = time.perf_counter()
    window = log.window("churn", T0, T0 + HOUR)
    features = window.features()
    elapsed = time.perf_counter() - started
    log.close()
    assert len(window) == 100_000 and int(window.labelled.sum()) == 25_000
    np.testing.assert_array_equal(features["x7"], x[:, 7])
    assert elapsed < 1.0, f"window of 100k took {elapsed:.2f}s"


def test_a_flush_under_steady_traffic_writes_one_batch_and_returns(store):
    """Requests recorded while a flush writes wait for the next one: a flush is one transaction,
    not a chase after a queue that keeps refilling (which meant a commit and an fsync per handful)."""
    import threading

    class Counting:
        def __init__(self, inner):
            self.inner, self.appends = inner, 0

        def append(self, stream, records):
            self.appends += 1
            time.sleep(0.01)  # a write takes a while; traffic goes on meanwhile
            return self.inner.append(stream, records)

    counting = Counting(store)
    log = InferenceLog(counting, flush_interval_ms=60_000)
    for i in range(500):
        log.record("churn", f"r{i}", "primary", 1, [1.0, 2.0, 3.0], 1, 1.0, timestamp=T0 + i)
    stop = threading.Event()

    def traffic():
        i = 500
        while not stop.is_set():
            log.record("churn", f"r{i}", "primary", 1, [1.0, 2.0, 3.0], 1, 1.0, timestamp=T0 + i)
            i += 1
            time.sleep(0.0002)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        written = log.flush()
    finally:
        stop.set()
        thread.join()
    assert written >= 500 and counting.appends == 1
    log.close()
    assert store.end_offset(inference_stream("churn")) == log.stats["recorded"]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_named_numeric_outputs_log_the_same_columns_as_their_values(data):
    """The columnar path for named array outputs (the serving hot path) writes what the per-row path
    writes for the same outputs given as plain lists."""
    from matih_lite.serving.inference_log import requests_table

    kinds = st.sampled_from(["1d", "col", "vec", "wide"])
    shapes = data.draw(st.lists(kinds, min_size=1, max_size=3))
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    items, plain = [], []
    for r, n in enumerate(sizes):
        out = {}
        for k, kind in enumerate(shapes):
            width = {"1d": None, "col": 1, "vec": 3, "wide": 70}[kind]
            value = rng.integers(0, 5, size=n) if width is None else rng.normal(size=(n, width)).astype(np.float32)
            out[f"o{k}"] = value
        x = rng.normal(size=(n, 2))
        item = ("request", "d", T0 + r, f"r{r}", "v1", 1, x, out, 1.0, False, ("a", "b"))
        items.append(item)
        plain.append(item[:7] + ({k: v.tolist() for k, v in out.items()},) + item[8:])
    fast, rejected_fast = requests_table("d", items)
    slow, rejected_slow = requests_table("d", plain)
    assert not rejected_fast and not rejected_slow
    assert sorted(fast.column_names) == sorted(slow.column_names)
    for name in fast.column_names:
        a, b = fast.column(name).to_pylist(), slow.column(name).to_pylist()
        if name.startswith(("outputs.", "prediction")):
            np.testing.assert_allclose(np.array(a, dtype=float), np.array(b, dtype=float), rtol=1e-6, err_msg=name)
        else:
            assert a == b, name
