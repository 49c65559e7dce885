"""The registry domain's plugin: the schemas and checks of ``[models]`` (the policy per model) and ``[governance]``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matih_lite.hookspecs import hookimpl

if TYPE_CHECKING:
    from matih_lite.host import Host



def check_models(host: Host, settings: Any) -> list[tuple[str, str]]:
    """Every malformed rule and approver of ``[models]``, each with its key path."""
    from matih_lite.registry.policy import check_policies

    return check_policies(host.config.section("models"))


def check_governance(host: Host, settings: Any) -> list[tuple[str, str]]:
    """Self-approval only where auth is off; ``serve_stages`` names stages."""
    from matih_lite.auth import auth_enabled
    from matih_lite.errors import ConfigError
    from matih_lite.registry.policy import serve_stages

    problems: list[tuple[str, str]] = []
    try:
        serve_stages(settings)
    except ConfigError as exc:
        problems.append((exc.key or "governance.serve_stages", exc.reason))
    try:
        secured = auth_enabled(host)
    except ConfigError:
        return problems  # [auth] reports its own problem
    if settings.self_approval and secured:
        problems.append(("governance.self_approval", f"allowed only while auth is off (profile {host.profile} "
                         "requires tokens): with auth, a Production request always needs a second person"))
    return problems


@hookimpl
def register_settings(register):
    from matih_lite.registry.policy import GovernanceSettings, ModelSettings

    register("models", dict[str, ModelSettings], check=check_models)
    register("governance", GovernanceSettings, check=check_governance)
