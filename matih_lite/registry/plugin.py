"""The registry domain's plugin: the check of ``[models]`` (governance policy) in matih.toml."""

from __future__ import annotations

from typing import Any

from matih_lite.hookspecs import hookimpl


def check_models_section(config: Any) -> list[tuple[str, str]]:
    """Every malformed governance setting of ``[models]`` (thresholds, approvers), with its key path."""
    from matih_lite.registry.policy import check_policies

    return check_policies(config.section("models"))


@hookimpl
def register_settings(register):
    register("models", check_models_section)
