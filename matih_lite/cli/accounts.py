"""Users and API tokens from the terminal: ``users create|list|disable|enable``, ``tokens create|list|revoke``.

On the server's folder (no ``MATIH_URL``) the commands work on its metadata store directly, as
the operator, in any tenant: that is how the first admin and their token are made. With
``MATIH_URL`` set they go through ``/api/v1/auth`` with ``MATIH_TOKEN``, which must be an
admin's, and reach only that admin's tenant.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote

import typer

from matih_lite.cli import app
from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json, table
from matih_lite.contracts.auth import Token, User
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.identity import DEFAULT_TENANT, ROLES
from matih_lite.remote import ServiceHttp

users_app = typer.Typer(
    help="Create, list, disable and enable users of a tenant.\n\n"
         "Examples:\n\n"
         "  matih-lite users create alice --tenant acme --role admin\n\n"
         "  matih-lite users create bob --tenant acme --role editor --role lead\n\n"
         "  matih-lite users list --tenant acme\n\n"
         "  matih-lite users disable bob --tenant acme",
    no_args_is_help=True)
tokens_app = typer.Typer(
    help="Create, list and revoke API tokens (shown once, stored hashed).\n\n"
         "Examples:\n\n"
         "  matih-lite tokens create --user alice --tenant acme --name laptop --expires-days 90\n\n"
         "  matih-lite tokens list --tenant acme\n\n"
         "  matih-lite tokens revoke tok_1a2b3c4d5e6f",
    no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")

TenantOption = Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant (default: 'default'; with "
                                                  "MATIH_URL, the token's own).")]
NOT_SHOWN_AGAIN = "This secret will not be shown again: it is stored only as a hash. Keep it now."


# ---- where the accounts live: this folder's store, or the service at MATIH_URL ----------------------
class LocalAccounts:
    """The operator's view: :class:`~matih_lite.auth.Accounts` on this folder's config, every tenant."""

    def __init__(self, config: str | None, profile: str | None) -> None:
        from matih_lite.auth import Accounts
        from matih_lite.host import Host

        self.host = Host.open(config, profile)
        self.accounts = Accounts(self.host, cache_seconds=0)

    def close(self) -> None:
        self.host.close()

    def tenant(self, given: str | None) -> str:
        return given or DEFAULT_TENANT

    def tenants(self, given: str | None) -> list[str]:
        return [given] if given else [t.name for t in self.accounts.list_tenants()]

    def create_user(self, tenant: str, name: str, roles: Sequence[str]) -> User:
        return self.accounts.create_user(tenant, name, roles)

    def list_users(self, tenant: str) -> list[User]:
        return self.accounts.list_users(tenant)

    def update_user(self, tenant: str, name: str, *, disabled: bool) -> User:
        return self.accounts.update_user(tenant, name, disabled=disabled)

    def create_token(self, tenant: str, user: str, **kw: Any) -> tuple[Token, str]:
        issued = self.accounts.create_token(tenant, user, **kw)
        return issued.token, issued.secret

    def list_tokens(self, tenant: str, user: str | None) -> list[Token]:
        return self.accounts.list_tokens(tenant, user=user)

    def revoke_token(self, tenant: str | None, token_id: str) -> Token:
        for name in self.tenants(tenant):
            try:
                return self.accounts.revoke_token(name, token_id)
            except NotFound:
                continue
        raise NotFound(f"token {token_id!r} does not exist" + (f" in tenant {tenant!r}" if tenant else ""))


class RemoteAccounts:
    """An admin's view over ``/api/v1/auth`` at ``MATIH_URL``: their own tenant only."""

    def __init__(self, url: str, token: str | None) -> None:
        self.http = ServiceHttp(url, token, user_agent="matih-lite-cli",
                                hint="unset MATIH_URL to manage the accounts of this folder's store")
        self._me: str | None = None

    def close(self) -> None:
        self.http.close()

    def tenant(self, given: str | None) -> str:
        if self._me is None:
            self._me = self.http.call("GET", "/api/v1/auth/whoami")["tenant"]
        if given and given != self._me:
            raise InvalidInput(f"MATIH_TOKEN belongs to tenant {self._me!r}; it cannot manage tenant {given!r} "
                               "(unset MATIH_URL and run this on the server's folder instead)")
        return self._me

    def tenants(self, given: str | None) -> list[str]:
        return [self.tenant(given)]

    def create_user(self, tenant: str, name: str, roles: Sequence[str]) -> User:
        return _user(self.http.call("POST", "/api/v1/auth/users", json={"name": name, "roles": list(roles)}))

    def list_users(self, tenant: str) -> list[User]:
        return [_user(u) for u in self.http.call("GET", "/api/v1/auth/users")["users"]]

    def update_user(self, tenant: str, name: str, *, disabled: bool) -> User:
        return _user(self.http.call("PATCH", f"/api/v1/auth/users/{quote(name, safe='')}", json={"disabled": disabled}))

    def create_token(self, tenant: str, user: str, **kw: Any) -> tuple[Token, str]:
        body = self.http.call("POST", "/api/v1/auth/tokens", json={"user": user, **kw})
        return _token(body["token"], tenant), body["secret"]

    def list_tokens(self, tenant: str, user: str | None) -> list[Token]:
        params = {"user": user} if user else {}
        return [_token(t, tenant) for t in self.http.call("GET", "/api/v1/auth/tokens", params=params)["tokens"]]

    def revoke_token(self, tenant: str | None, token_id: str) -> Token:
        me = self.tenant(tenant)
        return _token(self.http.call("DELETE", f"/api/v1/auth/tokens/{quote(token_id, safe='')}"), me)


