"""Micro-batching: concurrent small requests to one model become one model call.

``await batcher.submit(rows)`` queues the rows and schedules a flush on the caller's event loop.
The flush runs after every request the loop has already read in the same turn has queued its
own rows, so concurrent requests share a model call without anyone waiting on a timer (with
``max_wait_ms > 0`` a batch is held back up to that long for company, or until it is full).
The flush takes up to ``max_batch_size`` rows, concatenates them, calls ``predict_fn`` once and
hands each caller its own slice of the result. When the model raises, every request in that
batch, and only those, gets the exception. A request larger than ``max_batch_size`` runs as a
batch of its own.

Where the call runs depends on how long the model takes. A model whose calls take less than
``inline_max_ms`` on average (most ONNX and tree models on a few rows: tens of microseconds) is
called right on the event loop: handing such a call to a thread and back costs more than the
call. Slower models (and every model's first call, before it is timed) run on the batcher's own
worker thread, one call at a time, while the requests that arrive meanwhile queue up for the
next batch. ``inline_max_ms = 0`` sends every call to the worker thread.

Each event loop that submits gets its own queue (a service has one loop; an SDK or a test may
have others). ``predict_fn`` may therefore be called from several threads and must allow it.
``predict_fn`` takes a 2-D array (or a dict of equal-length arrays) and returns an array whose
first axis is the rows, or a dict of such arrays (several named outputs).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

_EWMA = 0.2
"""Weight of the newest call in the running mean of a call's duration."""


class _Pending:
    __slots__ = ("future", "n", "rows")

    def __init__(self, rows: Any, n: int, future: asyncio.Future) -> None:
        self.rows = rows
        self.n = n
        self.future = future


class _Lane:
    """One event loop's queue: what waits, whether a flush is scheduled, whether a worker call is in flight."""

    __slots__ = ("busy", "handle", "queue", "rows")

    def __init__(self) -> None:
        self.queue: deque[_Pending] = deque()
        self.rows = 0
        self.handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self.busy = False


