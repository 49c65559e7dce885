"""The registry domain's plugin: the checks of ``[models]`` (the policy per model) and ``[governance]``."""

from __future__ import annotations

from typing import Any

from matih_lite.hookspecs import hookimpl


def check_models_section(config: Any) -> list[tuple[str, str]]:
    """Every malformed governance setting of ``[models]`` (thresholds, approvers), with its key path."""
    from matih_lite.registry.policy import check_policies

    return check_policies(config.section("models"))


def check_governance(config: Any) -> list[tuple[str, str]]:
    """``[governance]``: its keys' types, and self-approval only where auth is off."""
    from matih_lite.registry.policy import check_governance_section

    return check_governance_section(config)


@hookimpl
def register_settings(register):
    register("models", check_models_section)
    register("governance", check_governance)
