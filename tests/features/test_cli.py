"""``matih-lite features ...``: tables for people, --json for scripts, exit 2 and one line for mistakes."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matih_lite.cli import main
from matih_lite.testing.features import CUSTOMER, PUSHED, T0


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")


@pytest.fixture
def cli(capsys):
    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        return exit_info.value.code or 0, out, err

    return run


@pytest.fixture
def folder(platform):
    """The customer repo, not applied, with its state folder made and its host closed: each command opens its own."""
    platform.host.metadata.health()
    platform.host.close()
    return platform.repo.parent


def test_plan_then_apply_then_list(cli, folder):
    code, out, _ = cli("features", "plan")
    assert code == 0 and "4 to add, 0 to change, 0 to remove" in out and "feature view" in out
    code, out, _ = cli("features", "apply", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["version"] == 1 and len(doc["changes"]) == 4
    code, out, _ = cli("features", "plan")
    assert "no changes: the definitions match version 1" in out
    code, out, _ = cli("features", "list")
    assert code == 0 and "customer_stats" in out and "churn_v1" in out and "customer_id:int64" in out
    code, out, _ = cli("features", "list", "--json")
    assert [v["name"] for v in json.loads(out)["feature_views"]] == ["customer_stats"]


def test_a_definition_mistake_is_one_line_and_exit_2(cli, folder):
    (folder / "features" / "customer.toml").write_text(CUSTOMER.replace('ttl = "7d"', 'ttl = "7 days"'))
    code, out, err = cli("features", "apply")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ['error: features/customer.toml: feature_views.customer_stats.ttl: expected '
                                        'a duration like "7d", got "7 days"']


def test_historical_from_a_file_to_a_file(cli, folder):
    cli("features", "apply")
    pq.write_table(pa.table({"customer_id": [1, 2, 3], "event_timestamp": pa.array([T0] * 3, pa.timestamp("us", "UTC")),
                             "label": [1, 0, 1]}), folder / "labels.parquet")
    code, out, _ = cli("features", "historical", "--entities", "labels.parquet", "--service", "churn_v1",
                       "--output", "train.csv")
    assert code == 0 and "wrote 3 rows to train.csv" in out
    lines = (folder / "train.csv").read_text().splitlines()
    assert lines[0] == '"customer_id","event_timestamp","label","conv_rate","trips"'
    assert lines[1].endswith(",1,0.2,2") and lines[3].endswith(",1,,")
    code, out, _ = cli("features", "historical", "--start", "2025-01-01", "--end", "2025-01-10",
                       "--features", "customer_stats:trips", "-o", "all.parquet", "--json")
    assert json.loads(out)["rows"] == 2 and pq.read_table(folder / "all.parquet").column("trips").to_pylist() == [2, 4]


def test_materialize_online_and_push(cli, folder):
    (folder / "features" / "pushed.toml").write_text(PUSHED)
    cli("features", "apply")
    code, out, _ = cli("features", "materialize", "--start", "2024-12-01", "--end", "2025-01-10", "--json")
    assert code == 0 and json.loads(out) == {"customer_live": 2, "customer_stats": 2}
    code, out, _ = cli("features", "materialize-incremental", "--end", "2025-01-10", "--json")
    assert code == 0 and set(json.loads(out)) == {"customer_live", "customer_stats"}
    code, out, _ = cli("features", "online", "--entity", "customer_id=2,9", "--features",
                       "customer_stats:conv_rate", "--json")
    doc = json.loads(out)
    assert doc["metadata"]["feature_names"] == ["customer_id", "conv_rate"]
    assert doc["results"][1]["statuses"] == ["OUTSIDE_MAX_AGE", "NOT_FOUND"]  # a week old by the clock
    (folder / "rows.json").write_text(json.dumps([{"customer_id": 7, "event_timestamp": "2099-01-01T00:00:00Z",
                                                   "conv_rate": 0.7, "trips": 7}]))
    code, out, _ = cli("features", "push", "customer_push", "--file", "rows.json")
    assert code == 0 and "pushed 1 rows to customer_push (online)" in out
    code, out, _ = cli("features", "online", "-e", "customer_id=7", "-f", "customer_live:trips")
    assert code == 0 and "PRESENT" in out and " 7 " in out


@pytest.mark.parametrize("args, message", [
    (("features", "online", "--entity", "customer_id=1", "--features", "customer_stats:conv_rat"),
     "did you mean 'conv_rate'?"),
    (("features", "online", "--entity", "customer_id=1", "--service", "churn_v2"), "did you mean 'churn_v1'?"),
    (("features", "online", "--entity", "customer=1", "--service", "churn_v1"), "no join key 'customer_id'"),
    (("features", "online", "--entity", "customer_id", "--service", "churn_v1"), "--entity takes KEY=VALUE"),
    (("features", "historical", "--entities", "nope.parquet", "--service", "churn_v1", "-o", "x.parquet"),
     "no such file"),
    (("features", "materialize", "--start", "yesterday", "--end", "now"), "--start takes an ISO 8601 time"),
    (("features", "show", "customer_stat"), "did you mean 'customer_stats'?"),
])
def test_mistakes_exit_2_with_one_line(cli, folder, args, message):
    cli("features", "apply")
    code, out, err = cli(*args)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and message in err


def test_show_a_view_with_its_health(cli, folder):
    cli("features", "apply")
    code, out, _ = cli("features", "show", "customer_stats")
    assert code == 0 and "quality score" in out and "stale" in out and "conv_rate" in out
    code, out, _ = cli("features", "show", "churn_v1", "--json")
    assert json.loads(out)["definition"]["features"] == ["customer_stats:conv_rate", "customer_stats:trips"]
    code, out, _ = cli("features", "audit", "--json")
    assert {e["change"]["name"] for e in json.loads(out)} == {"customer", "customer_stats", "churn_v1"}


@pytest.mark.slow  # a service started and stopped
def test_the_cli_talks_to_the_service_at_matih_url(cli, folder, monkeypatch):
    from matih_lite.host import Host
    from matih_lite.testing.service import serve

    host = Host.open()
    try:
        with serve(host) as url:
            monkeypatch.setenv("MATIH_URL", url)
            code, out, _ = cli("features", "apply", "--json")
            assert code == 0 and json.loads(out)["version"] == 1
            pq.write_table(pa.table({"customer_id": [2], "event_timestamp": pa.array([T0], pa.timestamp("us", "UTC"))}),
                           folder / "labels.parquet")
            code, out, _ = cli("features", "historical", "-e", "labels.parquet", "-s", "churn_v1", "-o", "t.parquet")
            assert code == 0 and pq.read_table(folder / "t.parquet").column("trips").to_pylist() == [4]
            code, out, err = cli("features", "online", "-e", "customer_id=1", "-f", "customer_stats:nope")
            assert code == 2 and "unknown feature 'nope'" in err
            code, out, _ = cli("features", "materialize", "--start", "2024-12-01", "--end", "2025-01-10", "--json")
            assert json.loads(out) == {"customer_stats": 2}
    finally:
        host.close()
