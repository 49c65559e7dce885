"""``doctor --profile cluster``: each slot installed, configured, reachable and at this code's schema; exit 2 if not."""

from __future__ import annotations

import json
import os

import pytest
from test_promote_cli import cli

pytestmark = pytest.mark.postgres


def test_doctor_reports_each_slot_and_the_schema_version_of_the_cluster_metadata(folder):
    r = cli("doctor", "--profile", "cluster", "--json", cwd=folder)
    assert r.returncode == 0, r.stdout + r.stderr
    slots = {row["slot"]: row for row in json.loads(r.stdout)["slots"]}
    assert slots["metadata"]["status"] == "ok" and slots["metadata"]["backend"] == "postgres"
    schema = slots["metadata"]["schema"]
    assert schema["applied"] == schema["current"] > 0


def test_doctor_exits_2_naming_the_slot_that_is_unreachable_misspelt_or_missing_its_secret(folder):
    text = (folder / "matih.toml").read_text()
    (folder / "matih.toml").write_text(text.replace("${MATIH_TEST_DSN}", "postgresql://nobody@127.0.0.1:1/x"))
    r = cli("doctor", "--profile", "cluster", "--json", cwd=folder)
    assert r.returncode == 2, r.stdout + r.stderr
    metadata = {row["slot"]: row for row in json.loads(r.stdout)["slots"]}["metadata"]
    assert metadata["status"] == "failed" and "127.0.0.1" in metadata["detail"]
    (folder / "matih.toml").write_text(text.replace('backend = "postgres"', 'backend = "postgress"'))
    r = cli("doctor", "--profile", "cluster", cwd=folder)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown backend 'postgress'" in r.stdout + r.stderr
    env = {k: v for k, v in os.environ.items() if k != "MATIH_TEST_DSN"}
    (folder / "matih.toml").write_text(text)
    r = cli("doctor", "--profile", "cluster", "--json", cwd=folder, env=env)
    assert r.returncode == 2
    problems = json.loads(r.stdout)["problems"]
    assert any(p["key"].startswith("profiles.cluster.metadata") and "MATIH_TEST_DSN" in p["message"]
               for p in problems)
