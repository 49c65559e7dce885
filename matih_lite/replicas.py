"""Several replicas of the service over one platform: who this process is, and the duties run once.

The core keeps no state outside the slots, so any number of ``matih-lite up`` processes over the
same metadata, artifacts and events stores serve one platform. What must happen once per
platform rather than once per process (judging canaries, the in-process drift runner) is a
:class:`Duty`: a lease in the metadata store (:class:`~matih_lite.contracts.leases.LeaseStore`)
that one replica holds and renews on each of its ticks. When that replica stops, another takes
the lease once it expired (``ttl_ms``), or at once when the holder released it on shutdown.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any

from matih_lite.errors import MatihError

log = logging.getLogger("matih_lite.replicas")

_REPLICA = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

DUTY_TTL_MS = 15_000
"""How long a duty's lease outlives its holder's last tick (the holder renews it every tick)."""


def replica_id() -> str:
    """This process as a lease holder: host name, process id and a random suffix (pids are reused)."""
    return _REPLICA


class Duty:
    """One platform-wide duty this process takes part in: :meth:`held` says whether to do it now.

    ``Duty(host.metadata, "canary-judge")``; call :meth:`held` at each tick (it takes or renews the
    lease), :meth:`release` when the process stops. A metadata store that cannot be reached holds no
    duty (the tick is skipped, the reason logged once per outage).
    """

    def __init__(self, metadata: Any, name: str, *, ttl_ms: int = DUTY_TTL_MS, holder: str | None = None) -> None:
        self.metadata = metadata
        self.name = name
        self.ttl_ms = int(ttl_ms)
        self.holder = holder or replica_id()
        self._held = False
        self._lock = threading.Lock()
        self._failing = False
        self.just_taken = False
        """Whether the last :meth:`held` took the lease rather than renewed it: what this replica cached about
        the duty while another held it may be stale."""
        self.stats: dict[str, int] = {"ticks_held": 0, "ticks_skipped": 0, "taken": 0}

    def held(self) -> bool:
        """Take or renew the lease; True while this replica holds it (False: another does, or no store)."""
        with self._lock:
            acquire = getattr(self.metadata, "acquire_lease", None)
            if acquire is None:  # a metadata backend without leases serves one replica: the duty is its own
                self.just_taken = not self._held
                self._held = True
                self.stats["ticks_held"] += 1
                return True
            try:
                held = bool(acquire(self.name, self.holder, self.ttl_ms))
            except MatihError as exc:
                if not self._failing:
                    log.warning("duty %s: the metadata store did not answer (%s); skipped until it does", self.name,
                                exc.message)
                self._failing = True
                held = False
            else:
                self._failing = False
            self.just_taken = held and not self._held
            if self.just_taken:
                self.stats["taken"] += 1
                log.info("duty %s: this replica (%s) holds it now", self.name, self.holder)
            self._held = held
            self.stats["ticks_held" if held else "ticks_skipped"] += 1
            return held

    def release(self) -> None:
        """Give the lease up (if held) so another replica takes it at its next tick."""
        with self._lock:
            if not self._held or getattr(self.metadata, "release_lease", None) is None:
                return
            self._held = False
            try:
                self.metadata.release_lease(self.name, self.holder)
            except MatihError as exc:
                log.warning("duty %s: releasing the lease failed (%s); it expires in %d ms", self.name, exc.message,
                            self.ttl_ms)

    def describe(self) -> dict[str, Any]:
        """The duty as the service reports it: its lease, who holds it, whether this replica does."""
        try:
            holder = self.metadata.lease_holder(self.name) if hasattr(self.metadata, "lease_holder") else self.holder
        except MatihError as exc:
            holder, error = None, exc.message
        else:
            error = None
        out = {"lease": self.name, "holder": holder, "this_replica": self.holder, "held_here": holder == self.holder,
               **self.stats}
        if error:
            out["error"] = error
        return out
