"""Governance policy from matih.toml: metric thresholds for Staging, who approves Production.

::

    [models."*"]                       # defaults for every model
    production_approvers = ["owner", "lead"]

    [models.churn]                     # one model; its keys replace the defaults' keys
    staging_requires = ["auc >= 0.85", "latency_ms <= 20"]

``staging_requires``: each rule is ``METRIC OP NUMBER`` with OP one of ``>=``, ``>``, ``<=``,
``<``, ``==``, ``!=``; a version enters Staging only if the latest value of every metric its run
logged meets every rule. Rules are parsed, never evaluated as code.

``production_approvers``: who may approve a Production request (and roll back): ``"owner"``
(the model's owner), a role name (``"lead"``, ``"admin"``, ...; or ``"role:NAME"``), or
``"user:NAME"``. An admin may always approve. Nobody approves their own request. An empty
list means Production needs no approval. Left out, it is ``["owner", "lead"]``.

Other keys in a ``[models.*]`` table belong to other parts of the platform and are ignored here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from matih_lite.errors import ConfigError
from matih_lite.identity import ROLES, Principal

DEFAULT_APPROVERS: tuple[str, ...] = ("owner", "lead")
DEFAULT_SERVE_STAGES: tuple[str, ...] = ("Staging", "Production")
"""What ``[governance] serve_stages`` is when unset: a version takes live traffic once it has passed Staging."""
DEFAULT_KEY = "*"
_RULE = re.compile(r"^\s*(?P<metric>[A-Za-z0-9_\-./:]+(?: +[A-Za-z0-9_\-./:]+)*?)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
                   r"(?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_APPROVER = re.compile(r"^(owner|(role|user):[^\s:]+|[A-Za-z][\w\-]*)$")
_OPS = {
    ">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


@dataclass(frozen=True)
class Threshold:
    """One ``staging_requires`` rule: ``metric op value``."""

    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {_number(self.value)}"

    def holds(self, actual: float | None) -> bool:
        """Whether ``actual`` meets the rule; a missing or NaN value never does."""
        if actual is None or math.isnan(actual):
            return False
        return bool(_OPS[self.op](actual, self.value))


@dataclass(frozen=True)
class Policy:
    """The governance policy for one model."""

    model: str
    staging_requires: tuple[Threshold, ...] = ()
    production_approvers: tuple[str, ...] = DEFAULT_APPROVERS
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    """For each key, the matih.toml table it came from (``models.churn`` or ``models."*"``)."""

    @property
    def needs_approval(self) -> bool:
        return bool(self.production_approvers)

    def unmet(self, metrics: Mapping[str, float]) -> list[dict[str, Any]]:
        """Each Staging rule the metrics fail, with the actual value (``"missing"`` when not logged)."""
        out = []
        for rule in self.staging_requires:
            actual = metrics.get(rule.metric)
            if not rule.holds(actual):
                out.append({"rule": str(rule), "metric": rule.metric, "op": rule.op, "threshold": rule.value,
                            "actual": "missing" if actual is None else ("NaN" if math.isnan(actual) else actual)})
        return out

    def may_approve(self, principal: Principal, owner: str) -> bool:
        """Whether ``principal`` is one of the approvers (the self-approval rule is the caller's)."""
        if principal.has("admin"):
            return True
        for entry in self.production_approvers:
            kind, _, value = entry.partition(":")
            if entry == "owner":
                if owner and principal.user == owner:
                    return True
            elif kind == "user" and value:
                if principal.user == value:
                    return True
            elif kind == "role" and value:
                if principal.has(value):
                    return True
            elif principal.has(entry):
                return True
        return False

    def describe_approvers(self, owner: str) -> str:
        """``owner (alice), role lead`` for messages."""
        parts = []
        for entry in self.production_approvers:
            kind, _, value = entry.partition(":")
            if entry == "owner":
                parts.append(f"the model owner ({owner or 'none set'})")
            elif kind == "user" and value:
                parts.append(f"user {value}")
            else:
                parts.append(f"role {value if kind == 'role' and value else entry}")
        return ", ".join(parts + ["an admin"]) if parts else "nobody (no approval needed)"


def parse_threshold(text: Any, key: str) -> Threshold:
    """``"auc >= 0.85"`` as a Threshold, or ConfigError at ``key`` saying what is wrong."""
    if not isinstance(text, str):
        raise ConfigError(f"expected a rule like \"auc >= 0.85\", got {type(text).__name__}", key=key)
    m = _RULE.match(text)
    if not m:
        raise ConfigError(f"invalid rule {text!r}: write METRIC OP NUMBER, e.g. \"auc >= 0.85\" "
                          f"(OP one of {', '.join(_OPS)})", key=key)
    value = float(m["value"])
    if not math.isfinite(value):
        raise ConfigError(f"invalid rule {text!r}: the threshold must be a finite number", key=key)
    return Threshold(m["metric"], m["op"], value)


def _approvers(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"expected a list like [\"owner\", \"lead\"], got {type(value).__name__}", key=key)
    return tuple(_approver(entry, f"{key}[{i}]") for i, entry in enumerate(value))


def _approver(entry: Any, key: str) -> str:
    """One approver: ``owner``, a role, ``role:NAME`` or ``user:NAME``. Raises ConfigError, with a did-you-mean."""
    if not isinstance(entry, str) or not _APPROVER.match(entry):
        raise ConfigError(f"invalid approver {entry!r}: use \"owner\", a role ({', '.join(ROLES)}), "
                          "\"role:NAME\" or \"user:NAME\"", key=key)
    if ":" not in entry and entry != "owner" and entry not in ROLES:
        import difflib

        near = difflib.get_close_matches(entry, ["owner", *ROLES], n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"unknown role {entry!r}{hint} (approvers are \"owner\", a role: {', '.join(ROLES)}, "
                          "\"role:NAME\" or \"user:NAME\")", key=key)
    return entry


def _table(models: Mapping[str, Any], name: str) -> tuple[dict[str, Any], str]:
    label = f'models."{name}"' if not re.fullmatch(r"[A-Za-z0-9_\-]+", name) else f"models.{name}"
    table = models.get(name)
    if table is None:
        return {}, label
    if not isinstance(table, dict):
        raise ConfigError(f"expected a table of governance settings, got {type(table).__name__}", key=label)
    return table, label


def policy_for(models: Mapping[str, Any] | None, name: str) -> Policy:
    """The policy of model ``name`` from the ``[models]`` section (per-model keys over ``"*"``).

    Raises ConfigError with the key path for a malformed rule or approver.
    """
    models = models or {}
    if not isinstance(models, Mapping):
        raise ConfigError("expected tables like [models.churn] and [models.\"*\"]", key="models")
    defaults, default_label = _table(models, DEFAULT_KEY)
    own, own_label = _table(models, name) if name != DEFAULT_KEY else ({}, default_label)
    thresholds: tuple[Threshold, ...] = ()
    approvers = DEFAULT_APPROVERS
    sources: dict[str, str] = {}
    for table, label in ((defaults, default_label), (own, own_label)):
        if "staging_requires" in table:
            rules = table["staging_requires"]
            key = f"{label}.staging_requires"
            if not isinstance(rules, list):
                raise ConfigError(f"expected a list like [\"auc >= 0.85\"], got {type(rules).__name__}", key=key)
            thresholds = tuple(parse_threshold(r, f"{key}[{i}]") for i, r in enumerate(rules))
            sources["staging_requires"] = label
        if "production_approvers" in table:
            approvers = _approvers(table["production_approvers"], f"{label}.production_approvers")
            sources["production_approvers"] = label
    return Policy(name, thresholds, approvers, sources)


class ModelSettings(msgspec.Struct, forbid_unknown_fields=True):
    """``[models.NAME]`` (and ``[models."*"]``, the defaults): one model's governance and automation."""

    staging_requires: list[str] = msgspec.field(default_factory=list)
    """Metric thresholds a version must meet to enter Staging (``"auc >= 0.85"``)."""
    production_approvers: list[str] | None = None
    """Who may approve Production (``owner``, a role, ``role:NAME``, ``user:NAME``); ``[]`` for none needed."""
    retrain_spec: str | None = None
    """A training job spec (TOML or JSON, relative to matih.toml) the drift monitor submits on drift."""


class GovernanceSettings(msgspec.Struct, forbid_unknown_fields=True):
    """``[governance]`` in matih.toml."""

    self_approval: bool = False
    """Let a requester approve their own Production request, for one person on a laptop: honoured only while
    auth is off, and recorded as a self-approval in the audit log and on the model card."""
    serve_stages: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_SERVE_STAGES))
    """The stages a version must be in to take live traffic in a deployment (primary, A/B variant, canary
    candidate); a shadow may be any version, since its answers are never returned."""


