"""``matih-lite models ...``: register, list, show, promote, approve, reject, rollback, alias and audit."""

from __future__ import annotations

import json

import pytest

import matih_lite as ml
from matih_lite.cli import main
from matih_lite.testing.service import ServiceThread

POLICY = """
[models."*"]
staging_requires = ["auc >= 0.85"]
production_approvers = ["owner", "lead"]
"""


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")


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
def folder(hermetic):
    (hermetic / "matih.toml").write_text(POLICY)
    return hermetic


def trained(auc: float) -> str:
    with ml.start_run(experiment="churn", capture=False) as run:
        ml.log_metrics({"auc": auc})
        ml.log_text("weights", "model/model.bin")
    return run.run_id


def test_register_list_and_show(cli, folder):
    run_id = trained(0.9)
    code, out, err = cli("models", "register", "churn", "--run", run_id[:8], "--path", "model", "--flavor", "sklearn",
                         "-d", "first cut", "-t", "team=growth")
    assert code == 0, err
    assert "registered churn version 1" in out and "sklearn" in out and "Development" in out
    code, out, _ = cli("models", "register", "churn", "--run", run_id, "--json")
    assert code == 0 and json.loads(out)["version"] == 2 and json.loads(out)["run_id"] == run_id
    code, out, _ = cli("models", "list")
    assert code == 0 and "churn" in out and "local" in out
    listed = json.loads(cli("models", "list", "--json")[1])["models"]
    assert [(m["name"], m["latest_version"], m["production"]) for m in listed] == [("churn", 2, [])]
    code, out, _ = cli("models", "show", "churn")
    assert code == 0 and "versions" in out and "first cut" in out and "auc >= 0.85" in out
    code, out, _ = cli("models", "show", "churn", "1", "--json")
    shown = json.loads(out)
    assert (shown["version"], shown["flavor"], shown["tags"], shown["description"]) == \
        (1, "sklearn", {"team": "growth"}, "first cut")
    code, out, _ = cli("models", "show", "churn", "1")
    assert code == 0 and f"runs:/{run_id}/model" in out
    code, _, err = cli("models", "show", "nope")
    assert code == 1 and err.startswith("error: registered model 'nope' does not exist")
    code, _, err = cli("models", "register", "churn")
    assert code == 2 and "--run" in err
    code, _, err = cli("models", "register", "churn", "--run", run_id, "--path", "missing")
    assert code == 1 and "no artifacts" in err


def test_governed_promotion_approval_rollback_and_audit(cli, folder):
    low, good = trained(0.7), trained(0.92)
    cli("models", "register", "churn", "--run", low)
    cli("models", "register", "churn", "--run", good)
    code, _, err = cli("models", "promote", "churn", "1", "--to", "Staging")
    assert code == 1 and "auc >= 0.85 (actual: 0.7)" in err and "Traceback" not in err
    code, out, _ = cli("models", "promote", "churn", "2", "--to", "Staging", "--reason", "beats v1")
    assert code == 0 and "Development → Staging" in out
    code, out, _ = cli("models", "promote", "churn", "2", "--to", "Production", "--json")
    approval = json.loads(out)["approval"]
    assert code == 0 and approval["status"] == "pending" and approval["requested_by"] == "local"
    code, out, _ = cli("models", "approvals")
    assert code == 0 and approval["approval_id"][:8] in out and "pending" in out
    code, _, err = cli("models", "approve", approval["approval_id"][:8])
    assert code == 1 and "you requested this promotion" in err
    code, _, err = cli("models", "approve", approval["approval_id"][:8], "--as", "otto:editor")
    assert code == 1 and "may not approve" in err
    code, out, err = cli("models", "approve", approval["approval_id"][:8], "--as", "lena:lead", "--comment", "ok")
    assert code == 0, err
    assert "is now in Production" in out
    # A second version replaces it; rollback puts it back.
    third = trained(0.95)
    cli("models", "register", "churn", "--run", third)
    cli("models", "promote", "churn", "3", "--to", "Staging")
    code, out, _ = cli("models", "promote", "churn", "3", "--to", "Production")
    assert code == 0 and "pending" in out and "models approve" in out
    pending = json.loads(cli("models", "approvals", "churn", "--json")[1])["approvals"][0]["approval_id"]
    code, _, err = cli("models", "reject", pending)
    assert code == 2 and "--comment" in err
    assert cli("models", "approve", pending, "--as", "lena:lead")[0] == 0
    stages = {v["version"]: v["stage"] for v in json.loads(cli("models", "show", "churn", "--json")[1])["versions"]}
    assert stages == {1: "Development", 2: "Archived", 3: "Production"}
    code, out, _ = cli("models", "rollback", "churn", "--reason", "bad canary")
    assert code == 0 and "v2 is in Production again" in out and "archived v3" in out
    code, out, _ = cli("models", "audit", "churn")
    assert code == 0
    for text in ("transition.refused", "approval.requested", "approval.approved", "model.rolled_back", "lena",
                 "bad canary", "auc >= 0.85 (actual 0.7)"):
        assert text in out, text
    entries = json.loads(cli("models", "audit", "churn", "--json")[1])["entries"]
    assert entries[-1]["action"] == "version.transitioned" and entries[-1]["to_stage"] == "Archived"


