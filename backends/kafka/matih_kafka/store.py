"""The :class:`~matih_lite.contracts.EventStore` contract over Kafka topics (confluent-kafka).

Topics and records
------------------
Stream ``s`` is the topic ``<topic_prefix>s``, created on its first append (or commit) with the
configured ``partitions``, ``replication_factor`` and ``topic_config``. A record is one Kafka
message: the record as JSON (a row appended as an Arrow table too: :func:`unflatten` of it, its
numbers as float64), no key, and the record's ``timestamp`` as the message's CreateTime, so
:meth:`read` and :meth:`scan` find a window's first offset with ``offsets_for_times``.

Offsets
-------
A stream's offsets are Kafka's: with one partition (the default) offset ``n`` of the stream is
offset ``n`` of partition 0, whatever process wrote it. With ``P`` partitions the stream is dealt
round-robin: stream offset ``n`` lives in partition ``n % P`` at partition offset ``n // P``, so

- an append starting at stream offset ``N`` sends its ``k``-th record to partition ``(N + k) % P``;
- ``end_offset`` is the sum of the partitions' end offsets;
- a group committing stream offset ``N`` commits, on partition ``p``, the number of stream offsets
  below ``N`` that live there, ``(N - p + P - 1) // P``, and ``committed`` is the sum back: the
  same number, and a plain Kafka consumer of that group resumes on each partition where the
  group stopped.

Appends to one stream are serialized in a process (a lock while its records are queued), so its
records get consecutive offsets even when threads append at once. With one partition that holds
for any number of processes (the partition is the order). With several, it holds while one
process at a time appends to a stream: appends from two processes that overlap in time can both
start from the same ``N`` and leave the partitions uneven (offsets stay unique, but the stream
then has holes). Keep multi-partition streams to one writing process, or to one partition.

Groups
------
``commit``/``committed`` are Kafka's consumer-group offsets of the group ``<topic_prefix>group``,
written and read through the admin API (OffsetCommit/OffsetFetch, no group join), so they survive
every restart and any Kafka tool shows them. A group that a subscribed Kafka consumer is using
at the same time refuses them (Kafka's rule); these groups are this backend's own.

Columns
-------
:meth:`scan` types a column by the first value the stream gave it, as every events backend does.
The first kind of each (stream, column) is kept in the topic ``<topic_prefix>__matih_columns``
(written when an append brings a column that topic does not know; the first entry wins), so every
process types a stream alike. At most :data:`MAX_TYPED_COLUMNS` columns per stream.

Failures
--------
Every driver failure is a :class:`~matih_lite.errors.StoreError` (503, retry after). While the
client knows every broker is down, an append asks the cluster once (one second) and fails at
once, before a record is queued: nothing is written. An append cut off part-way (a broker lost
while its records were in flight) raises, saying how many of them were written; it is not rolled
back (Kafka has no rollback without transactions), so a caller that retries may write those twice
(the streaming consumers drop replays by request id).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

import msgspec

from matih_kafka.plugin import FIXED_PRODUCER
from matih_lite.contracts import Health
from matih_lite.contracts.streams import RESERVED_COLUMNS, STREAM_NAME, EventRecord, record_columns, unflatten
from matih_lite.contracts.transfer import StreamLayout
from matih_lite.errors import InvalidInput, StoreError

log = logging.getLogger("matih_kafka")


class _DriverLog:
    """librdkafka's log lines into ``matih_kafka.librdkafka``. A broker that cannot be reached is an
    ERROR to librdkafka, once a second per client; the store says so itself (its health, a
    StoreError, one warning when the brokers go and come back), so those lines go to DEBUG."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("matih_kafka.librdkafka")

    def log(self, level: int, fmt: str, *args: Any) -> None:
        facility = args[0] if args else ""
        if facility in ("FAIL", "ERROR") or "Connection refused" in str(args[-1] if args else ""):
            level = logging.DEBUG
        level = min(level, logging.WARNING)
        if self.logger.isEnabledFor(level):
            self.logger.log(level, fmt, *args)


driver_log = _DriverLog()

COLUMNS_TOPIC = "__matih_columns"
"""The topic (after the prefix) keeping each stream's column kinds; no stream may take this name."""
MAX_TYPED_COLUMNS = 512
MAX_GROUP = 256
MAX_TOPIC = 249
_INT64 = 2**63 - 1
_POOL = 8
_CHASE_S = 0.02
"""How long a read goes on past a partition's end as it was when asked, for its end-of-partition event."""
_SCALAR_KINDS = {bool: "bool", int: "float64", float: "float64", str: "string"}


def _enc_hook(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if tolist is not None:
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.json.Decoder()


def check_stream(stream: Any) -> str:
    if not isinstance(stream, str) or not STREAM_NAME.match(stream):
        raise InvalidInput(f"invalid stream name {stream!r}: use 1 to 249 letters, digits, '.', '_' or '-'")
    if stream == COLUMNS_TOPIC:
        raise InvalidInput(f"stream name {stream!r} is reserved: the Kafka backend keeps column kinds there")
    return stream


def _check_group(group: Any) -> str:
    if not isinstance(group, str) or not group.strip() or len(group) > MAX_GROUP:
        raise InvalidInput(f"invalid consumer group {group!r}: a non-empty name of at most {MAX_GROUP} characters")
    return group


def _check_offset(offset: Any, what: str = "offset") -> int:
    if not isinstance(offset, Integral) or isinstance(offset, bool) or offset < 0:
        raise InvalidInput(f"{what} must be an integer >= 0, got {offset!r}")
    return int(offset)


def below(offset: int, partition: int, partitions: int) -> int:
    """How many of the stream offsets ``0 .. offset - 1`` live in ``partition`` (round-robin over ``partitions``)."""
    return (offset - partition + partitions - 1) // partitions


def _kind(value: Any) -> str | None:
    kind = _SCALAR_KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Real):
        return "float64"
    if isinstance(value, str):
        return "string"
    return None


def _arrow_kind(arrow_type: Any) -> str | None:
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float64"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return "string"
    return None


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {"bool": pa.bool_, "float64": pa.float64, "string": pa.string}[kind]()


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        return None


