"""Who may call the service: the bearer-token gate in front of every route, and ``/api/v1/auth``.

With auth on (:func:`matih_lite.auth.auth_enabled`), :class:`BearerAuth` runs before every
route handler (it is Litestar middleware, so the route is already matched): routes other than
``/health``, ``/ready``, ``/metrics`` and ``/schema*`` need ``Authorization: Bearer <token>``
(HTTP Basic with the token as the password is accepted too). It authenticates the token,
applies the role gate (:func:`matih_lite.auth.required_role`) and puts the principal in
``scope["matih_principal"]``, where :func:`matih_lite.service.auth.principal` finds it.
Its refusals are exceptions, so each route's own error layer shapes them: problem details
with ``WWW-Authenticate: Bearer`` on ``/api/v1``, ``{"error_code": "UNAUTHENTICATED"}`` (401)
and ``PERMISSION_DENIED`` (403) on the MLflow paths.

With auth off, nothing is checked and every request is the local admin.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import anyio
import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath, FromQuery, JSONBody

from matih_lite.auth import Accounts, auth_enabled, check_allowed
from matih_lite.contracts.auth import Token, User
from matih_lite.errors import Unauthorized
from matih_lite.host import Host
from matih_lite.service.auth import Principal, principal

OPEN_ROUTES = ("/health", "/ready", "/metrics", "/", "/ui/login", "/ui/logout")
"""Routes (and everything under ``/schema`` and ``/ui/static``) that answer without a token."""
SESSION_COOKIE = "matih_session"
"""The workbench's session cookie (:mod:`matih_lite.service.ui.session`): a token, taken in place of the
bearer header on ``/ui`` routes only."""

CHALLENGE = 'Bearer realm="matih-lite"'
MISSING = ("this request needs a bearer token: send 'Authorization: Bearer <token>' (MATIH_TOKEN for the "
           "SDK and CLI, MLFLOW_TRACKING_TOKEN for the mlflow client); an admin creates one with "
           "'matih-lite tokens create'")


def is_open(route: str) -> bool:
    """Whether a matched route template is served without a token."""
    return route in OPEN_ROUTES or route == "/schema" or route.startswith(("/schema/", "/ui/static/"))


def session_secret(scope: dict[str, Any]) -> str | None:
    """The token in the workbench's session cookie, on ``/ui`` routes only; None without one."""
    path = scope.get("path", "")
    if path != "/ui" and not path.startswith("/ui/"):
        return None
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, secret = part.strip().partition("=")
                if key == SESSION_COOKIE and secret:
                    return secret
    return None


def bearer_secret(scope: dict[str, Any]) -> str | None:
    """The token from ``Authorization: Bearer X`` (or ``Basic`` with X as the password); None without one."""
    for name, value in scope.get("headers", ()):
        if name != b"authorization":
            continue
        scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            return credentials or None
        if scheme.lower() == "basic":
            try:
                return base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")[2] or None
            except (binascii.Error, UnicodeDecodeError):
                return None
        return None
    return None


