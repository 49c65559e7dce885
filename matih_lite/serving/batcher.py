"""Micro-batching: concurrent small requests to one model become one model call.

``await batcher.submit(rows)`` queues the rows; a single worker thread per batcher takes
whatever is queued (up to ``max_batch_size`` rows, waiting at most ``max_wait_ms`` after the
first request for more to arrive), concatenates them, calls ``predict_fn`` once off the event
loop, and hands each caller its own slice of the result. When the model raises, every request
in that batch, and only those, gets the exception. A request larger than ``max_batch_size`` runs
as a batch of its own.

``predict_fn`` takes a 2-D array (or a dict of equal-length arrays) and returns an array whose
first axis is the rows, or a dict of such arrays (several named outputs).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


class _Pending:
    __slots__ = ("future", "loop", "n", "rows")

    def __init__(self, rows: Any, n: int, future: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
        self.rows = rows
        self.n = n
        self.future = future
        self.loop = loop


class MicroBatcher:
    """Batches concurrent ``submit`` calls into calls of ``predict_fn``; see the module docstring."""

    def __init__(self, predict_fn: Callable[[Any], Any], max_batch_size: int = 64, max_wait_ms: float = 2.0,
                 *, name: str = "model") -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self.predict_fn = predict_fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.name = name
        self.calls = 0
        """Model calls made so far."""
        self.rows = 0
        """Rows predicted so far."""
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    async def submit(self, rows: Any) -> Any:
        """The model's outputs for ``rows`` (a 2-D array, or a dict of arrays), predicted in a shared batch."""
        n = _count(rows)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the batcher of {self.name} is closed")
            self._queue.append(_Pending(rows, n, future, loop))
            self._cond.notify()
        return await future

    def close(self, timeout: float | None = 5.0) -> None:
        """Finish what is queued, then stop the worker thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ---- the worker thread ----------------------------------------------------------------------------------
    def _take(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            batch = [self._queue.popleft()]
            size = batch[0].n
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch_size:
                if self._queue:
                    if size + self._queue[0].n > self.max_batch_size:
                        break
                    item = self._queue.popleft()
                    batch.append(item)
                    size += item.n
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [p for p in batch if not p.future.cancelled()]
            if not live:
                continue
            try:
                joined = _concat([p.rows for p in live])
            except (ValueError, TypeError):
                # Requests that do not stack (different widths or kinds) each run alone, so one
                # malformed request fails only itself.
                for p in live:
                    self._run_batch([p], p.rows)
                continue
            self._run_batch(live, joined)

    def _run_batch(self, live: list[_Pending], joined: Any) -> None:
        try:
            outputs = self.predict_fn(joined)
            self.calls += 1
            self.rows += sum(p.n for p in live)
            parts = _split(outputs, [p.n for p in live])
        except BaseException as exc:  # the model's failure belongs to exactly this batch
            for p in live:
                _resolve(p, None, exc)
            return
        for p, part in zip(live, parts):
            _resolve(p, part, None)


def _resolve(p: _Pending, value: Any, exc: BaseException | None) -> None:
    def settle() -> None:
        if p.future.done():
            return
        if exc is not None:
            p.future.set_exception(exc)
        else:
            p.future.set_result(value)

    try:
        p.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop has closed; nobody is waiting
        pass


def _count(rows: Any) -> int:
    if isinstance(rows, Mapping):
        lengths = {len(np.asarray(v)) for v in rows.values()}
        if len(lengths) != 1:
            raise ValueError("every input of a request must have the same number of rows")
        return lengths.pop()
    arr = np.asarray(rows)
    if arr.ndim == 0:
        raise ValueError("a request needs at least one row")
    return arr.shape[0]


def _concat(items: list[Any]) -> Any:
    if len(items) == 1:
        return items[0]
    if isinstance(items[0], Mapping):
        return {k: np.concatenate([np.asarray(i[k]) for i in items]) for k in items[0]}
    return np.concatenate([np.asarray(i) for i in items])


def _split(outputs: Any, sizes: list[int]) -> list[Any]:
    if len(sizes) == 1:
        return [outputs]
    total = sum(sizes)
    bounds = np.cumsum(sizes)[:-1]
    if isinstance(outputs, Mapping):
        pieces = {}
        for k, v in outputs.items():
            arr = np.asarray(v)
            if arr.shape[:1] != (total,):
                raise ValueError(f"the model returned {arr.shape[0] if arr.ndim else 'no'} rows of output {k!r} "
                                 f"for {total} input rows")
            pieces[k] = np.split(arr, bounds)
        return [{k: pieces[k][i] for k in pieces} for i in range(len(sizes))]
    arr = np.asarray(outputs)
    if arr.shape[:1] != (total,):
        raise ValueError(f"the model returned {arr.shape[0] if arr.ndim else 'no'} rows for {total} input rows")
    return np.split(arr, bounds)