def serve_stages(settings: GovernanceSettings) -> tuple[str, ...]:
    """``serve_stages`` as stage names (``"staging"`` read as ``"Staging"``). Raises ConfigError with the key path
    for an unknown stage (with a did-you-mean) or an empty list."""
    import difflib

    from matih_lite.contracts.registry import STAGES

    names = {s.lower(): s for s in STAGES} | {"none": "Development"}
    if not settings.serve_stages:
        raise ConfigError(f"name at least one stage (of {', '.join(STAGES)}); with none, no version could take "
                          "traffic", key="governance.serve_stages")
    out: list[str] = []
    for i, entry in enumerate(settings.serve_stages):
        found = names.get(entry.strip().lower())
        if found is None:
            near = difflib.get_close_matches(entry, STAGES, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown stage {entry!r}{hint} (stages: {', '.join(STAGES)})",
                              key=f"governance.serve_stages[{i}]")
        if found not in out:
            out.append(found)
    return tuple(out)


def governance_settings(config: Any) -> GovernanceSettings:
    """``[governance]`` as :class:`GovernanceSettings`. Raises ConfigError with the key path."""
    from matih_lite.config import convert_settings

    return convert_settings(config.section("governance") if config is not None else {}, GovernanceSettings,
                            "governance")


def check_policies(models: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(key path, message) for every malformed governance setting in ``[models]``; empty when sound.

    Each rule and each approver is checked on its own, so every mistake is reported at once.
    """
    if not models:
        return []
    if not isinstance(models, Mapping):
        return [("models", "expected tables like [models.churn] and [models.\"*\"]")]
    problems: list[tuple[str, str]] = []

    def note(check: Any) -> None:
        try:
            check()
        except ConfigError as exc:
            if (exc.key or "models", exc.reason) not in problems:
                problems.append((exc.key or "models", exc.reason))

    for name in models:
        try:
            table, label = _table(models, name)
        except ConfigError as exc:
            problems.append((exc.key or "models", exc.reason))
            continue
        rules = table.get("staging_requires")
        if rules is not None:
            key = f"{label}.staging_requires"
            if not isinstance(rules, list):
                problems.append((key, f"expected a list like [\"auc >= 0.85\"], got {type(rules).__name__}"))
            else:
                for i, rule in enumerate(rules):
                    note(lambda rule=rule, i=i: parse_threshold(rule, f"{key}[{i}]"))
        approvers = table.get("production_approvers")
        if approvers is not None:
            key = f"{label}.production_approvers"
            if not isinstance(approvers, list):
                note(lambda: _approvers(approvers, key))
            else:
                for i, entry in enumerate(approvers):
                    note(lambda entry=entry, i=i: _approver(entry, f"{key}[{i}]"))
    return problems


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)
