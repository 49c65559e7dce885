"""Streaming inference over the duckdb events backend: in order, at least once, no duplicates on restart."""

from __future__ import annotations

import time

import numpy as np
import pytest

from matih_lite.builtin.duckdb_events import DuckDBEventStore
from matih_lite.errors import InvalidInput, StoreError
from matih_lite.serving.streaming import StreamingInference

T0 = 1_700_000_000_000


@pytest.fixture
def store(tmp_path):
    s = DuckDBEventStore(tmp_path / "events.duckdb")
    yield s
    s.close()


def doubled(requests):
    """What a deployment's predict does, for a batch: one result per request."""
    return [np.asarray(r["inputs"], dtype=float) * 2 for r in requests]


def send(store, first: int, n: int, stream: str = "requests") -> None:
    store.append(stream, [{"timestamp": T0 + i, "request_id": f"r{i}", "inputs": [i, i + 0.5]}
                          for i in range(first, first + n)])


def predictions(store, sink: str = "predictions"):
    return [r.data for r in store.read_from(sink, 0, 100_000)]


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_n_requests_in_n_predictions_out_in_order(store):
    send(store, 0, 120)
    with StreamingInference(store, doubled, "requests", "predictions", "scorer", batch_size=50,
                            poll_interval_ms=10) as consumer:
        wait_for(lambda: store.end_offset("predictions") == 120)
        send(store, 120, 5)  # arrives while it runs
        wait_for(lambda: store.end_offset("predictions") == 125)
    out = predictions(store)
    assert [p["request_id"] for p in out] == [f"r{i}" for i in range(125)]
    assert [p["source_offset"] for p in out] == list(range(125))
    assert out[7]["predictions"] == [14.0, 15.0]
    assert store.committed("scorer", "requests") == 125
    assert consumer.stats == {"consumed": 125, "predicted": 125, "failed": 0, "duplicates": 0}
    assert consumer.lag == 0


def test_restart_resumes_from_the_committed_offset(store):
    send(store, 0, 30)
    first = StreamingInference(store, doubled, "requests", "predictions", "scorer", batch_size=8)
    assert first.drain() == 30
    send(store, 30, 20)
    second = StreamingInference(store, doubled, "requests", "predictions", "scorer", batch_size=8)
    assert second.lag == 20
    assert second.drain() == 20
    assert [p["request_id"] for p in predictions(store)] == [f"r{i}" for i in range(50)]


def test_crash_between_writing_and_committing_makes_no_duplicates(store):
    class CommitFails:
        """The store, except that commits fail: the process dies after writing its predictions."""

        def __getattr__(self, name):
            return getattr(store, name)

        def commit(self, group, stream, offset):
            raise StoreError("power cut")

    send(store, 0, 20)
    crashed = StreamingInference(CommitFails(), doubled, "requests", "predictions", "scorer", batch_size=10)
    with pytest.raises(StoreError):
        crashed.run_once()
    assert store.end_offset("predictions") == 10 and store.committed("scorer", "requests") is None
    again = StreamingInference(store, doubled, "requests", "predictions", "scorer", batch_size=10)
    assert again.drain() == 10  # starts after the 10 already answered
    assert [p["request_id"] for p in predictions(store)] == [f"r{i}" for i in range(20)]
    assert store.committed("scorer", "requests") == 20


def test_a_replayed_request_id_is_answered_once(store):
    send(store, 0, 3)
    send(store, 1, 1)  # the producer retried r1
    consumer = StreamingInference(store, doubled, "requests", "predictions", "scorer")
    consumer.drain()
    assert [p["request_id"] for p in predictions(store)] == ["r0", "r1", "r2"]
    assert consumer.stats["duplicates"] == 1


def test_groups_consume_independently(store):
    send(store, 0, 5)
    StreamingInference(store, doubled, "requests", "out-a", "a").drain()
    StreamingInference(store, doubled, "requests", "out-b", "b").drain()
    assert len(predictions(store, "out-a")) == len(predictions(store, "out-b")) == 5


def test_a_failing_request_is_answered_with_an_error_and_the_rest_go_on(store):
    def picky(requests):
        if any(r["request_id"] == "r2" for r in requests):
            raise InvalidInput("inputs: expected 2 columns")
        return [{"predictions": r["inputs"][0], "version": 3} for r in requests]

    send(store, 0, 4)
    consumer = StreamingInference(store, picky, "requests", "predictions", "scorer")
    consumer.drain()
    out = predictions(store)
    assert [p.get("predictions") for p in out] == [0, 1, None, 3]
    assert out[2]["error"] == "inputs: expected 2 columns"
    assert out[3]["version"] == 3
    assert consumer.stats["failed"] == 1 and consumer.stats["predicted"] == 3


def test_store_outage_is_retried_by_the_thread(store):
    class Flaky:
        def __init__(self):
            self.failures = 2

        def __getattr__(self, name):
            return getattr(store, name)

        def append(self, stream, records):
            if self.failures:
                self.failures -= 1
                raise StoreError("disk full")
            return store.append(stream, records)

    send(store, 0, 5)
    with StreamingInference(Flaky(), doubled, "requests", "predictions", "scorer", poll_interval_ms=10) as consumer:
        wait_for(lambda: store.committed("scorer", "requests") == 5)
    assert len(predictions(store)) == 5
    assert consumer.last_error == "disk full"


def test_sink_must_differ_from_source(store):
    with pytest.raises(InvalidInput):
        StreamingInference(store, doubled, "same", "same", "g")
