"""One promote: refuse what must be refused, copy each slot, verify everything, remember the outcome."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.errors import InvalidInput, MatihError
from matih_lite.promote import files, journal, online, queries, streams, tables
from matih_lite.promote.checks import Check, PromoteRefused, SlotCopy
from matih_lite.promote.tables import Progress

if TYPE_CHECKING:
    from matih_lite.host import Host


COPIED_SLOTS: tuple[str, ...] = ("metadata", "artifacts", "events", "features")
"""The slots promote copies today, in the order it copies them."""

NOT_YET: dict[str, str] = {}
"""Slots promote does not copy (yet), with why."""


class Outcome(msgspec.Struct):
    source_profile: str
    target_profile: str
    slots: list[str]
    dry_run: bool
    resumed: bool
    copied: list[SlotCopy]
    checks: list[Check]
    held: dict[str, dict[str, int]] = {}
    """With ``dry_run``: what each slot of the source holds (rows per table, files)."""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def choose_slots(only: Sequence[str] | None, source: Any = None, target: Any = None) -> list[str]:
    """The slots to copy, in copy order: those named, or every copyable slot the two profiles fill with
    different backends or settings. Raises InvalidInput for an unknown or uncopyable one."""
    if not only:
        if source is None or target is None:
            return list(COPIED_SLOTS)
        return [s for s in COPIED_SLOTS if _settings(source, s) != _settings(target, s)]
    chosen = []
    for slot in only:
        if slot in NOT_YET:
            raise InvalidInput(f"--only {slot}: {NOT_YET[slot]}; copyable: {', '.join(COPIED_SLOTS)}")
        if slot not in COPIED_SLOTS:
            raise InvalidInput(f"--only {slot}: no such slot to promote; copyable: {', '.join(COPIED_SLOTS)}")
        if source is not None and target is not None and _settings(source, slot) == _settings(target, slot):
            raise InvalidInput(f"--only {slot}: profiles {source.profile} and {target.profile} fill it with the same "
                               "backend and settings; there is nothing to promote")
        chosen.append(slot)
    return [s for s in COPIED_SLOTS if s in chosen]


def _settings(host: Host, slot: str) -> dict[str, Any]:
    return {k: v for k, v in (host.selection().get(slot) or {}).items() if k != "default"}


def _open(host: Host, slot: str, role: str) -> Any:
    """The slot's backend, or an error naming the slot, the profile and what to do."""
    try:
        store = host.backend(slot)
        health = store.health()
    except MatihError as exc:
        raise PromoteRefused(f"{slot} ({role} profile {host.profile}): {exc}; check it with "
                             f"'matih-lite doctor --profile {host.profile}'") from exc
    if not health.ok:
        raise PromoteRefused(f"{slot} ({role} profile {host.profile}) is not reachable: {health.detail}; check it "
                           f"with 'matih-lite doctor --profile {host.profile}'")
    return store


def _held_source(slot: str, store: Any) -> dict[str, int]:
    if slot == "features":
        return {}
    if slot == "events":
        return {s: store.end_offset(s) for s in streams.catalog_of(store).list_streams()}
    return _held(slot, store)


def _held(slot: str, store: Any) -> dict[str, int]:
    if slot == "metadata":
        return tables.held_rows(tables.transfer_of(store, "target"))
    if slot in ("events", "features"):
        return {}  # events: compared stream by stream below; features: a newer row held on the target stays
    found = files.files_of(store)
    return {"files": len(found)} if found else {}


