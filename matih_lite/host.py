"""The plugin host: builds the plugin manager, indexes backends, fills one backend per slot.

Nothing here is global. ``Host.open()`` loads the config, builds a fresh plugin manager
(built-ins first, then the ``matih_lite`` entry points), and validates the active profile;
backends are constructed lazily, the first time their slot is used.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import msgspec
import pluggy

from matih_lite import hookspecs
from matih_lite.config import Config, load_config
from matih_lite.contracts import (
    SLOTS,
    ArtifactStore,
    BackendContext,
    ComputeBackend,
    DriftRunner,
    EventStore,
    FeatureStore,
    Health,
    MetadataStore,
    ServingBackend,
)
from matih_lite.errors import ConfigError, PluginError

log = logging.getLogger("matih_lite.host")

LITE_BACKENDS: tuple[str, ...] = (
    "matih_lite.builtin.sqlite_store",
    "matih_lite.builtin.local_artifacts",
    "matih_lite.builtin.duckdb_events",
    "matih_lite.builtin.duckdb_features",
    "matih_lite.builtin.ray_local",
    "matih_lite.builtin.inprocess_serving",
    "matih_lite.builtin.inprocess_drift",
)
"""The lite slot backends (``matih_lite/builtin/``): they see only the contracts, like any backend."""

DOMAIN_PLUGINS: tuple[str, ...] = (
    "matih_lite.alerts.log",
    "matih_lite.alerts.plugin",
    "matih_lite.auth.plugin",
    "matih_lite.tracking.autologgers",
    "matih_lite.tracking.plugin",
    "matih_lite.registry.plugin",
    "matih_lite.lineage.plugin",
    "matih_lite.serving.flavors.plugin",
    "matih_lite.serving.plugin",
    "matih_lite.monitoring.plugin",
    "matih_lite.alerts.webhook",
)
"""The domains' own plugins (notifiers, autologgers, flavors, drift tests, event subscribers), each beside
its domain. Registration order is call order reversed: the drift runner starts before the deployments."""

BUILTIN_PLUGINS: tuple[str, ...] = LITE_BACKENDS + DOMAIN_PLUGINS
"""The built-in plugins, registered like any other: a plugin may replace any of them."""

ENTRY_POINT_GROUP = "matih_lite"

FIRST_PARTY: dict[str, str] = {
    "postgres": "matih-postgres", "s3": "matih-s3", "kuberay": "matih-kuberay", "ray": "matih-ray",
    "triton": "matih-triton", "vllm": "matih-vllm", "kafka": "matih-kafka", "flink": "matih-flink",
    "feast": "matih-feast",
}
"""Backend names we publish as separate distributions, for the ``pip install`` hint."""


@dataclass(frozen=True)
class BackendSpec:
    """A backend as a plugin registered it."""

    slot: str
    name: str
    factory: Callable[[Any, BackendContext], Any]
    settings: type | None
    plugin: str
    distribution: str | None
    summary: str = ""


@dataclass
class PluginSet:
    """A plugin manager plus where each plugin came from (its distribution, for messages)."""

    pm: pluggy.PluginManager
    origins: dict[str, str | None] = field(default_factory=dict)

    def implementers(self, hook_name: str) -> list[str]:
        """Names of the plugins implementing a hook, in call order."""
        return [impl.plugin_name for impl in getattr(self.pm.hook, hook_name).get_hookimpls()][::-1]

    def collect(self, hook_name: str) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        """Call a ``register_*`` hook plugin by plugin; returns (plugin, args, kwargs) per registration."""
        out: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls()[::-1]:
            def register(*args: Any, _plugin: str = impl.plugin_name, **kwargs: Any) -> None:
                out.append((_plugin, args, kwargs))

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {self.describe(impl.plugin_name)} failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
        return out

    def describe(self, plugin: str) -> str:
        dist = self.origins.get(plugin)
        return f"'{plugin}' (from {dist})" if dist else f"'{plugin}'"


def get_plugin_manager(*, entry_points: bool = True, plugins: Iterable[tuple[str, object]] = ()) -> PluginSet:
    """A fresh plugin manager with the hook specs, the built-ins, the entry points and ``plugins``.

    Raises PluginError naming the entry point and its distribution when a plugin fails to import.
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    pset = PluginSet(pm)
    for module_name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
        pset.origins[module_name] = "matih-lite (built in)"
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else None
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin '{ep.name}' ({ep.value}) from {dist or 'an unknown distribution'} failed to import: "
                    f"{type(exc).__name__}: {exc}. Fix or reinstall it, or remove it with "
                    f"'pip uninstall {ep.dist.name if ep.dist else ep.name}'."
                ) from exc
            _register(pm, plugin, ep.name)
            pset.origins[ep.name] = dist
    for name, plugin in plugins:
        _register(pm, plugin, name)
        pset.origins[name] = None
    return pset


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginError(f"plugin '{name}' cannot be registered: {exc}") from exc


