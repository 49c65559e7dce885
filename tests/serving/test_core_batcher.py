"""Micro-batching: concurrent single rows become few model calls, with the same answers."""

from __future__ import annotations

import asyncio
import threading

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
    assert model.threads == {"batcher-model"}  # one worker thread, off the event loop


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
