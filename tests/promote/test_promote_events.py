"""promote copies the events slot from DuckDB to Kafka (a real tansu broker): offsets and group commits kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from promote_kit import fill, open_host

from matih_lite.config import load_config
from matih_lite.promote.checks import PromoteRefused
from matih_lite.promote.promotion import promote
from matih_lite.promote.tables import held_rows
from matih_lite.testing.processes import engine_missing
from matih_lite.testing.tansu import EXACT_END_OFFSETS, FAST_GROUP_JOIN, Tansu, tansu_binary

pytestmark = pytest.mark.postgres


@pytest.fixture
def broker(tmp_path):
    """A tansu broker of this test."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        engine_missing("confluent-kafka is not installed; pip install -e backends/kafka")
    if tansu_binary() is None:
        engine_missing("the tansu broker is missing; pip install -e 'backends/kafka[test]'")
    started = Tansu(tmp_path / "tansu").start()
    try:
        yield started
    finally:
        started.stop()


def _events_on(folder, broker, **settings):
    # tansu reports a stream's end exactly only with one record per batch (its fault, not Kafka's)
    events = broker.events_toml(producer=EXACT_END_OFFSETS, consumer=FAST_GROUP_JOIN, timeout_ms=60_000, **settings)
    with (folder / "matih.toml").open("a") as f:
        f.write(f"events = {events}\n")
    return folder


@pytest.fixture
def kafka_folder(folder, broker):
    """The folder's cluster profile with its events on a tansu broker of this test."""
    return _events_on(folder, broker)


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
        assert list((lite.config.home / "promote").glob("*.json"))  # where the refused ones must leave none
    finally:
        lite.close()
        cluster.close()


def _lite_events(folder):
    lite = open_host(folder, "lite")
    try:
        fill(lite.metadata, lite.artifacts, runs=2, points=5)
        events = lite.backend("events")
        events.append("inference.churn", [{"timestamp": 1000 + i, "x": i} for i in range(30)])
        events.commit("drift", "inference.churn", 20)
    finally:
        lite.close()


def test_a_target_that_would_make_several_partitions_is_refused_before_anything_is_copied(folder, broker):
    _events_on(folder, broker, partitions=3)
    _lite_events(folder)
    r = subprocess.run([sys.executable, "-m", "matih_lite", "promote", "--to", "cluster"], cwd=folder,
                       capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    line = " ".join(r.stderr.split())
    assert ("events: stream inference.churn goes to topic 'inference.churn', which has 3 partitions on the target"
            in line) and "partitions = 1" in line
    cluster = open_host(folder, "cluster")
    try:
        assert held_rows(cluster.metadata) == {}  # the metadata slot, copied before the events, was not either
        assert cluster.backend("events").stream_layout("inference.churn").partitions == 3
        assert cluster.backend("events").end_offset("inference.churn") == 0
    finally:
        cluster.close()
    assert not list((load_config(str(folder / "matih.toml")).home / "promote").glob("*.json"))  # no journal


def test_an_existing_topic_with_several_partitions_is_refused_by_name(folder, broker):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic("inference.churn", num_partitions=2, replication_factor=1)])["inference.churn"] \
        .result(timeout=30)
    _events_on(folder, broker)  # the backend itself would make one-partition topics
    _lite_events(folder)
    lite, cluster = open_host(folder, "lite"), open_host(folder, "cluster")
    try:
        with pytest.raises(PromoteRefused, match="stream inference.churn goes to topic 'inference.churn', which "
                                                 "has 2 partitions on the target"):
            promote(lite, cluster, only=["events"], dry_run=True)
        with pytest.raises(PromoteRefused, match="which has 2 partitions"):
            promote(lite, cluster, only=["events"])
        assert cluster.backend("events").end_offset("inference.churn") == 0
    finally:
        lite.close()
        cluster.close()