def _user(d: dict[str, Any]) -> User:
    return User(d["tenant"], d["name"], tuple(d["roles"]), d["created_at"], d["disabled"])


def _token(d: dict[str, Any], tenant: str) -> Token:
    return Token(d["token_id"], tenant, d["user"], d["created_at"], d.get("name") or "", d.get("description") or "",
                 d.get("expires_at"), d.get("last_used_at"), d["revoked"])


def _accounts(config: str | None, profile: str | None) -> LocalAccounts | RemoteAccounts:
    url = os.environ.get("MATIH_URL")
    if url:
        return RemoteAccounts(url, os.environ.get("MATIH_TOKEN") or None)
    return LocalAccounts(config, profile)


# ---- formatting -------------------------------------------------------------------------------------
def when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000)) if ms else ""


def day(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(ms / 1000)) if ms else ""


def user_json(u: User) -> dict[str, Any]:
    return {"tenant": u.tenant, "name": u.name, "roles": list(u.roles), "created_at": u.created_at,
            "disabled": u.disabled}


def token_json(t: Token) -> dict[str, Any]:
    return {"token_id": t.token_id, "tenant": t.tenant, "user": t.user, "name": t.name,
            "description": t.description, "created_at": t.created_at, "expires_at": t.expires_at,
            "last_used_at": t.last_used_at, "revoked": t.revoked}


def token_state(t: Token) -> str:
    if t.revoked:
        return "[red]revoked[/]"
    if t.expires_at is not None and t.expires_at <= time.time() * 1000:
        return "[magenta]expired[/]"
    return "[green]active[/]"


