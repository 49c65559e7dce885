"""Schemathesis over the live OpenAPI document, auth off and on: no input reaches a 500, and every answer is
one the document promises (its status code, its content type, a body valid against its schema).

The real service runs under uvicorn on 127.0.0.1 (:mod:`matih_lite.testing.service`); schemathesis's own CLI
reads ``/schema/openapi.json`` from it and tries every operation with a bounded number of generated requests
(its coverage phase, schema-valid and schema-invalid edge cases, then fuzzing), with a fixed seed so a failure
reproduces. Its report, with a ``curl`` line per failure, is the assertion message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from matih_lite.auth import Accounts
from matih_lite.config import load_config
from matih_lite.host import Host
from matih_lite.testing.service import serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # 40 s to 2.5 min a run, as loaded as the cores are

CHECKS = (
    "not_a_server_error",  # no 5xx, for any input
    "status_code_conformance",  # every status answered is documented for the operation
    "content_type_conformance",  # every content type answered is documented for that status
    "response_schema_conformance",  # every body is valid against the documented schema
    "response_headers_conformance",  # documented headers are sent
    "allow_header_conformance",  # 405's Allow lists the path's methods
    "unsupported_method",  # a method the path does not have answers 405
)
MAX_EXAMPLES = 5
"""Generated requests per operation and phase: what keeps a run within a minute on two loaded cores."""
SEED = 20261204


def open_host(folder: Path) -> Host:
    return Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))


def schemathesis(url: str, report: Path, headers: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``st run`` over the live document; its exit status is 0 only when no check failed."""
    # One worker: schemathesis's workers are threads, and two of them parsing a source for Hypothesis at once
    # can break CPython 3.11's AST parser ("SystemError: AST constructor recursion depth mismatch", seen about
    # once in eight runs). One is as fast here, and it keeps the order of the requests, so a failure reproduces.
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/schema/openapi.json",
               "--checks", ",".join(CHECKS), "--phases", "examples,coverage,fuzzing",
               "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
               "--generation-database", "none", "--request-timeout", "60", "--no-color",
               "--report", "junit", "--report-dir", str(report)]
    for name, value in headers.items():
        # The token is the one given; generated Authorization values (control characters and all) are refused
        # by uvicorn's HTTP parser before the service sees them, which schemathesis reports as a network error.
        command += ["--header", f"{name}: {value}", "--generation-with-security-parameters", "false"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=report)


def summary(run: subprocess.CompletedProcess[str]) -> str:
    """The report's summary, then its errors and failures (each with its ``curl`` line) last, where a
    truncated log still shows them."""
    out = run.stdout + run.stderr
    # Where each '==== NAME ====' heading line starts.
    starts = {name: out.rfind("\n", 0, i) + 1 for name in ("ERRORS", "FAILURES", "WARNINGS", "SUMMARY")
              if (i := out.find(f"= {name} =")) >= 0}

    def section(name: str) -> str:
        if name not in starts:
            return ""
        start = starts[name]
        return out[start:min((i for i in starts.values() if i > start), default=len(out))]

    tail = section("SUMMARY") or out[-4000:]
    return "\n".join(part[-12000:] for part in (tail, section("FAILURES"), section("ERRORS")) if part)


def assert_conforms(run: subprocess.CompletedProcess[str]) -> None:
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found failures (exit {run.returncode}):\n{summary(run)}"
    # Every operation of the document was tried (none skipped for a schema schemathesis cannot read).
    assert "Tested:" in out and "Selected:" in out, out[-3000:]
    selected = out.split("Selected:", 1)[1].split()[0]
    tested = out.split("Tested:", 1)[1].split()[0]
    assert tested == selected.split("/")[0], f"tested {tested} of {selected} operations"
    assert int(tested) > 100, tested


def test_no_input_reaches_a_500_and_every_answer_is_documented_without_auth(tmp_path):
    host = open_host(tmp_path)
    try:
        with serve(host) as url:
            run = schemathesis(url, tmp_path, {})
    finally:
        host.close()
    assert_conforms(run)


def test_no_input_reaches_a_500_and_every_answer_is_documented_with_auth(tmp_path):
    (tmp_path / "matih.toml").write_text("[auth]\nenabled = true\n")
    bootstrap = open_host(tmp_path)
    accounts = Accounts(bootstrap)
    accounts.create_user("acme", "alice", ["admin"])
    secret = accounts.create_token("acme", "alice", name="schemathesis").secret
    bootstrap.close()
    host = open_host(tmp_path)
    try:
        with serve(host) as url:
            run = schemathesis(url, tmp_path, {"Authorization": f"Bearer {secret}"})
    finally:
        host.close()
    assert_conforms(run)