class BearerGate:
    """What every route's copy of :class:`BearerAuth` shares: the switch and one :class:`Accounts` (its cache)."""

    def __init__(self, host: Host) -> None:
        self.enabled = auth_enabled(host)
        self.accounts = Accounts(host)

    async def principal(self, scope: dict[str, Any]) -> Principal:
        """The caller, authenticated and allowed through the role gate; raises 401 or 403."""
        secret = bearer_secret(scope) or session_secret(scope)
        if secret is None:
            raise NotAuthorizedException(MISSING, headers={"WWW-Authenticate": CHALLENGE})
        try:
            found = self.accounts.remembered(secret)
            if found is None:
                found = await anyio.to_thread.run_sync(self.accounts.authenticate, secret)
        except Unauthorized as exc:
            raise NotAuthorizedException(exc.message, headers={
                "WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'}) from None
        check_allowed(found, scope.get("method", "GET"), scope.get("path_template") or scope["path"])
        return found


class BearerAuth:
    """Litestar middleware: authenticate and gate each request (see the module docstring)."""

    def __init__(self, app: Any, gate: BearerGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["matih_accounts"] = self.gate.accounts
        if self.gate.enabled and scope["type"] in ("http", "websocket") and not is_open(
                scope.get("path_template") or scope["path"]):
            scope["matih_principal"] = await self.gate.principal(scope)
        await self.app(scope, receive, send)


# ---- /api/v1/auth ---------------------------------------------------------------------------------
class WhoAmI(msgspec.Struct):
    tenant: str
    user: str
    roles: list[str]
    authenticated: bool
    """False when the service runs without auth (everyone is the local admin)."""


class UserOut(msgspec.Struct):
    tenant: str
    name: str
    roles: list[str]
    created_at: int
    disabled: bool


class TokenOut(msgspec.Struct):
    token_id: str
    user: str
    name: str
    description: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None
    revoked: bool


class TokenCreated(msgspec.Struct):
    token: TokenOut
    secret: str
    note: str = "the secret is shown once; it is stored only as a hash and cannot be shown again"


class UserList(msgspec.Struct):
    users: list[UserOut]


class TokenList(msgspec.Struct):
    tokens: list[TokenOut]


class CreateUser(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    roles: list[str]


class UpdateUser(msgspec.Struct, forbid_unknown_fields=True):
    roles: list[str] | None = None
    disabled: bool | None = None


class CreateToken(msgspec.Struct, forbid_unknown_fields=True):
    user: str
    name: str = ""
    description: str = ""
    expires_in_days: float | None = None


def user_out(u: User) -> UserOut:
    return UserOut(u.tenant, u.name, list(u.roles), u.created_at, u.disabled)


def token_out(t: Token) -> TokenOut:
    return TokenOut(t.token_id, t.user, t.name, t.description, t.created_at, t.expires_at, t.last_used_at,
                    t.revoked)


def provide_accounts(request: Request, host: NamedDependency[Host]) -> Accounts:
    """The gate's :class:`Accounts` (so a revocation here empties its cache), or a fresh one."""
    return request.scope.get("matih_accounts") or Accounts(host)  # type: ignore[return-value]


AccountsDep = NamedDependency[Accounts]
PrincipalDep = NamedDependency[Principal]

DEPENDENCIES = {"accounts": Provide(provide_accounts, sync_to_thread=False),
                "principal": Provide(principal, sync_to_thread=False)}


class AuthController(Controller):
    """The caller, and the users and tokens of the caller's tenant (admins only)."""

    path = "/api/v1/auth"
    tags = ["auth"]
    dependencies = DEPENDENCIES

    @get("/whoami", sync_to_thread=False, summary="Who the bearer token belongs to")
    def whoami(self, request: Request, principal: PrincipalDep) -> WhoAmI:
        return WhoAmI(principal.tenant, principal.user, list(principal.roles),
                      "matih_principal" in request.scope)

    @get("/users", sync_to_thread=True, summary="List the tenant's users (admin)")
    def list_users(self, accounts: AccountsDep, principal: PrincipalDep) -> UserList:
        return UserList([user_out(u) for u in accounts.list_users(principal.tenant, actor=principal)])

    @post("/users", sync_to_thread=True, summary="Create a user in the tenant (admin)")
    def create_user(self, data: JSONBody[CreateUser], accounts: AccountsDep, principal: PrincipalDep) -> UserOut:
        return user_out(accounts.create_user(principal.tenant, data.name, data.roles, actor=principal))

    @get("/users/{name:str}", sync_to_thread=True, summary="Get a user of the tenant (admin)")
    def get_user(self, name: FromPath[str], accounts: AccountsDep, principal: PrincipalDep) -> UserOut:
        return user_out(accounts.get_user(principal.tenant, name, actor=principal))

    @patch("/users/{name:str}", sync_to_thread=True, summary="Change a user's roles, or disable or enable them (admin)")
    def update_user(self, name: FromPath[str], data: JSONBody[UpdateUser], accounts: AccountsDep,
                    principal: PrincipalDep) -> UserOut:
        return user_out(accounts.update_user(principal.tenant, name, roles=data.roles, disabled=data.disabled,
                                             actor=principal))

    @get("/tokens", sync_to_thread=True, summary="List the tenant's tokens, without secrets (admin)")
    def list_tokens(self, accounts: AccountsDep, principal: PrincipalDep,
                    user: FromQuery[str | None] = None) -> TokenList:
        return TokenList([token_out(t) for t in accounts.list_tokens(principal.tenant, user=user, actor=principal)])

    @post("/tokens", sync_to_thread=True, summary="Create a token; the secret is in this answer only (admin)")
    def create_token(self, data: JSONBody[CreateToken], accounts: AccountsDep, principal: PrincipalDep) -> TokenCreated:
        issued = accounts.create_token(principal.tenant, data.user, name=data.name, description=data.description,
                                       expires_in_days=data.expires_in_days, actor=principal)
        return TokenCreated(token_out(issued.token), issued.secret)

    @delete("/tokens/{token_id:str}", sync_to_thread=True, status_code=200, summary="Revoke a token (admin)")
    def revoke_token(self, token_id: FromPath[str], request: Request, accounts: AccountsDep,
                     principal: PrincipalDep) -> TokenOut:
        using = bearer_secret(request.scope) or session_secret(request.scope)
        return token_out(accounts.revoke_token(principal.tenant, token_id, actor=principal, using=using))


CONTROLLERS = [AuthController]
