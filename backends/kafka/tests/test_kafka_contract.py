"""matih-kafka passes the events contract kit unchanged, on one partition and on three.

A test that reopens the store (a restart) gets a producer sending one record per batch, so the new
store's view of the stream's end, tansu's high watermark, is exact (tansu's fault 2; see
:mod:`matih_lite.testing.tansu`). The others run with the producer's usual batching.
"""

from __future__ import annotations

import pytest
from kafka_helpers import kafka_store

from matih_lite.testing import EventStoreContract


class TestKafkaEvents(EventStoreContract):
    partitions = 1

    @pytest.fixture
    def store(self, tansu, prefix, request):
        s = kafka_store(tansu, prefix, partitions=self.partitions,
                        exact_end_offsets="reopen" in request.fixturenames)
        yield s
        s.close()

    @pytest.fixture
    def reopen(self, store, tansu, prefix):
        def again():
            store.close()
            return kafka_store(tansu, prefix, partitions=self.partitions, exact_end_offsets=True)
        return again


@pytest.mark.slow
class TestKafkaEventsOnThreePartitions(TestKafkaEvents):
    """Offsets dealt round-robin over three partitions read back exactly as on one."""

    partitions = 3
