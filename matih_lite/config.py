"""matih.toml: profiles that fill the slots, ``${VAR}`` interpolation, and validation.

Where the file comes from: ``--config``, else ``MATIH_CONFIG``, else ``./matih.toml``,
else nothing (the lite profile with state in ``./.matih`` or ``MATIH_HOME``). Values are
interpolated only when their section is read, so a lite run never needs the cluster
profile's secrets.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matih_lite.contracts import SLOTS
from matih_lite.errors import ConfigError

DEFAULT_PROFILE = "lite"

LITE_BACKENDS: dict[str, str] = {
    "metadata": "sqlite",
    "artifacts": "local",
    "compute": "ray-local",
    "serving": "inprocess",
    "events": "duckdb",
    "drift": "inprocess",
    "features": "duckdb",
}
"""The backend each slot gets when a profile leaves it out (if that backend is installed)."""

SECTIONS = (
    "default_profile", "profiles", "models", "auth", "server", "drift", "canary", "quotas",
    "notifiers", "jobs", "features", "tenants", "governance",
)
"""Top-level keys matih.toml may hold; anything else is reported as a likely typo."""

_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api_?key|credential|private)", re.IGNORECASE)
_DSN_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<tail>@)", re.IGNORECASE)


@dataclass
class Config:
    """A loaded matih.toml (or the defaults), not yet interpolated."""

    path: Path | None
    base_dir: Path
    home: Path
    data: dict[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def profile_names(self) -> list[str]:
        names = list(self.data.get("profiles", {}) or {})
        return names if DEFAULT_PROFILE in names else [DEFAULT_PROFILE, *names]

    def default_profile(self) -> str:
        return self.env.get("MATIH_PROFILE") or str(self.data.get("default_profile") or DEFAULT_PROFILE)

    def section(self, name: str) -> Any:
        """A top-level section with ``${VAR}`` interpolated (``{}`` when absent)."""
        return interpolate(self.data.get(name, {}), self.env, key=name)

    def profile(self, name: str | None = None,
                problems: list[tuple[str, str]] | None = None) -> dict[str, dict[str, Any]]:
        """Each slot's ``{"backend": ..., **settings}`` for a profile, interpolated.

        Slots the profile leaves out get :data:`LITE_BACKENDS` (marked ``"default": True``).
        A malformed slot entry raises ConfigError, or, when ``problems`` is given, is appended
        there as (key path, message) and left out of the result so every problem is reported.
        """
        name = name or self.default_profile()
        profiles = self.data.get("profiles", {}) or {}
        if not isinstance(profiles, dict):
            raise ConfigError("expected a table of profiles", key="profiles")
        if name not in profiles and name != DEFAULT_PROFILE:
            known = ", ".join(self.profile_names())
            raise ConfigError(f"no such profile; defined: {known}", key=f"profiles.{name}")
        raw = profiles.get(name, {}) or {}
        if not isinstance(raw, dict):
            raise ConfigError("expected a table mapping slots to backends", key=f"profiles.{name}")
        resolved: dict[str, dict[str, Any]] = {}
        for slot in SLOTS:
            key = f"profiles.{name}.{slot}"
            try:
                resolved[slot] = self._slot(raw.get(slot), slot, key)
            except ConfigError as exc:
                if problems is None:
                    raise
                problems.append((exc.key or key, exc.reason))
        return resolved

    def _slot(self, entry: Any, slot: str, key: str) -> dict[str, Any]:
        if entry is None:
            return {"backend": LITE_BACKENDS[slot], "default": True}
        if isinstance(entry, str):
            entry = {"backend": entry}
        if not isinstance(entry, dict):
            raise ConfigError(
                f"expected a table like {{ backend = \"{LITE_BACKENDS[slot]}\" }}, got {_type_name(entry)}", key=key)
        entry = interpolate(entry, self.env, key=key)
        if not isinstance(entry.get("backend"), str) or not entry["backend"]:
            raise ConfigError("missing 'backend = \"NAME\"'", key=key)
        return dict(entry)

    def unknown_keys(self) -> list[tuple[str, str]]:
        """(key path, message) for top-level sections and profile slots that nothing reads."""
        problems = []
        for key in self.data:
            if key not in SECTIONS:
                problems.append((key, f"unknown section; expected one of: {', '.join(SECTIONS)}"))
        for pname, prof in (self.data.get("profiles") or {}).items():
            if not isinstance(prof, dict):
                continue
            for slot in prof:
                if slot not in SLOTS:
                    problems.append((f"profiles.{pname}.{slot}", f"unknown slot; slots are: {', '.join(SLOTS)}"))
        return problems


def find_config_path(explicit: str | Path | None = None, env: Mapping[str, str] | None = None,
                     cwd: Path | None = None) -> Path | None:
    """The config file in effect: explicit, ``MATIH_CONFIG``, or ``./matih.toml``."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("MATIH_CONFIG"):
        return Path(env["MATIH_CONFIG"])
    candidate = (cwd or Path.cwd()) / "matih.toml"
    return candidate if candidate.is_file() else None


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                cwd: Path | None = None) -> Config:
    """Read matih.toml (see :func:`find_config_path`); without one, the lite defaults.

    Raises ConfigError for a missing file that was asked for, or TOML that does not parse
    (the message gives the line and column).
    """
    env = dict(os.environ) if env is None else dict(env)
    cwd = cwd or Path.cwd()
    found = find_config_path(path, env, cwd)
    data: dict[str, Any] = {}
    base_dir = cwd
    if found is not None:
        if not found.is_file():
            raise ConfigError(f"config file {found} does not exist", key="--config")
        try:
            data = tomllib.loads(found.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{found}: not valid TOML: {exc}{_quote_line(found, exc)}") from None
        except (UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"{found}: cannot read: {exc}") from None
        base_dir = found.resolve().parent
    home = Path(env["MATIH_HOME"]).expanduser() if env.get("MATIH_HOME") else base_dir / ".matih"
    if not home.is_absolute():
        home = cwd / home
    return Config(path=found, base_dir=base_dir, home=home, data=data, env=env)


_VAR = re.compile(r"\$(\$|\{(?P<body>[^{}]*)\})")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(value: Any, env: Mapping[str, str], *, key: str = "") -> Any:
    """Replace ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` in every string of ``value``.

    ``${VAR:-d}`` uses ``d`` when VAR is unset or empty, ``${VAR-d}`` only when unset; ``$$``
    is a literal ``$``; a ``$`` followed by anything else is left alone. A VAR that is unset
    with no default raises ConfigError naming ``key``.
    """
    if isinstance(value, str):
        return _interpolate_str(value, env, key)
    if isinstance(value, dict):
        return {k: interpolate(v, env, key=f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, key=f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _interpolate_str(text: str, env: Mapping[str, str], key: str) -> str:
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        body = match.group("body")
        name, default, mode = body, None, ""
        for sep in (":-", "-"):
            if sep in body:
                name, default = body.split(sep, 1)
                mode = sep
                break
        if not _NAME.fullmatch(name):
            raise ConfigError(f"'${{{body}}}' is not a valid variable reference; write ${{NAME}} or ${{NAME:-default}}",
                              key=key)
        current = env.get(name)
        if mode == ":-" and not current:
            return default or ""
        if mode == "-" and current is None:
            return default or ""
        if current is None:
            raise ConfigError(
                f"environment variable {name} is not set (set it, or write ${{{name}:-default}})", key=key
            )
        return current

    result = _VAR.sub(replace, text)
    # A "${" left after substitution was never closed (or nests braces, which we do not support).
    leftover = _VAR.sub("", text)
    if "${" in leftover:
        raise ConfigError(f"unterminated '${{' in {text!r}", key=key)
    return result


def mask_secrets(value: Any, *, key: str = "") -> Any:
    """A copy with secret-looking values (by key name, or a password inside a URL) replaced by ``****``."""
    if isinstance(value, dict):
        return {k: (("****" if v not in ("", None) else v) if _SECRET_KEY.search(str(k)) and isinstance(v, str)
                    else mask_secrets(v, key=str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key=key) for v in value]
    if isinstance(value, str):
        return _DSN_PASSWORD.sub(lambda m: f"{m['head']}****{m['tail']}", value)
    return value


def _type_name(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array"}.get(
        type(value), type(value).__name__
    )


def _quote_line(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    """``: line 3 reads 'metadata  { backend = ...'`` for a TOML error, to point at the key at fault."""
    match = re.search(r"line (\d+)", str(exc))
    if not match:
        return ""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        line = lines[int(match.group(1)) - 1].strip()
    except (OSError, IndexError):
        return ""
    return f"; line {match.group(1)} reads {line[:120]!r}"
