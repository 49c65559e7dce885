"""Signing in to the workbench, and what protects its forms.

- **Session.** With auth on, ``POST /ui/login`` takes an API token (``mth_...``), checks it as
  the bearer gate does, and sets it as the ``matih_session`` cookie: ``HttpOnly`` (no script
  reads it), ``SameSite=Strict`` (no other site's page sends it), ``Path=/ui`` (the API does not
  take it: API clients keep sending bearer tokens), ``Secure`` behind HTTPS. The gate
  (:mod:`matih_lite.service.accounts`) accepts the cookie on ``/ui`` routes, so every page is
  scoped and role-gated exactly as the REST API is, and a revoked token ends the session.
  Nothing is kept on the server: any replica takes the cookie.
- **CSRF.** Every form carries ``csrf_token``: an HMAC of a per-browser secret, the session's
  token when signed in, else a random ``matih_csrf`` cookie (auth off, a loopback service must
  still refuse a form posted by another site's page). Every write checks it, and the
  ``Origin`` header when the browser sends one.
- **Flash.** After a POST, the next page shows one line (``matih_flash`` cookie, read once).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from urllib.parse import quote, unquote, urlsplit

import anyio
from litestar import Request, Response, get, post
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromQuery
from litestar.response import Redirect

from matih_lite.errors import Unauthorized
from matih_lite.service.accounts import SESSION_COOKIE
from matih_lite.service.ui.pages import Pages

CSRF_COOKIE = "matih_csrf"
FLASH_COOKIE = "matih_flash"
CSRF_FIELD = "csrf_token"
COOKIE_PATH = "/ui"
SESSION_DAYS = 7


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _cookie(request: Request, name: str) -> str | None:
    value = request.cookies.get(name)
    return value or None


def csrf_seed(request: Request) -> str | None:
    """The per-browser secret the CSRF token is made from: the session token, else the CSRF cookie."""
    return _cookie(request, SESSION_COOKIE) or _cookie(request, CSRF_COOKIE)


def _token_of(seed: str) -> str:
    return hmac.new(seed.encode(), b"matih-lite/workbench/csrf/v1", hashlib.sha256).hexdigest()[:40]


def csrf_token(request: Request) -> tuple[str, Callable[[Response], None] | None]:
    """The token for this page's forms, and (the first time) a setter for the cookie it comes from."""
    seed = csrf_seed(request)
    if seed is not None:
        return _token_of(seed), None
    seed = request.scope.setdefault("matih_csrf_seed", secrets.token_urlsafe(32))

    def set_cookie(response: Response) -> None:
        response.set_cookie(CSRF_COOKIE, seed, path=COOKIE_PATH, httponly=True, samesite="strict",
                            secure=_secure(request))

    return _token_of(seed), set_cookie


def check_origin(request: Request) -> None:
    """Refuse a write whose ``Origin`` (or, without one, ``Referer``) is another site."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    if parts.netloc != host:
        raise PermissionDeniedException(f"this form was posted from {parts.scheme}://{parts.netloc}, not from "
                                        "this service; open the page here and send it again")


async def checked_form(request: Request) -> dict[str, str]:
    """The posted form, after the Origin and CSRF checks (403 when either fails)."""
    check_origin(request)
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    seed = csrf_seed(request)
    sent = data.get(CSRF_FIELD, "")
    if seed is None or not hmac.compare_digest(sent.encode(), _token_of(seed).encode()):
        raise PermissionDeniedException("the form's CSRF token is missing or stale; reload the page and send it "
                                        "again")
    return data


def flash(response: Response, request: Request, message: str, kind: str = "ok") -> Response:
    """Leave one line for the next page (after a redirect)."""
    response.set_cookie(FLASH_COOKIE, quote(f"{kind}:{message}"[:1500]), path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=_secure(request), max_age=60)
    return response


def pop_flash(request: Request) -> tuple[dict[str, str] | None, Callable[[Response], None] | None]:
    """The flash left for this page (kind, text) and a function that clears it on the response."""
    raw = _cookie(request, FLASH_COOKIE)
    if not raw:
        return None, None
    kind, _, text = unquote(raw).partition(":")
    if kind not in ("ok", "error"):
        kind, text = "ok", unquote(raw)

    def clear(response: Response) -> None:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH)

    return {"kind": kind, "text": text}, clear


def redirect(request: Request, to: str, message: str | None = None, kind: str = "ok") -> Response:
    """303 to ``to`` (a page of the workbench), with an optional flash."""
    response: Response = Redirect(safe_next(to), status_code=303)
    if message:
        flash(response, request, message, kind)
    return response


def safe_next(target: str | None) -> str:
    """``target`` when it is a workbench page of this service, else ``/ui`` (no open redirects)."""
    if not target or not target.startswith("/ui") or target.startswith("//") or "\\" in target:
        return "/ui"
    return target


class SessionController(Pages):
    """``/ui/login`` and ``/ui/logout``."""

    path = "/ui"

    @get("/login", sync_to_thread=False)
    def login_page(self, request: Request, next: FromQuery[str] = "/ui") -> Response:
        from matih_lite.service.ui.render import page

        return page(request, "login.html", title="Sign in", next=safe_next(next), error=None)

    @post("/login", status_code=303)
    async def login(self, request: Request) -> Response:
        from matih_lite.service.ui.render import page

        check_origin(request)
        form = await request.form()
        token = str(form.get("token") or "").strip()
        target = safe_next(str(form.get("next") or "/ui"))
        if not auth_on(request):
            return redirect(request, target)
        accounts = request.scope["matih_accounts"]  # the gate's, so its cache and revocations are shared
        try:
            found = await anyio.to_thread.run_sync(accounts.authenticate, token)
        except Unauthorized as exc:
            return page(request, "login.html", status_code=401, title="Sign in", next=target, error=exc.message)
        response = redirect(request, target, f"signed in as {found.user} ({', '.join(found.roles)}) in tenant "
                                             f"{found.tenant}")
        response.set_cookie(SESSION_COOKIE, token, path=COOKIE_PATH, httponly=True, samesite="strict",
                            secure=_secure(request), max_age=SESSION_DAYS * 86400)
        response.delete_cookie(CSRF_COOKIE, path=COOKIE_PATH)
        return response

    @post("/logout", status_code=303)
    async def logout(self, request: Request) -> Response:
        await checked_form(request)
        response = redirect(request, "/ui/login", "signed out")
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response


def unauthenticated_redirect(request: Request) -> Response:
    """Where a page request without a valid session goes: the sign-in page, back here afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response: Response = Redirect(f"/ui/login?next={quote(here, safe='')}", status_code=303)
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


def auth_on(request: Request) -> bool:
    """Whether this service asks for tokens."""
    from matih_lite.auth import auth_enabled

    return auth_enabled(request.app.state["host"])
