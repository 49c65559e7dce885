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
    "llm": "none",
    "events": "duckdb",
    "drift": "inprocess",
    "features": "duckdb",
}
"""The backend each slot gets when a profile leaves it out (if that backend is installed). No lite backend
serves LLMs: the ``llm`` slot stays empty until a profile names one (``llm = { backend = "vllm", url = ... }``)."""

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


def convert_settings(raw: Any, schema: Any, key: str) -> Any:
    """``raw`` (a section or table of matih.toml) as ``schema`` (a msgspec type), or ConfigError naming the key
    path, what was expected, and for an unknown key the nearest known one ("did you mean ...?")."""
    import msgspec

    try:
        return msgspec.convert({} if raw is None else raw, schema, strict=False)
    except msgspec.ValidationError as exc:
        text, _, path = str(exc).partition(" - at `$")
        raise _settings_error(text, raw, schema, key, path.rstrip("`")) from None


def _settings_error(text: str, raw: Any, schema: Any, key: str, path: str) -> ConfigError:
    import difflib

    where, struct = _follow(raw, schema, path)
    where = key + where
    unknown = re.match(r"Object contains unknown field `(.+)`", text)
    if unknown:
        known = list(getattr(struct, "__struct_fields__", ()))
        near = difflib.get_close_matches(unknown.group(1), known, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return ConfigError(f"unknown key{hint} (keys here: {', '.join(known) or 'none'})",
                           key=f"{where}.{unknown.group(1)}")
    return ConfigError(text, key=where)


def _follow(raw: Any, schema: Any, path: str) -> tuple[str, Any]:
    """msgspec's error ``path`` (``.a[0].b``, with ``[...]`` for a dict's key) followed through ``raw`` and
    ``schema``: the matih.toml key path suffix (the dict key found again) and the type reached there."""
    import typing

    import msgspec

    where, value, tp = "", raw, _unwrap(schema)
    for name, index in re.findall(r"\.(\w+)|\[([^\]]*)\]", path):
        if name:
            where += f".{name}"
            hints = typing.get_type_hints(tp) if hasattr(tp, "__struct_fields__") else {}
            tp = _unwrap(hints.get(name, Any))
            value = value.get(name) if isinstance(value, Mapping) else None
            continue
        args = typing.get_args(tp)
        item_type = args[-1] if args else Any
        if index == "..." and isinstance(value, Mapping):  # a dict: find the entry that does not convert
            for k, v in value.items():
                try:
                    msgspec.convert(v, item_type, strict=False)
                except msgspec.ValidationError:
                    where += f".{k}" if re.fullmatch(r"[A-Za-z0-9_-]+", str(k)) else f'."{k}"'
                    value = v
                    break
        else:
            where += f"[{index}]"
            value = value[int(index)] if isinstance(value, list) and index.isdigit() and int(index) < len(value) \
                else None
        tp = _unwrap(item_type)
    return where, tp


def _unwrap(tp: Any) -> Any:
    """The Struct inside ``X | None`` (or a container's item type left as it is)."""
    import typing

    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def settings_problems(raw: Any, schema: Any, key: str) -> tuple[Any, list[tuple[str, str]]]:
    """``raw`` as ``schema``, and every problem in it (not only the first): each key of a table is converted
    on its own, and the settings returned are those of the keys that convert (None if none could be made)."""
    import typing

    try:
        return convert_settings(raw, schema, key), []
    except ConfigError as exc:
        first = [(exc.key or key, exc.reason)]
    if not isinstance(raw, Mapping):
        return None, first
    problems: list[tuple[str, str]] = []
    good: dict[str, Any] = {}
    if hasattr(schema, "__struct_fields__"):
        for name, value in raw.items():
            try:
                convert_settings({name: value}, schema, key)
                good[name] = value
            except ConfigError as exc:
                problems.append((exc.key or key, exc.reason))
    elif typing.get_origin(schema) is dict:
        item = typing.get_args(schema)[-1]
        for name, value in raw.items():
            label = f"{key}.{name}" if re.fullmatch(r"[A-Za-z0-9_-]+", str(name)) else f'{key}."{name}"'
            converted, found = settings_problems(value, item, label)
            problems.extend(found)
            if not found:
                good[name] = value
    else:
        return None, first
    try:
        settings = convert_settings(good, schema, key)
    except ConfigError:  # the keys are sound one by one, not together
        return None, problems or first
    return settings, problems or ([] if good == dict(raw) else first)
