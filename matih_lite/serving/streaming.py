"""Streaming inference: requests read from one events stream, predictions written to another.

A :class:`StreamingInference` consumer runs in a thread of its own. Each round it reads up to
``batch_size`` request records from ``source`` after its consumer group's committed offset, calls
``predict`` once for the batch, appends one prediction record per request to ``sink`` (in the
requests' order, in one append), and only then commits the next offset: **at least once**.
Replays are made harmless by request id: a request whose id the consumer has already answered
is skipped, and on start the tail of ``sink`` tells which requests a previous run answered after
its last commit (a crash between the append and the commit), so a restart resumes without
duplicates.

Records
-------

A request (``source``)::

    {"timestamp": ms, "request_id": "r-1", "inputs": ..., ...}   # request_id defaults to "<source>:<offset>"

A prediction (``sink``)::

    {"timestamp": ms, "request_id": "r-1", "source": "requests", "source_offset": 7, "consumer": GROUP,
     "predictions": ...}                                            # or the keys of a dict result
    {"timestamp": ms, "request_id": "r-2", ..., "error": "why"}   # a request the model refused

``predict(requests: list[dict]) -> list`` gets the request records and returns one result per
request: the model's outputs (arrays become lists), a dict merged into the prediction record
(``{"predictions": ..., "version": 3, "variant": "v3"}``), or an exception for a request that
failed. :mod:`matih_lite.serving.streams` supplies one that applies a deployment's routing (the
service's consumers, ``matih-lite predict stream``); the same code runs over the cluster's Kafka
backend, the events slot being the only thing it uses.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from matih_lite.contracts.streams import STREAM_NAME
from matih_lite.errors import InvalidInput

log = logging.getLogger("matih_lite.serving.streaming")

RESERVED = ("timestamp", "request_id", "source", "source_offset", "consumer")


def _now_ms() -> int:
    return int(time.time() * 1000)


class StreamingInference:
    """Consumes ``source``, writes predictions to ``sink``, commits per consumer ``group`` (see the module docstring)."""

    def __init__(self, events: Any, predict: Callable[[list[dict[str, Any]]], Sequence[Any]], source: str, sink: str,
                 group: str, *, batch_size: int = 500, poll_interval_ms: int = 100, remember: int = 100_000,
                 recovery_records: int = 10_000) -> None:
        for what, name in (("source", source), ("sink", sink)):
            if not isinstance(name, str) or not STREAM_NAME.match(name):
                raise InvalidInput(f"invalid {what} stream {name!r}: use letters, digits, '.', '_' or '-'")
        if source == sink:
            raise InvalidInput("the sink must be another stream than the source")
        self.events = events
        self.predict = predict
        self.source, self.sink, self.group = source, sink, group
        self.batch_size = max(int(batch_size), 1)
        self.poll_interval = max(poll_interval_ms, 1) / 1000
        self.remember = remember
        self.recovery_records = recovery_records
        self.stats = {"consumed": 0, "predicted": 0, "failed": 0, "duplicates": 0}
        """Requests read, predictions written, requests answered with an error, requests skipped as replays."""
        self._answered: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._position: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> StreamingInference:
        """Consume in a background thread until :meth:`stop` (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"matih-stream-{self.group}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the round in progress and stop; what was not committed is read again by the next run."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> StreamingInference:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                consumed = self.run_once()
                failures = 0
            except Exception as exc:  # the store is down, say: back off and read the same requests again
                failures += 1
                self.last_error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                log.warning("streaming %s -> %s (%s): %s", self.source, self.sink, self.group, self.last_error)
                self._stop.wait(min(self.poll_interval * 2 ** failures, 30.0))
                continue
            if consumed == 0:
                self._stop.wait(self.poll_interval)

    # ---- one round --------------------------------------------------------------------------
    @property
    def lag(self) -> int:
        """Requests in ``source`` not yet committed by this consumer."""
        position = self._position if self._position is not None else (self.events.committed(self.group, self.source)
                                                                        or 0)
        return max(self.events.end_offset(self.source) - position, 0)

    def run_once(self) -> int:
        """Consume one batch (in the caller's thread); returns the requests read, 0 when none were waiting."""
        with self._lock:
            if self._position is None:
                self._position = self._recover()
            requests = self.events.read_from(self.source, self._position, self.batch_size)
            if not requests:
                return 0
            fresh = []
            batch_ids: set[str] = set()
            for record in requests:
                request_id = _request_id(record.data, self.source, record.offset)
                if request_id in self._answered or request_id in batch_ids:
                    self.stats["duplicates"] += 1
                else:
                    batch_ids.add(request_id)
                    fresh.append((record, request_id))
            predictions = self._predict(fresh) if fresh else []
            if predictions:
                self.events.append(self.sink, predictions)
            for _, request_id in fresh:
                self._remember(request_id)
            next_offset = requests[-1].offset + 1
            self.events.commit(self.group, self.source, next_offset)
            self._position = next_offset
            self.stats["consumed"] += len(requests)
            self.stats["predicted"] += sum(1 for p in predictions if "error" not in p)
            self.stats["failed"] += sum(1 for p in predictions if "error" in p)
            return len(requests)

    def drain(self) -> int:
        """Consume until nothing is waiting (in the caller's thread); returns the requests read."""
        total = 0
        while consumed := self.run_once():
            total += consumed
        return total

    def _predict(self, fresh: list[tuple[Any, str]]) -> list[dict[str, Any]]:
        inputs = [record.data for record, _ in fresh]
        try:
            results = list(self.predict(inputs))
            if len(results) != len(inputs):
                raise RuntimeError(f"predict returned {len(results)} results for {len(inputs)} requests")
        except Exception:
            # One bad request must not fail its neighbours: answer each alone.
            results = []
            for data in inputs:
                try:
                    (result,) = self.predict([data])
                except Exception as exc:
                    result = exc
                results.append(result)
        now = _now_ms()
        out = []
        for (record, request_id), result in zip(fresh, results):
            prediction: dict[str, Any] = {}
            if isinstance(result, BaseException):
                prediction["error"] = (getattr(result, "message", None) or f"{type(result).__name__}: {result}")[:2000]
            elif isinstance(result, Mapping):
                prediction.update({str(k): v for k, v in result.items() if k not in RESERVED})
            else:
                prediction["predictions"] = result
            out.append({"timestamp": now, "request_id": request_id, "source": self.source,
                        "source_offset": record.offset, "consumer": self.group, **prediction})
        return out

    def _remember(self, request_id: str) -> None:
        self._answered[request_id] = None
        if len(self._answered) > self.remember:
            self._answered.popitem(last=False)

    def _recover(self) -> int:
        """Where to resume: after the committed offset, or after the last request this group answered in
        ``sink`` if a run stopped between writing predictions and committing. Remembers those answers."""
        position = self.events.committed(self.group, self.source) or 0
        end = self.events.end_offset(self.sink)
        offset = max(end - self.recovery_records, 0)
        while offset < end:
            records = self.events.read_from(self.sink, offset, 1000)
            if not records:
                break
            for record in records:
                data = record.data
                if data.get("consumer") == self.group and data.get("source") == self.source:
                    request_id = data.get("request_id")
                    if isinstance(request_id, str):
                        self._remember(request_id)
                    source_offset = data.get("source_offset")
                    if isinstance(source_offset, (int, float)) and source_offset + 1 > position:
                        position = int(source_offset) + 1
            offset = records[-1].offset + 1
        return position


def _request_id(data: Mapping[str, Any], source: str, offset: int) -> str:
    request_id = data.get("request_id")
    return str(request_id) if request_id not in (None, "") else f"{source}:{offset}"
