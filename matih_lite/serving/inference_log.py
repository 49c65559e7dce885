"""The inference log: every request a deployment answers, and the labels posted for it later.

:meth:`InferenceLog.record` is called on the request path: it puts one tuple on a queue (O(1),
no I/O, no lock) and returns. Every ``flush_interval_ms`` (or as soon as ``max_batch`` requests
wait) the queued requests become one Arrow table per deployment (on the service's event loop,
a slice at a time, when the log is attached to it; else on the writer thread) and the writer
thread appends them to the events slot, one transaction per deployment. Nothing the log does
can fail or hold up a request. When the store fails an append (a Kafka cluster out of reach, a
full disk: a :class:`~matih_lite.errors.StoreError`) the log keeps that batch and what follows,
retries with a backoff of up to ``max_retry_s``, and writes them in order once the store takes
them again; a request arriving while ``max_pending`` requests and labels are held is dropped
and counted. Every count is in :attr:`InferenceLog.stats` and, for the service, in ``/metrics``
(:class:`InferenceLogMetrics`).

Schema
------

Stream ``inference.<deployment>``, one record per input row (a request of 5 rows is 5 records)::

    timestamp   int     ms when the request was answered
    request_id  str     the request's id (labels join on it)
    row         int     the row's index in the request (0 for a one-row request)
    deployment  str
    variant     str     the route that answered ("primary", "candidate", an A/B arm)
    version     str     the model version that answered
    latency_ms  float
    shadow      bool    a shadow's answer (never returned to the caller)
    feature_lookup_ms float  the online feature lookup that enriched the request (only where one did)
    prediction  scalar  the row's primary output: the model's one output, or its first named one
    features    object  {feature: value}: the row's scalar inputs (vectors and blobs are left out)
    outputs     object  the row's other named outputs; a vector output becomes NAME_0, NAME_1, ...

The writer appends each batch as an Arrow table (numbers as float64); a record reads back as
its non-null fields.

Stream ``labels.<deployment>``: ``{timestamp, request_id, row, label}``; the latest label of a
(request, row) wins. A label's timestamp is when it was observed, never before its request.

Stream ``failures.<deployment>``: ``{timestamp, request_id, variant, version, latency_ms}`` for each
request a variant failed (the model raised, or its version could not be loaded): with the requests
answered, what a canary's and an A/B split's error rates are judged on across every replica
(:func:`variant_outcomes`).

Layout, and why windows are fast: one stream per deployment, so all its records share one
shape and the events backend keeps each scalar field as a typed column beside the JSON record
(``features.age`` DOUBLE, ``variant`` VARCHAR...; see
:func:`matih_lite.contracts.streams.record_columns`). :meth:`InferenceLog.window` asks the
store for the window's columns as Arrow (:meth:`EventStore.scan`; with DuckDB a zone-map
filtered scan of one table), joins the labels with Arrow, and never parses JSON: a window of
100,000 requests with 20 features comes back in about a tenth of a second.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from matih_lite.errors import InvalidInput, StoreError

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.serving.inference_log")

INFERENCE_STREAM = "inference.{deployment}"
LABEL_STREAM = "labels.{deployment}"
MAX_VECTOR = 64
"""A per-row output vector longer than this is left out of the log."""

META_COLUMNS = ("timestamp", "request_id", "row", "variant", "version", "latency_ms", "shadow", "prediction",
                "label", "label_timestamp")
"""The columns every :class:`InferenceWindow` table starts with, feature and output columns after."""

_DEPLOYMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")
_REQUEST, _LABEL, _FAILURE = 0, 1, 2
_FOREVER = 2**62


def inference_stream(deployment: str) -> str:
    return f"inference.{deployment}"


def label_stream(deployment: str) -> str:
    return f"labels.{deployment}"


def failure_stream(deployment: str) -> str:
    return f"failures.{deployment}"


def _now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

class InferenceLog:
    """Buffers requests and labels and writes them to an events store in batches, off the caller's thread.

    ``InferenceLog(host.backend("events"))``; call :meth:`close` when the service stops (pending
    requests are written then). The store is not closed: it belongs to the host.

    Two threads of work share a batch: turning queued requests into an Arrow table (Python,
    holding the GIL) and writing the table (the store's own code; DuckDB lets go of the GIL).
    By default the writer thread does both. A service calls :meth:`attach` with its event
    loop: the tables are then built on the loop, ``slice_size`` requests at a time between the
    requests it serves, and the writer thread only writes. On a machine whose cores are busy
    (a load generator beside the service, other processes) that is the difference between a
    p99 of half a millisecond and of tens: a background thread that holds the GIL is
    preempted by the OS while holding it, and the loop waits for it, each second, for as long.
    """

    def __init__(self, events: Any, flush_interval_ms: int = 200, max_batch: int = 5000, *,
                 max_pending: int = 200_000, slice_size: int = 256, max_retry_s: float = 5.0) -> None:
        self.events = events
        self.flush_interval = max(flush_interval_ms, 1) / 1000
        self.max_batch = max(int(max_batch), 1)
        self.max_pending = max_pending
        self.slice_size = max(int(slice_size), 1)
        self.max_retry_s = max_retry_s
        self._pending: collections.deque[tuple] = collections.deque()
        self._prepared: collections.deque[list[tuple]] = collections.deque()
        self._unsent: collections.deque[tuple] = collections.deque()
        """Prepared parts the store has not taken yet, oldest first (kept across a store outage)."""
        self._held = 0
        """Requests and labels in ``_prepared`` and ``_unsent``: with ``_pending``, what ``max_pending`` bounds."""
        self._held_lock = threading.Lock()
        self._retry_at = 0.0
        self._outage = 0
        """Consecutive failed appends (0 while the store takes them)."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._prepare_lock = threading.Lock()
        self._known: set[str] = set()
        self._closed = False
        self._loop: Any = None
        self._timer: Any = None
        self._due = 0
        self.stats = {"recorded": 0, "written": 0, "dropped": 0, "failed": 0, "invalid": 0, "store_errors": 0}
        """Requests recorded, records written, requests dropped (the queue full, say while the events
        store is down, or the log closed), records lost (the store refused them as invalid, or it was
        still down when the log closed), requests whose inputs or outputs could not be read, and
        appends the store failed (their records kept and retried)."""
        self._thread = threading.Thread(target=self._run, name="matih-inference-log", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Requests and labels recorded and not written yet (waiting, being prepared, or held for a retry)."""
        return len(self._pending) + self._held

    @property
    def store_down(self) -> bool:
        """Whether the last append failed (the log holds its records and retries)."""
        return self._outage > 0

    # ---- request path ----------------------------------------------------------------------
    def record(self, deployment: str, request_id: str, variant: str, version: Any, inputs: Any, outputs: Any,
               latency_ms: float, timestamp: int | None = None, shadow: bool = False, *,
               feature_names: Sequence[str] | None = None, feature_lookup_ms: float | None = None) -> None:
        """Log one answered request; returns at once. ``inputs`` are one row or several (a dict of
        feature -> value or -> column, a list of row dicts, a 1-D or 2-D array, a list of rows);
        ``feature_names`` names the columns of array or list rows (default ``f0``, ``f1``...);
        ``feature_lookup_ms`` is the online feature lookup that enriched the request, if one did.
        ``outputs`` are the model's: one value or array (first axis = rows) or a dict of named
        outputs. The arrays are kept, not copied: do not change them afterwards.
        Raises InvalidInput for a deployment name a stream cannot carry."""
        if deployment not in self._known:
            self._check_deployment(deployment)
        if self._closed or len(self._pending) + self._held >= self.max_pending:
            self.stats["dropped"] += 1
            return
        self._pending.append((_REQUEST, deployment, timestamp or _now_ms(), request_id, variant, version, inputs,
                              outputs, latency_ms, shadow, feature_names, feature_lookup_ms))
        if len(self._pending) == self.max_batch:  # once per batch: waking takes a lock
            self._hurry()

    def record_label(self, deployment: str, request_id: str, label: Any, timestamp: int | None = None, *,
                     row: int | None = None) -> None:
        """Log the true outcome of an earlier request: one value (for ``row``, default 0) or one per row
        (a list or array). Written with the next batch. Raises InvalidInput for a bad deployment name."""
        if deployment not in self._known:
            self._check_deployment(deployment)
        if self._closed or len(self._pending) + self._held >= self.max_pending:
            self.stats["dropped"] += 1
            return
        self._pending.append((_LABEL, deployment, timestamp or _now_ms(), request_id, label, row))
        if len(self._pending) == self.max_batch:
            self._hurry()

    def record_failure(self, deployment: str, request_id: str, variant: str, version: Any, latency_ms: float,
                       timestamp: int | None = None) -> None:
        """Log a request the variant failed (it is not in the requests' stream); returns at once. Raises
        InvalidInput for a bad deployment name."""
        if deployment not in self._known:
            self._check_deployment(deployment)
        if self._closed or len(self._pending) + self._held >= self.max_pending:
            self.stats["dropped"] += 1
            return
        self._pending.append((_FAILURE, deployment, timestamp or _now_ms(), request_id, variant, version, latency_ms))
        if len(self._pending) == self.max_batch:
            self._hurry()

    def _check_deployment(self, deployment: Any) -> None:
        if not isinstance(deployment, str) or not _DEPLOYMENT.match(deployment):
            raise InvalidInput(f"deployment name {deployment!r} cannot name an inference log stream: use letters, "
                               "digits, '.', '_' or '-'")
        if len(self._known) < 10_000:
            self._known.add(deployment)

    def _hurry(self) -> None:
        loop = self._loop
        if loop is None:
            self._wake.set()
            return
        try:
            loop.call_soon_threadsafe(self._cycle)
        except RuntimeError:  # the loop closed: the writer thread takes over
            self._wake.set()

    def _hold(self, items: int) -> None:
        with self._held_lock:
            self._held += items

    # ---- preparing on an event loop --------------------------------------------------------
    def attach(self, loop: Any) -> None:
        """Build the tables on ``loop`` from now on (see the class docstring); callable from any thread."""
        if self._closed:
            return
        try:
            loop.call_soon_threadsafe(self._schedule)
        except RuntimeError:  # a closed loop: keep preparing on the writer thread
            return
        self._loop = loop

    def _schedule(self) -> None:
        if self._timer is None and not self._closed and self._loop is not None:
            self._timer = self._loop.call_later(self.flush_interval, self._cycle)

    def _cycle(self) -> None:
        """On the loop: start preparing what is queued now, a slice per turn of the loop."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._due == 0:
            self._due = len(self._pending)
            self._slice()

    def _slice(self) -> None:
        loop = self._loop
        if loop is None or self._closed:
            self._due = 0
            return
        if not self._prepare_lock.acquire(blocking=False):  # a flush() in another thread is draining
            loop.call_later(0.005, self._slice)
            return
        try:
            items = [self._pending.popleft() for _ in range(min(self._due, self.slice_size, len(self._pending)))]
            self._due = 0 if not items else self._due - len(items)
            if items:
                self._hold(len(items))
                self._prepared.append(self._prepare(items))
        finally:
            self._prepare_lock.release()
        if self._due > 0:
            loop.call_soon(self._slice)
            return
        self._wake.set()
        self._schedule()

    # ---- writer ----------------------------------------------------------------------------
    def _run(self) -> None:
        from matih_lite.threads import lower_priority

        lower_priority()
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            loop = self._loop
            if loop is not None and loop.is_closed():
                self._loop = None  # the loop is gone: this thread prepares again
            try:
                self._write_prepared()
                if self._loop is None:
                    self._drain()
            except Exception:  # the writer must outlive any one bad batch
                log.exception("inference log writer failed")

    def flush(self) -> int:
        """Write everything recorded so far (in the caller's thread), retrying what an outage held back;
        returns the records written. What the store still refuses stays queued for the writer."""
        with self._prepare_lock:
            return self._write_prepared(force=True) + self._drain(force=True)

    def _drain(self, force: bool = False) -> int:
        # Only what was pending when the drain began: under steady traffic the queue refills while a
        # batch is written, and chasing it would turn one write a second into a stream of tiny
        # transactions (each a commit with its fsync).
        with self._write_lock:
            due = len(self._pending)
            while due > 0 and self._pending:
                items = []
                while self._pending and len(items) < min(self.max_batch, due):
                    items.append(self._pending.popleft())
                due -= len(items)
                self._hold(len(items))
                self._unsent.extend(self._prepare(items))
            return self._write_unsent(force)

    def _write_prepared(self, force: bool = False) -> int:
        with self._write_lock:
            while self._prepared:
                self._unsent.extend(self._prepared.popleft())
            return self._write_unsent(force)

    def _write_unsent(self, force: bool = False) -> int:
        """Append the unsent parts, oldest first, the parts of one stream joined into one append (one
        transaction); stops at the first the store fails, keeping it and the rest for a retry (at once
        when ``force``, else after a backoff growing to ``max_retry_s``). Holds the write lock."""
        if not self._unsent or (not force and time.monotonic() < self._retry_at):
            return 0
        parts = list(self._unsent)
        self._unsent.clear()
        written = 0
        groups = _by_stream(parts)
        for k, (stream, group) in enumerate(groups):
            for j, (_, records, n, items) in enumerate(group):
                try:
                    self.events.append(stream, records)
                except StoreError as exc:
                    left = [*group[j:], *(p for _, g in groups[k + 1:] for p in g)]
                    self._unsent.extendleft(reversed(left))
                    self._store_failed(exc, sum(p[2] for p in left))
                    self.stats["written"] += written
                    return written
                except Exception as exc:  # refused for good (invalid): retrying would not help
                    self.stats["failed"] += n
                    log.error("inference log: %d records for %s lost: %s", n, stream, getattr(exc, "message", exc))
                else:
                    written += n
                    if self._outage:
                        log.warning("inference log: the events store takes records again after %d failed "
                                    "append(s)", self._outage)
                        self._outage = 0
                self._hold(-items)
        self.stats["written"] += written
        return written

    def _store_failed(self, exc: StoreError, held: int) -> None:
        self.stats["store_errors"] += 1
        self._outage += 1
        delay = min(self.flush_interval * 2 ** min(self._outage - 1, 10), self.max_retry_s)
        self._retry_at = time.monotonic() + delay
        if self._outage == 1:
            log.warning("inference log: the events store failed (%s); %d records held and retried, requests beyond "
                        "%d queued are dropped", exc.message, held, self.max_pending)
        else:
            log.debug("inference log: append failed again (%s)", exc.message)

    def _prepare(self, items: list[tuple]) -> list[tuple]:
        """Queued items as what the store takes: ``(stream, records, record count, item count)`` per
        deployment and kind."""
        requests: dict[str, list[tuple]] = {}
        labels: dict[str, list[dict[str, Any]]] = {}
        label_items: dict[str, int] = {}
        failures: dict[str, list[dict[str, Any]]] = {}
        unusable = 0
        for item in items:
            if item[0] == _REQUEST:
                requests.setdefault(item[1], []).append(item)
            elif item[0] == _FAILURE:
                _, deployment, timestamp, request_id, variant, version, latency_ms = item
                failures.setdefault(deployment, []).append(
                    {"timestamp": int(timestamp), "request_id": str(request_id), "variant": str(variant),
                     "version": str(version), "latency_ms": _float(latency_ms) or 0.0})
            else:
                try:
                    labels.setdefault(item[1], []).extend(label_records(*item[2:]))
                    label_items[item[1]] = label_items.get(item[1], 0) + 1
                except Exception as exc:
                    self._invalid(item, exc)
                    unusable += 1
        parts = []
        for deployment, batch in requests.items():
            self.stats["recorded"] += len(batch)
            table, rejected = requests_table(deployment, batch)
            for item, exc in rejected:
                self._invalid(item, exc)
            if table is not None:
                parts.append((inference_stream(deployment), table, table.num_rows, len(batch)))
            else:
                unusable += len(batch)
        for deployment, records in labels.items():
            parts.append((label_stream(deployment), records, len(records), label_items.get(deployment, 0)))
        for deployment, records in failures.items():
            parts.append((failure_stream(deployment), records, len(records), len(records)))
        if unusable:
            self._hold(-unusable)  # nothing of these will be written
        return parts

    def _invalid(self, item: tuple, exc: Exception) -> None:
        self.stats["invalid"] += 1
        if self.stats["invalid"] <= 10 or self.stats["invalid"] % 1000 == 0:
            log.warning("inference log: request %r of %r not logged: %s", item[3], item[1], exc)

    def close(self) -> None:
        """Stop the writer thread and write what is pending (idempotent); what the store still refuses
        then is lost, and counted as failed."""
        if self._closed:
            return
        self._closed = True
        loop, self._loop = self._loop, None
        timer, self._timer = self._timer, None
        if timer is not None and loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(timer.cancel)
            except RuntimeError:
                pass
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()
        with self._write_lock:
            lost = sum(p[2] for p in self._unsent)
            if lost:
                self.stats["failed"] += lost
                log.error("inference log: %d records lost: the events store was still failing when the log closed",
                          lost)
            self._unsent.clear()
            with self._held_lock:
                self._held = 0

    def __enter__(self) -> InferenceLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading ---------------------------------------------------------------------------
    def window(self, deployment: str, start: int, end: int, *, shadow: bool = False) -> InferenceWindow:
        """The requests answered in ``start <= timestamp < end`` (ms), with their labels where known.

        Primary answers only unless ``shadow`` (then shadows' answers too). Pending records are
        written first, so a window always includes what was recorded before the call."""
        self._check_deployment(deployment)
        self.flush()
        return read_window(self.events, deployment, start, end, shadow=shadow)


TRAFFIC_MANAGER = "matih_lite.serving.traffic"
"""The plugin name a host's traffic manager (which owns its inference log) is registered under."""


class InferenceLogMetrics:
    """A Prometheus collector of a host's inference log (register it in the service's registry)::

        matih_inference_log_requests_total{outcome="recorded|dropped|invalid"}
        matih_inference_log_records_total{outcome="written|failed"}
        matih_inference_log_store_errors_total     appends the events store failed (records kept, retried)
        matih_inference_log_queued                 requests and labels not written yet
        matih_inference_log_store_down             1 while the last append failed

    Nothing is reported before the first model loads (the log is made then)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def current(self) -> InferenceLog | None:
        manager = self.host.pm.get_plugin(TRAFFIC_MANAGER)
        # The manager's log as it is: asking its ``inference_log`` would make one (and the events backend).
        return getattr(manager, "_log", None) if manager is not None else None

    def describe(self) -> list[Any]:
        return []  # metrics are made per scrape; nothing to check at registration

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        found = self.current()
        if found is None:
            return
        stats = dict(found.stats)
        requests = CounterMetricFamily("matih_inference_log_requests", "Requests the inference log was given, by "
                                       "outcome (dropped: the queue was full or the log closed)", labels=["outcome"])
        for outcome in ("recorded", "dropped", "invalid"):
            requests.add_metric([outcome], stats.get(outcome, 0))
        yield requests
        records = CounterMetricFamily("matih_inference_log_records", "Records the inference log wrote to the events "
                                      "slot, or lost", labels=["outcome"])
        for outcome in ("written", "failed"):
            records.add_metric([outcome], stats.get(outcome, 0))
        yield records
        yield CounterMetricFamily("matih_inference_log_store_errors", "Appends the events slot failed (their records "
                                  "are held and retried)", value=stats.get("store_errors", 0))
        yield GaugeMetricFamily("matih_inference_log_queued", "Requests and labels recorded and not written yet",
                                value=found.queued)
        yield GaugeMetricFamily("matih_inference_log_store_down", "1 while the events slot fails the inference "
                                "log's appends", value=1 if found.store_down else 0)


def _by_stream(parts: list[tuple]) -> list[tuple[str, list[tuple]]]:
    """Parts grouped by stream in order of first appearance, the tables (or record lists) of a stream
    joined into one part where their columns allow."""
    by_stream: dict[str, list[tuple]] = {}
    for part in parts:
        by_stream.setdefault(part[0], []).append(part)
    out = []
    for stream, group in by_stream.items():
        if len(group) > 1 and all(not isinstance(p[1], list) for p in group):
            import pyarrow as pa

            try:
                group = [(stream, pa.concat_tables([p[1] for p in group], promote_options="permissive"),
                          sum(p[2] for p in group), sum(p[3] for p in group))]
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass  # columns whose types differ between slices: one append each
        elif len(group) > 1 and all(isinstance(p[1], list) for p in group):
            group = [(stream, [r for p in group for r in p[1]], sum(p[2] for p in group), sum(p[3] for p in group))]
        out.append((stream, group))
    return out


# ---------------------------------------------------------------------------------------------
# Requests -> records
# ---------------------------------------------------------------------------------------------

def requests_table(deployment: str, items: Sequence[tuple]) -> tuple[Any, list[tuple[tuple, Exception]]]:
    """The records of queued requests as one Arrow table (one row per input row; see the module
    docstring), and the requests whose inputs or outputs could not be read, with why.

    Columnar on purpose: a batch of 2-D numeric rows (what the payload parser gives) becomes
    feature columns with one ``numpy.concatenate``, so the writer holds the GIL for a few
    microseconds per request instead of building a dict per row.
    """
    import pyarrow as pa

    ts: list[int] = []
    request_ids: list[str] = []
    row: list[int] = []
    variants: list[str] = []
    versions: list[str] = []
    latency: list[float | None] = []
    lookups: list[float | None] = []
    shadows: list[bool] = []
    predictions: list[Any] = []  # pieces: numpy arrays (named numeric outputs) or lists of values
    blocks: list[tuple[int, tuple[str, ...], np.ndarray]] = []
    row_dicts: list[tuple[int, list[dict[str, Any]]]] = []
    outputs: list[tuple[int, list[dict[str, Any]]]] = []
    out_blocks: list[tuple[int, tuple[tuple[str, int], ...], list[np.ndarray]]] = []
    rejected: list[tuple[tuple, Exception]] = []
    total = 0
    for item in items:
        _, _, timestamp, request_id, variant, version, inputs, result, latency_ms, shadow, names = item[:11]
        lookup = item[11] if len(item) > 11 else None
        try:
            block = _feature_block(inputs, names)
            rows = None if block is not None else feature_rows(inputs, names)
            n = len(block[1]) if block is not None else len(rows)
            out_block = _output_block(result, n)
            if out_block is None:
                preds, named = output_rows(result, n)
            else:
                preds, named = out_block[0], None
            latency_value = float(latency_ms) if latency_ms is not None else None
        except Exception as exc:
            rejected.append((item, exc))
            continue
        if n == 0:
            continue
        if block is not None:
            blocks.append((total, *block))
        else:
            row_dicts.append((total, rows))
        if named is not None:
            outputs.append((total, named))
        elif out_block is not None:
            out_blocks.append((total, out_block[1], out_block[2]))
        if n == 1:
            ts.append(timestamp)
            request_ids.append(str(request_id))
            variants.append(str(variant))
            versions.append(str(version))
            latency.append(latency_value)
            lookups.append(lookup)
            shadows.append(bool(shadow))
            row.append(0)
        else:
            ts.extend([timestamp] * n)
            request_ids.extend([str(request_id)] * n)
            variants.extend([str(variant)] * n)
            versions.extend([str(version)] * n)
            latency.extend([latency_value] * n)
            lookups.extend([lookup] * n)
            shadows.extend([bool(shadow)] * n)
            row.extend(range(n))
        predictions.append(preds)
        total += n
    if total == 0:
        return None, rejected
    columns: dict[str, Any] = {
        "timestamp": pa.array(ts, pa.int64()), "request_id": pa.array(request_ids, pa.string()),
        "row": pa.array(row, pa.int64()), "deployment": pa.array([deployment] * total, pa.string()),
        "variant": pa.array(variants, pa.string()), "version": pa.array(versions, pa.string()),
        "latency_ms": pa.array(latency, pa.float64()), "shadow": pa.array(shadows, pa.bool_()),
        "prediction": _prediction_column(predictions, total),
    }
    if any(v is not None for v in lookups):  # only deployments enriched from the feature store have the column
        columns["feature_lookup_ms"] = pa.array(lookups, pa.float64())
    names = {b[1] for b in blocks}
    if len(names) == 1 and not row_dicts:  # the hot path: every request sent the same columns as rows
        (keys,) = names
        matrix = np.concatenate([b[2] for b in blocks]) if len(blocks) > 1 else blocks[0][2]
        by_column = np.ascontiguousarray(matrix.T)
        for j, key in enumerate(keys):
            columns[f"features.{key}"] = pa.array(by_column[j])
    else:
        pieces: list[tuple[int, list[dict[str, Any]]]] = [
            (start, [dict(zip(keys, values)) for values in block.tolist()]) for start, keys, block in blocks]
        columns.update(_dict_columns("features.", pieces + row_dicts, total))
    signatures = {b[1] for b in out_blocks}
    if len(signatures) == 1 and not outputs:
        (signature,) = signatures  # the hot path: every request answered with the same named numeric outputs
        joined = [np.concatenate([b[2][k] for b in out_blocks]) if len(out_blocks) > 1 else out_blocks[0][2][k]
                  for k in range(len(signature))]
        for key, values in _output_columns(signature, joined).items():
            columns[f"outputs.{key}"] = pa.array(values)
    else:
        for start, signature, arrays in out_blocks:
            named = _output_columns(signature, arrays)
            if named:
                outputs.append((start, [dict(zip(named, (_scalar(v) for v in row)))
                                        for row in zip(*(v.tolist() for v in named.values()))]))
        columns.update(_dict_columns("outputs.", outputs, total))
    return pa.table(columns), rejected


def _output_block(outputs: Any, n: int) -> tuple[Any, tuple[tuple[str, int], ...], list[np.ndarray]] | None:
    """Named numeric outputs of ``n`` rows, kept as arrays: (prediction, (name, width) per output, arrays),
    or None for any other shape (:func:`output_rows` reads those). Width 0 is a 1-D output.
    :func:`_output_columns` turns blocks into the columns :func:`output_rows` would give, without a dict per row.
    """
    if not isinstance(outputs, Mapping) or not outputs or n == 0:
        return None
    signature: list[tuple[str, int]] = []
    arrays: list[np.ndarray] = []
    for value in outputs.values():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf" or value.shape[:1] != (n,) \
                or value.ndim > 2:
            return None
        arrays.append(value)
    signature = [(str(name), 0 if value.ndim == 1 else value.shape[1]) for name, value in zip(outputs, arrays)]
    first, width = arrays[0], signature[0][1]
    prediction = first if width == 0 else first[:, 0] if width == 1 else [None] * n
    return prediction, tuple(signature), arrays


def _output_columns(signature: tuple[tuple[str, int], ...], arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The ``outputs.*`` columns of joined output arrays: the first output is the prediction (not repeated
    when 1-D), a one-wide output other than the first is ``name``, a vector (or the first output when
    2-D) is ``name_0``, ``name_1``... up to :data:`MAX_VECTOR` wide; wider ones are not kept."""
    columns: dict[str, np.ndarray] = {}
    for i, ((name, width), value) in enumerate(zip(signature, arrays)):
        if width == 0:
            if i > 0:
                columns[name] = value
        elif width == 1 and i > 0:
            columns[name] = value[:, 0]
        elif width <= MAX_VECTOR:
            for j in range(width):
                columns[f"{name}_{j}"] = value[:, j]
    return columns


def _prediction_column(pieces: list[Any], total: int) -> Any:
    """The prediction column from per-request pieces: numeric arrays join without Python values."""
    import pyarrow as pa

    if pieces and all(isinstance(p, np.ndarray) and p.dtype.kind in "iuf" for p in pieces):
        joined = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        return pa.array(joined.astype(np.int64 if joined.dtype.kind in "iu" and joined.dtype != np.uint64 else
                                      np.float64, copy=False))
    values: list[Any] = []
    for p in pieces:
        values.extend(p.tolist() if isinstance(p, np.ndarray) else p)
    return _scalar_column(values)


def _feature_block(inputs: Any, names: Sequence[str] | None) -> tuple[tuple[str, ...], np.ndarray] | None:
    """(column names, 2-D numeric array) when ``inputs`` are numeric rows; None for other shapes."""
    if not isinstance(inputs, np.ndarray) or inputs.dtype.kind not in "biuf" or inputs.ndim not in (1, 2):
        return None
    matrix = inputs.reshape(1, -1) if inputs.ndim == 1 else inputs
    width = matrix.shape[1]
    if names is not None and len(names) == width:
        keys = names if isinstance(names, tuple) else tuple(names)
    else:
        keys = _default_names(width)
    return keys, matrix


_DEFAULT_NAMES: dict[int, tuple[str, ...]] = {}


def _default_names(width: int) -> tuple[str, ...]:
    found = _DEFAULT_NAMES.get(width)
    if found is None:
        found = _DEFAULT_NAMES[width] = tuple(f"f{j}" for j in range(width))
    return found


def _scalar_column(values: list[Any]) -> Any:
    """An Arrow column of scalars; when kinds mix, the first value's kind wins and the others are null."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        first = next((v for v in values if v is not None), None)
        if isinstance(first, bool):
            return pa.array([v if isinstance(v, bool) else None for v in values], pa.bool_())
        if isinstance(first, str):
            return pa.array([v if isinstance(v, str) else None for v in values], pa.string())
        return pa.array([_float(v) for v in values], pa.float64())


def _float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def _dict_columns(prefix: str, pieces: list[tuple[int, list[dict[str, Any]]]], total: int) -> dict[str, Any]:
    """Columns ``prefix + name`` from per-row dicts placed at their row offsets (nulls elsewhere)."""
    cells: dict[str, list[Any]] = {}
    for start, rows in pieces:
        for k, values in enumerate(rows):
            for name, value in values.items():
                column = cells.get(name)
                if column is None:
                    column = cells[name] = [None] * total
                column[start + k] = value
    return {f"{prefix}{name}": _scalar_column(column) for name, column in cells.items()}


def label_records(timestamp: int, request_id: Any, label: Any, row: int | None) -> list[dict[str, Any]]:
    """The label records for one request: one per row when ``label`` is a list or an array."""
    value = _plain(label)
    if isinstance(value, list):
        return [{"timestamp": int(timestamp), "request_id": str(request_id), "row": i, "label": _scalar(v)}
                for i, v in enumerate(value)]
    return [{"timestamp": int(timestamp), "request_id": str(request_id), "row": int(row or 0),
             "label": _scalar(value)}]


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as Python lists and scalars; anything else as it is."""
    tolist = getattr(value, "tolist", None)
    return tolist() if tolist is not None and not isinstance(value, (list, dict)) else value


def _scalar(value: Any) -> Any:
    value = _plain(value)
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _feature_value(value: Any) -> Any:
    value = _plain(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple, dict, bytes)):
        return _OMIT  # vectors and blobs are not features the log keeps
    return str(value)


_OMIT = object()


def _columns_to_rows(columns: Mapping[str, Any]) -> list[dict[str, Any]]:
    names = [str(k) for k in columns]
    values = [_plain(v) for v in columns.values()]
    lengths = {len(v) for v in values if isinstance(v, list)}
    if not lengths:  # one row of scalars
        return [_clean_row(dict(zip(names, values)))]
    if len(lengths) > 1 or any(not isinstance(v, list) for v in values):
        raise InvalidInput("the input columns have different lengths")
    return [_clean_row(dict(zip(names, row))) for row in zip(*values)]


def _clean_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in row.items():
        value = _feature_value(value)
        if value is not _OMIT:
            out[name] = value
    return out


def feature_rows(inputs: Any, feature_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One ``{feature: value}`` dict per input row, from any input shape :meth:`InferenceLog.record` takes."""
    if hasattr(inputs, "to_pydict"):  # a pyarrow Table or RecordBatch
        return _columns_to_rows(inputs.to_pydict())
    if hasattr(inputs, "to_dict") and hasattr(inputs, "columns"):  # a pandas DataFrame
        return _columns_to_rows(inputs.to_dict("list"))
    if isinstance(inputs, Mapping):
        return _columns_to_rows(inputs)
    values = _plain(inputs)
    if not isinstance(values, (list, tuple)):
        return [_clean_row({(feature_names[0] if feature_names else "f0"): values})]
    if not values:
        return []
    first = values[0]
    if isinstance(first, Mapping):
        return [_clean_row({str(k): v for k, v in row.items()}) for row in values]
    if isinstance(first, (list, tuple)) or hasattr(first, "tolist") and not np.isscalar(first):
        rows = [_plain(r) for r in values]
    else:
        rows = [values]
    names = list(feature_names) if feature_names is not None else None
    out = []
    for row in rows:
        keys = names if names is not None and len(names) == len(row) else [f"f{j}" for j in range(len(row))]
        out.append(_clean_row(dict(zip(keys, row))))
    return out


def output_rows(outputs: Any, n: int) -> tuple[list[Any], list[dict[str, Any]] | None]:
    """Each row's prediction, and each row's other named outputs (None when there are none)."""
    if n == 0:
        return [], None
    if isinstance(outputs, np.ndarray) and outputs.dtype.kind in "biufU" and len(outputs) == n and (
            outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1)):
        return outputs.reshape(n).tolist(), None  # the common case: one value per row
    if isinstance(outputs, Mapping):
        names = list(outputs)
        if not names:
            return [None] * n, None
        per_name = {str(k): _split(v, n) for k, v in outputs.items()}
        if any(v is None for v in per_name.values()):
            return [None] * n, None
        primary = str(names[0])
        predictions = [_prediction(v) for v in per_name[primary]]
        named: list[dict[str, Any]] = [{} for _ in range(n)]
        for name, values in per_name.items():
            for i, value in enumerate(values):
                _put_output(named[i], name, value, skip_scalar=(name == primary))
        return predictions, named
    values = _split(outputs, n)
    if values is None:
        return [None] * n, None
    predictions: list[Any] = []
    named = []
    for value in values:
        if isinstance(value, list) and len(value) > 1:
            predictions.append(None)
            extra: dict[str, Any] = {}
            _put_output(extra, "output", value, skip_scalar=False)
            named.append(extra)
        else:
            predictions.append(_prediction(value))
            named.append({})
    return predictions, (named if any(named) else None)


def _split(value: Any, n: int) -> list[Any] | None:
    """``value`` split into ``n`` rows (first axis), or None when its rows do not match."""
    value = _plain(value)
    if isinstance(value, (list, tuple)):
        if len(value) == n:
            return list(value)
        return [list(value)] if n == 1 else None
    return [value] if n == 1 else None


def _prediction(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return _scalar(value) if not isinstance(value, list) else None


def _put_output(out: dict[str, Any], name: str, value: Any, *, skip_scalar: bool) -> None:
    if isinstance(value, list):
        if len(value) == 1 and not skip_scalar:
            out[name] = _scalar(value[0])
        elif len(value) <= MAX_VECTOR:
            for j, item in enumerate(value):
                if not isinstance(item, list):
                    out[f"{name}_{j}"] = _scalar(item)
    elif not skip_scalar:
        out[name] = _scalar(value)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InferenceWindow:
    """A window of the inference log as one Arrow table, with numpy views of its columns.

    ``table`` holds :data:`META_COLUMNS` (``label`` and ``label_timestamp`` null where no label
    was posted), then ``features.<name>`` and ``outputs.<name>`` columns, in time order.
    """

    deployment: str
    start: int
    end: int
    table: Any

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def feature_names(self) -> list[str]:
        return [c[len("features."):] for c in self.table.column_names if c.startswith("features.")]

    @property
    def output_names(self) -> list[str]:
        return [c[len("outputs."):] for c in self.table.column_names if c.startswith("outputs.")]

    def column(self, name: str) -> np.ndarray:
        """A column as numpy: floats with NaN for nulls, strings as an object array (None for nulls)."""
        return self.table.column(name).to_numpy(zero_copy_only=False)

    def features(self) -> dict[str, np.ndarray]:
        """Each feature's values, by feature name."""
        return {name: self.column(f"features.{name}") for name in self.feature_names}

    @property
    def prediction(self) -> np.ndarray:
        return self.column("prediction")

    @property
    def label(self) -> np.ndarray:
        return self.column("label")

    @property
    def labelled(self) -> np.ndarray:
        """True for the rows with a label."""
        return self.table.column("label").is_valid().to_numpy(zero_copy_only=False)

    @property
    def variant(self) -> np.ndarray:
        return self.column("variant")

    @property
    def version(self) -> np.ndarray:
        return self.column("version")

    @property
    def latency_ms(self) -> np.ndarray:
        return self.column("latency_ms")

    @property
    def timestamp(self) -> np.ndarray:
        return self.column("timestamp")


def read_window(events: Any, deployment: str, start: int, end: int, *, shadow: bool = False) -> InferenceWindow:
    """The inference-log window of a deployment straight from an events store (see :meth:`InferenceLog.window`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = events.scan(inference_stream(deployment), int(start), int(end))
    if not shadow and "shadow" in table.column_names:
        table = table.filter(pc.invert(pc.fill_null(table.column("shadow"), False)))
    n = table.num_rows

    def have(name: str, kind: Any) -> Any:
        if name in table.column_names:
            return table.column(name)
        return pa.nulls(n, kind)

    columns = {
        "timestamp": table.column("timestamp"),
        "request_id": have("request_id", pa.string()),
        "row": pc.cast(have("row", pa.float64()), pa.int64()),
        "variant": have("variant", pa.string()),
        "version": have("version", pa.string()),
        "latency_ms": have("latency_ms", pa.float64()),
        "shadow": have("shadow", pa.bool_()),
        "prediction": have("prediction", pa.float64()),
    }
    label, label_ts = _labels_for(events, deployment, int(start), columns["request_id"], columns["row"], n)
    columns["label"] = label
    columns["label_timestamp"] = label_ts
    if "feature_lookup_ms" in table.column_names:
        columns["feature_lookup_ms"] = table.column("feature_lookup_ms")
    for name in table.column_names:
        if name.startswith(("features.", "outputs.")):
            columns[name] = table.column(name)
    return InferenceWindow(deployment, int(start), int(end), pa.table(columns))


class Outcomes(msgspec.Struct, frozen=True):
    """What the variants of a deployment did over a window, every replica's requests together: one entry per
    request (a request of several rows counts once), primary answers and failures, in no particular order."""

    failed: np.ndarray
    """bool: the request failed (from ``failures.<deployment>``) rather than answered."""
    offset: np.ndarray
    """int64: the record's offset in its stream (unique together with ``failed``)."""
    timestamp: np.ndarray
    """int64 ms."""
    version: np.ndarray
    """int64: the model version that answered or failed (-1 where the record names none)."""
    latency_ms: np.ndarray
    """float64."""


def variant_outcomes(events: Any, deployment: str, start: int, end: int = _FOREVER) -> Outcomes:
    """The requests of ``deployment`` answered (shadows left out) or failed in ``start <= timestamp < end``,
    straight from the events store: what every replica of the service logged. Raises StoreError."""
    import pyarrow.compute as pc

    parts = []
    for failed, stream in ((False, inference_stream(deployment)), (True, failure_stream(deployment))):
        table = events.scan(stream, int(start), int(end), columns=["row", "version", "latency_ms", "shadow"])
        if table.num_rows and not failed:
            keep = pc.equal(pc.fill_null(pc.cast(table.column("row"), "int64"), 0), 0) \
                if "row" in table.column_names else None
            if "shadow" in table.column_names:
                primary = pc.invert(pc.fill_null(table.column("shadow"), False))
                keep = primary if keep is None else pc.and_(keep, primary)
            if keep is not None:
                table = table.filter(keep)
        n = table.num_rows
        names = table.column_names
        version = (pc.fill_null(pc.cast(table.column("version"), "float64"), -1).to_numpy(zero_copy_only=False)
                   if "version" in names else np.full(n, -1.0))
        latency = (pc.fill_null(pc.cast(table.column("latency_ms"), "float64"), 0.0).to_numpy(zero_copy_only=False)
                   if "latency_ms" in names else np.zeros(n))
        parts.append((np.full(n, failed), table.column("_offset").to_numpy(zero_copy_only=False).astype(np.int64),
                      table.column("timestamp").to_numpy(zero_copy_only=False).astype(np.int64),
                      version.astype(np.int64), latency.astype(np.float64)))
    return Outcomes(*(np.concatenate([p[i] for p in parts]) for i in range(5)))


def _labels_for(events: Any, deployment: str, start: int, request_ids: Any, rows: Any, n: int) -> tuple[Any, Any]:
    """The latest label of each (request, row) of the window, aligned with its rows (null where none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    labels = events.scan(label_stream(deployment), start, _FOREVER, columns=["request_id", "row", "label"])
    if n == 0 or labels.num_rows == 0 or "label" not in labels.column_names:
        return pa.nulls(n, pa.float64()), pa.nulls(n, pa.int64())
    # The scan is in time order: the last row of each (request, row) is its latest label.
    keyed = pa.table({"request_id": labels.column("request_id"),
                      "row": pc.cast(labels.column("row"), pa.int64()),
                      "_i": pa.array(np.arange(labels.num_rows))})
    latest = keyed.group_by(["request_id", "row"], use_threads=False).aggregate([("_i", "max")])
    picked = labels.take(latest.column("_i_max"))
    right = pa.table({"request_id": latest.column("request_id"), "row": latest.column("row"),
                      "label": picked.column("label"), "label_timestamp": picked.column("timestamp")})
    left = pa.table({"request_id": request_ids, "row": rows, "_pos": pa.array(np.arange(n))})
    joined = left.join(right, keys=["request_id", "row"], join_type="left outer").sort_by("_pos")
    return joined.column("label"), joined.column("label_timestamp")
