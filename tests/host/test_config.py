"""matih.toml loading, profiles, ${VAR} interpolation (property-tested) and secret masking."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matih_lite.config import interpolate, load_config, mask_secrets
from matih_lite.errors import ConfigError

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
PLAIN = st.text(alphabet=st.characters(blacklist_characters="${}", blacklist_categories=("Cs",)), max_size=20)


@given(name=NAMES, value=PLAIN, before=PLAIN, after=PLAIN)
def test_set_variable_is_substituted(name, value, before, after):
    assert interpolate(f"{before}${{{name}}}{after}", {name: value}) == before + value + after


@given(name=NAMES, default=PLAIN)
def test_default_used_when_unset_or_empty(name, default):
    assert interpolate(f"${{{name}:-{default}}}", {}) == default
    assert interpolate(f"${{{name}:-{default}}}", {name: ""}) == default
    assert interpolate(f"${{{name}-{default}}}", {name: ""}) == ""
    assert interpolate(f"${{{name}-{default}}}", {}) == default


@given(name=NAMES, value=PLAIN.filter(bool), default=PLAIN)
def test_set_value_wins_over_default(name, value, default):
    assert interpolate(f"${{{name}:-{default}}}", {name: value}) == value


@given(text=PLAIN)
def test_text_without_references_is_unchanged(text):
    assert interpolate(text, {}) == text


@given(text=PLAIN)
def test_double_dollar_is_a_literal_dollar(text):
    assert interpolate(f"$${{{text}}}", {}) == f"${{{text}}}"


@given(name=NAMES)
def test_unset_without_default_names_the_key(name):
    with pytest.raises(ConfigError) as info:
        interpolate({"db": {"dsn": f"x${{{name}}}"}}, {}, key="profiles.cluster.metadata")
    assert info.value.key == "profiles.cluster.metadata.db.dsn"
    assert name in info.value.message


@given(st.text(max_size=30))
def test_any_text_interpolates_or_fails_cleanly(text):
    try:
        out = interpolate(text, {"A": "1"})
    except ConfigError:
        return
    assert isinstance(out, str)


def test_interpolation_reaches_nested_values():
    env = {"HOST": "db", "PORT": "5433"}
    assert interpolate({"a": ["${HOST}:${PORT}", 3, True]}, env) == {"a": ["db:5433", 3, True]}


def test_unterminated_reference_is_an_error():
    with pytest.raises(ConfigError, match="unterminated"):
        interpolate("x ${NAME", {"NAME": "v"})


def test_no_file_means_lite_defaults_in_dot_matih(tmp_path):
    cfg = load_config(env={}, cwd=tmp_path)
    assert cfg.path is None and cfg.home == tmp_path / ".matih"
    slots = cfg.profile()
    assert slots["metadata"] == {"backend": "sqlite", "default": True}


def test_matih_home_overrides_state_folder(tmp_path):
    cfg = load_config(env={"MATIH_HOME": str(tmp_path / "state")}, cwd=tmp_path)
    assert cfg.home == tmp_path / "state"


def test_config_discovery_order(tmp_path):
    (tmp_path / "matih.toml").write_text("[profiles.lite]\n")
    other = tmp_path / "other.toml"
    other.write_text("[profiles.x]\n")
    assert load_config(env={}, cwd=tmp_path).path == tmp_path / "matih.toml"
    assert load_config(env={"MATIH_CONFIG": str(other)}, cwd=tmp_path).path == other
    assert load_config(other, env={}, cwd=tmp_path).path == other


def test_profile_selection_and_table_form(tmp_path):
    path = tmp_path / "matih.toml"
    path.write_text('default_profile = "dev"\n[profiles.dev.metadata]\nbackend = "sqlite"\npath = "${DB:-dev.db}"\n'
                    '[profiles.cluster]\nmetadata = { backend = "postgres", dsn = "${MATIH_PG_DSN}" }\n')
    cfg = load_config(path, env={})
    assert cfg.default_profile() == "dev"
    assert cfg.profile()["metadata"] == {"backend": "sqlite", "path": "dev.db"}
    with pytest.raises(ConfigError, match="MATIH_PG_DSN is not set"):
        cfg.profile("cluster")
    with pytest.raises(ConfigError, match="no such profile; defined: lite, dev, cluster"):
        cfg.profile("nope")


def test_malformed_toml_reports_line(tmp_path):
    path = tmp_path / "matih.toml"
    path.write_text('[profiles.lite]\nmetadata  { backend = "sqlite" }\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert re.search(r"line 2", info.value.message) and "metadata" in info.value.message


def test_secrets_are_masked():
    masked = mask_secrets({"dsn": "postgresql://ml:hunter2@db:5432/ml", "password": "x", "aws_secret_access_key": "k",
                           "api_token": "t", "bucket": "b"})
    assert "hunter2" not in masked["dsn"] and masked["dsn"].startswith("postgresql://ml:****@db")
    assert masked["password"] == masked["aws_secret_access_key"] == masked["api_token"] == "****"
    assert masked["bucket"] == "b"
