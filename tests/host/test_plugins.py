"""Plugin resolution: built-ins, entry points, broken and duplicate plugins, unknown backends."""

from __future__ import annotations

import importlib.metadata
import types

import msgspec
import pytest

from matih_lite.config import load_config
from matih_lite.contracts import Health
from matih_lite.errors import ConfigError, PluginError
from matih_lite.hookspecs import hookimpl
from matih_lite.host import Host, get_plugin_manager, index_backends


def plugin_module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))
    return mod


class MemSettings(msgspec.Struct, forbid_unknown_fields=True):
    capacity: int = 10


class MemArtifacts:
    def __init__(self, settings, context):
        self.capacity = settings.capacity

    def health(self):
        return Health(True, f"capacity {self.capacity}")


def register_mem(register):
    register("artifacts", "mem", MemArtifacts, settings=MemSettings, summary="in memory")


def write_config(tmp_path, text):
    path = tmp_path / "matih.toml"
    path.write_text(text)
    return load_config(path)


def test_builtins_fill_metadata_and_artifacts(tmp_path):
    host = Host(load_config(cwd=tmp_path))
    assert host.active("metadata").name == "sqlite"
    assert host.active("artifacts").name == "local"
    assert host.metadata.health().ok and host.artifacts.health().ok
    assert (tmp_path / ".matih" / "matih.db").exists() or host.metadata.location.endswith("matih.db")


def test_third_party_backend_selected_by_profile(tmp_path):
    cfg = write_config(tmp_path, '[profiles.lite]\nartifacts = { backend = "mem", capacity = 3 }\n')
    plugins = get_plugin_manager(entry_points=False, plugins=[("mem", plugin_module("mem", register_backends=register_mem))])
    host = Host(cfg, plugins=plugins)
    assert host.artifacts.capacity == 3
    assert host.active("artifacts").plugin == "mem"


def test_duplicate_backend_names_both_plugins(tmp_path):
    plugins = get_plugin_manager(entry_points=False, plugins=[
        ("first", plugin_module("first", register_backends=register_mem)),
        ("second", plugin_module("second", register_backends=register_mem)),
    ])
    with pytest.raises(PluginError, match=r"artifacts backend 'mem'.*'first'.*'second'|'second'.*'first'"):
        index_backends(plugins)


def test_backend_for_unknown_slot_is_refused():
    plugins = get_plugin_manager(entry_points=False, plugins=[
        ("bad", plugin_module("bad", register_backends=lambda register: register("warp", "x", dict))),
    ])
    with pytest.raises(PluginError, match="unknown slot 'warp'"):
        index_backends(plugins)


def test_plugin_raising_in_hook_is_named():
    def boom(register):
        raise RuntimeError("kaput")

    plugins = get_plugin_manager(entry_points=False, plugins=[("boom", plugin_module("boom", register_backends=boom))])
    with pytest.raises(PluginError, match="'boom' failed in register_backends: RuntimeError: kaput"):
        index_backends(plugins)


def test_entry_point_that_fails_to_import_names_the_distribution(monkeypatch):
    broken = importlib.metadata.EntryPoint("broken", "matih_no_such_module.plugin", "matih_lite")
    real = importlib.metadata.entry_points

    def fake(**kw):
        return [broken] if kw.get("group") == "matih_lite" else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    with pytest.raises(PluginError, match="plugin 'broken'.*failed to import: ModuleNotFoundError"):
        get_plugin_manager()


def test_unknown_backend_lists_installed_and_hint(tmp_path):
    cfg = write_config(tmp_path, '[profiles.lite]\nmetadata = { backend = "postgress" }\n')
    with pytest.raises(ConfigError) as info:
        Host(cfg, plugins=get_plugin_manager(entry_points=False))
    message = info.value.message
    assert "profiles.lite.metadata: unknown backend 'postgress'; installed: sqlite" in message
    assert "matih-postgres" in message


def test_settings_are_validated_with_key_path(tmp_path):
    cfg = write_config(tmp_path, '[profiles.lite]\nartifacts = { backend = "mem", capacity = "lots" }\n'
                                 'metadata = { backend = "sqlite", pth = "x.db" }\n')
    plugins = get_plugin_manager(entry_points=False, plugins=[("mem", plugin_module("mem", register_backends=register_mem))])
    host = Host(cfg, plugins=plugins, strict=False)
    problems = dict(host.config_problems)
    assert "Expected `int`, got `str`" in problems["profiles.lite.artifacts.capacity"]
    assert "unknown field `pth`" in problems["profiles.lite.metadata"]


def test_empty_default_slot_is_not_an_error(tmp_path):
    # Only the built-ins, minus the metadata backend: its default slot is then empty, not an error.
    plugins = get_plugin_manager(entry_points=False)
    plugins.pm.unregister(name="matih_lite.builtin.sqlite_store")
    host = Host(load_config(cwd=tmp_path), plugins=plugins)
    assert host.active("metadata") is None
    with pytest.raises(ConfigError, match="no backend fills the metadata slot"):
        host.backend("metadata")


def test_each_host_has_its_own_plugin_manager(tmp_path):
    a, b = Host(load_config(cwd=tmp_path)), Host(load_config(cwd=tmp_path))
    assert a.pm is not b.pm


def test_registry_hooks_collect_and_refuse_duplicates(tmp_path):
    plugins = get_plugin_manager(entry_points=False, plugins=[
        ("n1", plugin_module("n1", register_notifiers=lambda register: register("log", object))),
    ])
    host = Host(load_config(cwd=tmp_path), plugins=plugins)
    with pytest.raises(PluginError, match="two plugins contribute 'log' to register_notifiers"):
        host.registry("register_notifiers")


def test_event_hook_failure_does_not_propagate(tmp_path, caplog):
    seen = []

    def on_event(event):
        seen.append(event)
        raise ValueError("listener broke")

    plugins = get_plugin_manager(entry_points=False, plugins=[("ev", plugin_module("ev", on_event=on_event))])
    host = Host(load_config(cwd=tmp_path), plugins=plugins)
    host.emit("something")
    assert seen == ["something"]
    assert "listener broke" in caplog.text
