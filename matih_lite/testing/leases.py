"""The leases part of the metadata-slot contract (one replica of the service per platform-wide duty)."""

from __future__ import annotations

import threading
import uuid

import pytest

from matih_lite.contracts.leases import LeaseStore
from matih_lite.errors import InvalidInput


class LeaseStoreContract:
    """Cases for :class:`~matih_lite.contracts.leases.LeaseStore`; the ``store`` fixture is the metadata kit's."""

    def test_a_lease_is_held_by_one_holder_until_it_expires(self, store):
        assert isinstance(store, LeaseStore)
        name, t = f"duty-{uuid.uuid4().hex[:8]}", 1_000_000
        assert store.lease_holder(name, now=t) is None
        assert store.acquire_lease(name, "replica-a", 10_000, now=t)
        assert not store.acquire_lease(name, "replica-b", 10_000, now=t + 1)
        assert store.lease_holder(name, now=t + 9_999) == "replica-a"
        assert store.acquire_lease(name, "replica-a", 10_000, now=t + 5_000)  # renewed: now until t + 15,000
        assert not store.acquire_lease(name, "replica-b", 10_000, now=t + 12_000)
        assert store.acquire_lease(name, "replica-b", 10_000, now=t + 15_000)  # expired: another takes it
        assert store.lease_holder(name, now=t + 15_001) == "replica-b"
        assert not store.acquire_lease(name, "replica-a", 10_000, now=t + 16_000)

    def test_release_frees_a_lease_only_for_its_holder(self, store):
        name, t = f"duty-{uuid.uuid4().hex[:8]}", 2_000_000
        assert store.acquire_lease(name, "replica-a", 60_000, now=t)
        store.release_lease(name, "replica-b")  # not the holder: nothing happens
        assert store.lease_holder(name, now=t + 1) == "replica-a"
        store.release_lease(name, "replica-a")
        assert store.lease_holder(name, now=t + 1) is None
        assert store.acquire_lease(name, "replica-b", 60_000, now=t + 2)
        store.release_lease("never-taken", "replica-a")

    def test_leases_of_different_names_are_independent(self, store):
        t, suffix = 3_000_000, uuid.uuid4().hex[:8]
        assert store.acquire_lease(f"canary-{suffix}", "replica-a", 60_000, now=t)
        assert store.acquire_lease(f"drift-{suffix}", "replica-b", 60_000, now=t)
        assert store.lease_holder(f"canary-{suffix}", now=t) == "replica-a"
        assert store.lease_holder(f"drift-{suffix}", now=t) == "replica-b"

    def test_racing_holders_get_one_lease(self, store):
        name, t = f"duty-{uuid.uuid4().hex[:8]}", 4_000_000
        won: list[str] = []
        barrier = threading.Barrier(8)

        def contend(holder: str) -> None:
            barrier.wait()
            if store.acquire_lease(name, holder, 60_000, now=t):
                won.append(holder)

        threads = [threading.Thread(target=contend, args=(f"replica-{i}",)) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert len(won) == 1 and store.lease_holder(name, now=t) == won[0]

    @pytest.mark.parametrize("name, holder, ttl", [("", "a", 1000), ("d", "", 1000), ("d", "a", 0),
                                                   ("d", "a", -5), ("d", "a", 1.5), ("x" * 201, "a", 1000)])
    def test_bad_lease_arguments_are_refused(self, store, name, holder, ttl):
        with pytest.raises(InvalidInput):
            store.acquire_lease(name, holder, ttl)