def index_backends(pset: PluginSet) -> dict[str, dict[str, BackendSpec]]:
    """Every registered backend by slot and name. Raises PluginError on duplicates or unknown slots."""
    index: dict[str, dict[str, BackendSpec]] = {slot: {} for slot in SLOTS}
    for plugin, args, kwargs in pset.collect("register_backends"):
        try:
            spec = _backend_spec(plugin, pset.origins.get(plugin), *args, **kwargs)
        except TypeError as exc:
            raise PluginError(
                f"plugin {pset.describe(plugin)} called register() wrongly: {exc}; "
                "expected register(slot, name, factory, settings=Schema, summary='...')"
            ) from exc
        if spec.slot not in index:
            raise PluginError(
                f"plugin {pset.describe(plugin)} registers backend '{spec.name}' for unknown slot "
                f"'{spec.slot}'; slots are: {', '.join(SLOTS)}"
            )
        existing = index[spec.slot].get(spec.name)
        if existing is not None:
            raise PluginError(
                f"two plugins register the {spec.slot} backend '{spec.name}': {pset.describe(existing.plugin)} "
                f"and {pset.describe(plugin)}; uninstall one of them"
            )
        index[spec.slot][spec.name] = spec
    return index


def _backend_spec(plugin: str, dist: str | None, slot: str, name: str, factory: Callable[..., Any], *,
                  settings: type | None = None, summary: str = "") -> BackendSpec:
    if not callable(factory):
        raise TypeError(f"factory for '{name}' is not callable")
    return BackendSpec(slot, name, factory, settings, plugin, dist, summary)


def install_hint(name: str) -> str:
    """`` (pip install matih-postgres ...)`` for a first-party backend name, or a near one for a typo."""
    import difflib

    dist = FIRST_PARTY.get(name)
    if dist:
        return f" (pip install {dist}, or pip install -e backends/{name} from a checkout)"
    near = difflib.get_close_matches(name, list(FIRST_PARTY), n=1)
    return f"; did you mean '{near[0]}'?{install_hint(near[0])}" if near else ""