# ---- users ------------------------------------------------------------------------------------------
@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="User name, e.g. alice or alice@example.com.")],
    role: Annotated[list[str], typer.Option("--role", "-r", help=f"A role ({', '.join(ROLES)}); repeat for more.")],
    tenant: TenantOption = None,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Create a user with roles in a tenant (the tenant is created when missing)."""
    accounts = _accounts(config, profile)
    try:
        user = accounts.create_user(accounts.tenant(tenant), name, role)
    finally:
        accounts.close()
    if json_out:
        print_json(user_json(user))
    else:
        console().print(f"created user [bold]{escape(user.name)}[/bold] in tenant {escape(user.tenant)} "
                        f"(roles: {', '.join(user.roles)}); give them a token with 'matih-lite tokens create "
                        f"--user {escape(user.name)} --tenant {escape(user.tenant)}'")


@users_app.command("list")
def users_list(tenant: TenantOption = None, config: ConfigOption = None, profile: ProfileOption = None,
               json_out: JsonOption = False) -> None:
    """List users (every tenant's, on the server's folder, unless --tenant is given)."""
    accounts = _accounts(config, profile)
    try:
        users = [u for t in accounts.tenants(tenant) for u in accounts.list_users(t)]
    finally:
        accounts.close()
    if json_out:
        print_json({"users": [user_json(u) for u in users]})
        return
    table("users", ["tenant", "user", "roles", "created", "status"],
          [(escape(u.tenant), escape(u.name), ", ".join(u.roles), day(u.created_at),
            "[red]disabled[/]" if u.disabled else "[green]enabled[/]") for u in users])


def _set_disabled(name: str, tenant: str | None, config: str | None, profile: str | None, json_out: bool,
                  disabled: bool) -> None:
    accounts = _accounts(config, profile)
    try:
        user = accounts.update_user(accounts.tenant(tenant), name, disabled=disabled)
    finally:
        accounts.close()
    if json_out:
        print_json(user_json(user))
    else:
        what = "disabled (their tokens stop working)" if disabled else "enabled"
        console().print(f"user {escape(user.name)} of tenant {escape(user.tenant)} {what}")


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="User name.")], tenant: TenantOption = None,
                  config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False) -> None:
    """Disable a user: every one of their tokens is refused from now on."""
    _set_disabled(name, tenant, config, profile, json_out, True)


@users_app.command("enable")
def users_enable(name: Annotated[str, typer.Argument(help="User name.")], tenant: TenantOption = None,
                 config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False) -> None:
    """Enable a disabled user again (their tokens that are not revoked or expired work again)."""
    _set_disabled(name, tenant, config, profile, json_out, False)


# ---- tokens -----------------------------------------------------------------------------------------
@tokens_app.command("create")
def tokens_create(
    user: Annotated[str, typer.Option("--user", "-u", help="The user the token acts as.")],
    tenant: TenantOption = None,
    name: Annotated[str, typer.Option("--name", "-n", help="What the token is for, e.g. 'ci' or 'laptop'.")] = "",
    description: Annotated[str, typer.Option("--description", "-d", help="A longer note.")] = "",
    expires_days: Annotated[int | None, typer.Option("--expires-days", min=1,
                                                     help="Expire after N days (default: never).")] = None,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Create a token for a user and print its secret, once."""
    accounts = _accounts(config, profile)
    try:
        token, secret = accounts.create_token(accounts.tenant(tenant), user, name=name, description=description,
                                              expires_in_days=expires_days)
    finally:
        accounts.close()
    if json_out:
        print_json({"token": token_json(token), "secret": secret, "note": NOT_SHOWN_AGAIN})
        return
    out = console()
    expiry = f"expires {when(token.expires_at)}" if token.expires_at else "does not expire"
    out.print(f"token [bold]{token.token_id}[/bold] for {escape(token.user)} (tenant {escape(token.tenant)}), "
              f"{expiry}:")
    out.print(secret, markup=False)
    out.print(f"[yellow]{NOT_SHOWN_AGAIN}[/yellow] Use it as MATIH_TOKEN (SDK, CLI) or MLFLOW_TRACKING_TOKEN "
              "(mlflow client).")


@tokens_app.command("list")
def tokens_list(tenant: TenantOption = None,
                user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's tokens.")] = None,
                config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False) -> None:
    """List tokens without their secrets (every tenant's, on the server's folder, unless --tenant is given)."""
    accounts = _accounts(config, profile)
    try:
        tokens = [t for name in accounts.tenants(tenant) for t in accounts.list_tokens(name, user)]
    finally:
        accounts.close()
    if json_out:
        print_json({"tokens": [token_json(t) for t in tokens]})
        return
    from rich.table import Table

    t_out = Table(title="tokens", title_justify="left", header_style="bold")
    t_out.add_column("id", no_wrap=True)
    for column in ("tenant", "user", "name", "created", "expires", "last used", "status"):
        t_out.add_column(column)
    for t in tokens:
        t_out.add_row(t.token_id, escape(t.tenant), escape(t.user), escape(t.name), day(t.created_at),
                      day(t.expires_at) or "never", day(t.last_used_at), token_state(t))
    console().print(t_out)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="The token's id (tok_...), as 'tokens list' shows.")],
                  tenant: TenantOption = None, config: ConfigOption = None, profile: ProfileOption = None,
                  json_out: JsonOption = False) -> None:
    """Revoke a token: requests with it are refused from now on (a running server within seconds)."""
    accounts = _accounts(config, profile)
    try:
        token = accounts.revoke_token(tenant, token_id)
    finally:
        accounts.close()
    if json_out:
        print_json(token_json(token))
    else:
        console().print(f"revoked token {token.token_id} of {escape(token.user)} (tenant {escape(token.tenant)})")
