"""The platform's one clock: every stored time is integer milliseconds since the epoch (UTC)."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch, now."""
    return int(time.time() * 1000)
