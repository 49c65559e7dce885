"""The artifacts-slot contract: every ArtifactStore backend passes these.

Besides the basics, the kit holds a backend to what a folder on disk gives for free and an
object store does not: a write is seen by the next read, listings page past 1,000 entries,
``r`` and ``r.txt`` are different names, a path is a file or a folder (never both), a large
file streams in and out without sitting in memory, and a put cut off half-way leaves nothing.
"""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest

from matih_lite.contracts import ArtifactStore
from matih_lite.errors import InvalidInput, MatihError, NotFound, StoreError

ESCAPES = ["../x", "a/../../x", "/etc/passwd", "a/../..", "..", "a\\..\\b", "C:/x", "a\x00b", ""]

MiB = 1 << 20


class PatternStream(io.RawIOBase):
    """``size`` deterministic bytes, made as they are read (never held whole): block ``i`` is a
    1 MiB pattern stamped with ``i``, so parts stored out of order change the sha256."""

    _BASE = hashlib.shake_256(b"matih-lite artifacts contract").digest(MiB)

    def __init__(self, size: int, *, fail_after: int | None = None) -> None:
        self.size = size
        self.pos = 0
        self.fail_after = fail_after

    @classmethod
    def sha256_of(cls, size: int) -> str:
        """The sha256 of the first ``size`` bytes of the pattern."""
        digest = hashlib.sha256()
        stream = cls(size)
        while chunk := stream.read(MiB):
            digest.update(chunk)
        return digest.hexdigest()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise SourceBroke(f"the source broke after {self.pos} bytes")
        view = memoryview(buffer).cast("B")
        block, offset = divmod(self.pos, MiB)
        n = min(len(view), self.size - self.pos, MiB - offset)
        if self.fail_after is not None:
            n = min(n, self.fail_after - self.pos)
        if n <= 0:
            return 0
        stamped = block.to_bytes(8, "big") + self._BASE[8:]
        view[:n] = stamped[offset:offset + n]
        self.pos += n
        return n


class SourceBroke(OSError):
    """What a :class:`PatternStream` with ``fail_after`` raises: a client that went away mid-upload."""


def _read_hashing(handle, chunk: int = MiB) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while data := handle.read(chunk):
        digest.update(data)
        size += len(data)
    return digest.hexdigest(), size


