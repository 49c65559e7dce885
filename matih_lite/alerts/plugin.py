"""The alerts' plugin: the schema and check of ``[notifiers]`` (every notifier named is installed and takes
its settings)."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from matih_lite.hookspecs import hookimpl

if TYPE_CHECKING:
    from matih_lite.host import Host



def check_notifiers(host: Host, settings: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    from matih_lite.errors import MatihError

    problems: list[tuple[str, str]] = []
    factories = host.registry("register_notifiers")
    for name, values in settings.items():
        factory = factories.get(name)
        if factory is None:
            near = difflib.get_close_matches(name, list(factories), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            problems.append((f"notifiers.{name}", f"no notifier {name!r} is installed; {hint}installed: "
                                                  f"{', '.join(sorted(factories)) or 'none'}"))
            continue
        try:
            factory(dict(values))
        except MatihError as exc:
            key = getattr(exc, "key", None) or f"notifiers.{name}"
            problems.append((key if key.startswith("notifiers.") else f"notifiers.{name}.{key}",
                             getattr(exc, "reason", exc.message)))
        except (TypeError, ValueError) as exc:
            problems.append((f"notifiers.{name}", f"{type(exc).__name__}: {exc}"))
    return problems


@hookimpl
def register_settings(register):
    register("notifiers", dict[str, dict[str, Any]], check=check_notifiers)
