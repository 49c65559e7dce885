"""Feast takes seconds to import: it loads when the feast backend is first used, not before."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_feast_loads_only_when_the_backend_is_used(tmp_path):
    (tmp_path / "matih.toml").write_text('[profiles.lite]\nfeatures = { backend = "feast", db = 3 }\n')
    code = textwrap.dedent("""
        import sys
        from matih_lite.host import Host
        host = Host.open()
        spec = host.active("features")
        assert spec is not None and spec.name == "feast" and spec.distribution.startswith("matih-feast "), spec
        assert host.config_problems == []
        assert "feast" not in sys.modules and "matih_feast.store" not in sys.modules, "feast loaded too early"
        backend = host.backend("features")
        assert "feast" not in sys.modules, "building the backend loaded feast"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_unknown_settings_are_reported_with_their_key(tmp_path):
    from matih_lite.config import load_config
    from matih_lite.host import Host

    (tmp_path / "matih.toml").write_text('[profiles.lite]\nfeatures = { backend = "feast", offline_store = "spark" }\n')
    host = Host(load_config(tmp_path / "matih.toml", cwd=tmp_path), strict=False)
    assert any(key.startswith("profiles.lite.features") and "spark" in msg for key, msg in host.config_problems)
