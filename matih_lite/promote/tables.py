"""The metadata slot copied table by table, and the copy verified by counts and checksums.

Tables are copied parents first, page by page; each page is one transaction on the target that
inserts the rows it does not hold and changes none it does. A run killed half-way leaves whole
pages behind, and the next run skips them (they match) and carries on: the result is that of one
uninterrupted run, and a second run over a finished copy inserts nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import msgspec

from matih_lite.contracts.transfer import Row, TableShape, TableTransfer
from matih_lite.errors import InvalidInput
from matih_lite.promote.checks import Check, PromoteRefused, SlotCopy

Progress = Callable[[str, int, int, int], None]
"""``progress(item, advanced, total, bytes)``: called as rows or files are copied."""

PAGE_ROWS = 5000
MASK = 0xFFFF_FFFF_FFFF_FFFF


def transfer_of(store: object, role: str) -> TableTransfer:
    """The table-level view of a metadata store, or InvalidInput naming the slot when it offers none."""
    if not isinstance(store, TableTransfer):
        raise InvalidInput(f"metadata: the {role} backend ({type(store).__name__}) cannot export or import "
                           "tables; promote copies between table-keeping metadata backends (sqlite, postgres)")
    return store


def held_rows(store: TableTransfer) -> dict[str, int]:
    """Row counts of the tables that hold any."""
    return {s.name: n for s in store.table_shapes() if (n := store.count_rows(s.name))}


def check_schemas(source: TableTransfer, target: TableTransfer) -> None:
    """Both sides at the same schema, so every table and column exists on both. Raises InvalidInput."""
    a, b = source.schema_version(), target.schema_version()
    if a.applied != b.applied:
        newer = "source" if a.applied > b.applied else "target"
        raise InvalidInput(f"metadata: the source schema is at version {a.applied} and the target at {b.applied}; "
                           f"run 'matih-lite migrate' on the profile that is behind the {newer}")
    mine = {s.name: s.columns for s in source.table_shapes()}
    theirs = {s.name: s.columns for s in target.table_shapes()}
    for table, columns in mine.items():
        if theirs.get(table) != columns:
            raise InvalidInput(f"metadata: table {table} differs between source and target "
                               f"({columns} vs {theirs.get(table)}); both must be at one schema version")


def copy_tables(source: TableTransfer, target: TableTransfer, *, progress: Progress | None = None,
                page_rows: int | None = None, digests: dict[str, tuple[int, str]] | None = None) -> SlotCopy:
    """Copy every table; raises PromoteRefused naming the table and keys when the target holds other values.

    ``digests`` receives each source table's (rows, checksum), worked out from the rows the copy reads
    anyway, so verification reads only the target.
    """
    done = SlotCopy(slot="metadata")
    for shape in source.table_shapes():
        total = source.count_rows(shape.name)
        n, checksum = 0, 0
        for rows in _pages(source, shape, page_rows):
            n += len(rows)
            checksum = (checksum + sum(map(row_checksum, rows))) & MASK
            match = target.insert_rows(shape.name, rows)
            if match.different:
                keys = ", ".join(_key_text(k) for k in match.different[:5])
                more = f" and {len(match.different) - 5} more" if len(match.different) > 5 else ""
                raise PromoteRefused(f"metadata: table {shape.name} in the target holds other values for "
                               f"{'/'.join(shape.order)} {keys}{more}; it is not a copy of this source")
            done.items += match.absent
            done.skipped += match.equal
            if progress is not None:
                progress(shape.name, len(rows), total, 0)
        if digests is not None:
            digests[shape.name] = (n, f"{checksum:016x}")
    target.finish_import()
    return done


def _pages(store: TableTransfer, shape: TableShape, page_rows: int | None) -> Iterator[list[Row]]:
    after = None
    page_rows = page_rows or PAGE_ROWS
    while True:
        page = store.read_rows(shape.name, after=after, limit=page_rows)
        if page.rows:
            yield page.rows
        if page.after is None:
            return
        after = page.after


def _key_text(key: Row) -> str:
    return "(" + ", ".join(map(str, key)) + ")" if len(key) > 1 else str(key[0])


def row_checksum(row: Row) -> int:
    """A 64-bit hash of a row that is the same for the same values on every engine.

    The row is written as JSON (floats in their shortest exact form; NaN, which JSON lacks, as a marker
    string that no stored text holds) and hashed once.
    """
    if any(v != v for v in row):  # only NaN is unequal to itself
        row = tuple(NAN if v != v else v for v in row)
    return int.from_bytes(hashlib.blake2b(_encode(row), digest_size=8).digest(), "big")


NAN = "\x00NaN\x00"
_encode = msgspec.json.Encoder().encode


def table_digest(store: TableTransfer, shape: TableShape, page_rows: int | None = None) -> tuple[int, str]:
    """(rows, checksum): the checksum is the sum of the rows' hashes mod 2**64, so order does not matter."""
    n, total = 0, 0
    for rows in _pages(store, shape, page_rows):
        n += len(rows)
        total = (total + sum(map(row_checksum, rows))) & MASK
    return n, f"{total:016x}"


def verify_tables(source: TableTransfer, target: TableTransfer, *, merge: bool = False,
                  progress: Progress | None = None, page_rows: int | None = None,
                  digests: dict[str, tuple[int, str]] | None = None) -> list[Check]:
    """One check per table: rows and checksum on both sides equal.

    ``digests`` holds source digests worked out already (by the copy); the others are read here, the
    source's beside the target's. With ``merge`` the target may hold more: then every source row must
    be in it, equal.
    """
    checks: list[Check] = []
    known = dict(digests or {})
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="promote-verify") as pool:
        for shape in source.table_shapes():
            checks.append(_verify_table(pool, source, target, shape, merge, known.get(shape.name), page_rows))
            if progress is not None:
                progress("verify", 1, len(source.table_shapes()), 0)
    return checks


def _verify_table(pool: ThreadPoolExecutor, source: TableTransfer, target: TableTransfer, shape: TableShape,
                  merge: bool, known: tuple[int, str] | None, page_rows: int | None) -> Check:
    theirs_future = None if merge else pool.submit(table_digest, target, shape, page_rows)
    n, digest = known if known is not None else table_digest(source, shape, page_rows)
    if merge:
        absent = different = 0
        for rows in _pages(source, shape, page_rows):
            match = target.match_rows(shape.name, rows)
            absent += match.absent
            different += len(match.different)
        ok = absent == 0 and different == 0
        held = target.count_rows(shape.name)
        return Check(slot="metadata", item=shape.name, source=f"{n} rows {digest}", target=f"{held} rows",
                     ok=ok, detail="" if ok else f"{absent} rows missing, {different} keys with other values")
    assert theirs_future is not None
    m, theirs = theirs_future.result()
    ok = (n, digest) == (m, theirs)
    detail = "" if ok else (f"{m - n:+d} rows" if n != m else "same count, different values")
    return Check(slot="metadata", item=shape.name, source=f"{n} rows {digest}", target=f"{m} rows {theirs}",
                 ok=ok, detail=detail)
