"""The events slot copied stream by stream through :class:`~matih_lite.contracts.EventStore`.

Every stream of the source (listed by its :class:`~matih_lite.contracts.transfer.StreamCatalog`) is
appended to the target from the target's end offset on, so the offsets stay those of the source
when the target stream starts empty, and a resumed copy carries on where the last append ended.
Then every consumer group's committed offset is committed on the target. Verification compares
each stream's length and its last record, and each group's offset.

A target that deals a stream over several partitions (a Kafka topic with more than one) is refused
before anything is copied (:func:`check_layouts`): an uninterrupted copy into one keeps the offsets,
but a copy stopped in the middle of an append leaves some partitions ahead of others, a state no later
run can continue exactly (Kafka cannot take a record back), so the copy would not be resumable.
"""

from __future__ import annotations

from typing import Any

from matih_lite.contracts.transfer import PartitionedStreams, StreamCatalog
from matih_lite.errors import InvalidInput
from matih_lite.promote.checks import Check, PromoteRefused, SlotCopy
from matih_lite.promote.tables import Progress

PAGE_RECORDS = 5000


def catalog_of(store: Any) -> StreamCatalog:
    if not isinstance(store, StreamCatalog):
        raise InvalidInput(f"events: the source backend ({type(store).__name__}) cannot list its streams; "
                           "promote copies events from the duckdb backend")
    return store


def held_streams(source: StreamCatalog, target: Any) -> dict[str, int]:
    """Records the target holds in the streams the source has."""
    return {s: n for s in source.list_streams() if (n := target.end_offset(s))}


def check_layouts(source: StreamCatalog, target: Any, profile: str) -> None:
    """Raises PromoteRefused naming the first stream of the source that the target would spread over
    several partitions (its topic and what to do); nothing has been copied then."""
    if not isinstance(target, PartitionedStreams):
        return
    for stream in source.list_streams():
        layout = target.stream_layout(stream)
        if layout.partitions > 1:
            raise PromoteRefused(
                f"events: stream {stream} goes to {layout.location}, which has {layout.partitions} partitions on "
                f"the target; promote keeps a stream's offsets only in a one-partition topic: delete that topic "
                f"(or give profiles.{profile}.events partitions = 1 for topics it creates) and run promote again")


def copy_streams(source: Any, target: Any, *, progress: Progress | None = None) -> SlotCopy:
    """Append to each target stream what it lacks of the source's, then commit every group's offset."""
    done = SlotCopy(slot="events")
    catalog = catalog_of(source)
    for stream in catalog.list_streams():
        end = source.end_offset(stream)
        offset = target.end_offset(stream)
        if offset > end:
            raise PromoteRefused(f"events: stream {stream} holds {offset} records in the target and {end} in the "
                                 "source; it is not a copy of this source")
        done.skipped += offset
        while offset < end:
            records = source.read_from(stream, offset, PAGE_RECORDS)
            if not records:
                break
            first = target.append(stream, [r.data for r in records])
            if first != records[0].offset:
                raise PromoteRefused(f"events: stream {stream}'s records got offsets from {first} on in the target, "
                                     f"expected {records[0].offset}; the target stream holds other records")
            offset = records[-1].offset + 1
            done.items += len(records)
            if progress is not None:
                progress(f"events {stream}", len(records), end, 0)
    for entry in catalog.consumer_groups():
        if target.committed(entry.group, entry.stream) != entry.offset:
            target.commit(entry.group, entry.stream, entry.offset)
    return done


def verify_streams(source: Any, target: Any) -> list[Check]:
    """Per stream its length and last record, per consumer group its committed offset."""
    catalog = catalog_of(source)
    checks: list[Check] = []
    for stream in catalog.list_streams():
        mine, theirs = source.end_offset(stream), target.end_offset(stream)
        last_mine = source.read_from(stream, mine - 1, 1) if mine else []
        last_theirs = target.read_from(stream, mine - 1, 1) if mine else []
        same_last = [(r.offset, r.data) for r in last_mine] == [(r.offset, r.data) for r in last_theirs]
        ok = mine == theirs and same_last
        detail = "" if ok else (f"{theirs - mine:+d} records" if mine != theirs else "last record differs")
        checks.append(Check(slot="events", item=f"stream {stream}", source=f"{mine} records",
                            target=f"{theirs} records", ok=ok, detail=detail))
    for entry in catalog.consumer_groups():
        held = target.committed(entry.group, entry.stream)
        checks.append(Check(slot="events", item=f"group {entry.group} on {entry.stream}",
                            source=f"offset {entry.offset}", target=f"offset {held}", ok=held == entry.offset,
                            detail="" if held == entry.offset else "committed offset differs"))
    return checks