class MicroBatcher:
    """Batches concurrent ``submit`` calls into calls of ``predict_fn``; see the module docstring."""

    def __init__(self, predict_fn: Callable[[Any], Any], max_batch_size: int = 64, max_wait_ms: float = 0.0,
                 *, inline_max_ms: float = 1.0, name: str = "model") -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        if inline_max_ms < 0:
            raise ValueError("inline_max_ms must not be negative")
        self.predict_fn = predict_fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.inline_max = inline_max_ms / 1000.0
        self.name = name
        self.calls = 0
        """Model calls made so far."""
        self.rows = 0
        """Rows predicted so far."""
        self.inline_calls = 0
        """Of those calls, the ones made on the event loop."""
        self.mean_call_s: float | None = None
        """Running mean of a call's duration in seconds (None until the first call returns)."""
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane] = weakref.WeakKeyDictionary()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    async def submit(self, rows: Any) -> Any:
        """The model's outputs for ``rows`` (a 2-D array, or a dict of arrays), predicted in a shared batch."""
        if self._closed:
            raise RuntimeError(f"the batcher of {self.name} is closed")
        n = _count(rows)
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes.setdefault(loop, _Lane())
        future = loop.create_future()
        lane.queue.append(_Pending(rows, n, future))
        lane.rows += n
        if not lane.busy:
            if lane.rows >= self.max_batch_size:
                if lane.handle is not None:
                    lane.handle.cancel()
                lane.handle = loop.call_soon(self._flush, loop, lane)
            elif lane.handle is None:
                lane.handle = (loop.call_later(self.max_wait, self._flush, loop, lane) if self.max_wait
                               else loop.call_soon(self._flush, loop, lane))
        return await future

    def close(self, timeout: float | None = 5.0) -> None:
        """Refuse new requests; what is queued still runs. The worker thread ends when its call returns."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=bool(timeout), cancel_futures=False)

    # ---- on the event loop ----------------------------------------------------------------------------------
    def _take(self, lane: _Lane) -> list[_Pending]:
        batch = [lane.queue.popleft()]
        size = batch[0].n
        while lane.queue and size + lane.queue[0].n <= self.max_batch_size:
            item = lane.queue.popleft()
            batch.append(item)
            size += item.n
        lane.rows -= size
        return batch

    def _flush(self, loop: asyncio.AbstractEventLoop, lane: _Lane) -> None:
        lane.handle = None
        while lane.queue and not lane.busy:
            live = [p for p in self._take(lane) if not p.future.done()]
            if not live:
                continue
            try:
                joined = _concat([p.rows for p in live])
            except (ValueError, TypeError):
                # Requests that do not stack (different widths or kinds) each run alone, so one
                # malformed request fails only itself.
                for p in live:
                    self._call_inline([p], p.rows)
                continue
            rows = sum(p.n for p in live)
            if self.mean_call_s is not None and self.mean_call_s < self.inline_max and rows <= self.max_batch_size:
                self._call_inline(live, joined)
            else:
                self._call_on_worker(loop, lane, live, joined)
        if lane.queue and not lane.busy and lane.handle is None:
            lane.handle = loop.call_soon(self._flush, loop, lane)

    def _call_inline(self, live: list[_Pending], joined: Any) -> None:
        self.inline_calls += 1
        outputs, exc = self._call(joined)
        _settle(live, outputs, exc)

    def _call_on_worker(self, loop: asyncio.AbstractEventLoop, lane: _Lane, live: list[_Pending],
                        joined: Any) -> None:
        executor = self._executor
        if executor is None:
            if self._closed:
                _settle(live, None, RuntimeError(f"the batcher of {self.name} is closed"))
                return
            executor = self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batcher-{self.name}")
        lane.busy = True

        def done(future: asyncio.Future) -> None:
            lane.busy = False
            if future.cancelled():
                _settle(live, None, RuntimeError(f"the batcher of {self.name} stopped"))
            else:
                outputs, exc = future.result()
                _settle(live, outputs, exc)
            if lane.queue and lane.handle is None:
                lane.handle = loop.call_soon(self._flush, loop, lane)

        try:
            future = loop.run_in_executor(executor, self._call, joined)
        except RuntimeError as exc:  # the executor was shut down meanwhile
            lane.busy = False
            _settle(live, None, exc)
            return
        future.add_done_callback(done)

    def _call(self, joined: Any) -> tuple[Any, BaseException | None]:
        """One model call (on the loop or the worker): the outputs split per caller's rows, or the exception."""
        start = time.perf_counter()
        try:
            outputs = self.predict_fn(joined)
        except BaseException as exc:  # the model's failure belongs to exactly this batch
            return None, exc
        finally:
            took = time.perf_counter() - start
            mean = self.mean_call_s
            self.mean_call_s = took if mean is None else mean + _EWMA * (took - mean)
            self.calls += 1
        self.rows += _count_rows(joined)
        return outputs, None


def _settle(live: list[_Pending], outputs: Any, exc: BaseException | None) -> None:
    if exc is None:
        try:
            parts = _split(outputs, [p.n for p in live])
        except ValueError as bad:
            exc = bad
    if exc is not None:
        for p in live:
            if not p.future.done():
                p.future.set_exception(exc)
        return
    for p, part in zip(live, parts):
        if not p.future.done():
            p.future.set_result(part)


def _count(rows: Any) -> int:
    if isinstance(rows, Mapping):
        lengths = {len(np.asarray(v)) for v in rows.values()}
        if len(lengths) != 1:
            raise ValueError("every input of a request must have the same number of rows")
        return lengths.pop()
    if isinstance(rows, np.ndarray):
        if rows.ndim == 0:
            raise ValueError("a request needs at least one row")
        return rows.shape[0]
    arr = np.asarray(rows)
    if arr.ndim == 0:
        raise ValueError("a request needs at least one row")
    return arr.shape[0]


def _count_rows(joined: Any) -> int:
    try:
        return _count(joined)
    except ValueError:
        return 0


def _concat(items: list[Any]) -> Any:
    if len(items) == 1:
        return items[0]
    if isinstance(items[0], Mapping):
        keys = items[0].keys()
        if any(i.keys() != keys for i in items):
            raise ValueError("requests name different inputs")
        return {k: np.concatenate([np.asarray(i[k]) for i in items]) for k in keys}
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
