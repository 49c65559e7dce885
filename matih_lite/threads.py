"""Background threads that yield the CPU to the threads serving requests."""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger("matih_lite.threads")

BACKGROUND_NICE = 10
"""How much lower than the service's own threads the background threads run (a nice increment)."""


def lower_priority(increment: int = BACKGROUND_NICE) -> bool:
    """Lower the OS scheduling priority of the calling thread (Linux: a thread has its own nice value).

    For threads whose work can wait (writing the inference log, drift checks): when every core is
    busy, the scheduler then lets the event loop finish the request in hand before giving such a
    thread its turn, instead of splitting the core with it in slices of milliseconds. A thread that
    holds the GIL while it waits for the CPU does not keep the loop waiting long: the loop, blocked
    on the GIL, frees its core for it. Returns False where threads have no priority of their own.
    """
    native = getattr(threading, "get_native_id", None)
    if native is None or not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return False
    try:
        tid = native()
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + increment, 19))
    except OSError as exc:  # not allowed here (a container's policy): run at the normal priority
        log.debug("cannot lower the priority of thread %s: %s", threading.current_thread().name, exc)
        return False
    return True
