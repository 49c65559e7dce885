"""The small shared types of the events contract (:class:`~matih_lite.contracts.EventStore`).

Every events backend names streams by :data:`STREAM_NAME`, returns :class:`EventRecord`, and
derives the columns of :meth:`EventStore.scan` with :func:`record_columns`, so a window reads
the same from DuckDB as from Kafka.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from numbers import Real
from typing import Any

import msgspec

STREAM_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
"""Stream (topic) names: Kafka's rule, so a stream keeps its name on the cluster backend."""

RESERVED_COLUMNS = ("_offset", "timestamp")
"""The columns every :meth:`EventStore.scan` table starts with; record fields of these names get no other."""


class EventRecord(msgspec.Struct, frozen=True):
    """One stored record: its offset in the stream, its timestamp (ms) and the record as appended."""

    offset: int
    timestamp: int
    data: dict[str, Any]


def record_columns(record: Mapping[str, Any]) -> dict[str, Any]:
    """The columns :meth:`EventStore.scan` gives a record: its scalar fields (``name``) and the
    scalar fields of its object fields (``name.key``), ``timestamp`` and ``_offset`` left out.

    A column's type is that of the first value a stream gives it: ``bool``, ``float64`` (every
    number) or ``string``; a later value of another type is null in the column (the record
    keeps it). Lists, deeper objects and nulls get no column.
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        kind = type(value)
        if kind is dict or (kind not in _SCALARS and isinstance(value, Mapping)):
            for sub, item in value.items():
                if type(item) in _SCALARS or (item is not None and isinstance(item, (str, Real))):
                    out[f"{key}.{sub}"] = item
        elif (kind in _SCALARS or (value is not None and isinstance(value, (str, Real)))) \
                and key not in RESERVED_COLUMNS:
            out[key] = value
    return out


_SCALARS = frozenset((float, int, str, bool))  # exact types first: an ABC check costs ~1 us a value


def unflatten(columns: Mapping[str, Any]) -> dict[str, Any]:
    """The record a row of columns stands for (the inverse of :func:`record_columns`): ``a.b`` becomes
    ``{"a": {"b": ...}}`` and nulls are left out. How a row appended as a table reads back."""
    out: dict[str, Any] = {}
    for name, value in columns.items():
        if value is None:
            continue
        head, dot, rest = name.partition(".")
        if dot:
            nested = out.get(head)
            if not isinstance(nested, dict):
                nested = out[head] = {}
            nested[rest] = value
        else:
            out[name] = value
    return out
