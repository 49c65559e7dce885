"""Every hook a plugin may implement: THE contract between matih-lite and its plugins.

Hooks come in three families:

* ``register_*`` contribute named things. Each receives a ``register`` callback and
  calls it once per thing it contributes; all plugins are called.
* lifecycle hooks (``startup``, ``shutdown``) run when the service starts and stops.
* event hooks (``on_event``) are told about every platform event.

A plugin is a module or object with functions decorated by :data:`hookimpl`, listed under
the ``matih_lite`` entry-point group of its distribution::

    [project.entry-points.matih_lite]
    my_backend = "my_package.plugin"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from matih_lite.events import PlatformEvent
    from matih_lite.host import Host

hookspec = pluggy.HookspecMarker("matih_lite")
hookimpl = pluggy.HookimplMarker("matih_lite")


class RegisterBackend(Protocol):
    def __call__(
        self, slot: str, name: str, factory: Any, *, settings: type | None = None, summary: str = ""
    ) -> None: ...


class RegisterNamed(Protocol):
    def __call__(self, name: str, thing: Any) -> None: ...


# ---------------------------------------------------------------------------
# Backends: one per slot, picked by the active profile
# ---------------------------------------------------------------------------


@hookspec
def register_backends(register: RegisterBackend) -> None:
    """Contribute backends for slots: ``register(slot, name, factory, settings=Schema)``.

    Called once when the host is built. ``slot`` is one of
    :data:`matih_lite.contracts.SLOTS`; ``name`` is what a profile writes in
    ``backend = "..."``. ``settings`` is a ``msgspec.Struct`` type describing the
    backend's keys (validated before ``factory`` runs, so it must not import the
    backend's heavy driver); ``factory(settings, context)`` returns an object that
    satisfies the slot's contract in :mod:`matih_lite.contracts`, where ``context`` is a
    :class:`matih_lite.contracts.BackendContext` (state folder, profile name).
    Two plugins registering the same (slot, name) is an error that names both.
    """


# ---------------------------------------------------------------------------
# Extensions: every contribution is kept, not one per slot
# ---------------------------------------------------------------------------


@hookspec
def register_notifiers(register: RegisterNamed) -> None:
    """Contribute alert notifiers: ``register(name, factory)``.

    Called when the host first needs to send an alert. ``factory(settings: dict)``
    returns an object with ``notify(alert: dict) -> None``; ``[notifiers.NAME]`` in
    matih.toml supplies ``settings``.
    """


@hookspec
def register_flavors(register: RegisterNamed) -> None:
    """Contribute model flavors: ``register(name, flavor)``.

    Called when a model is first saved, loaded or served. ``flavor`` knows how to
    ``save(model, folder)``, ``load(folder) -> predictor`` and what the predictor's
    ``predict`` accepts. The registry records the flavor name with every version.
    """


@hookspec
def register_drift_tests(register: RegisterNamed) -> None:
    """Contribute drift statistics: ``register(name, test)``.

    Called when the first drift check runs. ``test`` is a pure function of a
    baseline profile and a window's aggregate that returns a statistic, a p-value
    when it has one, and a verdict against its threshold.
    """


@hookspec
def register_autologgers(register: RegisterNamed) -> None:
    """Contribute auto-loggers: ``register(framework, enable)``.

    Called by ``matih_lite.autolog()``. ``enable()`` patches the framework so that training
    logs params, metrics and the model into the active run (the one ``matih_lite.start_run``
    opened, or one it starts), raises ImportError when the framework is not installed, and
    returns a callable that undoes the patch.
    """


@hookspec
def register_routes(register: RegisterNamed) -> None:
    """Contribute HTTP routes: ``register(name, handler)``.

    Called once when the service app is built. ``handler`` is a Litestar route
    handler, controller or router; it is mounted as given, so plugins choose their
    own paths (``/api/v1/x/...`` by convention). The host is available to handlers
    as the ``host`` dependency.
    """


@hookspec
def register_commands(app: Any) -> None:
    """Add CLI commands to the ``matih-lite`` typer application ``app``.

    Called once when the CLI starts, before arguments are parsed.
    """


class RegisterSettings(Protocol):
    def __call__(self, section: str, schema: Any, *, check: Any = None) -> None: ...


@hookspec
def register_settings(register: RegisterSettings) -> None:
    """Contribute the schema of a matih.toml section: ``register(section, schema, check=None)``.

    Called by ``matih-lite config validate`` and by ``matih-lite up`` before it listens.
    ``schema`` is a msgspec type (a ``Struct`` with ``forbid_unknown_fields``, or a ``dict`` of
    them for tables of tables); the section is converted to it and every mismatch reported with
    its key path, what was expected, and a did-you-mean for an unknown key. ``check(host,
    settings)``, when given, returns ``[(key path, message), ...]`` for what the types cannot say
    (ranges, names that must exist, rules across keys). The domain that reads a section
    registers it (the registry ``[models]``, monitoring ``[drift]``...).
    """


# ---------------------------------------------------------------------------
# Lifecycle and events
# ---------------------------------------------------------------------------


@hookspec
def startup(host: Host) -> None:
    """Called once when the ml-service starts, after every backend is resolved."""


@hookspec
def shutdown(host: Host) -> None:
    """Called once when the ml-service stops, before backends are closed."""


@hookspec
def on_event(event: PlatformEvent) -> None:
    """Told about every platform event (a run finished, a version promoted, drift found).

    Called synchronously after the event is recorded; an exception here is logged
    and never undoes the event.
    """
