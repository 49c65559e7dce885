"""The tracking domain's plugin: ``[quotas]`` registered once, its artifact keys checked here and its jobs' keys
by the training domain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matih_lite.hookspecs import hookimpl

if TYPE_CHECKING:
    from matih_lite.host import Host


def check_quotas(host: Host, settings: Any) -> list[tuple[str, str]]:
    """Every problem of ``[quotas]``: the artifact keys (checked here) and the jobs' (by the training domain)."""
    from matih_lite.tracking.quotas import check_quotas as check
    from matih_lite.training.jobs import quota_problems

    return check(host, settings) + quota_problems(settings)


@hookimpl
def register_settings(register):
    register("quotas", dict[str, Any], check=check_quotas)
