"""The built-in lite backends pass the same contract kit a plugin author runs."""

from __future__ import annotations

import os

import pytest

from matih_lite.builtin.local_artifacts import LocalArtifactStore
from matih_lite.builtin.sqlite_store import SqliteSettings, create_store
from matih_lite.contracts import BackendContext
from matih_lite.errors import InvalidInput, StoreError
from matih_lite.testing import ArtifactStoreContract, MetadataStoreContract


class TestSqliteMetadata(MetadataStoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        ctx = BackendContext(home=tmp_path / ".matih", base_dir=tmp_path, profile="lite")
        s = create_store(SqliteSettings(), ctx)
        yield s
        s.close()


class TestLocalArtifacts(ArtifactStoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return LocalArtifactStore(tmp_path / "artifacts")


def test_sqlite_uses_wal_and_records_migrations(tmp_path):
    ctx = BackendContext(home=tmp_path, base_dir=tmp_path, profile="lite")
    store = create_store(SqliteSettings(path="meta/m.db"), ctx)
    with store.db.read() as cur:
        cur.execute("PRAGMA journal_mode")
        assert cur.fetchone()[0] == "wal"
        cur.execute("SELECT version, name FROM _migrations ORDER BY version")
        assert cur.fetchall()[0] == (1, "tracking")
    assert (tmp_path / "meta" / "m.db").exists()
    store.close()
    # Opening again applies nothing twice.
    again = create_store(SqliteSettings(path="meta/m.db"), ctx)
    assert again.db.migrate(__import__("matih_lite.sqlstore.schema", fromlist=["x"]).MIGRATIONS) == []
    again.close()


def test_symlink_out_of_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    store = LocalArtifactStore(tmp_path / "root")
    os.symlink(outside, tmp_path / "root" / "link")
    with pytest.raises(InvalidInput):
        store.get("link/secret.txt")
    with pytest.raises(InvalidInput):
        store.put("link/new.txt", b"x")
    assert not (outside / "new.txt").exists()
    assert [i.path for i in store.list("", recursive=True)] == []


def test_corruption_is_detected_on_read(tmp_path):
    store = LocalArtifactStore(tmp_path / "root")
    store.put("model.bin", b"original bytes")
    (tmp_path / "root" / "model.bin").write_bytes(b"tampered bytes")
    with pytest.raises(StoreError, match="corrupt"):
        store.get("model.bin")


def test_sums_folder_is_reserved(tmp_path):
    store = LocalArtifactStore(tmp_path / "root")
    with pytest.raises(InvalidInput):
        store.put(".sha256/x", b"1")
