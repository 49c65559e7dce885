"""Pages from templates: one jinja2 environment, built on the first page (not at ``matih-lite up``).

Every page goes through :func:`page`: it adds who is signed in, what they may change, the CSRF
token for forms, a flash message left by the previous POST, the security headers (a CSP that
allows only this service's own scripts, styles and images) and a ``Server-Timing`` header with
the time the handler took, which the benchmark reads.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from litestar import Request, Response

from matih_lite.auth import effective_roles
from matih_lite.identity import LOCAL_ADMIN, Principal

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
HTML = "text/html; charset=utf-8"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
NAV = (("experiments", "/ui", "Experiments"), ("models", "/ui/models", "Models"),
       ("deployments", "/ui/deployments", "Deployments"), ("features", "/ui/features", "Features"),
       ("lineage", "/ui/lineage", "Lineage"), ("jobs", "/ui/jobs", "Jobs"))


def who(request: Request) -> Principal:
    """The signed-in principal (the local admin when auth is off)."""
    return request.scope.get("matih_principal") or LOCAL_ADMIN  # type: ignore[return-value]


def auth_required(request: Request) -> bool:
    """Whether this service asks for tokens (else everyone is the local admin)."""
    from matih_lite.auth import auth_enabled

    return auth_enabled(request.app.state["host"])


def can_edit(principal: Principal) -> bool:
    """Whether the principal may change anything (the editor role, or one that includes it)."""
    return "editor" in effective_roles(principal.roles)


@functools.cache
def asset_version(name: str) -> str:
    """A short hash of a static file, for cache-busting URLs (``/ui/static/x.js?v=...``)."""
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]


def when(ms: Any) -> str:
    """Milliseconds since the epoch as ``2024-06-01 12:00:05`` (UTC)."""
    if ms is None or ms == "":
        return ""
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(ms: Any) -> str:
    """A duration in ms as ``850 ms``, ``12.3 s``, ``4 min 5 s``, ``2 h 3 min``."""
    if ms is None:
        return ""
    ms = int(ms)
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    if ms < 3_600_000:
        return f"{ms // 60_000} min {ms % 60_000 // 1000} s"
    return f"{ms // 3_600_000} h {ms % 3_600_000 // 60_000} min"


def number(x: Any, digits: int = 5) -> str:
    """A metric value for a table: ``0.91234``, ``1.2e-07``, ``NaN``, ``-`` for missing."""
    if x is None or x == "":
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}" if abs(x) >= 10_000 else str(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x != 0 and (abs(x) < 1e-4 or abs(x) >= 1e7):
        return f"{x:.3e}"
    return f"{x:.{digits}g}"


def percent(x: Any) -> str:
    return "-" if x is None else f"{x:.1%}"


def url(path: str, **params: Any) -> str:
    """``path`` with the non-empty ``params`` as a query string."""
    kept = {k: v for k, v in params.items() if v not in (None, "", [], ())}
    return path + ("?" + urlencode(kept, doseq=True) if kept else "")


def seg(text: Any) -> str:
    """One path segment, percent-encoded (model and deployment names may hold anything)."""
    return quote(str(text), safe="")


def to_json(value: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: ``<``, ``>`` and ``&`` escaped so it cannot end it."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@functools.cache
def environment() -> Any:
    """The jinja2 environment (imported and built on the first page)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, number=number, percent=percent, duration=duration, seg=seg, tojson_block=to_json)
    env.globals.update(url=url, seg=seg, asset=asset_version)
    return env


def render(template: str, **context: Any) -> str:
    """A template rendered with ``context``."""
    return environment().get_template(template).render(**context)


def page(request: Request, template: str, *, status_code: int = 200, title: str = "", section: str = "",
         **context: Any) -> Response:
    """A full page: the template with the signed-in principal, CSRF token, flash and security headers."""
    from matih_lite.service.ui.pages import server_timing
    from matih_lite.service.ui.session import csrf_token, pop_flash

    principal = who(request)
    flash, clear_flash = pop_flash(request)
    token, csrf_cookie = csrf_token(request)
    html = render(template, request=request, principal=principal, editor=can_edit(principal),
                  authenticated="matih_principal" in request.scope, auth_required=auth_required(request),
                  csrf=token, flash=flash, nav=NAV,
                  section=section, title=title, features_available=features_available(), **context)
    headers = dict(SECURITY_HEADERS)
    headers["Server-Timing"] = server_timing(request)
    response = Response(html, status_code=status_code, media_type=HTML, headers=headers)
    if clear_flash:
        clear_flash(response)
    if csrf_cookie:
        csrf_cookie(response)
    return response


def fragment(request: Request, template: str, **context: Any) -> Response:
    """Part of a page (a table refreshed in place by the page's script)."""
    principal = who(request)
    html = render(template, request=request, principal=principal, editor=can_edit(principal), csrf="", **context)
    return Response(html, media_type=HTML, headers=dict(SECURITY_HEADERS))


@functools.cache
def features_available() -> bool:
    """Whether the feature store's package is installed (the Features page needs it)."""
    import importlib.util

    return importlib.util.find_spec("matih_lite.features") is not None
