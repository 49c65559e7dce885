"""Tokens: shown once, stored hashed, refused once expired, revoked or their user disabled; roles and settings."""

from __future__ import annotations

import hashlib
import re
import textwrap

import pytest

from matih_lite.auth import Accounts, auth_enabled, check_allowed, effective_roles, hash_secret, required_role
from matih_lite.config import load_config
from matih_lite.errors import ConfigError, Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from matih_lite.host import Host
from matih_lite.identity import Principal


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def folder(tmp_path):
    return tmp_path


def open_host(folder, toml: str = "") -> Host:
    if toml:
        (folder / "matih.toml").write_text(textwrap.dedent(toml))
    return Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))


@pytest.fixture
def host(folder):
    h = open_host(folder)
    yield h
    h.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def accounts(host, clock):
    a = Accounts(host, clock=clock)
    a.create_user("acme", "alice", ["editor"])
    return a


def test_secret_is_shown_once_and_only_its_hash_is_stored(accounts, folder):
    issued = accounts.create_token("acme", "alice", name="laptop")
    assert re.fullmatch(r"mth_[A-Za-z0-9_-]{43}", issued.secret)
    assert issued.token.token_id.startswith("tok_") and issued.token.name == "laptop"
    assert accounts.authenticate(issued.secret) == Principal("acme", "alice", ("viewer", "editor"))
    accounts.host.close()  # checkpoint nothing away: look at every file the store wrote, WAL included
    files = [p for p in (folder / ".matih").rglob("*") if p.is_file()]
    assert any(p.name == "matih.db" for p in files)
    raw = b"".join(p.read_bytes() for p in files)
    assert issued.secret.encode() not in raw
    assert issued.secret[4:].encode() not in raw  # not even without its prefix
    assert hashlib.sha256(issued.secret.encode()).hexdigest().encode() in raw
    assert "secret" not in repr(accounts.list_tokens("acme")).lower()


def test_each_token_is_different(accounts):
    secrets = {accounts.create_token("acme", "alice").secret for _ in range(5)}
    assert len(secrets) == 5


def test_unknown_and_malformed_tokens_are_refused(accounts):
    for bad in ("mth_" + "A" * 43, "not-a-token", "", "Bearer x"):
        with pytest.raises(Unauthorized, match="not valid"):
            accounts.authenticate(bad)


def test_expired_token_is_refused(accounts, clock):
    issued = accounts.create_token("acme", "alice", expires_in_days=1)
    assert issued.token.expires_at == int(clock.now * 1000) + 86_400_000
    assert accounts.authenticate(issued.secret).user == "alice"
    clock.now += 86_400 - 1
    assert accounts.authenticate(issued.secret).user == "alice"
    clock.now += 1
    with pytest.raises(Unauthorized, match="expired"):
        accounts.authenticate(issued.secret)  # even while the lookup is cached
    accounts.forget_cached()
    with pytest.raises(Unauthorized, match="expired"):
        accounts.authenticate(issued.secret)


def test_expiry_must_be_in_the_future(accounts):
    for days in (0, -1):
        with pytest.raises(InvalidInput):
            accounts.create_token("acme", "alice", expires_in_days=days)


def test_revoked_token_is_refused_at_once_in_this_process(accounts):
    issued = accounts.create_token("acme", "alice")
    accounts.authenticate(issued.secret)
    revoked = accounts.revoke_token("acme", issued.token.token_id)
    assert revoked.revoked
    with pytest.raises(Unauthorized, match="revoked"):
        accounts.authenticate(issued.secret)


def test_revocation_elsewhere_counts_once_the_cache_lapses(accounts, host, clock):
    issued = accounts.create_token("acme", "alice")
    accounts.authenticate(issued.secret)
    Accounts(host, clock=clock).revoke_token("acme", issued.token.token_id)  # e.g. the CLI on the same store
    assert accounts.authenticate(issued.secret).user == "alice"  # still cached
    clock.now += accounts.cache_seconds
    with pytest.raises(Unauthorized, match="revoked"):
        accounts.authenticate(issued.secret)


def test_disabled_user_is_refused_and_can_be_enabled_again(accounts):
    issued = accounts.create_token("acme", "alice")
    accounts.authenticate(issued.secret)
    assert accounts.disable_user("acme", "alice").disabled
    with pytest.raises(Unauthorized, match="disabled"):
        accounts.authenticate(issued.secret)
    with pytest.raises(Conflict, match="disabled"):
        accounts.create_token("acme", "alice")
    accounts.update_user("acme", "alice", disabled=False)
    assert accounts.authenticate(issued.secret).user == "alice"


def test_lookups_are_cached_and_last_use_written_once_a_minute(accounts, host, clock, monkeypatch):
    issued = accounts.create_token("acme", "alice")
    store = host.metadata
    calls = {"find": 0, "touch": 0}
    find, touch = store.find_token, store.touch_token

    def counting_find(h):
        calls["find"] += 1
        return find(h)

    def counting_touch(*a):
        calls["touch"] += 1
        return touch(*a)

    monkeypatch.setattr(store, "find_token", counting_find)
    monkeypatch.setattr(store, "touch_token", counting_touch)
    for _ in range(100):
        accounts.authenticate(issued.secret)
    assert calls == {"find": 1, "touch": 1}
    assert accounts.list_tokens("acme")[0].last_used_at == int(clock.now * 1000)
    clock.now += 10
    accounts.authenticate(issued.secret)
    assert calls == {"find": 2, "touch": 1}  # looked up again, but used a moment ago
    clock.now += 60
    accounts.authenticate(issued.secret)
    assert calls == {"find": 3, "touch": 2}


