"""Properties: sizes parse exactly, keys and paths map one to one, and the store behaves like a folder.

The last one drives the real store on SeaweedFS with random sequences of puts and deletes (over a
few names, so files, folders and collisions meet) and compares every listing with a model of a
folder tree kept in a dict.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matih_lite.contracts.artifacts import clean_path
from matih_lite.errors import InvalidInput, NotFound
from matih_s3.plugin import S3Settings, byte_size
from matih_s3.store import S3ArtifactStore

UNITS = {"": 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GB": 1000**3, "GiB": 1024**3,
         "k": 1000, "Mi": 1024**2}


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNITS)), st.sampled_from(["", " "]))
def test_sizes_with_units_parse_exactly(number, unit, space):
    assert byte_size(f"{number}{space}{unit}", "part_size") == number * UNITS[unit]
    assert byte_size(f"{number}{unit.lower()}", "part_size") == number * UNITS[unit]


@given(st.text(min_size=1, max_size=12))
def test_anything_else_is_not_a_size(text):
    try:
        value = byte_size(text, "part_size")
    except ValueError as exc:
        assert str(exc).startswith("part_size: ")
    else:
        assert value >= 0 and any(ch.isdigit() for ch in text)


SEGMENT = st.text(alphabet=st.sampled_from(list("ab.-_é 0")), min_size=1, max_size=4)


@given(st.lists(SEGMENT, min_size=1, max_size=4), st.sampled_from(["", "p", "team/prod"]))
def test_paths_and_keys_map_one_to_one(segments, prefix):
    store = S3ArtifactStore(S3Settings(bucket="ml-artifacts", prefix=prefix))
    try:
        rel = clean_path("/".join(segments))
    except InvalidInput:
        return
    key = store._key(rel)
    assert key.startswith(f"{prefix}/" if prefix else "") and store._relative(key) == rel
    assert store._relative(key + "/") is None  # folder markers name no artifact


# ---- the store against a model of a folder tree ----------------------------------------------------
NAMES = st.sampled_from(["a", "a/b", "a/b/c", "a/c", "b", "b/a", "ab"])
OPS = st.lists(st.tuples(st.sampled_from(["put", "put", "delete"]), NAMES, st.binary(max_size=8)), max_size=10)


class Tree:
    """What a folder on disk would hold after the same calls."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def is_folder(self, path: str) -> bool:
        return any(f.startswith(path + "/") for f in self.files)

    def put(self, path: str, data: bytes) -> bool:
        parts = path.split("/")
        above = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if self.is_folder(path) or any(a in self.files for a in above):
            return False
        self.files[path] = data
        return True

    def delete(self, path: str) -> int:
        if path in self.files:
            del self.files[path]
            return 1
        inside = [f for f in self.files if f.startswith(path + "/")]
        for f in inside:
            del self.files[f]
        return len(inside)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_the_store_behaves_like_a_folder_tree(make_store, shared_bucket, ops):
    import uuid

    store = make_store(shared_bucket, prefix=f"props/{uuid.uuid4().hex[:10]}")
    tree = Tree()
    for op, path, data in ops:
        if op == "put":
            if tree.put(path, data):
                assert store.put(path, data).sha256 == hashlib.sha256(data).hexdigest()
            else:
                with pytest.raises(InvalidInput):
                    store.put(path, data)
        else:
            assert store.delete(path) == tree.delete(path)
        assert {e.path: e.sha256 for e in store.list("", recursive=True)} == {
            p: hashlib.sha256(d).hexdigest() for p, d in tree.files.items()}
    for path in ("a", "a/b", "b", "ab"):
        if path in tree.files:
            assert store.get(path) == tree.files[path]
        elif tree.is_folder(path):
            assert store.stat(path).is_dir
        else:
            with pytest.raises(NotFound):
                store.stat(path)
