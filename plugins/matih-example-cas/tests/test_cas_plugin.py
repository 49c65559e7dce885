"""The example plugin passes the artifacts contract, dedups, and is discovered through its entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from matih_example_cas.plugin import CasArtifactStore
from matih_lite.config import load_config
from matih_lite.host import Host
from matih_lite.testing import ArtifactStoreContract


class TestCasContract(ArtifactStoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return CasArtifactStore(tmp_path / "cas")


def test_identical_files_share_one_blob(tmp_path):
    store = CasArtifactStore(tmp_path / "cas")
    for i in range(5):
        store.put(f"run{i}/model.bin", b"same model bytes")
    assert len(list((tmp_path / "cas" / "blobs").glob("*/*"))) == 1
    store.delete("run0")
    assert store.get("run1/model.bin") == b"same model bytes"


def test_profile_can_select_the_plugin(tmp_path):
    (tmp_path / "matih.toml").write_text('[profiles.lite]\nartifacts = { backend = "cas", root = "blobs" }\n')
    host = Host(load_config(tmp_path / "matih.toml"))
    assert host.active("artifacts").distribution.startswith("matih-example-cas")
    host.artifacts.put("a/b.txt", b"hi")
    assert (tmp_path / "blobs" / "index" / "a" / "b.txt").is_file()


def test_plugins_list_shows_it():
    out = subprocess.run([sys.executable, "-m", "matih_lite.cli", "plugins", "list", "--json"],
                         capture_output=True, text=True, check=True).stdout
    backends = json.loads(out)["slots"]["artifacts"]["backends"]
    cas = next(b for b in backends if b["name"] == "cas")
    assert cas["distribution"].startswith("matih-example-cas") and cas["plugin"] == "cas"
