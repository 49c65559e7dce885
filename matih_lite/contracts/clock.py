"""The platform's one clock: every stored time is integer milliseconds since the epoch (UTC)."""

from __future__ import annotations

import time

from matih_lite.errors import InvalidInput


def now_ms() -> int:
    """Milliseconds since the epoch, now."""
    return int(time.time() * 1000)


MAX_MS = 253_402_300_799_999
"""The last millisecond a stored time may name (9999-12-31T23:59:59.999Z): past it no calendar (Python's
``datetime``, OpenLineage's ISO times, the UI's dates) can show the time, so a time beyond it is refused."""


def check_ms(value: int | None, name: str) -> int | None:
    """``value`` (milliseconds since the epoch, or None) if a stored time may hold it; InvalidInput otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MS:
        raise InvalidInput(f"{name} must be milliseconds since the epoch, from 0 to {MAX_MS} (the year 9999), "
                           f"got {value!r}", detail={"field": name})
    return value
