"""promote copies the events slot from DuckDB to Kafka (a real tansu broker): offsets and group commits kept."""

from __future__ import annotations

import pytest
from promote_kit import open_host

from matih_lite.promote.promotion import promote
from matih_lite.testing.processes import engine_missing
from matih_lite.testing.tansu import EXACT_END_OFFSETS, FAST_GROUP_JOIN, Tansu, tansu_binary

pytestmark = pytest.mark.postgres


@pytest.fixture
def kafka_folder(folder, tmp_path):
    """The folder's cluster profile with its events on a tansu broker of this test."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        engine_missing("confluent-kafka is not installed; pip install -e backends/kafka")
    if tansu_binary() is None:
        engine_missing("the tansu broker is missing; pip install -e 'backends/kafka[test]'")
    broker = Tansu(tmp_path / "tansu").start()
    try:
        # tansu reports a stream's end exactly only with one record per batch (its fault, not Kafka's)
        events = broker.events_toml(producer=EXACT_END_OFFSETS, consumer=FAST_GROUP_JOIN, timeout_ms=60_000)
        with (folder / "matih.toml").open("a") as f:
            f.write(f"events = {events}\n")
        yield folder
    finally:
        broker.stop()


def test_streams_arrive_with_their_offsets_and_consumer_commits_and_a_rerun_appends_nothing(kafka_folder):
    folder = kafka_folder
    lite, cluster = open_host(folder, "lite"), open_host(folder, "cluster")
    try:
        events = lite.backend("events")
        events.append("inference.churn", [{"timestamp": 1000 + i, "x": i / 3, "label": f"c{i % 2}"}
                                          for i in range(120)])
        events.append("platform", [{"timestamp": 5, "type": "model.registered", "name": "churn"}])
        events.commit("drift", "inference.churn", 100)
        outcome = promote(lite, cluster, only=["events"])
        assert outcome.ok, [c for c in outcome.checks if not c.ok]
        items = {c.item: c for c in outcome.checks}
        assert items["stream inference.churn"].target == "120 records"
        assert items["group drift on inference.churn"].target == "offset 100"
        kafka = cluster.backend("events")
        [last] = kafka.read_from("inference.churn", 119, 1)
        assert last.offset == 119 and last.data["x"] == 119 / 3 and last.data["label"] == "c1"
        again = promote(lite, cluster, only=["events"])
        assert again.ok and {c.slot: c.items for c in again.copied} == {"events": 0}
    finally:
        lite.close()
        cluster.close()
