"""Fixtures of the workbench tests: the ml-service on a free loopback port, and a real Chromium.

The browser is Debian's Chromium (``apt-get install chromium`` gives ``/usr/bin/chromium``) driven by
Playwright for Python; Playwright's own browser download is never used. Without them the browser
tests skip locally and fail under ``CI=true``.

Every page a test opens is screenshotted; when the test fails the screenshots are written to
``$MATIH_TEST_ARTIFACTS/ui/<test>/`` (default ``tests-artifacts/ui/<test>/``, ignored by git) for CI to
keep. Console errors and uncaught script errors fail the test unless it says it expects them.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

from matih_lite.testing.processes import engine_missing

CHROMIUM = os.environ.get("MATIH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}


def artifacts_dir() -> Path:
    return Path(os.environ.get("MATIH_TEST_ARTIFACTS") or REPO / "tests-artifacts") / "ui"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def browser():
    """Chromium through Playwright's sync API, for one module: while it runs, the sync API holds an event loop in
    this thread, where any later ``asyncio.run()`` (the Triton and vLLM tests') would fail."""
    if not Path(CHROMIUM).exists():
        engine_missing(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        engine_missing("Playwright for Python is not installed: pip install playwright (never 'playwright install')")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception:
        pw.stop()
        raise
    yield b
    b.close()
    pw.stop()


class Tab:
    """A browser page on the service: navigation by path, console errors collected, a screenshot per page."""

    def __init__(self, context, url: str, name: str) -> None:
        self.context = context
        self.url = url
        self.name = name
        self.page = context.new_page()
        self.errors: list[str] = []
        self.expected: list[re.Pattern] = []
        self.shots: list[tuple[str, bytes]] = []
        self.page.on("console", lambda msg: self.errors.append(f"console {msg.type}: {msg.text} ({self.page.url})")
                     if msg.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc} ({self.page.url})"))

    def open(self, path: str, *, status: int = 200):
        response = self.page.goto(self.url + path, wait_until="load")
        self.page.wait_for_load_state("networkidle")
        self.shot()
        if status is not None:
            assert response is not None and response.status == status, \
                f"{path}: HTTP {response.status if response else 'none'}, wanted {status}"
        return response

    def shot(self, label: str = "") -> None:
        """Keep a screenshot of what is on screen now (written to disk only if the test fails)."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            png = self.page.screenshot(full_page=True)
        except PlaywrightError:  # a page closing under us: nothing to keep
            return
        path = re.sub(r"[^A-Za-z0-9._-]+", "_", self.page.url.split("://", 1)[-1].split("/", 1)[-1] or "root")
        self.shots.append((f"{len(self.shots):02d}-{label or path}"[:120], png))

    def expect_console_error(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]

    def write_shots(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.shot("at-failure")
        for name, png in self.shots:
            (folder / f"{name}.png").write_bytes(png)


@pytest.fixture
def tabs(browser, request):
    """Open tabs with ``tabs(url, viewport=WIDE)``; failures keep every page's screenshot."""
    opened: list[Tab] = []
    contexts = []

    def open_tab(url: str, viewport: dict | None = None) -> Tab:
        context = browser.new_context(viewport=viewport or WIDE, service_workers="block")
        contexts.append(context)
        tab = Tab(context, url, request.node.name)
        opened.append(tab)
        return tab

    yield open_tab
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = [e for t in opened for e in t.unexpected_errors()]
    if failed or problems:
        for i, tab in enumerate(opened):
            tab.write_shots(artifacts_dir() / re.sub(r"[^A-Za-z0-9._-]+", "_", request.node.nodeid) / f"tab{i}")
    for context in contexts:
        context.close()
    if problems and not failed:
        pytest.fail("errors in the browser console:\n  " + "\n  ".join(problems))


def open_platform(folder: Path, toml: str = ""):
    """A host whose state lives in ``folder`` (absolute paths, so the working folder does not matter)."""
    from matih_lite.host import Host

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "matih.toml").write_text(textwrap.dedent(f"""
        [profiles.lite]
        metadata = {{ backend = "sqlite", path = "{folder}/.matih/matih.db" }}
        artifacts = {{ backend = "local", root = "{folder}/.matih/artifacts" }}
        events = {{ backend = "duckdb", path = "{folder}/.matih/events.duckdb" }}
    """) + textwrap.dedent(toml))
    return Host.open(str(folder / "matih.toml"))


@pytest.fixture
def platform(hermetic):
    """A host over a fresh folder with auth off (everyone is the local admin)."""
    host = open_platform(hermetic / "platform")
    yield host
    host.close()


@pytest.fixture
def served(platform):
    """The ml-service over ``platform``: its base URL."""
    from matih_lite.testing.service import serve

    with serve(platform) as url:
        yield url


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One service with auth off for the tests of a module that only read: (host, url, runs by name).

    The runs come from :func:`ui_helpers.log_runs` through the SDK over HTTP.
    """
    from ui_helpers import log_runs

    from matih_lite.testing.service import serve

    host = open_platform(tmp_path_factory.mktemp("shared"))
    with serve(host) as url, pytest.MonkeyPatch.context() as mp:
        runs = log_runs(mp, url)
        yield host, url, runs
    host.close()


AUTH_TOML = """
    [auth]
    enabled = true

    [models."*"]
    production_approvers = ["owner", "lead"]
"""


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A service with ``[auth] enabled = true`` and users of tenant acme (editor ann, lead lee, viewer vic,
    admin ada) and of tenant other (admin oscar), a token each: (host, url, tokens by user).

    Shared by a module's tests: each works on models of its own name.
    """
    from matih_lite.auth import Accounts
    from matih_lite.testing.service import serve

    host = open_platform(tmp_path_factory.mktemp("secured"), AUTH_TOML)
    accounts = Accounts(host)
    tokens = {}
    for user, role in (("ann", "editor"), ("lee", "lead"), ("vic", "viewer"), ("ada", "admin")):
        accounts.create_user("acme", user, [role])
        tokens[user] = accounts.create_token("acme", user).secret
    accounts.create_user("other", "oscar", ["admin"])
    tokens["oscar"] = accounts.create_token("other", "oscar").secret
    with serve(host) as url:
        yield host, url, tokens
    host.close()
