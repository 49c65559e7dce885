"""The one rule as a test: backends see only the contracts, domains never see a backend."""

from __future__ import annotations

from matih_lite.host import DOMAIN_PLUGINS, LITE_BACKENDS
from matih_lite.testing.boundaries import DOMAINS, ROOT, crossings


def test_no_import_crosses_a_slot_boundary():
    found = crossings()
    assert not found, "imports crossing the slot boundary:\n" + "\n".join(map(str, found))


def _tree_with(tmp_path, relpath: str, source: str):
    """A checkout holding one module, to watch the check fail."""
    root = tmp_path / "checkout"
    target = root / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source)
    return root


def test_a_backend_importing_a_domain_fails_the_check(tmp_path):
    root = _tree_with(tmp_path, "matih_lite/builtin/leaky.py",
                      "def f():\n    from matih_lite.serving.flavors.base import LoadOptions\n")
    found = crossings(root)
    assert [(c.file, c.line, c.module) for c in found] == [
        ("matih_lite/builtin/leaky.py", 2, "matih_lite.serving.flavors.base")]


def test_a_relative_import_into_a_domain_is_caught_too(tmp_path):
    root = _tree_with(tmp_path, "backends/acme/matih_acme/store.py", "from matih_lite import monitoring\n")
    assert [c.module for c in crossings(root)] == ["matih_lite.monitoring"]
    root = _tree_with(tmp_path / "2", "matih_lite/builtin/rel.py", "from ..registry import policy\n")
    assert [c.module for c in crossings(root)] == ["matih_lite.registry"]


def test_a_domain_importing_a_backend_or_the_service_fails_the_check(tmp_path):
    root = _tree_with(tmp_path, "matih_lite/serving/leak.py",
                      "import matih_postgres\nfrom matih_lite.builtin.sqlite_store import X\n"
                      "from matih_lite.service.app import create_app\n")
    assert sorted(c.module for c in crossings(root)) == [
        "matih_lite.builtin.sqlite_store", "matih_lite.service.app", "matih_postgres"]


def test_the_contracts_import_nothing_above_them(tmp_path):
    root = _tree_with(tmp_path, "matih_lite/contracts/leak.py", "from matih_lite.host import Host\n")
    assert [c.module for c in crossings(root)] == ["matih_lite.host"]


def test_a_plugin_authors_backend_package_can_be_checked(tmp_path):
    package = tmp_path / "matih_acme"
    package.mkdir()
    (package / "__init__.py").write_text("from matih_lite.contracts import ArtifactStore\n")
    assert crossings(backend_packages=[package]) == []
    (package / "bad.py").write_text("from matih_lite.tracking.service import Tracking\n")
    assert [c.module for c in crossings(backend_packages=[package])] == ["matih_lite.tracking.service"]


def test_builtin_holds_only_the_lite_slot_backends_and_domains_hold_their_plugins():
    builtin = {p.stem for p in (ROOT / "matih_lite" / "builtin").glob("*.py")} - {"__init__"}
    assert {m.rsplit(".", 1)[1] for m in LITE_BACKENDS} == builtin
    for module in DOMAIN_PLUGINS:
        parts = module.split(".")
        assert parts[1] in DOMAINS or parts[1] == "alerts", module