def promote(source: Any, target: Any, *, only: Sequence[str] | None = None, merge: bool = False,
            dry_run: bool = False, progress: Progress | None = None) -> Outcome:
    """Copy the chosen slots of host ``source`` into host ``target`` and verify them.

    Raises InvalidInput (bad choice, unreachable backend, same backend on both sides), Conflict (the
    target holds other data and ``merge`` is off, or holds other values for the same ids).
    """
    slots = choose_slots(only, source, target)
    if source.profile == target.profile:
        raise InvalidInput(f"--to {target.profile}: that is the source profile; promote to another one")
    ident = journal.target_id(target.profile, {s: target.selection().get(s) for s in slots})
    earlier = journal.read_journal(source.config.home, ident)
    pairs = {slot: (_open(source, slot, "source"), _open(target, slot, "target")) for slot in slots}
    for slot, (mine, theirs) in pairs.items():
        if getattr(mine, "location", None) and getattr(mine, "location", None) == getattr(theirs, "location", 1):
            raise InvalidInput(f"{slot}: the source and target profiles use the same store ({mine.location})")
    if "metadata" in pairs:
        tables.check_schemas(tables.transfer_of(pairs["metadata"][0], "source"),
                             tables.transfer_of(pairs["metadata"][1], "target"))
    held = {slot: _held(slot, theirs) for slot, (_, theirs) in pairs.items()}
    if "events" in pairs:
        streams.check_layouts(streams.catalog_of(pairs["events"][0]), pairs["events"][1], target.profile)
        held["events"] = streams.held_streams(streams.catalog_of(pairs["events"][0]), pairs["events"][1])
    resumed = earlier is not None and set(slots) <= set(earlier.slots)
    if not merge and not resumed:
        full = {slot: h for slot, h in held.items() if h}
        if full:
            slot, counts = next(iter(full.items()))
            what = ", ".join(f"{k}: {v}" for k, v in list(counts.items())[:4])
            raise PromoteRefused(f"{slot}: the target profile {target.profile} holds data already ({what}); promote "
                           "to an empty target, or pass --merge to add to it (ids held there must match)")
    if dry_run:
        return Outcome(source_profile=source.profile, target_profile=target.profile, slots=slots, dry_run=True,
                       resumed=resumed, copied=[], checks=[],
                       held={slot: _held_source(slot, mine) for slot, (mine, _) in pairs.items()})
    record = journal.Journal(target_profile=target.profile, slots=slots,
                             started_at=earlier.started_at if resumed and earlier else journal.now_ms())
    journal.write_journal(source.config.home, ident, record)
    copied: list[SlotCopy] = []
    checks: list[Check] = []
    digests: dict[str, tuple[int, str]] = {}
    if "metadata" in pairs:
        mine, theirs = pairs["metadata"]
        a, b = tables.transfer_of(mine, "source"), tables.transfer_of(theirs, "target")
        copied.append(tables.copy_tables(a, b, progress=progress, digests=digests))
    if "artifacts" in pairs:
        copied.append(files.copy_files(*pairs["artifacts"], progress=progress))
    if "events" in pairs:
        copied.append(streams.copy_streams(*pairs["events"], progress=progress))
    definitions = online.applied_definitions(source.metadata, tenants_of(source.metadata)) if "features" in pairs \
        else {}
    if "features" in pairs:
        copied.append(online.copy_online(*pairs["features"], definitions, progress=progress))
    if "metadata" in pairs:
        mine, theirs = pairs["metadata"]
        a, b = tables.transfer_of(mine, "source"), tables.transfer_of(theirs, "target")
        checks += tables.verify_tables(a, b, merge=merge, digests=digests)
        checks += queries.compare_queries(mine, theirs, _tenants(a))
    if "artifacts" in pairs:
        checks += files.verify_files(*pairs["artifacts"], merge=merge)
    if "events" in pairs:
        checks += streams.verify_streams(*pairs["events"])
    if "features" in pairs:
        checks += online.verify_online(*pairs["features"], definitions)
    record.state = "verified" if all(c.ok for c in checks) else "differs"
    record.finished_at = journal.now_ms()
    journal.write_journal(source.config.home, ident, record)
    return Outcome(source_profile=source.profile, target_profile=target.profile, slots=slots, dry_run=False,
                   resumed=resumed, copied=copied, checks=checks)


def tenants_of(store: Any) -> set[str]:
    """Every tenant a metadata store holds records of (none for a store that cannot list its tables)."""
    return _tenants(store) if isinstance(store, tables.TableTransfer) else set()


def _tenants(store: tables.TableTransfer) -> set[str]:
    """Every tenant that owns records: the tenants table, and the owners of experiments and models."""
    found: set[str] = set()
    for shape in store.table_shapes():
        if shape.name not in ("tenants", "experiments", "registered_models", "lineage_nodes"):
            continue
        column = "name" if shape.name == "tenants" else "tenant"
        i = shape.columns.index(column)
        after = None
        while True:
            page = store.read_rows(shape.name, after=after, limit=5000)
            found.update(row[i] for row in page.rows)
            if page.after is None:
                break
            after = page.after
    return found
