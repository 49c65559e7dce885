"""What the source folder remembers of its promotes: which target, and whether the copy was verified.

A promote writes ``<state folder>/promote/<target>.json`` before it copies anything (state
``copying``) and marks it ``verified`` only once every check passed. So a target left half-copied
is never taken for a finished one, and the next promote to it continues instead of refusing a
target that "holds other data".
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import msgspec


class Journal(msgspec.Struct):
    target_profile: str
    state: str = "copying"
    """``copying`` until verified; ``verified``; ``differs`` when a check failed."""
    slots: list[str] = []
    started_at: int = 0
    finished_at: int | None = None


def target_id(profile: str, selection: dict[str, Any]) -> str:
    """A name for a target that changes when its settings do, without holding them (DSNs hold passwords)."""
    text = json.dumps({"profile": profile, "slots": selection}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def journal_path(home: Path, ident: str) -> Path:
    return home / "promote" / f"{ident}.json"


def read_journal(home: Path, ident: str) -> Journal | None:
    path = journal_path(home, ident)
    try:
        return msgspec.json.decode(path.read_bytes(), type=Journal)
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def write_journal(home: Path, ident: str, journal: Journal) -> None:
    """Replace the journal atomically (a killed promote leaves the old one or the new one)."""
    path = journal_path(home, ident)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(journal))
    os.replace(tmp, path)


def now_ms() -> int:
    return int(time.time() * 1000)