class ArtifactStoreContract:
    """Override the ``store`` fixture to return a fresh, empty backend.

    ``LARGE_SIZE`` is the size of the large-object tests: make it a few times a multipart
    backend's threshold and part size (a subclass sets both small), so those tests take the
    multipart path. ``STREAMED_SIZE`` is the file that must go in and out through less than half
    its size in memory (a slow test). The store is called from several threads at once, as the
    service does.
    """

    LARGE_SIZE = 24 * MiB
    STREAMED_SIZE = 64 * MiB

    @pytest.fixture
    def store(self) -> ArtifactStore:
        raise NotImplementedError("override the 'store' fixture to build your backend")

    def test_satisfies_protocol(self, store):
        assert isinstance(store, ArtifactStore)
        assert store.health().ok

    def test_put_then_get_returns_same_bytes_and_sha256(self, store):
        data = b"hello \x00 world" * 1000
        info = store.put("run1/model/model.bin", data)
        assert info.path == "run1/model/model.bin"
        assert info.size == len(data)
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert store.get("run1/model/model.bin") == data
        assert store.stat("run1/model/model.bin") == info

    def test_put_from_stream(self, store):
        data = bytes(range(256)) * 5000  # > 1 MiB, read in chunks
        info = store.put("big.bin", io.BytesIO(data))
        assert info.size == len(data)
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        with store.open("big.bin") as handle:
            assert handle.read() == data

    def test_put_replaces(self, store):
        store.put("a.txt", b"one")
        info = store.put("a.txt", b"two")
        assert store.get("a.txt") == b"two"
        assert info.sha256 == hashlib.sha256(b"two").hexdigest()

    def test_empty_file(self, store):
        info = store.put("empty", b"")
        assert info.size == 0
        assert store.get("empty") == b""

    def test_list_shallow_and_recursive(self, store):
        for path in ("r/a.txt", "r/sub/b.txt", "r/sub/deeper/c.txt", "other/d.txt"):
            store.put(path, path.encode())
        shallow = store.list("r")
        assert [(i.path, i.is_dir) for i in shallow] == [("r/a.txt", False), ("r/sub", True)]
        deep = store.list("r", recursive=True)
        assert [i.path for i in deep] == ["r/a.txt", "r/sub/b.txt", "r/sub/deeper/c.txt"]
        assert all(i.sha256 for i in deep)
        assert {i.path for i in store.list("", recursive=True)} >= {"other/d.txt", "r/a.txt"}
        assert store.list("nothing-here") == []

    def test_stat_folder_and_missing(self, store):
        store.put("f/x", b"1")
        assert store.stat("f").is_dir
        with pytest.raises(NotFound):
            store.stat("nope")

    def test_get_missing_raises_not_found(self, store):
        with pytest.raises(NotFound):
            store.get("missing.txt")

    def test_delete_file_and_folder(self, store):
        store.put("d/1", b"1")
        store.put("d/2/3", b"3")
        store.put("keep", b"k")
        assert store.delete("d/1") == 1
        assert store.delete("d") == 1
        assert store.delete("d") == 0
        assert store.get("keep") == b"k"
        with pytest.raises(NotFound):
            store.get("d/2/3")

    @pytest.mark.parametrize("path", ESCAPES)
    def test_paths_that_escape_are_refused(self, store, path):
        with pytest.raises(InvalidInput):
            store.put(path, b"x")
        if path:
            with pytest.raises(InvalidInput):
                store.get(path)

    def test_dot_segments_normalize(self, store):
        store.put("./a/./b.txt", b"x")
        assert store.get("a/b.txt") == b"x"

    # ---- what an object store must not get wrong -------------------------------------------------
    def test_every_write_is_seen_by_the_next_read(self, store):
        for i in range(10):
            data = f"version {i}".encode() * (i + 1)
            store.put("raw/file.txt", data)
            assert store.get("raw/file.txt") == data
            assert store.stat("raw/file.txt").sha256 == hashlib.sha256(data).hexdigest()
            assert [(e.path, e.size) for e in store.list("raw")] == [("raw/file.txt", len(data))]
        store.put("raw/other.txt", b"x")
        assert [e.path for e in store.list("raw")] == ["raw/file.txt", "raw/other.txt"]
        assert store.delete("raw/file.txt") == 1
        with pytest.raises(NotFound):
            store.stat("raw/file.txt")
        assert [e.path for e in store.list("raw", recursive=True)] == ["raw/other.txt"]
        assert store.delete("raw") == 1
        assert store.list("raw") == [] and store.list("") == []

    def test_overwrite_between_small_and_large_keeps_one_entry(self, store):
        store.put("ow/model.bin", b"small")
        big = store.put("ow/model.bin", PatternStream(self.LARGE_SIZE))
        assert big.size == self.LARGE_SIZE and big.sha256 == PatternStream.sha256_of(self.LARGE_SIZE)
        assert store.stat("ow/model.bin") == big
        with store.open("ow/model.bin") as handle:
            assert _read_hashing(handle) == (big.sha256, big.size)
        small = store.put("ow/model.bin", b"small again")
        assert store.get("ow/model.bin") == b"small again"
        assert store.list("ow") == [small]

    @pytest.mark.slow
    def test_a_large_stream_goes_in_and_out_without_sitting_in_memory(self, store):
        size = self.STREAMED_SIZE
        # One call of each kind first: what a backend loads once (a driver's models, a pool) is not the file.
        store.put("large/warm-up.bin", PatternStream(self.LARGE_SIZE))
        with store.open("large/warm-up.bin") as handle:
            _read_hashing(handle)
        tracemalloc.start()
        try:
            info = store.put("large/blob.bin", PatternStream(size))
            _, put_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            with store.open("large/blob.bin") as handle:
                read = _read_hashing(handle)
            _, read_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        expected = PatternStream.sha256_of(size)
        assert (info.size, info.sha256) == (size, expected)
        assert read == (expected, size)
        assert store.stat("large/blob.bin").sha256 == expected
        assert put_peak < size / 2, f"put held {put_peak / MiB:.1f} MiB of a {size / MiB:.0f} MiB stream in memory"
        assert read_peak < size / 2, f"open held {read_peak / MiB:.1f} MiB of a {size / MiB:.0f} MiB file in memory"

    def test_large_bytes_round_trip(self, store):
        data = PatternStream(self.LARGE_SIZE + 12345).read()
        info = store.put("large/bytes.bin", data)
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert store.get("large/bytes.bin") == data

    @pytest.mark.slow
    def test_listings_page_past_1000_entries(self, store):
        names = [f"many/f{i:04d}.txt" for i in range(1005)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p: store.put(p, p.encode()), [*names, "many/sub/x.txt"]))
        shallow = store.list("many")
        assert [e.path for e in shallow] == [*names, "many/sub"] and shallow[-1].is_dir
        deep = store.list("many", recursive=True)
        assert [e.path for e in deep] == [*names, "many/sub/x.txt"]
        assert all(e.sha256 == hashlib.sha256(e.path.encode()).hexdigest() for e in deep)
        assert store.delete("many") == 1006
        assert store.list("many", recursive=True) == []

    def test_a_folder_is_not_every_name_that_starts_like_it(self, store):
        for path in ("r/a.txt", "r.txt", "rr/b.txt", "r-1", "r/sub/c.txt"):
            store.put(path, path.encode())
        assert [(e.path, e.is_dir) for e in store.list("r")] == [("r/a.txt", False), ("r/sub", True)]
        assert [e.path for e in store.list("r", recursive=True)] == ["r/a.txt", "r/sub/c.txt"]
        assert store.list("r.txt") == [] and store.list("r/a.txt") == []
        assert store.stat("r").is_dir and not store.stat("r.txt").is_dir
        assert [(e.path, e.is_dir) for e in store.list("")] == [
            ("r", True), ("r-1", False), ("r.txt", False), ("rr", True)]
        assert store.delete("r") == 2
        assert store.get("r.txt") == b"r.txt" and store.get("rr/b.txt") == b"rr/b.txt" and store.get("r-1") == b"r-1"

    def test_a_path_is_a_file_or_a_folder_never_both(self, store):
        store.put("t/model", b"a file")
        for below in ("t/model/x", "t/model/x/y"):
            with pytest.raises(InvalidInput):
                store.put(below, b"under a file")
        store.put("t/dir/inner.txt", b"inside")
        for above in ("t/dir", "t"):
            with pytest.raises(InvalidInput):
                store.put(above, b"over a folder")
        assert store.get("t/model") == b"a file" and store.get("t/dir/inner.txt") == b"inside"
        assert [(e.path, e.is_dir) for e in store.list("t")] == [("t/dir", True), ("t/model", False)]
        assert [e.path for e in store.list("t", recursive=True)] == ["t/dir/inner.txt", "t/model"]
        with pytest.raises(NotFound):
            store.stat("t/model/x")
        with pytest.raises(NotFound):
            store.get("t/dir")  # a folder has no bytes

    @pytest.mark.parametrize("cut", ["early", "half-way"])
    def test_an_interrupted_put_leaves_nothing_and_keeps_the_old_file(self, store, cut):
        fail_after = 10 if cut == "early" else self.LARGE_SIZE // 2
        old = store.put("cut/kept.bin", b"the previous version")
        with pytest.raises((SourceBroke, StoreError)):
            store.put("cut/kept.bin", PatternStream(self.LARGE_SIZE, fail_after=fail_after))
        assert store.get("cut/kept.bin") == b"the previous version" and store.stat("cut/kept.bin") == old
        with pytest.raises((SourceBroke, StoreError)):
            store.put("cut/new/blob.bin", PatternStream(self.LARGE_SIZE, fail_after=fail_after))
        with pytest.raises(NotFound):
            store.stat("cut/new/blob.bin")
        assert store.list("cut", recursive=True) == [old]
        assert [e.path for e in store.list("cut")] == ["cut/kept.bin"]

    def test_errors_are_matih_errors(self, store):
        with pytest.raises(MatihError):
            store.get("nothing/here.bin")
        with pytest.raises(MatihError):
            store.put("x\\y", b"")