def test_users_roles_and_names_are_validated(accounts):
    with pytest.raises(InvalidInput, match="unknown role 'superuser'"):
        accounts.create_user("acme", "bob", ["superuser"])
    with pytest.raises(InvalidInput, match="at least one role"):
        accounts.create_user("acme", "bob", [])
    with pytest.raises(InvalidInput, match="tenant name"):
        accounts.create_user("../etc", "bob", ["viewer"])
    with pytest.raises(InvalidInput, match="user name"):
        accounts.create_user("acme", "bob/../x", ["viewer"])
    with pytest.raises(Conflict):
        accounts.create_user("acme", "alice", ["viewer"])
    assert accounts.create_user("acme", "bob", ["viewer", "lead", "viewer"]).roles == ("viewer", "lead")
    with pytest.raises(NotFound):
        accounts.create_token("acme", "nobody")
    with pytest.raises(NotFound):
        accounts.create_token("globex", "alice")


def test_admins_manage_only_their_own_tenant(accounts):
    accounts.create_user("acme", "root", ["admin"])
    accounts.create_user("globex", "gina", ["admin"])
    acme_admin, globex_admin = Principal("acme", "root", ("admin",)), Principal("globex", "gina", ("admin",))
    editor = Principal("acme", "alice", ("viewer", "editor"))
    assert [u.name for u in accounts.list_users("acme", actor=acme_admin)] == ["alice", "root"]
    with pytest.raises(Forbidden):
        accounts.list_users("acme", actor=globex_admin)
    with pytest.raises(Forbidden):
        accounts.create_token("acme", "alice", actor=globex_admin)
    with pytest.raises(Forbidden, match="admin role"):
        accounts.create_token("acme", "alice", actor=editor)
    with pytest.raises(Forbidden, match="themselves"):
        accounts.disable_user("acme", "root", actor=acme_admin)
    with pytest.raises(Forbidden, match="admin role"):
        accounts.update_user("acme", "root", roles=["viewer"], actor=acme_admin)
    assert accounts.create_token("acme", "alice", actor=acme_admin).token.user == "alice"


def test_roles_include_the_lesser_ones():
    assert effective_roles(["viewer"]) == ("viewer",)
    assert effective_roles(["lead"]) == ("viewer", "editor", "lead")
    assert effective_roles(["owner"]) == ("viewer", "editor", "owner")
    assert effective_roles(["admin"]) == ("viewer", "editor", "owner", "lead", "admin")
    assert effective_roles(["nonsense"]) == ()


@pytest.mark.parametrize(("method", "path", "role"), [
    ("GET", "/api/v1/experiments/{experiment_id}", "viewer"),
    ("HEAD", "/api/v1/runs/{run_id}", "viewer"),
    ("POST", "/api/v1/runs/search", "viewer"),
    ("POST", "/api/2.0/mlflow/runs/search", "viewer"),
    ("POST", "/ajax-api/2.0/mlflow/experiments/search", "viewer"),
    ("POST", "/api/2.0/mlflow/registered-models/get-latest-versions", "viewer"),
    ("POST", "/v2/models/{name}/infer", "viewer"),
    ("POST", "/api/v1/experiments", "editor"),
    ("POST", "/api/v1/runs/{run_id}/batch", "editor"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/{path}", "editor"),
    ("DELETE", "/api/v1/runs/{run_id}", "editor"),
    ("POST", "/api/2.0/mlflow/runs/log-batch", "editor"),
    ("POST", "/api/v1/something/infer", "editor"),
    ("GET", "/api/v1/auth/users", "admin"),
    ("DELETE", "/api/v1/auth/tokens/{token_id}", "admin"),
    ("GET", "/api/v1/auth/whoami", "viewer"),
])
def test_role_gate(method, path, role):
    assert required_role(method, path) == role
    allowed = {"viewer": ("viewer",), "editor": ("editor",), "admin": ("admin",)}[role]
    check_allowed(Principal("t", "u", allowed), method, path)
    if role != "viewer":
        with pytest.raises(Forbidden, match=f"needs the {role} role"):
            check_allowed(Principal("t", "u", ("viewer", "lead") if role == "admin" else ("viewer",)), method, path)


def test_auth_is_off_for_lite_by_default_and_on_when_configured(folder):
    assert auth_enabled(open_host(folder)) is False
    assert auth_enabled(open_host(folder, "[auth]\nenabled = true\n")) is True
    assert auth_enabled(open_host(folder, "[auth]\nenabled = false\n")) is False


def test_every_other_profile_requires_auth(folder):
    h = open_host(folder, 'default_profile = "cluster"\n[profiles.cluster]\n')
    assert h.profile == "cluster" and auth_enabled(h) is True
    h = open_host(folder, 'default_profile = "cluster"\n[profiles.cluster]\n[auth]\nenabled = false\n')
    with pytest.raises(ConfigError, match="auth.enabled: profile 'cluster' requires bearer tokens"):
        auth_enabled(h)


def test_a_typo_in_auth_settings_is_an_error_not_auth_off(folder):
    with pytest.raises(ConfigError, match=r"auth\.enable: unknown key; did you mean 'enabled'"):
        auth_enabled(open_host(folder, "[auth]\nenable = true\n"))
    with pytest.raises(ConfigError, match="auth.enabled"):
        auth_enabled(open_host(folder, '[auth]\nenabled = "yes please"\n'))


def test_hash_is_sha256_hex():
    assert hash_secret("mth_x") == hashlib.sha256(b"mth_x").hexdigest()
