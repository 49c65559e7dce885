"""``matih-lite experiments`` and ``runs``: tables for people, JSON for scripts, exit codes that mean something."""

from __future__ import annotations

import json
import time

import pytest

import matih_lite as ml
from matih_lite.cli import main
from matih_lite.testing.service import ServiceThread


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")  # rich fits tables to the terminal; keep every column whole


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process as the console script does: ``(exit code, stdout, stderr)``."""

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        return exit_info.value.code or 0, out, err

    return run


@pytest.fixture
def runs(hermetic):
    """Three finished runs in experiment 'churn', oldest first."""
    made = []
    for lr, auc, loss in [(0.1, 0.80, 0.50), (0.2, 0.91, 0.40), (0.1, 0.85, 0.30)]:
        with ml.start_run(experiment="churn", capture=False) as run:
            ml.log_params({"lr": lr, "model": "xgb"})
            ml.log_metrics({"auc": auc, "loss": loss})
            ml.set_tag("team", "growth")
        made.append(run)
        time.sleep(0.002)  # distinct start times, so "newest first" is well defined
    return made


def test_experiments_create_list_delete_restore(cli, hermetic):
    (hermetic / "matih.toml").write_text("")  # a project folder: commands refuse one with no matih-lite state
    code, out, _ = cli("experiments", "create", "churn", "-d", "monthly churn", "-t", "team=growth")
    assert code == 0 and "created experiment churn" in out
    code, out, _ = cli("experiments", "list")
    assert code == 0 and "churn" in out and "monthly churn" in out
    code, out, _ = cli("experiments", "list", "--json")
    listed = json.loads(out)["experiments"]
    assert [e["name"] for e in listed] == ["churn"] and listed[0]["tags"] == {"team": "growth"}
    code, out, _ = cli("experiments", "delete", "churn")
    assert code == 0 and "experiments restore" in out
    assert json.loads(cli("experiments", "list", "--json")[1])["experiments"] == []
    assert json.loads(cli("experiments", "list", "--lifecycle", "deleted", "--json")[1])["experiments"][0]["name"] \
        == "churn"
    code, out, _ = cli("experiments", "restore", listed[0]["experiment_id"], "--json")
    assert code == 0 and json.loads(out)["lifecycle_stage"] == "active"


def test_creating_a_taken_name_is_one_red_line(cli, hermetic):
    (hermetic / "matih.toml").write_text("")
    cli("experiments", "create", "churn")
    code, out, err = cli("experiments", "create", "churn")
    assert code == 1
    assert err.startswith("error: experiment 'churn' already exists") and "Traceback" not in err
    code, _, err = cli("experiments", "create", "x", "--tag", "no-equals-sign")
    assert code == 2 and "KEY=VALUE" in err


def test_runs_list_shows_a_table_with_metrics_and_params(cli, runs):
    code, out, _ = cli("runs", "list", "--experiment", "churn")
    assert code == 0
    for run in runs:
        assert run.run_id[:8] in out and run.name in out
    for text in ("FINISHED", "auc", "loss", "lr", "0.91", "0.85", "xgb"):
        assert text in out
    assert out.index(runs[2].run_id[:8]) < out.index(runs[0].run_id[:8])  # newest first


def test_runs_list_filters_orders_and_prints_json(cli, runs):
    code, out, _ = cli("runs", "list", "-e", "churn", "-f", "metrics.auc > 0.82", "-o", "metrics.auc DESC", "--json")
    assert code == 0
    found = json.loads(out)["runs"]
    assert [r["run_id"] for r in found] == [runs[1].run_id, runs[2].run_id]
    assert found[0]["metrics"]["auc"]["value"] == 0.91 and found[0]["params"]["lr"] == "0.2"
    code, out, _ = cli("runs", "list", "-e", "churn", "-n", "1")
    assert code == 0 and "more runs match" in out


def test_a_bad_filter_exits_2_with_the_position(cli, runs):
    code, out, err = cli("runs", "list", "-e", "churn", "--filter", "metrics.auc >> 0.5")
    assert code == 2 and out == ""
    assert err.startswith("error: invalid filter at position") and len(err.strip().splitlines()) == 1


def test_an_unknown_experiment_or_run_exits_1(cli, runs):
    code, _, err = cli("runs", "list", "-e", "nope")
    assert code == 1 and "nope" in err
    code, _, err = cli("runs", "show", "0" * 32)
    assert code == 1 and err.startswith("error:")
    code, _, err = cli("runs", "show", "zzzz")
    assert code == 1


def test_runs_show_by_id_or_prefix(cli, runs):
    code, out, _ = cli("runs", "show", runs[1].run_id[:8])
    assert code == 0
    for text in (runs[1].run_id, runs[1].name, "churn", "FINISHED", "lr", "0.2", "auc", "0.91", "team", "growth"):
        assert text in out
    assert "mlflow.runName" not in out and "system tags" in out
    code, out, _ = cli("runs", "show", runs[1].run_id, "--json", "--all-tags")
    shown = json.loads(out)
    assert shown["run_id"] == runs[1].run_id and shown["experiment_name"] == "churn"
    assert shown["metrics"]["loss"]["value"] == 0.4 and shown["tags"]["team"] == "growth"


def test_runs_compare_marks_differences_and_the_best(cli, runs):
    ids = [r.run_id for r in runs]
    code, out, _ = cli("runs", "compare", *[i[:8] for i in ids])
    assert code == 0
    assert "★ 0.91" in out and "★ 0.3" in out  # best auc (higher) and best loss (lower)
    assert "lr" in out and "model" in out and "xgb" in out
    code, out, _ = cli("runs", "compare", *ids, "--json")
    result = json.loads(out)
    assert [r["run_id"] for r in result["runs"]] == ids
    assert result["metrics"]["auc"]["best"] == ids[1] and result["metrics"]["loss"]["best"] == ids[2]
    assert result["params"]["lr"]["differs"] is True and result["params"]["model"]["differs"] is False
    code, out, _ = cli("runs", "compare", *ids, "--diff-only")
    assert "model" not in out and "lr" in out


def test_compare_highlights_in_colour_on_a_terminal(runs, monkeypatch, capsys):
    from matih_lite.cli import output, tracking

    monkeypatch.setattr(output, "console", lambda stderr=False: __import__("rich.console").console.Console(
        force_terminal=True, color_system="standard", width=220))
    monkeypatch.setattr(tracking, "console", output.console)
    tracking.runs_compare([r.run_id for r in runs], diff_only=False, config=None, profile=None, json_out=False)
    out = capsys.readouterr().out
    assert "\x1b[1;32m★ 0.91" in out  # bold green
    assert "\x1b[33m0.1" in out  # a differing param in yellow


def test_help_teaches_with_examples(cli):
    code, out, _ = cli("runs", "list", "--help")
    assert code == 0 and "metrics.auc" in out and "Example" in out
    code, out, _ = cli("runs", "--help")
    assert code == 0 and "compare" in out and "show" in out


def test_commands_work_against_a_server_through_matih_url(cli, hermetic, tmp_path, monkeypatch):
    from matih_lite.config import load_config
    from matih_lite.host import Host

    folder = tmp_path / "server"
    folder.mkdir()
    host = Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))
    service = ServiceThread(host).start()
    try:
        monkeypatch.setenv("MATIH_URL", service.url)
        with ml.start_run(experiment="remote", capture=False) as run:
            ml.log_metric("auc", 0.77)
        code, out, _ = cli("runs", "list", "-e", "remote", "--json")
        assert code == 0 and json.loads(out)["runs"][0]["run_id"] == run.run_id
        code, _, err = cli("runs", "list", "-e", "remote", "-f", "metrics.auc >> 1")
        assert code == 2 and err.startswith("error: invalid filter")
        code, _, _ = cli("runs", "show", "f" * 32)
        assert code == 1
        assert not (hermetic / ".matih").exists()  # nothing went to the local store
    finally:
        ml.end_run()
        service.stop()
