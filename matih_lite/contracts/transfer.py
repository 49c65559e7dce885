"""Table-level export and import of the metadata slot, for ``matih-lite promote`` (lite to cluster).

A metadata backend that keeps its records in tables offers these primitives; the promote domain
copies every table through them, page by page, and verifies the copy (row counts, an
order-independent checksum, and queries asked through the ordinary metadata contract).

Rows are tuples in :attr:`TableShape.columns` order, holding only ``None``, ``int``, ``float`` and
``str``. A table with a primary key is paged by that key; a table without one (a metric series)
is paged by whole groups of :attr:`TableShape.group` (its parent's key), so that a group is always
written in one transaction and a resumed copy never holds half of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

Row = tuple[Any, ...]


class TableShape(msgspec.Struct, frozen=True):
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...] = ()
    """The primary key's columns; empty for a table without one."""
    group: str | None = None
    """For a table without a key: the column whose value groups rows (written group by group)."""

    @property
    def order(self) -> tuple[str, ...]:
        """The columns a page is ordered and continued by."""
        return self.key or ((self.group,) if self.group else self.columns)

    def cursor_of(self, row: Row) -> Row:
        """The values of :attr:`order` in ``row``."""
        return tuple(row[self.columns.index(c)] for c in self.order)


class SchemaVersion(msgspec.Struct, frozen=True):
    applied: int
    """The newest migration the database holds (0 when empty)."""
    current: int
    """The newest this version of the code knows; a database ahead of it was written by a newer one."""


class RowPage(msgspec.Struct, frozen=True):
    rows: list[Row]
    after: Row | None
    """Pass back as ``after`` for the next page; None once the table is read to its end."""


class RowMatch(msgspec.Struct, frozen=True):
    """How rows compare with what a table holds: by key, or group by group for a keyless table."""

    absent: int = 0
    """Rows (of a keyless table: rows of groups) the table does not hold."""
    equal: int = 0
    different: list[Row] = []
    """The keys (or group values) held with other values."""


@runtime_checkable
class TableTransfer(Protocol):
    def schema_version(self) -> SchemaVersion:
        """The newest migration applied, and the newest this code knows."""

    def table_shapes(self) -> Sequence[TableShape]:
        """Every table of records, parents before the tables that refer to them (the schema's history left out)."""

    def count_rows(self, table: str) -> int:
        """Rows in ``table``. Raises InvalidInput for a table not among :meth:`table_shapes`."""

    def read_rows(self, table: str, *, after: Row | None = None, limit: int = 5000) -> RowPage:
        """Up to about ``limit`` rows past ``after`` in :attr:`TableShape.order` (whole groups when keyless)."""

    def match_rows(self, table: str, rows: Sequence[Row]) -> RowMatch:
        """Compare rows (whole groups when keyless) with those held; changes nothing."""

    def insert_rows(self, table: str, rows: Sequence[Row]) -> RowMatch:
        """Insert the absent rows (or groups) in one transaction; rows held already are left as they are.

        Returns the match found before inserting: ``absent`` is how many were inserted. Nothing is
        inserted when any row is held with other values (they come back in ``different``).
        """

    def finish_import(self) -> None:
        """After rows were inserted with their own ids: move id generators past the largest id held."""


class GroupOffset(msgspec.Struct, frozen=True):
    group: str
    stream: str
    offset: int
    """The next offset the group reads (Kafka's convention)."""


@runtime_checkable
class StreamCatalog(Protocol):
    """What an events backend holds, for ``promote`` to copy every stream and every consumer group's place."""

    def list_streams(self) -> list[str]:
        """Every stream that holds a record, by name."""

    def consumer_groups(self) -> list[GroupOffset]:
        """Every committed offset, by group then stream."""


class StreamLayout(msgspec.Struct, frozen=True):
    """Where an events backend keeps one stream, and over how many partitions its records are dealt."""

    location: str
    """The stream's place in the store as its operators name it (a Kafka topic: ``topic 'inference.churn'``)."""
    partitions: int
    """1 for one ordered log; counts the partitions a first append would create when the stream does not exist."""


@runtime_checkable
class PartitionedStreams(Protocol):
    """An events backend that may spread a stream over partitions, for ``promote`` to check before it copies."""

    def stream_layout(self, stream: str) -> StreamLayout:
        """Where ``stream`` lives (or would, at its first append). Raises StoreError."""


@runtime_checkable
class OnlineCatalog(Protocol):
    """What a features backend's online store holds, for ``promote`` to copy it row by row."""

    def online_rows(self, definitions: Any, view: str) -> Any:
        """Every stored row of ``view`` as a ``pyarrow.Table``: its join keys, the source's timestamp field
        (and created field, when it has one) and the features, as ``write_online`` takes them."""
