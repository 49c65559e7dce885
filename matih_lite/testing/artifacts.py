"""The artifacts-slot contract: every ArtifactStore backend passes these."""

from __future__ import annotations

import hashlib
import io

import pytest

from matih_lite.contracts import ArtifactStore
from matih_lite.errors import InvalidInput, NotFound

ESCAPES = ["../x", "a/../../x", "/etc/passwd", "a/../..", "..", "a\\..\\b", "C:/x", "a\x00b", ""]


class ArtifactStoreContract:
    """Override the ``store`` fixture to return a fresh, empty backend."""

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