class Host:
    """The running platform's view of its plugins and the backend in each slot."""

    def __init__(self, config: Config, profile: str | None = None, plugins: PluginSet | None = None, *,
                 strict: bool = True, migrate: bool = True) -> None:
        """``migrate=False`` opens the slots to look only (``doctor``): the metadata schema is read, never made."""
        self.config = config
        self.profile = profile or config.default_profile()
        self.plugins = plugins or get_plugin_manager()
        self.pm = self.plugins.pm
        self.backends = index_backends(self.plugins)
        self.context = BackendContext(home=config.home, base_dir=config.base_dir, profile=self.profile,
                                      migrate=migrate)
        self._profile_problems: list[tuple[str, str]] = []
        self._selection = config.profile(self.profile, self._profile_problems)
        self._settings: dict[str, Any] = {}
        self._instances: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._registries: dict[str, dict[str, Any]] = {}
        self.config_problems = self.problems()
        if strict and self.config_problems:
            raise ConfigError("\n".join(f"{key}: {msg}" for key, msg in self.config_problems))

    @classmethod
    def open(cls, config_path: str | None = None, profile: str | None = None, **kwargs: Any) -> Host:
        """Load matih.toml (or defaults) and build a validated host. Inside the CLI, a folder that holds no
        state (no matih.toml, no state folder) is refused rather than filled with an empty one."""
        from matih_lite.ownership import ensure_state

        config = load_config(config_path)
        ensure_state(config)
        return cls(config, profile, **kwargs)

    # ---- resolution -------------------------------------------------------------------------
    def selection(self) -> dict[str, dict[str, Any]]:
        """Each slot's configured ``{"backend": name, ...settings}`` (defaults marked ``default``)."""
        return self._selection

    def active(self, slot: str) -> BackendSpec | None:
        """The spec filling ``slot``, or None when no installed backend (with valid settings) fills it."""
        entry = self._selection.get(slot)
        spec = self.backends[slot].get(entry["backend"]) if entry else None
        return spec if spec is not None and slot in self._settings else None

    def problems(self) -> list[tuple[str, str]]:
        """(key path, message) for every problem with the active profile; empty when it is sound."""
        problems: list[tuple[str, str]] = [*self.config.unknown_keys(), *self._profile_problems]
        for slot in SLOTS:
            key = f"profiles.{self.profile}.{slot}"
            entry = self._selection.get(slot)
            if entry is None:
                continue  # malformed; already among the problems
            name = entry["backend"]
            spec = self.backends[slot].get(name)
            if spec is None:
                if entry.get("default"):
                    continue  # a defaulted slot whose lite backend is not built yet stays empty
                installed = ", ".join(sorted(self.backends[slot])) or "none"
                hint = install_hint(name)
                near = [n for n in self.backends[slot] if n != name and __import__("difflib").get_close_matches(
                    name, [n], n=1)]
                if near and not hint.startswith(" (pip"):
                    hint = f"; did you mean '{near[0]}'?"
                problems.append((key, f"unknown backend '{name}'; installed: {installed}{hint}"))
                continue
            try:
                self._settings[slot] = self._validate_settings(spec, entry)
            except ConfigError as exc:
                problems.append((f"{key}{exc.key or ''}", exc.reason))
        return problems

    @staticmethod
    def _validate_settings(spec: BackendSpec, entry: dict[str, Any]) -> Any:
        values = {k: v for k, v in entry.items() if k not in ("backend", "default")}
        if spec.settings is None:
            if values:
                raise ConfigError(f"backend '{spec.name}' takes no settings, got: {', '.join(values)}")
            return None
        try:
            return msgspec.convert(values, spec.settings, strict=False)
        except msgspec.ValidationError as exc:
            text = str(exc)
            path = ""
            if " - at `$." in text:
                text, path = text.split(" - at `$.", 1)
                path = "." + path.rstrip("`")
            known = ", ".join(getattr(spec.settings, "__struct_fields__", ()))
            raise ConfigError(f"{text} (settings of '{spec.name}': {known or 'none'})", key=path) from None

    @overload
    def backend(self, slot: Literal["metadata"]) -> MetadataStore: ...
    @overload
    def backend(self, slot: Literal["artifacts"]) -> ArtifactStore: ...
    @overload
    def backend(self, slot: Literal["compute"]) -> ComputeBackend: ...
    @overload
    def backend(self, slot: Literal["serving"]) -> ServingBackend: ...
    @overload
    def backend(self, slot: Literal["events"]) -> EventStore: ...
    @overload
    def backend(self, slot: Literal["drift"]) -> DriftRunner: ...
    @overload
    def backend(self, slot: Literal["features"]) -> FeatureStore: ...
    @overload
    def backend(self, slot: str) -> Any: ...

    def backend(self, slot: str) -> Any:
        """The backend object filling ``slot``, built on first use. Raises ConfigError if none is."""
        inst = self._instances.get(slot)
        if inst is not None:
            return inst
        with self._lock:
            inst = self._instances.get(slot)
            if inst is not None:
                return inst
            spec = self.active(slot)
            if spec is None:
                name = self._selection.get(slot, {}).get("backend", "?")
                installed = ", ".join(sorted(self.backends[slot])) or "none yet"
                raise ConfigError(
                    f"no backend fills the {slot} slot: '{name}' is not installed; installed: {installed}",
                    key=f"profiles.{self.profile}.{slot}",
                )
            try:
                inst = spec.factory(self._settings.get(slot), self.context)
            except ConfigError:
                raise
            except ImportError as exc:
                raise PluginError(
                    f"backend '{spec.name}' for {slot} needs a package that is not installed: {exc}"
                    f"{install_hint(spec.name)}", key=f"profiles.{self.profile}.{slot}",
                ) from exc
            self._instances[slot] = inst
            log.debug("built %s backend %s", slot, spec.name)
            return inst

    @property
    def metadata(self) -> MetadataStore:
        return self.backend("metadata")

    @property
    def artifacts(self) -> ArtifactStore:
        return self.backend("artifacts")

    def health(self, slots: Iterable[str] = SLOTS) -> dict[str, Health | None]:
        """Each slot's health (None for an empty slot); a backend that raises is reported unhealthy."""
        out: dict[str, Health | None] = {}
        for slot in slots:
            if self.active(slot) is None:
                out[slot] = None
                continue
            try:
                out[slot] = self.backend(slot).health()
            except Exception as exc:  # health must report, never raise
                out[slot] = Health(False, f"{type(exc).__name__}: {exc}")
        return out

    # ---- named extensions -------------------------------------------------------------------
    def registry(self, hook_name: str) -> dict[str, Any]:
        """Everything contributed through a ``register_*`` hook, by name (cached). Duplicates are errors."""
        found = self._registries.get(hook_name)
        if found is None:
            found = {}
            owners: dict[str, str] = {}
            for plugin, args, kwargs in self.plugins.collect(hook_name):
                name, thing = (list(args) + list(kwargs.values()))[:2]
                if name in found:
                    raise PluginError(
                        f"two plugins contribute '{name}' to {hook_name}: "
                        f"{self.plugins.describe(owners[name])} and {self.plugins.describe(plugin)}"
                    )
                found[name] = thing
                owners[name] = plugin
            self._registries[hook_name] = found
        return found

    def section_problems(self) -> list[tuple[str, str]]:
        """(key path, message) for every problem in matih.toml's sections, against the schemas and checks
        plugins contribute through ``register_settings``."""
        from matih_lite.config import settings_problems

        problems: list[tuple[str, str]] = []
        for plugin, args, kwargs in self.plugins.collect("register_settings"):
            section, schema = args[0], args[1] if len(args) > 1 else kwargs.get("schema")
            check = args[2] if len(args) > 2 else kwargs.get("check")
            try:
                settings, found = settings_problems(self.config.section(section), schema, section)
                if check is not None and settings is not None:
                    found += [p for p in check(self, settings) if p not in found]
            except ConfigError as exc:
                found = [(exc.key or section, exc.reason)]
            except Exception as exc:  # a plugin's check that breaks says so, and names itself
                found = [(section, f"the check of plugin {self.plugins.describe(plugin)} failed: "
                                   f"{type(exc).__name__}: {exc}")]
            problems.extend(p for p in found if p not in problems)
        return problems

    def emit(self, event: Any) -> None:
        """Tell every ``on_event`` hook; one failing plugin is logged, never raised."""
        for impl in self.pm.hook.on_event.get_hookimpls():
            try:
                impl.function(event=event)
            except Exception:
                log.exception("plugin %s failed handling event %s", impl.plugin_name, getattr(event, "type", event))

    def close(self) -> None:
        """Close every backend that was built."""
        with self._lock:
            for slot, inst in list(self._instances.items()):
                closer = getattr(inst, "close", None)
                if closer is not None:
                    try:
                        closer()
                    except Exception:
                        log.exception("closing %s backend failed", slot)
            self._instances.clear()
