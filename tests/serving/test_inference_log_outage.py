"""The inference log when the events store fails: requests are never held up, the batches are kept and
written in order once the store is back, what overflows the bound is dropped and counted, and the
counts reach Prometheus."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from matih_lite.builtin.duckdb_events import DuckDBEventStore
from matih_lite.errors import InvalidInput, StoreError
from matih_lite.serving.inference_log import InferenceLog, InferenceLogMetrics, inference_stream, label_stream

T0 = 1_700_000_000_000


class Outage:
    """An events store that fails every append while ``down`` is set (a cluster out of reach), and may
    take ``delay`` seconds to do so (a client waiting for its timeout)."""

    def __init__(self, inner, delay: float = 0.0) -> None:
        self.inner = inner
        self.down = threading.Event()
        self.delay = delay
        self.attempts = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def append(self, stream, records):
        self.attempts += 1
        if self.down.is_set():
            time.sleep(self.delay)
            raise StoreError("Kafka at 127.0.0.1:9 is unreachable; nothing was written")
        return self.inner.append(stream, records)


@pytest.fixture
def store(tmp_path):
    s = DuckDBEventStore(tmp_path / "events.duckdb")
    yield s
    s.close()


def record(log, i: int, deployment: str = "churn") -> None:
    log.record(deployment, f"r{i}", "primary", 1, np.array([[float(i), 1.0]]), np.array([i % 2]), 1.0,
               timestamp=T0 + i)


def wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_an_outage_holds_the_batches_and_writes_them_in_order_when_the_store_is_back(store):
    outage = Outage(store)
    outage.down.set()
    with InferenceLog(outage, flush_interval_ms=20, max_retry_s=0.1) as log:
        for i in range(30):
            record(log, i)
            if i % 10 == 9:
                time.sleep(0.05)  # several batches fail, one after another
        log.record_label("churn", "r3", 1, timestamp=T0 + 100)
        wait_until(lambda: log.stats["store_errors"] >= 3)
        assert log.store_down and log.queued == 31 and log.stats["written"] == 0
        assert store.end_offset(inference_stream("churn")) == 0
        outage.down.clear()
        wait_until(lambda: log.queued == 0)
        assert not log.store_down
    got = [r.data["request_id"] for r in store.read_from(inference_stream("churn"), 0, 100)]
    assert got == [f"r{i}" for i in range(30)]
    assert store.read_from(label_stream("churn"), 0)[0].data["request_id"] == "r3"
    assert log.stats["written"] == 31 and log.stats["dropped"] == 0 and log.stats["failed"] == 0


def test_while_the_store_is_down_requests_beyond_the_bound_are_dropped_and_counted(store):
    outage = Outage(store)
    outage.down.set()
    log = InferenceLog(outage, flush_interval_ms=20, max_pending=50, max_retry_s=0.05)
    try:
        for i in range(50):
            record(log, i)
        wait_until(lambda: log.stats["store_errors"] >= 1)  # taken from the queue, held for the retry
        for i in range(50, 80):
            record(log, i)
        assert log.stats["dropped"] == 30 and log.queued == 50
        outage.down.clear()
        wait_until(lambda: log.queued == 0)
        record(log, 80)  # room again
    finally:
        log.close()
    ids = [r.data["request_id"] for r in store.read_from(inference_stream("churn"), 0, 100)]
    assert ids == [f"r{i}" for i in range(50)] + ["r80"]
    assert log.stats["written"] == 51 and log.stats["dropped"] == 30


def test_record_returns_at_once_while_the_store_hangs(store):
    outage = Outage(store, delay=1.0)  # every append waits a second, then fails
    outage.down.set()
    log = InferenceLog(outage, flush_interval_ms=10, max_retry_s=0.05)
    try:
        worst = 0.0
        deadline = time.monotonic() + 2.5
        i = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            record(log, i)
            worst = max(worst, time.perf_counter() - started)
            i += 1
            time.sleep(0.001)
        assert outage.attempts >= 2, "the writer never tried"
        assert worst < 0.05, f"record() took {worst * 1000:.1f} ms while the store hung"
    finally:
        outage.down.clear()
        log.close()
    assert store.end_offset(inference_stream("churn")) == i


def test_closing_while_the_store_is_down_counts_what_is_lost(store):
    outage = Outage(store)
    outage.down.set()
    log = InferenceLog(outage, flush_interval_ms=60_000)
    for i in range(4):
        record(log, i)
    log.close()
    assert log.stats["failed"] == 4 and log.stats["written"] == 0 and log.queued == 0


def test_a_batch_the_store_refuses_as_invalid_is_not_retried(store):
    class Refusing(Outage):
        def append(self, stream, records):
            self.attempts += 1
            raise InvalidInput("column 'x' of the table is list<double>")

    refusing = Refusing(store)
    with InferenceLog(refusing, flush_interval_ms=10) as log:
        record(log, 0)
        log.flush()
        log.flush()
    assert refusing.attempts == 1 and log.stats["failed"] == 1 and log.queued == 0


def test_the_counts_are_prometheus_metrics(store):
    from prometheus_client import CollectorRegistry, generate_latest

    outage = Outage(store)
    log = InferenceLog(outage, flush_interval_ms=60_000, max_pending=3)

    class Manager:
        _log = log

    class PM:
        def get_plugin(self, name):
            return Manager() if name == "matih_lite.serving.traffic" else None

    class FakeHost:
        pm = PM()

    registry = CollectorRegistry()
    registry.register(InferenceLogMetrics(FakeHost()))
    try:
        for i in range(2):
            record(log, i)
        log.flush()
        outage.down.set()
        for i in range(2, 7):
            record(log, i)
        log.flush()
        text = generate_latest(registry).decode()
    finally:
        outage.down.clear()
        log.close()
    assert 'matih_inference_log_requests_total{outcome="dropped"} 2.0' in text
    assert 'matih_inference_log_records_total{outcome="written"} 2.0' in text
    assert "matih_inference_log_store_errors_total 1.0" in text
    assert "matih_inference_log_queued 3.0" in text
    assert "matih_inference_log_store_down 1.0" in text


class Summer:
    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64).sum(axis=1)


@pytest.mark.slow
def test_the_service_reports_its_inference_log_in_metrics(hermetic):
    from litestar.testing import TestClient
    from serving_helpers import register_model

    from matih_lite.host import Host
    from matih_lite.service import create_app

    host = Host.open()
    register_model(host, "summer", Summer(), example=np.array([[1.0, 2.0]]))
    host.close()
    with TestClient(create_app(Host.open())) as client:
        assert "matih_inference_log" not in client.get("/metrics").text  # no log before a model loads
        client.post("/api/v1/deployments", json={"name": "s", "model": "summer", "version": 1})
        for i in range(3):
            assert client.post("/api/v1/deployments/s/predict", json={"inputs": [[float(i), 1.0]]}).status_code == 200
        wait_until(lambda: 'matih_inference_log_records_total{outcome="written"} 3.0' in client.get("/metrics").text)
        text = client.get("/metrics").text
    assert 'matih_inference_log_requests_total{outcome="recorded"} 3.0' in text
    assert "matih_inference_log_store_down 0.0" in text and "matih_http_requests_total" in text
