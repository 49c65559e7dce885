"""Micro-batching: concurrent single rows become few model calls, with the same answers."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from matih_lite.serving.batcher import MicroBatcher


class CountingModel:
    def __init__(self, fail_when=None) -> None:
        self.calls = 0
        self.sizes: list[int] = []
        self.threads: set[str] = set()
        self.fail_when = fail_when

    def __call__(self, rows):
        self.calls += 1
        self.sizes.append(len(rows))
        self.threads.add(threading.current_thread().name)
        if self.fail_when is not None and self.fail_when(rows):
            raise ValueError("model exploded")
        return rows.sum(axis=1) * 2.0


def test_concurrent_submits_match_one_by_one_with_far_fewer_calls():
    rows = np.random.default_rng(0).normal(size=(200, 20))
    model = CountingModel()

    async def main():
        batcher = MicroBatcher(model, max_batch_size=64, max_wait_ms=5.0)
        try:
            return await asyncio.gather(*(batcher.submit(rows[i:i + 1]) for i in range(200)))
        finally:
            batcher.close()

    results = asyncio.run(main())
    np.testing.assert_allclose(np.concatenate(results), rows.sum(axis=1) * 2.0)
    assert sum(model.sizes) == 200
    assert model.calls <= 20, model.sizes
    assert max(model.sizes) <= 64


class SlowModel(CountingModel):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, rows):
        time.sleep(self.seconds)
        return super().__call__(rows)


def test_a_slow_model_runs_on_the_worker_thread_and_the_loop_stays_free():
    model = SlowModel(0.02)
    ticks = []

    async def ticker():
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.002)

    async def main():
        batcher = MicroBatcher(model, max_batch_size=64, inline_max_ms=1.0)
        tick = asyncio.create_task(ticker())
        try:
            first = await asyncio.gather(*(batcher.submit(np.ones((1, 3))) for _ in range(3)))
            more = await asyncio.gather(*(batcher.submit(np.ones((1, 3))) for _ in range(10)))
            return first + more, batcher
        finally:
            tick.cancel()
            batcher.close()

    results, batcher = asyncio.run(main())
    assert [float(r[0]) for r in results] == [6.0] * 13
    assert model.threads and all(name.startswith("batcher-model") for name in model.threads)
    assert batcher.inline_calls == 0 and batcher.mean_call_s >= 0.02
    gaps = np.diff(ticks)
    assert gaps.max() < 0.015, gaps.max()  # the loop kept running while the model slept


def test_a_fast_model_is_called_on_the_loop_once_timed():
    model = CountingModel()

    async def main():
        batcher = MicroBatcher(model, max_batch_size=64, inline_max_ms=5.0)
        try:
            await batcher.submit(np.ones((1, 3)))  # the first call is timed on the worker
            for _ in range(5):
                await batcher.submit(np.ones((1, 3)))
            return batcher
        finally:
            batcher.close()

    batcher = asyncio.run(main())
    assert batcher.calls == 6 and batcher.inline_calls == 5
    assert threading.current_thread().name in model.threads  # the loop's own thread


def test_inline_zero_always_uses_the_worker():
    model = CountingModel()

    async def main():
        batcher = MicroBatcher(model, inline_max_ms=0)
        try:
            for _ in range(4):
                await batcher.submit(np.ones((1, 3)))
            return batcher
        finally:
            batcher.close()

    batcher = asyncio.run(main())
    assert batcher.inline_calls == 0 and batcher.calls == 4
    assert threading.current_thread().name not in model.threads


def test_max_wait_holds_a_lone_request_back_and_a_full_batch_goes_at_once():
    model = CountingModel()

    async def main():
        batcher = MicroBatcher(model, max_batch_size=4, max_wait_ms=50.0, inline_max_ms=0)
        try:
            start = time.perf_counter()
            await batcher.submit(np.ones((1, 3)))
            lone = time.perf_counter() - start
            start = time.perf_counter()
            await asyncio.gather(*(batcher.submit(np.ones((1, 3))) for _ in range(4)))
            full = time.perf_counter() - start
            return lone, full
        finally:
            batcher.close()

    lone, full = asyncio.run(main())
    assert lone >= 0.045
    assert full < 0.045
    assert model.sizes == [1, 4]


def test_two_event_loops_share_one_batcher():
    model = CountingModel()
    batcher = MicroBatcher(model, max_batch_size=8)
    results = {}

    def run(tag):
        async def main():
            return await asyncio.gather(*(batcher.submit(np.full((1, 2), float(i))) for i in range(20)))

        results[tag] = asyncio.run(main())

    threads = [threading.Thread(target=run, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    batcher.close()
    for tag in ("a", "b"):
        assert [float(r[0]) for r in results[tag]] == [4.0 * i for i in range(20)]


def test_an_exception_reaches_every_caller_of_its_batch_and_only_them():
    model = CountingModel(fail_when=lambda rows: np.any(rows[:, 0] < 0))

    async def main():
        batcher = MicroBatcher(model, max_batch_size=4, max_wait_ms=20.0)
        try:
            bad = [batcher.submit(np.array([[-1.0, 0.0]])) for _ in range(4)]
            first = await asyncio.gather(*bad, return_exceptions=True)
            good = await asyncio.gather(*(batcher.submit(np.array([[1.0, 1.0]])) for _ in range(4)))
            return first, good
        finally:
            batcher.close()

    first, good = asyncio.run(main())
    assert all(isinstance(r, ValueError) and "exploded" in str(r) for r in first)
    assert [float(g[0]) for g in good] == [4.0] * 4


def test_max_batch_size_one_never_deadlocks():
    model = CountingModel()

    async def main():
        batcher = MicroBatcher(model, max_batch_size=1, max_wait_ms=1.0)
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(batcher.submit(np.full((1, 3), float(i))) for i in range(50))), timeout=10)
        finally:
            batcher.close()

    results = asyncio.run(main())
    assert [float(r[0]) for r in results] == [6.0 * i for i in range(50)]
    assert model.calls == 50


def test_dict_outputs_and_large_requests_are_split_back():
    def model(rows):
        return {"label": (rows[:, 0] > 0).astype(int), "probabilities": np.column_stack([rows[:, 0], -rows[:, 0]])}

    async def main():
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=5.0)
        try:
            return await asyncio.gather(batcher.submit(np.ones((20, 2))), batcher.submit(-np.ones((1, 2))))
        finally:
            batcher.close()

    big, small = asyncio.run(main())
    assert big["label"].shape == (20,) and big["probabilities"].shape == (20, 2)
    assert small["label"].tolist() == [0] and small["probabilities"].tolist() == [[-1.0, 1.0]]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(lambda r: r, max_batch_size=0)
    with pytest.raises(ValueError):
        MicroBatcher(lambda r: r, max_wait_ms=-1)
    with pytest.raises(ValueError):
        MicroBatcher(lambda r: r, inline_max_ms=-1)


def test_a_closed_batcher_refuses_new_requests():
    async def main():
        batcher = MicroBatcher(lambda r: r)
        batcher.close()
        await batcher.submit(np.ones((1, 1)))

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(main())