class _Delivery:
    """The delivery reports of one append's messages (called on the poller thread, one at a time).

    Every message reports: a partition's messages can fail apart (one timed out in the queue while
    a later one, sent after the brokers came back, was written), so no subset tells all."""

    __slots__ = ("done", "ends", "errors", "first", "partitions", "pending", "written")

    def __init__(self, count: int, partitions: int, ends: dict[int, int]) -> None:
        self.pending = count
        self.first: int | None = None
        self.errors: list[Any] = []
        self.written = 0
        self.done = threading.Event()
        self.partitions = partitions
        self.ends = ends
        if count == 0:
            self.done.set()

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.written += 1
            partition, position = msg.partition(), msg.offset()
            offset = position * self.partitions + partition
            if self.first is None or offset < self.first:
                self.first = offset
            if position + 1 > self.ends.get(partition, 0):
                self.ends[partition] = position + 1
        self.pending -= 1
        if self.pending <= 0:
            self.done.set()

    def cancel(self, count: int) -> None:
        """``count`` messages were never queued: stop waiting for them."""
        self.pending -= count
        if self.pending <= 0:
            self.done.set()


class KafkaEventStore:
    """Streams as Kafka topics (see the module docstring). Thread-safe; nothing connects before first use."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.servers = settings.bootstrap_servers
        self.prefix = settings.topic_prefix
        self.location = f"kafka://{self.servers}/{self.prefix}"
        self.timeout = settings.timeout_ms / 1000
        self._lock = threading.RLock()
        self._closed = False
        self._producer: Any = None
        self._retired: list[Any] = []
        self._admin: Any = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._idle: list[Any] = []
        self._consumers: list[Any] = []
        self._topics: dict[str, int] = {}
        """Topics known to exist, with their partition counts."""
        self._append_locks: dict[str, threading.Lock] = {}
        self._next: dict[str, int] = {}
        """Multi-partition topics: the stream offset this process's next append starts at."""
        self._written: dict[str, dict[int, int]] = {}
        """Per topic and partition: the offset after the last record this process had acknowledged."""
        self._columns: dict[str, dict[str, str]] = {}
        self._columns_next = 0
        self._columns_lock = threading.Lock()
        self._table_json = TableJSON()
        self._down: str | None = None
        """Why the client says every broker is down (None while it does not)."""

    # ---- clients ------------------------------------------------------------------------------
    def _common(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.servers, "client.id": self.settings.client_id, "logger": driver_log,
                "reconnect.backoff.max.ms": 1000, **self.settings.client}

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the Kafka events store {self.location} is closed")

    def _producer_client(self) -> Any:
        producer = self._producer
        if producer is not None:
            return producer
        with self._lock:
            self._check_open()
            if self._producer is None:
                from confluent_kafka import Producer

                # A topic the brokers do not have (deleted, or a broker that keeps nothing restarted) fails its
                # messages after a second, not at the timeout, so the append makes it again in time.
                conf = {**self._common(), "linger.ms": 5, "message.timeout.ms": self.settings.timeout_ms,
                        "allow.auto.create.topics": False, "topic.metadata.propagation.max.ms": 1000,
                        "error_cb": self._on_error, **self.settings.producer, **FIXED_PRODUCER}
                self._producer = Producer(conf)
                self._start_poller()
            return self._producer

    def _admin_client(self) -> Any:
        admin = self._admin
        if admin is not None:
            return admin
        with self._lock:
            self._check_open()
            if self._admin is None:
                from confluent_kafka.admin import AdminClient

                self._admin = AdminClient({**self._common(), "error_cb": self._on_error})
                self._start_poller()
            return self._admin

    def _start_poller(self) -> None:
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll, name="matih-kafka-poller", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        """Serve the producers' delivery reports and every client's errors and logs, until closed."""
        from confluent_kafka import KafkaException

        while not self._stop.is_set():
            producer, admin = self._producer, self._admin
            try:
                if producer is not None:
                    producer.poll(0.05)
                else:
                    self._stop.wait(0.05)
                for old in list(self._retired):  # their last delivery reports (failures) still go to their appends
                    old.poll(0)
                    if len(old) == 0:
                        self._retired.remove(old)
                if admin is not None:
                    admin.poll(0)
            except KafkaException as exc:
                err = exc.args[0]
                if getattr(err, "fatal", lambda: False)():
                    self._retire(producer, err.str())
                else:
                    log.warning("Kafka client: %s", err.str())
            except Exception:  # a callback failed; the loop must go on serving the others
                log.exception("kafka poller")

    def _retire(self, producer: Any, why: str) -> None:
        """Replace a producer that failed for good (an idempotent producer the brokers no longer know)."""
        with self._lock:
            if producer is None or self._producer is not producer:
                return
            log.warning("Kafka producer failed for good (%s); a new one takes over", why)
            self._producer = None
            self._retired.append(producer)

    def _on_error(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.fatal():
            self._retire(self._producer, err.str())
            return
        if err.code() == KafkaError._ALL_BROKERS_DOWN or (
                self._down is None and err.code() in (KafkaError._TRANSPORT, KafkaError._RESOLVE)):
            self._mark_down(err.str())
        log.debug("kafka client error: %s", err.str())

    def _mark_down(self, why: str) -> None:
        if self._down is None:
            log.warning("Kafka at %s is unreachable: %s", self.servers, why)
        self._down = why

    def _mark_up(self) -> None:
        if self._down is not None:
            self._down = None
            log.warning("Kafka at %s answers again", self.servers)

    def _consumer(self) -> Any:
        with self._lock:
            self._check_open()
            if self._idle:
                return self._idle.pop()
        from confluent_kafka import Consumer

        conf = {**self._common(), "group.id": f"{self.prefix}matih-reader", "enable.auto.commit": False,
                "enable.auto.offset.store": False, "enable.partition.eof": True, "auto.offset.reset": "error",
                "fetch.wait.max.ms": 10, "fetch.error.backoff.ms": 10, "allow.auto.create.topics": False,
                **self.settings.consumer}
        consumer = Consumer(conf)
        with self._lock:
            self._consumers.append(consumer)
        return consumer

    def _release(self, consumer: Any) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < _POOL:
                self._idle.append(consumer)
                return
            if consumer in self._consumers:
                self._consumers.remove(consumer)
        try:
            consumer.close()
        except Exception:
            pass

    def _fail(self, what: str, exc: BaseException) -> StoreError:
        err = exc.args[0] if getattr(exc, "args", None) else exc
        text = err.str() if hasattr(err, "str") else str(err)
        return StoreError(f"{what} on Kafka at {self.servers} failed: {text}")

    # ---- topics -------------------------------------------------------------------------------
    def topic(self, stream: str) -> str:
        """The topic holding ``stream``. Raises InvalidInput for a name a topic cannot have."""
        check_stream(stream)
        topic = self.prefix + stream
        if len(topic) > MAX_TOPIC:
            raise InvalidInput(f"stream name {stream!r} with the topic prefix {self.prefix!r} is longer than "
                               f"Kafka's {MAX_TOPIC} characters")
        return topic

    def stream_layout(self, stream: str) -> StreamLayout:
        """``stream``'s topic and its partitions (the configured ``partitions`` while the topic does not exist);
        ``promote`` keeps a stream's offsets exactly only in a one-partition topic. Raises StoreError."""
        topic = self.topic(stream)
        self._check_open()
        return StreamLayout(location=f"topic {topic!r}", partitions=self._partitions(topic) or self.settings.partitions)

    def _partitions(self, topic: str) -> int | None:
        """The topic's partition count, None when it does not exist (asked without creating it)."""
        found = self._topics.get(topic)
        if found is not None:
            return found
        from confluent_kafka import KafkaException

        consumer = self._consumer()
        try:
            meta = consumer.list_topics(topic, timeout=self.timeout)
        except KafkaException as exc:
            raise self._fail(f"looking up topic {topic!r}", exc) from exc
        finally:
            self._release(consumer)
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            return None
        self._topics[topic] = len(info.partitions)
        return self._topics[topic]

    def _ensure_topic(self, topic: str, partitions: int | None = None, config: dict[str, str] | None = None) -> int:
        found = self._topics.get(topic) or self._partitions(topic)
        if found is not None:
            return found
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        new = NewTopic(topic, num_partitions=partitions or self.settings.partitions,
                       replication_factor=self.settings.replication_factor,
                       config=dict(self.settings.topic_config if config is None else config))
        try:
            self._admin_client().create_topics([new], request_timeout=self.timeout)[topic].result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another process made it meanwhile
                raise self._fail(f"creating topic {topic!r}", exc) from exc
        deadline = time.monotonic() + self.timeout
        while True:  # a new topic's metadata reaches every broker a moment later
            found = self._partitions(topic)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise StoreError(f"topic {topic!r} was created on Kafka at {self.servers} but has no partitions "
                                 f"after {self.timeout:g} s")
            time.sleep(0.05)

    def _forget(self, topic: str) -> None:
        self._topics.pop(topic, None)
        self._next.pop(topic, None)
        self._written.pop(topic, None)

    def _ends(self, topic: str, partitions: int) -> list[int]:
        """Each partition's end offset: the brokers' high watermark, or past this process's own last
        acknowledged record when that is further (a broker's watermark lags it only by a fault)."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        own = self._written.get(topic, {})
        consumer = self._consumer()
        deadline = time.monotonic() + self.timeout
        try:
            ends = []
            for p in range(partitions):
                while True:
                    try:
                        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout,
                                                                 cached=False)
                        break
                    except KafkaException as exc:
                        # A topic made a moment ago (here or by another process) that this client's
                        # metadata does not show yet: look again.
                        if exc.args[0].code() not in (KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                      KafkaError._UNKNOWN_TOPIC) or time.monotonic() > deadline:
                            raise
                        consumer.list_topics(topic, timeout=self.timeout)
                        time.sleep(0.01)
                ends.append(max(high, own.get(p, 0)))
            return ends
        except KafkaException as exc:
            raise self._fail(f"reading the end of topic {topic!r}", exc) from exc
        finally:
            self._release(consumer)

    # ---- appending ----------------------------------------------------------------------------
    def append(self, stream: str, records: Any) -> int:
        topic = self.topic(stream)
        if hasattr(records, "column_names") and hasattr(records, "num_rows"):
            values, stamps, kinds = _encode_table(records, self._table_json)
        elif isinstance(records, (str, bytes, Mapping)) or not hasattr(records, "__len__"):
            raise InvalidInput("records must be a list of JSON objects or a pyarrow Table")
        else:
            values, stamps, kinds = _encode_records(records)
        self._check_open()
        if not values:
            return self.end_offset(stream)
        limit = int(self.settings.producer.get("message.max.bytes", 1_000_000)) - 512
        for i, value in enumerate(values if max(map(len, values)) > limit else ()):
            if len(value) > limit:
                raise InvalidInput(f"records[{i}] is {len(value):,} bytes of JSON, more than a Kafka message "
                                   f"takes here ({limit:,}); raise producer.message.max.bytes (and the topic's "
                                   "max.message.bytes) or log less")
        self._check_up()
        self._register_columns(stream, kinds)
        return self._send(stream, topic, values, stamps)

    def _send(self, stream: str, topic: str, values: list[bytes], stamps: list[int],
              partitions: int | None = None, config: dict[str, str] | None = None) -> int:
        """Produce to ``topic`` (made if missing); again, at most twice, after a failure that wrote nothing:
        the brokers lost the topic (deleted, or a broker that keeps nothing restarted), or forgot the
        idempotent producer (the same restart)."""
        for attempt in range(3):
            try:
                return self._produce(stream, topic, self._ensure_topic(topic, partitions, config), values, stamps)
            except _TopicGone as exc:
                if attempt == 2:
                    raise StoreError(f"topic {topic!r} keeps disappearing on Kafka at {self.servers}") from exc
                self._forget(topic)
                self._ensure_topic(topic, partitions, config)
                self._producer_sees(topic)  # it remembers the topic as missing until it looks again
            except _ProducerFailed as exc:
                if attempt == 2:
                    raise StoreError(f"appending to stream {stream!r} on Kafka at {self.servers} failed: {exc}; "
                                     "nothing was written") from exc
        raise AssertionError("unreachable")

    def _producer_sees(self, topic: str) -> None:
        from confluent_kafka import KafkaException

        producer = self._producer_client()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                info = producer.list_topics(topic, timeout=self.timeout).topics.get(topic)
            except KafkaException as exc:
                raise self._fail(f"looking up topic {topic!r}", exc) from exc
            if info is not None and info.error is None and info.partitions:
                return
            time.sleep(0.05)

    def _check_up(self) -> None:
        """Fail at once (in a second), writing nothing, while the client knows every broker is down and the
        cluster still does not answer, rather than after the timeout."""
        why = self._down
        if why is None:
            return
        from confluent_kafka import KafkaException

        try:
            self._admin_client().list_topics(timeout=1.0)
        except KafkaException as exc:
            raise StoreError(f"Kafka at {self.servers} is unreachable ({why}); nothing was read or written") \
                from exc
        self._mark_up()

    def _produce(self, stream: str, topic: str, partitions: int, values: list[bytes], stamps: list[int]) -> int:
        from confluent_kafka import KafkaError, KafkaException

        producer = self._producer_client()
        n = len(values)
        with self._lock:
            lock = self._append_locks.setdefault(topic, threading.Lock())
            written = self._written.setdefault(topic, {})
        delivery = _Delivery(n, partitions, written)
        deadline = time.monotonic() + self.timeout
        queued = 0
        with lock:
            start = self._next_offset(topic, partitions) if partitions > 1 else 0
            try:
                for i in range(n):
                    partition = (start + i) % partitions
                    while True:
                        try:
                            producer.produce(topic, values[i], partition=partition, timestamp=stamps[i],
                                             on_delivery=delivery)
                            break
                        except BufferError:  # the local queue is full: let the poller drain it
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.002)
                    queued += 1
            except (BufferError, KafkaException) as exc:
                delivery.cancel(n - queued)
                self._next.pop(topic, None)
                if queued == 0:
                    if isinstance(exc, KafkaException) and exc.args[0].fatal():
                        self._retire(producer, exc.args[0].str())
                        raise _ProducerFailed(exc.args[0].str()) from exc
                    code = exc.args[0].code() if isinstance(exc, KafkaException) else None
                    if code in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART,
                                KafkaError._UNKNOWN_PARTITION):
                        raise _TopicGone(topic) from exc
                    raise self._fail(f"appending to stream {stream!r}", exc) from exc
                self._wait(delivery, deadline)
                raise StoreError(f"appending {n} records to stream {stream!r} on Kafka at {self.servers} stopped "
                                 f"after {delivery.written} were written: {exc}") from exc
            if partitions > 1:
                self._next[topic] = start + n
        self._wait(delivery, deadline + 1.0)
        if delivery.errors:
            self._next.pop(topic, None)
            err = delivery.errors[0]
            if delivery.written == 0 and err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                                                         KafkaError._UNKNOWN_PARTITION, KafkaError._MSG_TIMED_OUT):
                self._forget(topic)
                if err.code() != KafkaError._MSG_TIMED_OUT or self._exists_now(topic) is False:
                    raise _TopicGone(topic)
            if delivery.written == 0 and (err.fatal() or self._producer is not producer or err.code() in (
                    _PRODUCER_STATE_ERRORS())):
                self._retire(producer, err.str())
                raise _ProducerFailed(err.str())
            if delivery.written == 0:
                if err.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
                    self._mark_down(err.str())
                raise StoreError(f"appending {n} records to stream {stream!r} on Kafka at {self.servers} failed: "
                                 f"{err.str()}; nothing was written")
            raise StoreError(f"appending {n} records to stream {stream!r} on Kafka at {self.servers} failed part-way "
                             f"({err.str()}): {delivery.written} of them were written")
        self._mark_up()
        first = delivery.first if delivery.first is not None else start
        if partitions > 1 and first != start:
            log.warning("stream %s: another process appended at the same time; this append starts at offset %d, "
                        "not %d", stream, first, start)
        return first

    def _exists_now(self, topic: str) -> bool | None:
        """Whether the brokers have the topic; None when they cannot be asked."""
        try:
            return self._partitions(topic) is not None
        except StoreError:
            return None

    def _wait(self, delivery: _Delivery, deadline: float) -> None:
        if not delivery.done.wait(max(deadline - time.monotonic(), 0.0)):
            raise StoreError(f"Kafka at {self.servers} did not acknowledge an append within {self.timeout:g} s")

    def _next_offset(self, topic: str, partitions: int) -> int:
        """Where this append starts on a multi-partition stream: the brokers' end, or this process's own
        when it is further (the brokers may not show its latest appends yet)."""
        return max(sum(self._ends(topic, partitions)), self._next.get(topic, 0))

    # ---- column kinds -------------------------------------------------------------------------
    def _register_columns(self, stream: str, kinds: dict[str, str]) -> None:
        """Record the kinds of the columns ``stream`` gets for the first time (before its records are written)."""
        known = self._columns.get(stream, {})
        if all(name in known for name in kinds) or len(known) >= MAX_TYPED_COLUMNS:
            return
        with self._columns_lock:
            self._refresh_columns()
            known = self._columns.get(stream, {})
            new = [[name, kind] for name, kind in kinds.items() if name not in known]
            new = new[:max(MAX_TYPED_COLUMNS - len(known), 0)]
            if not new:
                return
            record = {"timestamp": int(time.time() * 1000), "stream": stream, "columns": new}
            self._send(COLUMNS_TOPIC, self.prefix + COLUMNS_TOPIC, [_encoder.encode(record)], [0], 1,
                       {"retention.ms": "-1", "cleanup.policy": "delete"})
            self._refresh_columns()

    def _refresh_columns(self) -> None:
        """Read the column kinds other processes recorded since the last look (first entry per column wins)."""
        topic = self.prefix + COLUMNS_TOPIC
        if self._partitions(topic) is None:
            return
        [end] = self._ends(topic, 1)
        if end < self._columns_next:  # the topic was made again (a broker that keeps nothing restarted)
            self._columns_next = 0
        if self._columns_next >= end:
            return
        for _, position, _, value in self._fetch(topic, {0: self._columns_next}, ends=[end]):
            self._columns_next = max(self._columns_next, position + 1)
            try:
                entry = _decoder.decode(value)
                columns = self._columns.setdefault(str(entry["stream"]), {})
                for name, kind in entry["columns"]:
                    if len(columns) < MAX_TYPED_COLUMNS and kind in ("bool", "float64", "string"):
                        columns.setdefault(str(name), kind)
            except Exception:  # not ours: leave it
                continue

    # ---- reading ------------------------------------------------------------------------------
    def _fetch(self, topic: str, starts: dict[int, int], stops: dict[int, int] | None = None,
               ends: list[int] | None = None) -> list[tuple]:
        """(partition, offset, kafka timestamp, value) of the messages from ``starts[p]`` on in each partition,
        up to (not including) ``stops[p]`` or the partition's end (its end-of-partition event: ``ends``,
        the watermarks, only say how many messages to wait for)."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        stops = stops or {}
        position = {p: o for p, o in starts.items() if o < stops.get(p, _INT64)}
        if not position:
            return []
        out: list[tuple] = []
        reached: dict[int, float] = {}
        consumer = self._consumer()
        deadline = time.monotonic() + self.timeout
        try:
            consumer.assign([TopicPartition(topic, p, o) for p, o in position.items()])
            while position:
                if time.monotonic() > deadline:
                    raise StoreError(f"reading topic {topic!r} on Kafka at {self.servers} timed out after "
                                     f"{self.timeout:g} s")
                # consume() returns once it has this many messages (or the timeout passed): ask for what is due.
                due = 0
                for p, o in position.items():
                    stop, end = stops.get(p), ends[p] if ends is not None else None
                    if stop is not None and (end is None or stop <= end):
                        due += stop - o
                    elif end is not None:
                        due += max(end - o, 0) + 1  # and the end-of-partition event
                    else:
                        due += 500
                # At most 500 a call: turning messages into Python objects holds the GIL, and a reader
                # (the drift runner's) must not keep the service's event loop waiting for long.
                for msg in consumer.consume(max(1, min(due, 500)), timeout=0.01):
                    p = msg.partition()
                    if p not in position:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            del position[p]
                        elif err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                            self._forget(topic)
                            return []
                        elif err.code() in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET):
                            del position[p]  # before the log's start (retention) or past its end
                        elif not err.retriable():
                            raise StoreError(f"reading topic {topic!r} on Kafka at {self.servers} failed: {err.str()}")
                        continue
                    offset = msg.offset()
                    stop = stops.get(p)
                    if stop is not None and offset >= stop:
                        del position[p]
                        continue
                    out.append((p, offset, msg.timestamp()[1], msg.value()))
                    if stop is not None and offset + 1 >= stop:
                        del position[p]
                    else:
                        position[p] = offset + 1
                if ends is not None:
                    # Past what the partition held when asked, its end-of-partition event ends it, or a short
                    # while: records landing meanwhile on a busy topic would otherwise keep the reader chasing
                    # them until it had ``stops`` of them (a second of latency at 1,000 records/s).
                    now = time.monotonic()
                    for p in [p for p, o in position.items() if o >= ends[p]]:
                        if now - reached.setdefault(p, now) >= _CHASE_S:
                            del position[p]
        except KafkaException as exc:
            raise self._fail(f"reading topic {topic!r}", exc) from exc
        finally:
            try:
                consumer.unassign()
            except Exception:
                pass
            self._release(consumer)
        return out

    def _records(self, messages: list[tuple], partitions: int) -> list[EventRecord]:
        out = []
        for p, position, kafka_ts, value in messages:
            if value is None:
                continue  # a tombstone some other producer wrote: no record
            try:
                data = _decoder.decode(value)
            except msgspec.DecodeError:
                continue
            if not isinstance(data, dict):
                continue
            ts = data.get("timestamp")
            if not isinstance(ts, int) or isinstance(ts, bool):
                ts = kafka_ts
            out.append(EventRecord(position * partitions + p, ts, data))
        return out

    def read_from(self, stream: str, offset: int, limit: int = 1000) -> list[EventRecord]:
        offset = _check_offset(offset)
        limit = _check_offset(limit, "limit")
        topic = self.topic(stream)
        self._check_open()
        self._check_up()
        partitions = self._partitions(topic)
        if partitions is None or limit == 0:
            return []
        ends = self._ends(topic, partitions)
        starts, stops = {}, {}
        for p in range(partitions):
            lo, hi = below(offset, p, partitions), below(offset + limit, p, partitions)
            if lo < hi and lo < ends[p]:  # past the end there is nothing to wait for
                starts[p], stops[p] = lo, hi
        records = self._records(self._fetch(topic, starts, stops, ends), partitions)
        records.sort(key=lambda r: r.offset)
        return records[:limit]

    def end_offset(self, stream: str) -> int:
        topic = self.topic(stream)
        self._check_open()
        self._check_up()
        partitions = self._partitions(topic)
        return 0 if partitions is None else sum(self._ends(topic, partitions))

    def _window_messages(self, stream: str, start: int, end: int) -> tuple[int, list[tuple]]:
        """The stream's partition count and the messages that may hold records with ``start <= timestamp < end``."""
        from confluent_kafka import KafkaException, TopicPartition

        topic = self.topic(stream)
        self._check_open()
        self._check_up()
        partitions = self._partitions(topic)
        if partitions is None or end <= start:
            return partitions or 1, []
        ends = self._ends(topic, partitions)
        consumer = self._consumer()
        try:
            # The first offset whose CreateTime is >= start: no earlier record is in the window (a record's
            # CreateTime is its timestamp, or later for one at or before the epoch).
            found = consumer.offsets_for_times([TopicPartition(topic, p, max(start, 0)) for p in range(partitions)],
                                               timeout=self.timeout)
        except KafkaException as exc:
            raise self._fail(f"finding the window's start in topic {topic!r}", exc) from exc
        finally:
            self._release(consumer)
        starts = {tp.partition: tp.offset for tp in found if 0 <= tp.offset < ends[tp.partition]}
        # Records are in offset order, not time order: every one after the start may still be in the window,
        # unless the settings bound how late a record may come.
        stops = None
        lateness = self.settings.max_lateness_ms
        if lateness is not None and starts and end + lateness < _INT64:
            consumer = self._consumer()
            try:
                after = consumer.offsets_for_times([TopicPartition(topic, p, end + lateness) for p in starts],
                                                   timeout=self.timeout)
            except KafkaException as exc:
                raise self._fail(f"finding the window's end in topic {topic!r}", exc) from exc
            finally:
                self._release(consumer)
            # -1: no record that late yet (read to the end); one before the start cannot be (a broker that
            # answers 0 for a time past its last record, as tansu does): ignored too
            stops = {tp.partition: tp.offset for tp in after if tp.offset > starts.get(tp.partition, 0)}
        return partitions, self._fetch(topic, starts, stops, ends)

    def read(self, stream: str, start: int, end: int) -> list[EventRecord]:
        start, end = int(start), int(end)
        partitions, messages = self._window_messages(stream, start, end)
        return _in_window(self._records(messages, partitions), start, end)

    def scan(self, stream: str, start: int, end: int, columns: Any = None) -> Any:
        start, end = int(start), int(end)
        partitions, messages = self._window_messages(stream, start, end)
        with self._columns_lock:
            self._refresh_columns()
            kinds = dict(self._columns.get(stream, {}))
        table = scan_arrow(messages, partitions, start, end, kinds, columns)
        if table is None:  # records the JSON reader cannot take as columns: one by one
            table = scan_records(_in_window(self._records(messages, partitions), start, end), kinds, columns)
        return table

    # ---- consumer groups ----------------------------------------------------------------------
    def _group(self, group: str) -> str:
        return self.prefix + _check_group(group)

    def _admin_call(self, what: str, call: Any) -> Any:
        """Run an admin request, again while the coordinator is moving or starting (a broker just restarted)."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return call()
            except KafkaException as exc:
                err = exc.args[0]
                if not getattr(err, "retriable", lambda: False)() and err.code() not in _COORDINATOR_ERRORS() \
                        or time.monotonic() > deadline:
                    raise self._fail(what, exc) from exc
            time.sleep(0.1)

    def commit(self, group: str, stream: str, offset: int) -> None:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        name = self._group(group)
        topic = self.topic(stream)
        offset = _check_offset(offset)
        self._check_open()
        self._check_up()
        partitions = self._ensure_topic(topic)
        wanted = ConsumerGroupTopicPartitions(name, [TopicPartition(topic, p, below(offset, p, partitions))
                                                     for p in range(partitions)])

        def call() -> None:
            [future] = self._admin_client().alter_consumer_group_offsets(
                [wanted], request_timeout=self.timeout).values()
            for tp in future.result().topic_partitions:
                if tp.error is not None:
                    from confluent_kafka import KafkaException

                    raise KafkaException(tp.error)

        self._admin_call(f"committing {group!r}'s offset on stream {stream!r}", call)

    def committed(self, group: str, stream: str) -> int | None:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        name = self._group(group)
        topic = self.topic(stream)
        self._check_open()
        self._check_up()
        partitions = self._partitions(topic)
        if partitions is None:
            return None
        wanted = ConsumerGroupTopicPartitions(name, [TopicPartition(topic, p) for p in range(partitions)])

        def call() -> list[Any]:
            [future] = self._admin_client().list_consumer_group_offsets(
                [wanted], request_timeout=self.timeout).values()
            return future.result().topic_partitions

        found = self._admin_call(f"reading {group!r}'s offset on stream {stream!r}", call)
        offsets = [tp.offset for tp in found if tp.error is None and tp.offset >= 0]
        return sum(offsets) if offsets else None

    # ---- the rest -----------------------------------------------------------------------------
    def health(self) -> Health:
        if self._closed:
            return Health(False, f"the Kafka events store {self.location} is closed")
        try:
            meta = self._admin_client().list_topics(timeout=min(self.timeout, 3.0))
        except Exception as exc:  # health reports, never raises
            err = exc.args[0] if exc.args else exc
            text = err.str() if hasattr(err, "str") else f"{type(exc).__name__}: {exc}"
            return Health(False, f"Kafka at {self.servers} is unreachable: {text}")
        self._mark_up()
        streams = sum(1 for t in meta.topics if t.startswith(self.prefix) and t != self.prefix + COLUMNS_TOPIC
                      and not t.startswith("__"))
        return Health(True, f"Kafka at {self.servers}: {len(meta.brokers)} broker(s), {streams} topic(s) under "
                            f"prefix {self.prefix!r}")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # Idle readers close here; one a thread is using closes when it is given back (closing a
            # librdkafka handle under a thread still calling it would crash the process).
            consumers, self._idle = self._idle, []
            for consumer in consumers:
                self._consumers.remove(consumer)
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        producer = self._producer
        if producer is not None:
            producer.flush(self.timeout)  # what was queued goes out; the delivery reports are served here
        for old in self._retired:
            old.flush(0)
        for consumer in consumers:
            try:
                consumer.close()
            except Exception:
                pass

    def __enter__(self) -> KafkaEventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<KafkaEventStore {self.location}>"


class _TopicGone(Exception):
    pass


class _ProducerFailed(Exception):
    pass


def _PRODUCER_STATE_ERRORS() -> frozenset[int]:
    """Errors saying the brokers no longer know this idempotent producer (they restarted without its state)."""
    from confluent_kafka import KafkaError

    return frozenset({KafkaError.UNKNOWN_PRODUCER_ID, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError._FATAL,
                      KafkaError.INVALID_PRODUCER_EPOCH, KafkaError.PRODUCER_FENCED,
                      KafkaError.INVALID_PRODUCER_ID_MAPPING, KafkaError._FENCED})


def _COORDINATOR_ERRORS() -> frozenset[int]:
    from confluent_kafka import KafkaError

    return frozenset({KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
                      KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
                      KafkaError.REQUEST_TIMED_OUT})


# ---- windows as columns ------------------------------------------------------------------------------

def _in_window(records: list[EventRecord], start: int, end: int) -> list[EventRecord]:
    found = [r for r in records if start <= r.timestamp < end]
    found.sort(key=lambda r: (r.timestamp, r.offset))
    return found


def scan_records(records: list[EventRecord], kinds: dict[str, str], columns: Any = None) -> Any:
    """:meth:`EventStore.scan`'s table of ``records`` (already the window, in order), a record at a time.

    A column takes the kind ``kinds`` (the stream's catalogue) gives it, or, for one it lacks, that of
    its first value here; a value of another kind is null."""
    import pyarrow as pa

    kinds = dict(kinds)
    cells: dict[str, list[Any]] = {}
    n = len(records)
    for i, record in enumerate(records):
        for name, value in record_columns(record.data).items():
            kind = kinds.get(name)
            if kind is None:
                if len(kinds) >= MAX_TYPED_COLUMNS:
                    continue
                kind = _kind(value)
                if kind is None:
                    continue
                kinds[name] = kind  # a column no process recorded (written by another producer)
            if _kind(value) == kind:
                column = cells.get(name)
                if column is None:
                    column = cells[name] = [None] * n
                column[i] = value
    names = list(kinds) if columns is None else [c for c in dict.fromkeys(columns) if c in kinds]
    arrays = [pa.array([r.offset for r in records], pa.int64()),
              pa.array([r.timestamp for r in records], pa.int64())]
    for name in names:
        values = cells.get(name) or [None] * n
        kind = kinds[name]
        if kind == "float64":
            values = [None if v is None else _as_float(v) for v in values]
        arrays.append(pa.array(values, _arrow_type(kind)))
    return pa.Table.from_arrays(arrays, names=["_offset", "timestamp", *names])


def _explicit_schema(kinds: dict[str, str]) -> Any:
    """The JSON reader's schema for the catalogue's columns (``a.b`` a field of struct ``a``); None when a
    name is both a scalar and an object's."""
    import pyarrow as pa

    top: dict[str, Any] = {}
    nested: dict[str, list[Any]] = {}
    for name, kind in kinds.items():
        head, dot, rest = name.partition(".")
        if dot:
            nested.setdefault(head, []).append(pa.field(rest, _arrow_type(kind)))
        else:
            top[name] = pa.field(name, _arrow_type(kind))
    if set(top) & set(nested) or "timestamp" in nested:
        return None
    return pa.schema([pa.field("timestamp", pa.int64()), *(f for n, f in top.items() if n != "timestamp"),
                      *(pa.field(head, pa.struct(fields)) for head, fields in nested.items())])


def scan_arrow(messages: list[tuple], partitions: int, start: int, end: int, kinds: dict[str, str],
               columns: Any = None) -> Any:
    """The same table as :func:`scan_records`, by Arrow's JSON reader: ~10x faster for a window of
    records whose fields keep one kind each (an inference log). None when the records do not fit it
    (a field of two kinds, a column the catalogue lacks, a record that is not an object...)."""
    import io

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    if not messages or any(m[3] is None for m in messages):
        return None
    schema = _explicit_schema(kinds)
    if schema is None:
        return None
    buffer = b"\n".join(m[3] for m in messages) + b"\n"
    try:
        raw = pj.read_json(io.BytesIO(buffer),
                           read_options=pj.ReadOptions(use_threads=False, block_size=len(buffer) + 1),
                           parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if raw.num_rows != len(messages):
        return None
    stamps = raw.column("timestamp")
    if stamps.null_count or not pa.types.is_integer(stamps.type):
        return None
    flat = raw.flatten()
    names = flat.column_names
    if len(set(names)) != len(names):
        return None
    for name in names:  # a scalar column the catalogue lacks: the record path types it
        kind = _arrow_kind(flat.column(name).type)
        if name not in kinds and name not in RESERVED_COLUMNS and kind is not None and flat.column(name).null_count \
                < flat.num_rows:
            return None
    offsets = pa.array([position * partitions + p for p, position, _, _ in messages], pa.int64())
    table = pa.table({"_offset": offsets, "timestamp": stamps.cast(pa.int64()),
                      **{n: flat.column(n) for n in names if n in kinds}})
    table = table.filter(pc.and_(pc.greater_equal(table.column("timestamp"), start),
                                 pc.less(table.column("timestamp"), end)))
    table = table.take(pc.sort_indices(table, sort_keys=[("timestamp", "ascending"), ("_offset", "ascending")]))
    wanted = list(kinds) if columns is None else [c for c in dict.fromkeys(columns) if c in kinds]
    out = [table.column("_offset"), table.column("timestamp")]
    for name in wanted:
        kind_type = _arrow_type(kinds[name])
        if name in table.column_names and _arrow_kind(table.column(name).type) == kinds[name]:
            out.append(table.column(name).cast(kind_type))
        else:
            out.append(pa.nulls(table.num_rows, kind_type))
    return pa.Table.from_arrays(out, names=["_offset", "timestamp", *wanted])


# ---- encoding -------------------------------------------------------------------------------------

def _kafka_timestamp(ts: int) -> int:
    # librdkafka reads 0 as "now" and Kafka has no negative CreateTime: a record at or before the epoch
    # gets a later CreateTime, which keeps offsets_for_times a safe lower bound for every window.
    return max(0, ts)


def _encode_records(records: Any) -> tuple[list[bytes], list[int], dict[str, str]]:
    """Each record's JSON and Kafka timestamp, and the kinds of the columns they bring (first value wins);
    InvalidInput names the record at fault, before anything is sent."""
    values: list[bytes] = []
    stamps: list[int] = []
    kinds: dict[str, str] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            if not hasattr(record, "items"):
                raise InvalidInput(f"records[{i}] is not a JSON object")
            record = dict(record.items())
        ts = record.get("timestamp")
        if not isinstance(ts, Integral) or isinstance(ts, bool):
            raise InvalidInput(f"records[{i}].timestamp must be an integer number of milliseconds, got {ts!r}")
        if not -_INT64 <= ts <= _INT64:
            raise InvalidInput(f"records[{i}].timestamp {ts} is out of range")
        try:
            values.append(_encoder.encode(record))
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInput(f"records[{i}] is not JSON: {exc}") from exc
        stamps.append(_kafka_timestamp(int(ts)))
        for name, value in record_columns(record).items():
            if name not in kinds:
                kind = _kind(value)
                if kind is not None:
                    kinds[name] = kind
    return values, stamps, kinds


class TableJSON:
    """The rows of an Arrow table as JSON text through DuckDB's ``to_json``: vectorized, and without the
    GIL, which the service's event loop needs more than a background append does (~2x faster than
    building the records in Python, here). One in-memory database, a cursor per thread."""

    def __init__(self) -> None:
        self._db: Any = None
        self._local = threading.local()
        self._lock = threading.Lock()

    def _cursor(self) -> Any:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            import duckdb

            with self._lock:
                if self._db is None:
                    self._db = duckdb.connect(config={"threads": 1})
                cursor = self._local.cursor = self._db.cursor()
        return cursor

    def rows(self, table: Any, select: str) -> list[bytes]:
        """``to_json(select)`` of each row of ``table`` (registered as ``_rows``), in order."""
        import pyarrow as pa

        cursor = self._cursor()
        cursor.register("_rows", table)
        try:
            out = cursor.sql(f"SELECT to_json({select})::VARCHAR AS j FROM _rows").to_arrow_table()
        finally:
            cursor.unregister("_rows")
        return out.column(0).cast(pa.binary()).to_pylist()


def _sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_key(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def _encode_table(table: Any, to_json: TableJSON | None = None) -> tuple[list[bytes], list[int], dict[str, str]]:
    """A table's rows as JSON records (numbers as float64, nulls left out, ``a.b`` nested), checked first.

    With ``to_json``, a table without nulls or non-finite numbers (what the inference log writes) is
    encoded by DuckDB; any other row by row in Python, a group of columns at a time (``zip`` over the
    column lists, one ``dict`` per group and row, one ``encode_lines`` for the batch)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if table.num_rows == 0:
        return [], [], {}
    if "timestamp" not in table.column_names:
        raise InvalidInput("the table has no 'timestamp' column (integer milliseconds)")
    timestamps = table.column("timestamp")
    if not pa.types.is_integer(timestamps.type) or timestamps.null_count:
        raise InvalidInput(f"the table's timestamp must be integer milliseconds without nulls, "
                           f"got {timestamps.type} with {timestamps.null_count} nulls")
    kinds: dict[str, str] = {}
    used: list[tuple[str, Any]] = []
    groups: dict[str | None, list[tuple[str, str]]] = {}
    """Per object field (None: the top level), its (key, column name) pairs."""
    plain = True
    """No nulls (nor NaN or infinity, made nulls): what DuckDB's to_json writes as this module would."""
    for name in table.column_names:
        column = table.column(name)
        if name in RESERVED_COLUMNS or column.null_count == table.num_rows:
            continue
        kind = _arrow_kind(column.type)
        if kind is None:
            raise InvalidInput(f"column {name!r} of the table is {column.type}: a table's columns must be "
                               "booleans, numbers or strings")
        kinds[name] = kind
        cast = column.cast(_arrow_type(kind))
        if kind == "float64" and not pc.all(pc.is_finite(cast)).as_py():
            # JSON has no NaN or infinity: such a value is left out of its record, as a null is
            cast = pc.if_else(pc.is_finite(cast), cast, pa.scalar(None, pa.float64()))
        used.append((name, cast))
        if cast.null_count:
            plain = False
        head, dot, rest = name.partition(".")
        groups.setdefault(head if dot else None, []).append((rest if dot else name, name))
    stamps = timestamps.cast(pa.int64())
    kafka_stamps = pc.max_element_wise(stamps, 0).to_pylist()  # see _kafka_timestamp
    stamps = stamps.to_pylist()
    top = groups.pop(None, [])
    top_keys = ["timestamp", *(key for key, _ in top)]
    folded = [k.lower() for k in top_keys] + [h.lower() for h in groups]
    plain = plain and len(set(folded)) == len(folded) and all(
        len({k.lower() for k, _ in members}) == len(members) for members in groups.values())
    if to_json is not None and plain:
        # DuckDB folds the case of struct keys, hence the check above, which also leaves a name that is
        # both a column's and an object's to Python.
        parts = [f"'timestamp': {_sql_name('timestamp')}", *(f"{_sql_key(k)}: {_sql_name(c)}" for k, c in top)]
        parts += [f"{_sql_key(head)}: {{{', '.join(f'{_sql_key(k)}: {_sql_name(c)}' for k, c in members)}}}"
                  for head, members in groups.items()]
        data = pa.table([timestamps.cast(pa.int64()), *(c for _, c in used)],
                        names=["timestamp", *(n for n, _ in used)])
        return to_json.rows(data, "{" + ", ".join(parts) + "}"), kafka_stamps, kinds
    cells = {name: column.to_pylist() for name, column in used}
    if set(top_keys) & set(groups):
        # A name that is a column's and an object's ("a" and "a.b"): the order of the columns decides, as
        # in unflatten(), row by row.
        names = [name for name, _ in used]
        rows = [{"timestamp": ts, **unflatten(dict(zip(names, row)))}
                for ts, row in zip(stamps, zip(*(cells[n] for n in names)))]
        values = _encoder.encode_lines(rows).split(b"\n")
        values.pop()
        return values, kafka_stamps, kinds
    rows = [dict(zip(top_keys, row)) for row in zip(stamps, *(cells[c] for _, c in top))]
    nulls = {name for name, column in used if column.null_count}
    if any(c in nulls for _, c in top):
        rows = [{k: v for k, v in row.items() if v is not None} for row in rows]
    for head, members in groups.items():
        keys = [k for k, _ in members]
        nested = (dict(zip(keys, row)) for row in zip(*(cells[c] for _, c in members)))
        if any(c in nulls for _, c in members):
            nested = ({k: v for k, v in obj.items() if v is not None} for obj in nested)
        for row, obj in zip(rows, nested):
            if obj:  # a row whose every value of this object is null has no such field
                row[head] = obj
    values = _encoder.encode_lines(rows).split(b"\n")
    values.pop()  # after the last newline
    return values, kafka_stamps, kinds
