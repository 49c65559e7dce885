"""Every matih.toml section has a schema: a wrong value anywhere is one line with its key path, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from matih_lite.cli import load_commands
from matih_lite.config import load_config
from matih_lite.host import Host, get_plugin_manager


def toml_value(value) -> str:
    """A Python value as a TOML value (inline tables and arrays)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"


def struct_sections() -> list[tuple[str, type]]:
    """Every (section, Struct schema) the installed plugins register."""
    out = []
    for _plugin, args, kwargs in get_plugin_manager().collect("register_settings"):
        schema = args[1] if len(args) > 1 else kwargs["schema"]
        if hasattr(schema, "__struct_fields__"):
            out.append((args[0], schema))
    return out


SECTIONS = struct_sections()
FIELDS = [(section, schema, name) for section, schema in SECTIONS for name in schema.__struct_fields__]


def kinds(annotation) -> set[type]:
    """The Python kinds a field accepts (bool, int, float, str, list, dict), through Optional and Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        return set().union(*(kinds(a) for a in typing.get_args(annotation) if a is not type(None)))
    if origin in (list, tuple, set):
        return {list}
    if origin is dict or hasattr(annotation, "__struct_fields__"):
        return {dict}
    if annotation is float:
        return {float, int}
    return {annotation}


def wrong_values(annotation):
    """Values of a kind the field does not take. Lax mode (for ``${ENV}`` strings) reads "5" as 5, "true" as
    true and 0/1 as booleans, so those are not wrong."""
    accepted = kinds(annotation)
    ints = st.integers(-10**6, 10**6)
    candidates = {
        bool: st.booleans(),
        int: ints.filter(lambda i: i not in (0, 1)) if bool in accepted else ints,
        float: st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)),
        str: st.text(alphabet="abcxyz-_ ", min_size=1, max_size=8).filter(lambda t: t.strip() not in (
            "true", "false", "1", "0")),
        list: st.lists(st.just("x") | st.just(3), min_size=1, max_size=2),
        dict: st.fixed_dictionaries({"nested": st.just("x")}),
    }
    if int in accepted:
        accepted = accepted | {bool}  # True/False are 1 and 0 to an int field in lax mode
    return st.one_of([strategy for kind, strategy in candidates.items() if kind not in accepted or
                      (kind is int and bool in kinds(annotation) and int not in kinds(annotation))])


@pytest.fixture(scope="module")
def app():
    return load_commands()


@pytest.fixture(scope="module")
def plugins():
    return get_plugin_manager()


@pytest.mark.parametrize(("section", "schema", "name"), FIELDS, ids=[f"{s}.{n}" for s, _, n in FIELDS])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_wrong_value_for_any_key_is_a_problem_at_its_key_path(plugins, tmp_path, section, schema, name, data):
    annotation = typing.get_type_hints(schema, include_extras=True)[name]
    value = data.draw(wrong_values(annotation), label=f"{section}.{name}")
    (tmp_path / "matih.toml").write_text(f"[{section}]\n{name} = {toml_value(value)}\n")
    problems = Host(load_config(tmp_path / "matih.toml"), plugins=plugins, strict=False).section_problems()
    assert any(key.startswith(f"{section}.{name}") for key, _ in problems), (value, problems)


@pytest.mark.parametrize(("section", "schema"), SECTIONS, ids=[s for s, _ in SECTIONS])
def test_validate_names_an_unknown_key_in_any_section_with_a_did_you_mean_and_exits_2(app, tmp_path, section,
                                                                                    schema):
    known = next(iter(schema.__struct_fields__))
    typo = known[:-1] + ("x" if known[-1] != "x" else "y")
    (tmp_path / "matih.toml").write_text(f"[{section}]\n{typo} = 1\n")
    result = CliRunner().invoke(app, ["config", "validate", "--config", str(tmp_path / "matih.toml")])
    assert result.exit_code == 2 and not isinstance(result.exception, Exception) or \
        isinstance(result.exception, SystemExit), result.output
    assert f"{section}.{typo}: unknown key; did you mean '{known}'?" in result.output
    assert "Traceback" not in result.output


ISSUE_EXAMPLES = {
    "auth.enabled": '[auth]\nenabled = "yes"\n',
    "server.batch_max_wait_ms": '[server]\nbatch_max_wait_ms = "fast"\n',
    "canary.initial_percent": "[canary]\ninitial_percent = 150\n",
    "drift.test": '[drift]\ntest = "kss"\n',
    "models.churn.staging_requires[0]": '[models.churn]\nstaging_requires = ["latency_ms <== 20"]\n',
    "models.churn.production_approvers[1]": '[models.churn]\nproduction_approvers = ["owner", "leed"]\n',
}


@pytest.mark.slow
@pytest.mark.parametrize("key", list(ISSUE_EXAMPLES))
def test_up_refuses_a_bad_value_in_one_line_without_a_traceback(tmp_path, key):
    (tmp_path / "matih.toml").write_text(ISSUE_EXAMPLES[key])
    for args in (["config", "validate"], ["up", "--port", "1"]):
        r = subprocess.run([sys.executable, "-m", "matih_lite", *args], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{key}:" in lines[0] and "Traceback" not in r.stderr, r.stderr


QUOTA_MISTAKES = {
    'quotas."*".jobs': '[quotas."*"]\njobs = "four"\n',
    "quotas.research.cpu": "[quotas.research]\ncpu = 3\n",
    "quotas.max_artifacts_mb": "[quotas]\nmax_artifacts_mb = 512\n",
    "quotas.artifact_quota_gb": "[quotas]\nartifact_quota_gb = -1\n",
}


@pytest.mark.parametrize("key", list(QUOTA_MISTAKES))
def test_quotas_are_checked_key_by_key_though_their_section_is_shared(app, tmp_path, key):
    """[quotas] holds the jobs' keys (training) and the artifacts' (tracking), and tenant tables of both."""
    (tmp_path / "matih.toml").write_text(QUOTA_MISTAKES[key])
    result = CliRunner().invoke(app, ["config", "validate", "--config", str(tmp_path / "matih.toml")])
    assert result.exit_code == 2 and f"{key}:" in result.output and "Traceback" not in result.output, result.output
    (tmp_path / "matih.toml").write_text('[quotas]\nmax_artifact_mb = 512\n[quotas."*"]\ncpus = 8\njobs = 2\n'
                                         "[quotas.research]\ncpus = 16\nartifact_quota_gb = 200\n")
    result = CliRunner().invoke(app, ["config", "validate", "--config", str(tmp_path / "matih.toml")])
    assert result.exit_code == 0, result.output
