"""What a promote verified: one line per thing compared, equal or not."""

from __future__ import annotations

import msgspec

from matih_lite.errors import Conflict


class PromoteRefused(Conflict):
    """A promote that must not start or go on: the target holds other data, or a backend cannot be reached."""

    exit_code = 2


class Check(msgspec.Struct):
    """One comparison of the source and the target."""

    slot: str
    item: str
    """What was compared: a table, an artifact prefix, a query."""
    source: str
    target: str
    ok: bool
    detail: str = ""


class SlotCopy(msgspec.Struct):
    """What copying one slot did."""

    slot: str
    items: int = 0
    """Rows or files written to the target."""
    skipped: int = 0
    """Rows or files the target held already, equal."""
    bytes: int = 0
