"""``matih-lite users`` and ``tokens``: bootstrap on the folder, JSON for scripts, one red line on mistakes."""

from __future__ import annotations

import json

import pytest

from matih_lite.cli import main
from matih_lite.testing.service import ServiceThread


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process as the console script does: ``(exit code, stdout, stderr)``."""

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        return exit_info.value.code or 0, out, err

    return run


def test_users_create_list_disable_enable(cli, hermetic):
    code, out, _ = cli("users", "create", "alice", "--tenant", "acme", "--role", "admin")
    assert code == 0 and "created user alice in tenant acme" in out and "tokens create" in out
    code, out, _ = cli("users", "create", "bob", "--tenant", "acme", "--role", "editor", "--role", "lead", "--json")
    assert code == 0 and json.loads(out)["roles"] == ["editor", "lead"]
    cli("users", "create", "gus", "--tenant", "globex", "--role", "viewer")
    code, out, _ = cli("users", "list")
    assert code == 0 and all(name in out for name in ("alice", "bob", "gus", "globex"))
    code, out, _ = cli("users", "list", "--tenant", "acme", "--json")
    assert [u["name"] for u in json.loads(out)["users"]] == ["alice", "bob"]
    code, out, _ = cli("users", "disable", "bob", "--tenant", "acme")
    assert code == 0 and "disabled" in out
    assert json.loads(cli("users", "list", "-t", "acme", "--json")[1])["users"][1]["disabled"] is True
    code, out, _ = cli("users", "enable", "bob", "--tenant", "acme", "--json")
    assert code == 0 and json.loads(out)["disabled"] is False


def test_user_mistakes_are_one_red_line(cli, hermetic):
    code, _, err = cli("users", "create", "alice", "--role", "superuser")
    assert code == 2 and err.startswith("error: unknown role 'superuser'") and len(err.strip().splitlines()) == 1
    cli("users", "create", "alice", "--role", "viewer")
    code, _, err = cli("users", "create", "alice", "--role", "viewer")
    assert code == 1 and "already exists" in err and "Traceback" not in err
    code, _, err = cli("users", "disable", "nobody")
    assert code == 1 and "does not exist" in err


def test_token_secret_is_printed_once_and_listed_never(cli, hermetic):
    cli("users", "create", "alice", "--tenant", "acme", "--role", "admin")
    code, out, _ = cli("tokens", "create", "--user", "alice", "--tenant", "acme", "--name", "laptop",
                       "--expires-days", "30")
    assert code == 0 and "will not be shown again" in out and "expires" in out
    secret = next(line for line in out.splitlines() if line.startswith("mth_"))
    code, out, _ = cli("tokens", "create", "--user", "alice", "--tenant", "acme", "--json")
    made = json.loads(out)
    assert made["secret"].startswith("mth_") and made["token"]["expires_at"] is None
    assert "not be shown again" in made["note"]
    code, out, _ = cli("tokens", "list")
    assert code == 0 and "laptop" in out and secret not in out and made["secret"] not in out
    listed = json.loads(cli("tokens", "list", "--tenant", "acme", "--json")[1])["tokens"]
    assert len(listed) == 2 and secret not in json.dumps(listed)
    code, out, _ = cli("tokens", "revoke", made["token"]["token_id"])
    assert code == 0 and "revoked" in out
    listed = json.loads(cli("tokens", "list", "--json")[1])["tokens"]
    assert {t["token_id"]: t["revoked"] for t in listed}[made["token"]["token_id"]] is True
    code, _, err = cli("tokens", "revoke", "tok_nope")
    assert code == 1 and "does not exist" in err
    code, _, err = cli("tokens", "create", "--user", "ghost", "--tenant", "acme")
    assert code == 1 and "ghost" in err


def test_commands_go_through_the_service_with_matih_url(cli, hermetic, tmp_path, monkeypatch):
    from matih_lite.auth import Accounts
    from matih_lite.config import load_config
    from matih_lite.host import Host

    folder = tmp_path / "server"
    folder.mkdir()
    (folder / "matih.toml").write_text("[auth]\nenabled = true\n")
    host = Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))
    accounts = Accounts(host)
    accounts.create_user("acme", "alice", ["admin"])
    accounts.create_user("acme", "ed", ["editor"])
    accounts.create_user("globex", "gina", ["admin"])
    admin = accounts.create_token("acme", "alice").secret
    editor = accounts.create_token("acme", "ed").secret
    service = ServiceThread(host).start()
    try:
        monkeypatch.setenv("MATIH_URL", service.url)
        monkeypatch.setenv("MATIH_TOKEN", admin)
        code, out, _ = cli("users", "list", "--json")
        assert code == 0 and [u["name"] for u in json.loads(out)["users"]] == ["alice", "ed"]
        code, out, err = cli("users", "create", "vic", "--role", "viewer")
        assert code == 0, err
        made = json.loads(cli("tokens", "create", "--user", "vic", "--json")[1])
        assert made["token"]["tenant"] == "acme" and made["secret"].startswith("mth_")
        code, out, _ = cli("tokens", "revoke", made["token"]["token_id"], "--json")
        assert code == 0 and json.loads(out)["revoked"] is True
        code, _, err = cli("users", "list", "--tenant", "globex")
        assert code == 2 and "belongs to tenant 'acme'" in err
        monkeypatch.setenv("MATIH_TOKEN", editor)
        code, _, err = cli("tokens", "list")
        assert code == 1 and "admin role" in err
        monkeypatch.delenv("MATIH_TOKEN")
        code, _, err = cli("users", "list")
        assert code == 1 and "bearer token" in err
        assert not (hermetic / ".matih").exists()  # nothing went to the local store
    finally:
        service.stop()
