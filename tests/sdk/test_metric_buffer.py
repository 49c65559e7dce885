"""The metric buffer on its own: batching, order, retries, and what it does with errors."""

from __future__ import annotations

import threading
import time

import pytest

from matih_lite.contracts import Metric
from matih_lite.errors import Conflict, StoreError
from matih_lite.tracking.client import MetricBuffer


class Sink:
    """A ``send`` that records batches and fails as told."""

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.batches: list[tuple[str, list[Metric]]] = []
        self.failures = list(failures or [])
        self.lock = threading.Lock()

    def __call__(self, run_id, points):
        with self.lock:
            if self.failures:
                raise self.failures.pop(0)
            self.batches.append((run_id, list(points)))

    def points(self, run_id=None):
        return [p for r, ps in self.batches for p in ps if run_id is None or r == run_id]


def point(i: int, key: str = "loss") -> Metric:
    return Metric(key, float(i), 1_700_000_000_000 + i, i)


def test_points_are_sent_in_order_in_batches_of_at_most_1000():
    sink = Sink()
    buffer = MetricBuffer(sink, interval=60)
    for i in range(2500):
        buffer.add("a", point(i))
    buffer.flush()
    assert [p.step for p in sink.points()] == list(range(2500))
    assert max(len(b) for _, b in sink.batches) <= 1000
    assert len(buffer) == 0
    buffer.close()


def test_the_background_thread_sends_without_a_flush():
    sink = Sink()
    buffer = MetricBuffer(sink, interval=0.05)
    buffer.add("a", point(1))
    deadline = time.monotonic() + 5
    while not sink.points() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [p.step for p in sink.points()] == [1]
    buffer.close()


def test_a_full_batch_wakes_the_sender_early():
    sink = Sink()
    buffer = MetricBuffer(sink, interval=60, batch_size=10)
    for i in range(10):
        buffer.add("a", point(i))
    deadline = time.monotonic() + 5
    while len(sink.points()) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(sink.points()) == 10
    buffer.close()


def test_runs_keep_their_own_order():
    sink = Sink()
    buffer = MetricBuffer(sink, interval=60)
    for i in range(50):
        buffer.add("a" if i % 2 else "b", point(i))
    buffer.flush()
    assert [p.step for p in sink.points("a")] == list(range(1, 50, 2))
    assert [p.step for p in sink.points("b")] == list(range(0, 50, 2))


def test_an_unavailable_store_is_retried():
    sink = Sink([StoreError("busy"), StoreError("busy")])
    buffer = MetricBuffer(sink, interval=60, retry_delays=(0.01, 0.01, 0.01))
    buffer.add("a", point(1))
    buffer.flush()
    assert [p.step for p in sink.points()] == [1]


def test_points_are_kept_while_the_store_stays_down_and_sent_when_it_is_back():
    sink = Sink([StoreError("down")] * 4)
    buffer = MetricBuffer(sink, interval=60, retry_delays=(0.01, 0.01, 0.01))
    for i in range(3):
        buffer.add("a", point(i))
    with pytest.raises(StoreError, match="down"):
        buffer.flush()
    assert len(buffer) == 3
    buffer.add("a", point(3))
    buffer.flush()  # the store is back
    assert [p.step for p in sink.points()] == [0, 1, 2, 3]


def test_points_that_can_never_be_stored_are_dropped_and_reported_once():
    sink = Sink([Conflict("run 'a' is deleted")])
    buffer = MetricBuffer(sink, interval=60)
    buffer.add("a", point(1))
    buffer.add("b", point(2))
    with pytest.raises(Conflict, match="1 metric points of run a could not be stored"):
        buffer.flush()
    assert [p.step for p in sink.points("b")] == [2]  # other runs are not held up
    buffer.flush()
    assert len(buffer) == 0


def test_back_pressure_when_far_behind():
    sink = Sink()
    buffer = MetricBuffer(sink, interval=60, max_pending=100)
    for i in range(250):
        buffer.add("a", point(i))
    assert len(buffer) < 100  # the caller sent them itself
    buffer.close()
    assert len(sink.points()) == 250


def test_close_sends_what_is_left_and_stops_the_thread():
    sink = Sink()
    buffer = MetricBuffer(sink, interval=60)
    buffer.add("a", point(1))
    thread = buffer._thread
    buffer.close()
    assert not thread.is_alive()
    assert [p.step for p in sink.points()] == [1]


class CountingEvent(threading.Event):
    """An Event that counts its ``set`` calls (each one hands the GIL to the sender thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


def test_the_sender_is_woken_once_a_batch_waits_not_for_every_point():
    sink = Sink()
    slow = lambda run_id, points: (time.sleep(0.02), sink(run_id, points))  # noqa: E731 - behind, on purpose
    buffer = MetricBuffer(slow, interval=60, batch_size=100)
    buffer._wake = wake = CountingEvent()
    for i in range(20_000):
        buffer.add("a", point(i))
    buffer.close()
    assert [p.step for p in sink.points()] == list(range(20_000))
    assert wake.sets <= 20_000 // 100 + 2, f"{wake.sets} wake-ups for 200 batches"


def test_points_added_from_many_threads_are_all_sent_once():
    sink = Sink()
    buffer = MetricBuffer(sink, interval=0.01, batch_size=50)
    threads = [threading.Thread(target=lambda t=t: [buffer.add(f"r{t}", point(i)) for i in range(5000)])
               for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    buffer.close()
    for t in range(4):
        assert [p.step for p in sink.points(f"r{t}")] == list(range(5000))

