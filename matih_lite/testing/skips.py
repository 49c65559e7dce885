"""Under ``CI=true`` a skipped test is a failed one: CI installs everything the test command needs.

A pytest plugin. ``tests/conftest.py`` registers it for the whole run (``tests/``, ``backends/`` and
``plugins/``); a plugin's own suite can load it with ``-p matih_lite.testing.skips``. Locally it
changes nothing: a missing engine or package still skips, saying what to install.

With ``CI`` set to ``true`` (or ``1``, ``yes``), every skip becomes a failure that names the skip's
reason, whether it came from ``pytest.skip``, ``skipif``, ``importorskip`` in a test, or a whole
module skipped at collection. The one way out is to say, on the test, why its skip is legitimate
wherever it runs::

    @pytest.mark.environment_dependent(reason="needs a GPU; CI machines have none")

An expected failure (``xfail``) is left alone.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

MARKER = "environment_dependent"
PLUGIN_NAME = "matih-lite-skips-fail-in-ci"


def in_ci() -> bool:
    """Whether ``CI`` says this is a CI run."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _verdict(where: str, reason: str) -> str:
    return (f"{where} was skipped under CI=true ({reason}). CI installs everything the test command needs, so "
            f"this is a broken install or a missing engine: install it, or, if the skip is legitimate wherever "
            f"the test runs, mark the test @pytest.mark.{MARKER}(reason=...)")


class SkipsFailInCI:
    """Turns skip reports into failures, except on tests marked :data:`MARKER` with a reason."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        outcome = yield
        report = outcome.get_result()
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        marker = item.get_closest_marker(MARKER)
        if marker is not None and (marker.kwargs.get("reason") or marker.args):
            return
        report.outcome = "failed"
        report.longrepr = _verdict(item.nodeid, _reason(report.longrepr))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Any:
        outcome = yield
        report = outcome.get_result()
        if report.skipped:
            report.outcome = "failed"
            report.longrepr = _verdict(collector.nodeid or str(collector.path), _reason(report.longrepr))


def register(config: pytest.Config) -> None:
    """Declare the marker; under CI, install the plugin (once, however many conftests call this)."""
    config.addinivalue_line("markers", f"{MARKER}(reason): a skip of this test is legitimate even under CI=true")
    if in_ci() and not config.pluginmanager.has_plugin(PLUGIN_NAME):
        config.pluginmanager.register(SkipsFailInCI(), PLUGIN_NAME)


def pytest_configure(config: pytest.Config) -> None:
    """Loaded with ``-p matih_lite.testing.skips``."""
    register(config)
