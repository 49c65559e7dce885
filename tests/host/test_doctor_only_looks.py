"""``doctor`` only looks: it reports the metadata schema version it finds ("empty" before the first ``up`` or
``migrate``) and creates nothing; ``/ready`` and the log's "schema migrated to version N" say the same number.
(The PostgreSQL side: tests/promote/test_doctor_cluster.py.)"""

from __future__ import annotations

import json
import logging
import sqlite3

from litestar.testing import TestClient
from typer.testing import CliRunner

from matih_lite.cli import load_commands
from matih_lite.host import Host
from matih_lite.service import create_app
from matih_lite.sqlstore.schema import MIGRATIONS

CURRENT = max(v for v, _, _ in MIGRATIONS)


def doctor(app) -> dict:
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    return {row["slot"]: row for row in json.loads(result.stdout)["slots"]}["metadata"]


def test_doctor_on_a_fresh_folder_says_empty_and_makes_no_database_then_migrate_makes_it(hermetic):
    (hermetic / "matih.toml").write_text('[profiles.lite]\nmetadata = { backend = "sqlite", path = "meta.db" }\n')
    app = load_commands()
    metadata = doctor(app)
    assert metadata["status"] == "ok" and "sqlite, schema empty" in metadata["detail"]
    assert metadata["schema"] == {"applied": 0, "current": CURRENT}
    assert not (hermetic / "meta.db").exists()

    sqlite3.connect(hermetic / "meta.db").close()  # a file with nothing in it: still empty, still untouched
    assert "schema empty" in doctor(app)["detail"]
    with sqlite3.connect(hermetic / "meta.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0

    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 0 and f"schema version {CURRENT}" in result.stdout, result.output
    metadata = doctor(app)
    assert metadata["schema"] == {"applied": CURRENT, "current": CURRENT}
    assert metadata["detail"] == f"sqlite, schema version {CURRENT}"


def test_ready_and_the_migration_log_name_the_same_version(hermetic, caplog):
    with caplog.at_level(logging.INFO, logger="matih_lite.sqlstore"):
        host = Host.open()
        try:
            host.metadata  # opening the slot migrates it
            with TestClient(create_app(host)) as client:
                ready = client.get("/ready").json()
        finally:
            host.close()
    assert f"metadata schema migrated to version {CURRENT}" in caplog.text
    assert ready["slots"]["metadata"]["detail"] == f"sqlite, schema version {CURRENT}"
