"""matih-kafka: the Kafka events backend for matih-lite (``events = { backend = "kafka", bootstrap_servers = "..." }``).

One topic per stream, created on first append; JSON records; offsets, time windows, Arrow scans
and consumer-group commits as :class:`matih_lite.contracts.EventStore` defines them. See
:mod:`matih_kafka.store` for how stream offsets map onto partitions.
"""

from matih_kafka.plugin import KafkaEventsSettings, create_store

__all__ = ["KafkaEventsSettings", "create_store"]
__version__ = "0.1.0"
