"""Tenants, users and API tokens; authenticating a bearer secret; what each role may do.

Tokens are ``mth_`` + 32 random bytes (URL-safe base64). The secret is returned once, when
the token is made; the store keeps only its SHA-256, so a copy of the database holds no
usable credential. A 256-bit random secret needs no salt or slow hash: nothing can be
guessed from its digest.

Authentication is on the path of every request (the tracking benchmark logs one metric per
HTTP call), so a successful lookup is remembered for ``[auth] cache_seconds`` (default 5).
A revocation or a disabled user made through this process's :class:`Accounts` takes effect
at once; one made by another process (``matih-lite tokens revoke`` on the server's folder)
within ``cache_seconds``. ``last_used_at`` is written at most once a minute per token.

Auth is on when ``[auth] enabled = true``, and always for a profile other than ``lite``
(every cluster profile requires tokens). With auth off, the service runs as
:data:`~matih_lite.identity.LOCAL_ADMIN`, which ``matih-lite up`` allows only on loopback.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from matih_lite.config import DEFAULT_PROFILE, Config
from matih_lite.contracts.auth import Tenant, Token, User
from matih_lite.errors import ConfigError, Conflict, Forbidden, InvalidInput, MatihError, NotFound, Unauthorized
from matih_lite.identity import ROLES, Principal

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.auth")

TOKEN_PREFIX = "mth_"
TOUCH_EVERY_MS = 60_000
CACHE_LIMIT = 10_000
MAX_TOKEN_NAME = 100
MAX_DESCRIPTION = 1000
_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")

ROLE_IMPLIES: dict[str, tuple[str, ...]] = {
    "viewer": ("viewer",),
    "editor": ("viewer", "editor"),
    "owner": ("viewer", "editor", "owner"),
    "lead": ("viewer", "editor", "lead"),
    "admin": ROLES,
}
"""Each role with the roles it includes: an editor may read, a lead may edit, an admin may do anything."""


# ---- the role gates ------------------------------------------------------------------------------
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_PATHS = ("/api/v1/auth/users", "/api/v1/auth/tokens")
_READ_POST_SUFFIXES = ("/search", "/get-latest-versions", "/infer", "/predict", "/completions",
                       "/get-online-features", "/features/online", "/features/historical", "/features/plan")


def required_role(method: str, path: str) -> str:
    """The least role a request needs; the one place where roles gate HTTP requests.

    - ``viewer``: reads. GET, HEAD and OPTIONS, and the POSTs that only read: searches
      (``.../search``, MLflow's ``get-latest-versions``, whose query travels in the body)
      and predictions (``/v2/models/.../infer``, ``/api/v1/deployments/NAME/predict`` and an LLM
      deployment's ``.../completions`` and ``.../chat/completions``, which change no platform state).
    - ``editor``: every other write: experiments, runs, metrics, artifacts, registering
      models and versions, requesting promotions. ``owner`` and ``lead`` include it.
    - ``admin``: users and tokens of the tenant (``/api/v1/auth/users``, ``/api/v1/auth/tokens``),
      reads included.

    Finer rules belong to the domain that knows the record: approving a Production
    promotion is decided by the registry (the model's owner, or ``Principal.has("lead")``).
    ``path`` is the matched route template (``/api/v1/runs/{run_id}``) or the request path.
    """
    if any(path == p or path.startswith(p + "/") for p in ADMIN_PATHS):
        return "admin"
    if method.upper() in READ_METHODS:
        return "viewer"
    if path.endswith(_READ_POST_SUFFIXES) and (
            not path.endswith(("/infer", "/predict", "/completions"))
            or path.startswith(("/v2/", "/api/v1/deployments/"))):
        return "viewer"
    return "editor"


def effective_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """Assigned roles with the ones they include, in :data:`ROLES` order (``lead`` -> viewer, editor, lead)."""
    held = {implied for role in roles for implied in ROLE_IMPLIES.get(role, ())}
    return tuple(r for r in ROLES if r in held)


def check_allowed(principal: Principal, method: str, path: str) -> None:
    """Raises Forbidden when ``principal``'s roles do not reach :func:`required_role`."""
    need = required_role(method, path)
    if need not in effective_roles(principal.roles):
        held = ", ".join(principal.roles) or "none"
        what = {"viewer": "reading", "editor": "changing anything", "admin": "managing users and tokens"}[need]
        raise Forbidden(f"user {principal.user!r} (roles: {held}) may not {method.upper()} {path}: {what} needs "
                        f"the {need} role; an admin of tenant {principal.tenant!r} can grant it")


def validate_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """The roles without duplicates, in the order given. Raises InvalidInput for an unknown one or none."""
    out: list[str] = []
    for role in roles:
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}; roles are: {', '.join(ROLES)}")
        if role not in out:
            out.append(role)
    if not out:
        raise InvalidInput(f"a user needs at least one role: {', '.join(ROLES)}")
    return tuple(out)


def check_tenant_name(name: str) -> str:
    if not isinstance(name, str) or not _TENANT_NAME.match(name):
        raise InvalidInput(f"invalid tenant name {name!r}: 1 to 63 lowercase letters, digits, '-' or '_', "
                           "starting with a letter or digit")
    return name


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not _USER_NAME.match(name):
        raise InvalidInput(f"invalid user name {name!r}: 1 to 128 letters, digits, '_', '.', '@', '+' or '-', "
                           "starting with a letter or digit")
    return name


# ---- secrets -------------------------------------------------------------------------------------
def new_secret() -> str:
    """A fresh token secret: ``mth_`` + 32 random bytes, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """What the store keeps and looks a token up by: the SHA-256 of the secret, hex."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# ---- settings ------------------------------------------------------------------------------------
class AuthSettings(msgspec.Struct, forbid_unknown_fields=True):
    """``[auth]`` in matih.toml."""

    enabled: bool | None = None
    """Require bearer tokens. Unset means: on for every profile but ``lite``."""
    cache_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    """How long a successful token lookup is reused (0: look up on every request)."""


def auth_settings(config: Config) -> AuthSettings:
    """``[auth]`` validated. Raises ConfigError with the key at fault (a typo must not leave auth off)."""
    from matih_lite.config import convert_settings

    raw = config.section("auth")
    if not isinstance(raw, dict):
        raise ConfigError("expected a table like { enabled = true }", key="auth")
    return convert_settings(raw, AuthSettings, "auth")


def auth_enabled(host: Host) -> bool:
    """Whether the service behind ``host`` requires bearer tokens.

    On with ``[auth] enabled = true``, and always for a profile other than ``lite``;
    ``enabled = false`` there is a ConfigError rather than a silent downgrade.
    """
    settings = auth_settings(host.config)
    if host.profile != DEFAULT_PROFILE:
        if settings.enabled is False:
            raise ConfigError(f"profile {host.profile!r} requires bearer tokens (only the lite profile may run "
                              "without auth); remove 'enabled = false'", key="auth.enabled")
        return True
    return bool(settings.enabled)


# ---- the domain service --------------------------------------------------------------------------
class IssuedToken(msgspec.Struct, frozen=True):
    """A new token's record and its secret: the only time the secret is seen."""

    token: Token
    secret: str


class _Cached(msgspec.Struct):
    principal: Principal
    token_id: str
    expires_at: int | None
    fetched: float


class Accounts:
    """Tenants, users and tokens over the metadata slot, and bearer authentication.

    Methods that change or list users and tokens take ``actor``: the principal asking (an
    admin of ``tenant``, else Forbidden), or None for the operator at the console, who holds
    the database (the CLI on the server's folder; how the first admin is made).
    """

    def __init__(self, host: Host, *, cache_seconds: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.cache_seconds = (auth_settings(host.config).cache_seconds if cache_seconds is None
                              else cache_seconds)
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    @property
    def store(self) -> Any:
        return self.host.metadata

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # ---- tenants ------------------------------------------------------------------------------
    def create_tenant(self, name: str, *, description: str = "") -> Tenant:
        """A new tenant (operator only). Raises InvalidInput, Conflict."""
        return self.store.create_tenant(check_tenant_name(name), created_at=self._now_ms(),
                                        description=description)

    def ensure_tenant(self, name: str) -> Tenant:
        """The tenant, created when missing."""
        try:
            return self.store.get_tenant(check_tenant_name(name))
        except NotFound:
            try:
                return self.create_tenant(name)
            except Conflict:  # made meanwhile by someone else
                return self.store.get_tenant(name)

    def list_tenants(self) -> list[Tenant]:
        return self.store.list_tenants()

    # ---- users --------------------------------------------------------------------------------
    def create_user(self, tenant: str, name: str, roles: Sequence[str], *, actor: Principal | None = None) -> User:
        """A new user with ``roles``; the tenant is created when missing. Raises InvalidInput, Conflict, Forbidden."""
        _check_admin(actor, tenant)
        roles = validate_roles(roles)
        check_user_name(name)
        self.ensure_tenant(tenant)
        return self.store.create_user(tenant, name, roles=roles, created_at=self._now_ms())

    def get_user(self, tenant: str, name: str, *, actor: Principal | None = None) -> User:
        _check_admin(actor, tenant)
        return self.store.get_user(tenant, name)

    def list_users(self, tenant: str, *, actor: Principal | None = None) -> list[User]:
        _check_admin(actor, tenant)
        return self.store.list_users(tenant)

    def update_user(self, tenant: str, name: str, *, roles: Sequence[str] | None = None,
                    disabled: bool | None = None, actor: Principal | None = None) -> User:
        """Change a user's roles or disable/enable them. Raises NotFound, InvalidInput, Forbidden.

        An admin cannot disable themselves or drop their own admin role: that would leave
        the tenant without the account that can undo it.
        """
        _check_admin(actor, tenant)
        roles = validate_roles(roles) if roles is not None else None
        if actor is not None and actor.user == name and (disabled or (roles is not None and "admin" not in roles)):
            raise Forbidden("an admin cannot disable themselves or remove their own admin role; ask another admin")
        user = self.store.update_user(tenant, name, roles=roles, disabled=disabled)
        self.forget_cached()
        return user

    def disable_user(self, tenant: str, name: str, *, actor: Principal | None = None) -> User:
        """Disable a user: every token of theirs stops working. Raises NotFound, Forbidden."""
        return self.update_user(tenant, name, disabled=True, actor=actor)

    # ---- tokens -------------------------------------------------------------------------------
    def create_token(self, tenant: str, user: str, *, name: str = "", description: str = "",
                     expires_in_days: float | None = None, actor: Principal | None = None) -> IssuedToken:
        """A new token for ``user``; the secret is in the answer and nowhere else.

        Raises NotFound for the user, Conflict for a disabled one, InvalidInput, Forbidden.
        """
        _check_admin(actor, tenant)
        if len(name) > MAX_TOKEN_NAME or len(description) > MAX_DESCRIPTION:
            raise InvalidInput(f"a token's name is at most {MAX_TOKEN_NAME} characters and its description "
                               f"{MAX_DESCRIPTION}")
        if expires_in_days is not None and not expires_in_days > 0:
            raise InvalidInput(f"expires_in_days must be more than 0, got {expires_in_days}")
        if self.store.get_user(tenant, user).disabled:
            raise Conflict(f"user {user!r} is disabled; enable them before giving them a token")
        now = self._now_ms()
        expires_at = None if expires_in_days is None else now + int(expires_in_days * 86_400_000)
        secret = new_secret()
        token = self.store.create_token(tenant, user, token_id=f"tok_{secrets.token_hex(6)}",
                                        token_hash=hash_secret(secret), created_at=now, name=name,
                                        description=description, expires_at=expires_at)
        return IssuedToken(token, secret)

    def list_tokens(self, tenant: str, *, user: str | None = None, actor: Principal | None = None) -> list[Token]:
        _check_admin(actor, tenant)
        return self.store.list_tokens(tenant, user=user)

    def revoke_token(self, tenant: str, token_id: str, *, actor: Principal | None = None,
                     using: str | None = None) -> Token:
        """Revoke a token; requests with it fail from now on. ``using`` is the secret of the caller's own
        token: revoking that one is refused, as disabling oneself is (it would lock them, maybe the tenant,
        out). Raises NotFound, Forbidden."""
        _check_admin(actor, tenant)
        if using is not None:
            found = self.store.find_token(hash_secret(using))
            if found is not None and found.token.token_id == token_id:
                raise Forbidden(f"token {token_id} is the one this request uses: revoking it would lock you out; "
                                "create another token first and revoke this one with it (or ask another admin)")
        token = self.store.revoke_token(tenant, token_id)
        self.forget_cached()
        return token

    # ---- authentication -----------------------------------------------------------------------
    def remembered(self, secret: str) -> Principal | None:
        """The principal of a recently authenticated secret, without touching the store; None if not cached.

        Raises Unauthorized when the cached token has expired since.
        """
        hit = self._cache.get(hash_secret(secret))
        now = self._clock()
        if hit is None or now - hit.fetched >= self.cache_seconds:
            return None
        if hit.expires_at is not None and now * 1000 >= hit.expires_at:
            raise Unauthorized(f"token {hit.token_id} has expired; ask an admin for a new one")
        return hit.principal

    def authenticate(self, secret: str) -> Principal:
        """The principal a bearer secret stands for (roles as :func:`effective_roles`).

        Raises Unauthorized for an unknown, revoked or expired token, or a disabled user.
        """
        cached = self.remembered(secret)
        if cached is not None:
            return cached
        key = hash_secret(secret)
        now = self._clock()
        found = self.store.find_token(key) if secret.startswith(TOKEN_PREFIX) else None
        if found is None:
            raise Unauthorized("the bearer token is not valid (unknown or mistyped); check MATIH_TOKEN or "
                               "MLFLOW_TRACKING_TOKEN, or create one with 'matih-lite tokens create'")
        token, user = found.token, found.user
        now_ms = int(now * 1000)
        if token.revoked:
            raise Unauthorized(f"token {token.token_id} was revoked; ask an admin for a new one")
        if token.expires_at is not None and now_ms >= token.expires_at:
            raise Unauthorized(f"token {token.token_id} has expired; ask an admin for a new one")
        if user.disabled:
            raise Unauthorized(f"user {user.name!r} of tenant {user.tenant!r} is disabled")
        principal = Principal(user.tenant, user.name, effective_roles(user.roles))
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) >= CACHE_LIMIT:
                    self._cache.clear()
                self._cache[key] = _Cached(principal, token.token_id, token.expires_at, now)
        if token.last_used_at is None or now_ms - token.last_used_at >= TOUCH_EVERY_MS:
            try:
                self.store.touch_token(token.token_id, now_ms)
            except MatihError as exc:  # bookkeeping; never fail a request for it
                log.debug("could not record the use of token %s: %s", token.token_id, exc)
        return principal

    def forget_cached(self) -> None:
        """Drop remembered lookups, so a revocation or a disabled user counts from the next request."""
        with self._lock:
            self._cache.clear()


def _check_admin(actor: Principal | None, tenant: str) -> None:
    if actor is None:
        return
    if actor.tenant != tenant:
        raise Forbidden(f"user {actor.user!r} of tenant {actor.tenant!r} cannot manage tenant {tenant!r}")
    if not actor.has("admin"):
        raise Forbidden(f"managing users and tokens needs the admin role; {actor.user!r} has: "
                        f"{', '.join(actor.roles) or 'none'}")
