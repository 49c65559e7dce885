"""The artifacts slot copied file by file through :class:`~matih_lite.contracts.ArtifactStore`.

A file the target holds with the same sha256 is skipped; any other is written from a streaming
reader of the source (which checks the source's own digest at its end), and the digest the
target records for it must be the source's, or the copy stops naming the file.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

from matih_lite.contracts import ArtifactInfo, ArtifactStore
from matih_lite.errors import NotFound, StoreError
from matih_lite.promote.checks import Check, PromoteRefused, SlotCopy
from matih_lite.promote.tables import Progress


def files_of(store: ArtifactStore) -> dict[str, ArtifactInfo]:
    """Every file by path, each with its sha256."""
    found: dict[str, ArtifactInfo] = {}
    for info in store.list("", recursive=True):
        if info.is_dir:
            continue
        found[info.path] = info if info.sha256 else store.stat(info.path)
    return found


def copy_files(source: ArtifactStore, target: ArtifactStore, *, progress: Progress | None = None,
               workers: int = 8) -> SlotCopy:
    """Copy every file absent from the target, ``workers`` at a time; one held there with another digest
    is a Conflict."""
    done = SlotCopy(slot="artifacts")
    mine = files_of(source)
    total = len(mine)
    lock = threading.Lock()

    def copy_one(path: str, info: ArtifactInfo) -> None:
        try:
            held = target.stat(path)
        except NotFound:
            held = None
        copied = held is None or held.sha256 != info.sha256
        if held is not None and copied:
            raise PromoteRefused(f"artifacts: {path} in the target has sha256 {held.sha256}, the source's is "
                                 f"{info.sha256}; remove it from the target or promote to an empty one")
        if copied:
            with source.open(path) as reader:
                written = target.put(path, reader)
            if written.sha256 != info.sha256:
                raise StoreError(f"artifacts: {path} was written with sha256 {written.sha256}, "
                                 f"expected {info.sha256}")
        with lock:
            if copied:
                done.items += 1
                done.bytes += info.size
            else:
                done.skipped += 1
            if progress is not None:
                progress("artifacts", 1, total, info.size)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="promote-artifacts") as pool:
        futures = [pool.submit(copy_one, path, info) for path, info in mine.items()]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return done


def verify_files(source: ArtifactStore, target: ArtifactStore, *, merge: bool = False) -> list[Check]:
    """Every source file's digest in the target; without ``merge``, nothing else there either."""
    mine, theirs = files_of(source), files_of(target)
    missing = sorted(p for p in mine if p not in theirs)
    different = sorted(p for p in mine if p in theirs and theirs[p].sha256 != mine[p].sha256)
    extra = [] if merge else sorted(p for p in theirs if p not in mine)
    ok = not (missing or different or extra)
    parts = [f"{len(x)} {what} (first: {x[0]})" for x, what in
             ((missing, "missing"), (different, "with another sha256"), (extra, "not in the source")) if x]
    size = sum(i.size for i in mine.values())
    held = sum(i.size for i in theirs.values())
    return [Check(slot="artifacts", item="every file's sha256", source=f"{len(mine)} files, {size} bytes",
                  target=f"{len(theirs)} files, {held} bytes", ok=ok, detail="; ".join(parts))]