def test_reject_and_aliases(cli, folder):
    cli("models", "register", "churn", "--run", trained(0.9))
    cli("models", "promote", "churn", "1", "--to", "Staging")
    aid = json.loads(cli("models", "promote", "churn", "1", "--to", "Production", "--json")[1])["approval"][
        "approval_id"]
    code, out, _ = cli("models", "reject", aid[:6], "--comment", "not yet", "--as", "lena:lead", "--json")
    assert code == 0 and json.loads(out)["status"] == "rejected" and json.loads(out)["comment"] == "not yet"
    code, out, _ = cli("models", "alias", "churn", "champion", "1")
    assert code == 0 and "churn@champion → v1" in out
    code, out, _ = cli("models", "alias", "churn", "champion", "--json")
    assert json.loads(out) == {"name": "churn", "alias": "champion", "version": 1}
    code, out, _ = cli("models", "show", "churn", "champion", "--json")
    assert json.loads(out)["aliases"] == ["champion"]
    assert cli("models", "alias", "churn", "champion", "--delete")[0] == 0
    code, _, err = cli("models", "alias", "churn", "champion")
    assert code == 1 and "no alias" in err
    code, _, err = cli("models", "alias", "churn", "latest", "1")
    assert code == 2 and "reserved" in err
    code, _, err = cli("models", "promote", "churn", "1", "--to", "Limbo")
    assert code == 2 and "unknown stage" in err
    code, _, err = cli("models", "approve", aid, "--as", "lena:nonsense")
    assert code == 2 and "--as" in err


def test_commands_work_against_a_server_through_matih_url(cli, folder, tmp_path, monkeypatch):
    from matih_lite.config import load_config
    from matih_lite.host import Host

    server_folder = tmp_path / "server"
    server_folder.mkdir()
    (server_folder / "matih.toml").write_text(POLICY)
    host = Host(load_config(cwd=server_folder, env={"MATIH_HOME": str(server_folder / ".matih")}))
    service = ServiceThread(host).start()
    try:
        monkeypatch.setenv("MATIH_URL", service.url)
        run_id = trained(0.91)
        code, out, err = cli("models", "register", "remote", "--run", run_id[:8], "--json")
        assert code == 0, err
        assert json.loads(out)["version"] == 1
        code, out, _ = cli("models", "promote", "remote", "1", "--to", "Staging", "--json")
        assert code == 0 and json.loads(out)["transition"]["to_stage"] == "Staging"
        code, out, _ = cli("models", "promote", "remote", "1", "--to", "Production", "--json")
        assert code == 0 and json.loads(out)["approval"]["status"] == "pending"
        code, _, err = cli("models", "approve", json.loads(out)["approval"]["approval_id"], "--as", "lena")
        assert code == 2 and "works only embedded" in err
        code, _, err = cli("models", "promote", "remote", "9", "--to", "Staging")
        assert code == 1 and "no version 9" in err
        code, out, _ = cli("models", "audit", "remote", "--json")
        assert [e["action"] for e in json.loads(out)["entries"]][-1] == "approval.requested"
        assert not (folder / ".matih").exists()  # nothing went to the local store
    finally:
        service.stop()


def test_a_solo_user_without_auth_finishes_with_self_approval_recorded(cli, folder):
    cli("models", "register", "churn", "--run", trained(0.9))
    cli("models", "promote", "churn", "1", "--to", "Staging")
    aid = json.loads(cli("models", "promote", "churn", "1", "--to", "Production", "--json")[1])["approval"][
        "approval_id"]
    code, _, err = cli("models", "approve", aid)
    assert code == 1 and "[governance] self_approval = true" in err  # the way out, said where it is needed
    (folder / "matih.toml").write_text(POLICY + "\n[governance]\nself_approval = true\n")
    code, out, err = cli("models", "approve", aid, "--comment", "just me")
    assert code == 0, err
    assert "is now in Production" in out
    entries = json.loads(cli("models", "audit", "churn", "--json")[1])["entries"]
    approved = [e for e in entries if e["action"] == "approval.approved"]
    assert approved and approved[0]["detail"] == {"self_approved": True} and approved[0]["actor"] == "local"
    code, out, _ = cli("models", "card", "churn", "1", "--format", "md")
    assert code == 0 and "approval.approved (self-approved, auth off)" in out


def test_self_approval_is_refused_whenever_auth_is_on(cli, folder):
    (folder / "matih.toml").write_text(POLICY + "\n[governance]\nself_approval = true\n[auth]\nenabled = true\n")
    code, _, err = cli("config", "validate")
    assert code == 2 and "governance.self_approval: allowed only while auth is off" in err
    (folder / "matih.toml").write_text(POLICY + "\n[governance]\nself_approval = 'yes'\n")
    code, _, err = cli("config", "validate")
    assert code == 2 and "governance.self_approval: Expected `bool`" in err
