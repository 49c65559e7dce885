"""The tracking domain's plugin: the artifact keys of ``[quotas]`` (the jobs' keys are the training domain's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matih_lite.hookspecs import hookimpl

if TYPE_CHECKING:
    from matih_lite.host import Host



def check_quotas(host: Host, settings: Any) -> list[tuple[str, str]]:
    from matih_lite.tracking.quotas import check_quotas as check

    return check(host, settings)


@hookimpl
def register_settings(register):
    register("quotas", dict[str, Any], check=check_quotas)
