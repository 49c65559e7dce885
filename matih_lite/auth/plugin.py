"""The auth domain's plugin: the schema and check of ``[auth]``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matih_lite.hookspecs import hookimpl

if TYPE_CHECKING:
    from matih_lite.host import Host



def check_auth(host: Host, settings: Any) -> list[tuple[str, str]]:
    """The profile rule: only the lite profile may run without tokens."""
    from matih_lite.config import DEFAULT_PROFILE

    if host.profile != DEFAULT_PROFILE and settings.enabled is False:
        return [("auth.enabled", f"profile {host.profile!r} requires bearer tokens (only the lite profile may run "
                                 "without auth); remove 'enabled = false'")]
    return []


@hookimpl
def register_settings(register):
    from matih_lite.auth.service import AuthSettings

    register("auth", AuthSettings, check=check_auth)
