"""What the ml-service side of the Flink jobs says to Kafka itself (confluent-kafka): topics, clock ticks,
reading results back, a sink's tail after a restart, and each job's lag.

The jobs read and write the Kafka events backend's topics (``<topic_prefix><stream>``, one JSON record per
message); this side never goes through the events slot, whose contract knows nothing of Flink's groups.
Consumer-group offsets are read and written through the admin API (no group join), as the events backend
does them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger("matih_flink.kafka")

MAX_MESSAGE = 16 * 1024 * 1024


class KafkaSide:
    """One Kafka cluster as the Flink runner uses it; every client is made on first use."""

    def __init__(self, bootstrap_servers: str, topic_prefix: str = "", client: Mapping[str, Any] | None = None,
                 timeout_s: float = 10.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.prefix = topic_prefix
        self.client = dict(client or {})
        self.timeout_s = timeout_s
        self._producer: Any = None
        self._admin: Any = None

    def topic(self, stream: str) -> str:
        """The Kafka topic of a stream of the events backend."""
        return f"{self.prefix}{stream}"

    def _conf(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, "log_level": 3, **self.client, **extra}

    @property
    def admin(self) -> Any:
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient(self._conf())
        return self._admin

    @property
    def producer(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(self._conf(**{"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                                    "message.max.bytes": MAX_MESSAGE}))
        return self._producer

    def ensure_topics(self, topics: Iterable[str], partitions: int = 1) -> None:
        """Create the topics that do not exist yet (one partition: each stream keeps its order)."""
        from confluent_kafka.admin import NewTopic

        wanted = sorted(set(topics))
        known = set(self.admin.list_topics(timeout=self.timeout_s).topics)
        missing = [t for t in wanted if t not in known]
        if not missing:
            return
        futures = self.admin.create_topics([NewTopic(t, partitions, -1) for t in missing],
                                           operation_timeout=self.timeout_s)
        for name, future in futures.items():
            try:
                future.result()
            except Exception as exc:  # made meanwhile by another client
                if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc).lower():
                    raise

    def produce(self, topic: str, record: Mapping[str, Any], timestamp: int | None = None) -> None:
        """Queue one JSON record (flushed by :meth:`flush` or the producer's linger)."""
        ts = int(timestamp if timestamp is not None else record.get("timestamp") or time.time() * 1000)
        self.producer.produce(topic, json.dumps(record, separators=(",", ":")).encode(), timestamp=ts)
        self.producer.poll(0)

    def flush(self, timeout: float | None = None) -> int:
        return self.producer.flush(self.timeout_s if timeout is None else timeout) if self._producer else 0

    def partitions(self, topic: str) -> list[int]:
        meta = self.admin.list_topics(topic, timeout=self.timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        return sorted(meta.partitions)

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Each partition's next offset (tansu's may be short of it: see matih_lite.testing.tansu)."""
        consumer = self._consumer()
        try:
            from confluent_kafka import TopicPartition

            return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout_s)[1]
                    for p in self.partitions(topic)}
        finally:
            consumer.close()

    def committed(self, group: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        """The group's committed offsets per (topic, partition); absent where it never committed."""
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        parts = [TopicPartition(t, p) for t in topics for p in self.partitions(t)]
        if not parts:
            return {}
        futures = self.admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, parts)],
                                                         request_timeout=self.timeout_s)
        out = {}
        for future in futures.values():
            for tp in future.result().topic_partitions:
                if tp.error is None and tp.offset >= 0:
                    out[(tp.topic, tp.partition)] = tp.offset
        return out

    def commit(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Record ``offsets`` (the next ones to read) as the group's, without joining it."""
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        if not offsets:
            return
        parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        for future in self.admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, parts)],
                                                              request_timeout=self.timeout_s).values():
            future.result()

    def lag(self, group: str, topics: Iterable[str]) -> dict[str, int | None]:
        """Per topic, the records the group has not committed yet (None where it never committed)."""
        topics = list(topics)
        committed = self.committed(group, topics)
        out: dict[str, int | None] = {}
        for topic in topics:
            ends = self.end_offsets(topic)
            mine = [(p, committed.get((topic, p))) for p in ends]
            out[topic] = None if all(c is None for _, c in mine) else sum(
                max(ends[p] - (c or 0), 0) for p, c in mine)
        return out

    def read(self, topic: str, start: Mapping[int, int], limit: int = 10_000,
             wait_s: float = 0.5) -> list[tuple[int, int, dict[str, Any]]]:
        """Up to ``limit`` records from ``start`` (offset per partition) as (partition, offset, record)."""
        from confluent_kafka import TopicPartition

        consumer = self._consumer()
        out: list[tuple[int, int, dict[str, Any]]] = []
        try:
            consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
            deadline = time.monotonic() + wait_s
            while len(out) < limit and time.monotonic() < deadline:
                batch = consumer.consume(min(1000, limit - len(out)), timeout=0.1)
                for msg in batch:
                    if msg.error() is not None:
                        continue
                    try:
                        record = json.loads(msg.value())
                    except (TypeError, ValueError):
                        continue
                    if isinstance(record, dict):
                        out.append((msg.partition(), msg.offset(), record))
                if batch:
                    deadline = time.monotonic() + wait_s
        finally:
            consumer.close()
        return out

    def tail(self, topic: str, count: int) -> list[dict[str, Any]]:
        """The last ``count`` records of every partition of ``topic`` (fewer when it holds fewer)."""
        ends = self.end_offsets(topic)
        if not ends:
            return []
        # tansu's end offset may stop at the last batch's base offset: read on past it to the real end.
        start = {p: max(end - count, 0) for p, end in ends.items()}
        return [r for _, _, r in self.read(topic, start, limit=count * len(ends) + 100_000, wait_s=0.5)]

    def _consumer(self) -> Any:
        from confluent_kafka import Consumer

        return Consumer(self._conf(**{"group.id": "matih-flink-reader", "enable.auto.commit": False,
                                      "enable.partition.eof": False, "fetch.max.bytes": MAX_MESSAGE,
                                      "auto.offset.reset": "earliest"}))

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.timeout_s)
            self._producer = None
        self._admin = None
