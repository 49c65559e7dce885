"""The leases part of the metadata slot: which replica of the service runs a platform-wide duty.

Several ``matih-lite up`` processes over one metadata store share its work; the duties that must
run once per platform (the canary judge, the in-process drift runner) go to whichever replica
holds the duty's lease. A holder renews its lease well inside ``ttl_ms``; when it stops (or
dies), another replica takes the lease once it expired. Lease names are not tenant-scoped: a
duty covers every tenant. Times are the store's caller's clock, in milliseconds.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class LeaseStore(Protocol):
    def acquire_lease(self, name: str, holder: str, ttl_ms: int, *, now: int | None = None) -> bool:
        """Take or renew lease ``name`` for ``holder`` until ``now + ttl_ms``; False while another holds it
        unexpired. Atomic across processes. Raises StoreError."""
        ...

    def release_lease(self, name: str, holder: str) -> None:
        """Give lease ``name`` up if ``holder`` holds it (others may take it at once); else nothing."""
        ...

    def lease_holder(self, name: str, *, now: int | None = None) -> str | None:
        """Who holds lease ``name`` unexpired at ``now``, or None."""
        ...
