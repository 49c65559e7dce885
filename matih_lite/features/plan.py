"""What ``apply`` would change: each object added, changed (with the fields that differ) or removed."""

from __future__ import annotations

from typing import Any

import msgspec

from matih_lite.contracts.features import DefinitionChange, FeatureDefinitions

KINDS: tuple[tuple[str, str], ...] = (
    ("entities", "entity"), ("sources", "source"), ("push_sources", "push source"), ("feature_views", "feature view"),
    ("on_demand_views", "on-demand view"), ("services", "feature service"),
)
"""(field of FeatureDefinitions, what a person calls one), in the order plans list them."""


class Plan(msgspec.Struct, frozen=True):
    """The changes from the applied version ``base_version`` (0: none) to ``definitions``."""

    base_version: int
    changes: tuple[DefinitionChange, ...]
    definitions: FeatureDefinitions
    digest: str

    @property
    def empty(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        out = {"added": 0, "changed": 0, "removed": 0}
        for c in self.changes:
            out[c.action] += 1
        return out


def diff(old: FeatureDefinitions | None, new: FeatureDefinitions) -> list[DefinitionChange]:
    """Every object added, changed (``diff``: ``{field: [old, new]}``) or removed, kind by kind, by name."""
    changes: list[DefinitionChange] = []
    for kind, _ in KINDS:
        before: dict[str, Any] = getattr(old, kind) if old is not None else {}
        after: dict[str, Any] = getattr(new, kind)
        for name in sorted(set(before) | set(after)):
            if name not in before:
                changes.append(DefinitionChange("added", kind, name, {}))
            elif name not in after:
                changes.append(DefinitionChange("removed", kind, name, {}))
            else:
                a, b = msgspec.to_builtins(before[name]), msgspec.to_builtins(after[name])
                fields = {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
                if fields:
                    changes.append(DefinitionChange("changed", kind, name, fields))
    return changes


def describe(kind: str) -> str:
    """``feature_views`` -> ``feature view``."""
    return dict(KINDS).get(kind, kind)
