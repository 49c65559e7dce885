"""Under CI=true a skip fails (matih_lite.testing.skips), unless the test says why its skip is legitimate."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

pytestmark = pytest.mark.slow  # two pytest runs in subprocesses

SUITE = textwrap.dedent('''
    import pytest

    def test_skips_at_run_time():
        pytest.skip("needs the frobnicator")

    @pytest.mark.skipif(True, reason="not on this machine")
    def test_skipif():
        pass

    def test_importorskip_inside():
        pytest.importorskip("no_such_package_matih")

    @pytest.mark.environment_dependent(reason="needs a GPU; CI machines have none")
    def test_legitimately_environment_dependent():
        pytest.skip("no GPU here")

    @pytest.mark.xfail(reason="known bug", strict=True)
    def test_expected_failure():
        assert False

    def test_passes():
        pass
''')
SKIPPED_MODULE = ('import pytest\npytest.importorskip("no_such_package_matih")\n\n'
                  'def test_never_collected():\n    pass\n')


def _run(tmp_path, ci: str | None) -> dict[str, str]:
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "test_skipped_module.py").write_text(SKIPPED_MODULE)
    report = tmp_path / f"report-{ci}.xml"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugin under test: a second, not thirty
    if ci is not None:
        env["CI"] = ci
    subprocess.run([sys.executable, "-m", "pytest", "-p", "matih_lite.testing.skips", "-p", "no:cacheprovider",
                    "-q", "--rootdir", str(tmp_path), "-c", os.devnull, "--continue-on-collection-errors",
                    f"--junitxml={report}", str(tmp_path)],
                   check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        outcomes[case.get("name") or ""] = kind
    return outcomes


def test_under_ci_every_skip_fails_but_a_declared_one(tmp_path):
    got = _run(tmp_path, "true")
    assert got["test_skips_at_run_time"] == "failure"
    assert got["test_skipif"] == "error"  # skipif skips in setup: an error there
    assert got["test_importorskip_inside"] == "failure"
    assert got["test_legitimately_environment_dependent"] == "skipped"
    assert got["test_expected_failure"] == "skipped"  # xfail: reported as skipped by junit, not turned into a failure
    assert got["test_passes"] == "passed"
    assert got["test_skipped_module"] == "error"  # a module skipped at collection fails the run


def test_locally_skips_stay_skips(tmp_path):
    got = _run(tmp_path, None)
    assert got["test_skips_at_run_time"] == got["test_skipif"] == got["test_importorskip_inside"] == "skipped"
    assert got["test_passes"] == "passed"
    assert not any(v in ("failure", "error") for v in got.values()), got
