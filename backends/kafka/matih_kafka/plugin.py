"""``events = { backend = "kafka", bootstrap_servers = "kafka:9092", ... }``: the events slot in Kafka.

The settings are validated without importing confluent-kafka; the client library loads when the
store first talks to the brokers (:mod:`matih_kafka.store`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from matih_lite.contracts import BackendContext
from matih_lite.hookspecs import hookimpl

ClientValue = str | int | float | bool

_PREFIX = re.compile(r"^[A-Za-z0-9._-]{0,200}$")
FIXED_PRODUCER = {"enable.idempotence": True, "acks": "all"}
"""What every producer of this backend uses, whatever the settings say: the contract's appends are
acknowledged only once every in-sync replica has them, and a retried batch is never written twice."""
OWNED_KEYS = frozenset({"bootstrap.servers", "group.id", "enable.auto.commit", "enable.partition.eof",
                        "on_delivery", "error_cb", "logger", *FIXED_PRODUCER})


class KafkaEventsSettings(msgspec.Struct, forbid_unknown_fields=True):
    bootstrap_servers: str
    """Comma-separated ``host:port`` list of brokers to bootstrap from."""
    topic_prefix: str = ""
    """Put before every stream's name to make its topic (and before every consumer group's name), so
    several installations can share one cluster: ``"ml-prod."`` makes stream ``inference.churn``
    the topic ``ml-prod.inference.churn``."""
    partitions: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1
    """Partitions of each topic this backend creates. One keeps a stream totally ordered whoever
    writes it; more spread a stream over brokers (see :mod:`matih_kafka.store` for the offsets)."""
    replication_factor: Annotated[int, msgspec.Meta(ge=-1)] = -1
    """Replicas of each topic this backend creates; -1 takes the brokers' ``default.replication.factor``."""
    topic_config: dict[str, str] = {}
    """Topic-level configs for the topics it creates, e.g. ``{ "retention.ms" = "604800000" }``."""
    max_lateness_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """How much later than newer records a record may arrive and still be found by a time window
    (``read``, ``scan``, the drift windows). Kafka keeps a stream in the order it was written, not in
    time order, so without a bound a window reads from its start to the end of the stream (exact, but
    a window of yesterday reads everything since); with one, it stops at the first record
    ``max_lateness_ms`` past the window's end. The inference log writes records within seconds of
    their time: an hour is a safe bound for its streams."""
    timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=600_000)] = 10_000
    """How long an append, read or commit waits for the brokers before it fails with a StoreError
    (and the producer's ``message.timeout.ms``: an append that failed is not written later)."""
    client: dict[str, ClientValue] = {}
    """librdkafka settings for every client (``security.protocol``, ``sasl.username``, ``ssl.ca.location``...)."""
    producer: dict[str, ClientValue] = {}
    """librdkafka settings for the producer (``linger.ms``, ``compression.type``...);
    ``enable.idempotence`` and ``acks`` are always ``true`` and ``all``."""
    consumer: dict[str, ClientValue] = {}
    """librdkafka settings for the readers (``fetch.max.bytes``...)."""
    client_id: str = "matih-lite"

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ValueError("bootstrap_servers is empty: give host:port of at least one broker")
        if not _PREFIX.match(self.topic_prefix):
            raise ValueError(f"topic_prefix {self.topic_prefix!r} cannot start a topic name: at most 200 letters, "
                             "digits, '.', '_' or '-'")
        if self.replication_factor == 0:
            raise ValueError("replication_factor must be >= 1, or -1 for the brokers' default")
        for section in ("client", "producer", "consumer"):
            owned = sorted(k for k in getattr(self, section) if k in OWNED_KEYS)
            if owned:
                raise ValueError(f"{section}: {', '.join(owned)} cannot be set: the backend sets "
                                 f"{'it' if len(owned) == 1 else 'them'} itself (producers always use "
                                 "enable.idempotence=true and acks=all)")


def create_store(settings: KafkaEventsSettings, context: BackendContext | None = None) -> Any:
    """The store; nothing connects until it is first used."""
    from matih_kafka.store import KafkaEventStore

    return KafkaEventStore(settings)


@hookimpl
def register_backends(register):
    register("events", "kafka", create_store, settings=KafkaEventsSettings,
             summary="one Kafka topic per stream (confluent-kafka, idempotent producer, acks=all)")
