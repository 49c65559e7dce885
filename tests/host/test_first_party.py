"""The ``pip install`` hints name only backends that exist: FIRST_PARTY and backends/ agree both ways."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

from matih_lite.host import FIRST_PARTY, install_hint

BACKENDS = Path(__file__).resolve().parents[2] / "backends"


def _published() -> dict[str, str]:
    """Backend name -> distribution, from each backends/NAME/pyproject.toml."""
    out = {}
    for project in sorted(BACKENDS.glob("*/pyproject.toml")):
        meta = tomllib.loads(project.read_text())["project"]
        names = list(meta.get("entry-points", {}).get("matih_lite", {}))
        assert names == [project.parent.name], f"{project}: registers {names}, not its folder's name"
        out[project.parent.name] = meta["name"]
    return out


def test_every_hinted_backend_is_a_distribution_here_and_every_distribution_is_hinted():
    assert FIRST_PARTY == _published()


def test_each_hint_names_the_distribution_and_the_folder_and_the_plugin_is_installed():
    installed = {ep.name for ep in entry_points(group="matih_lite")}
    for name, dist in FIRST_PARTY.items():
        assert f"pip install {dist}" in install_hint(name) and f"backends/{name}" in install_hint(name)
        assert name in installed, f"{dist} is not installed: scripts/test installs every backend"


def test_a_name_that_is_no_backend_gets_no_install_line():
    assert "pip install" not in install_hint("no-such-backend-at-all")
    assert "did you mean 'kafka'?" in install_hint("kafak")
