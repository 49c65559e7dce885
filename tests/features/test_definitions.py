"""Definitions in TOML files: the stable shape, and every mistake reported with its file and key path."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matih_lite.errors import InvalidInput
from matih_lite.features.definitions import DefinitionError, format_duration, parse_duration, parse_files
from matih_lite.features.sources import check_definitions
from matih_lite.testing.features import CUSTOMER


def parse(text: str, **more: str):
    files = {"customer.toml": textwrap.dedent(text), **{k: textwrap.dedent(v) for k, v in more.items()}}
    return parse_files(files, project="default", root="/repo", label="features")


def problems(text: str, **more: str) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        parse(text, **more)
    return info.value.message.splitlines()


def test_the_documented_shape_parses():
    defs = parse(CUSTOMER)
    view = defs.feature_views["customer_stats"]
    assert view.entities == ("customer",) and view.join_keys == ("customer_id",)
    assert view.ttl_seconds == 7 * 86400 and [(f.name, f.dtype) for f in view.features] == [
        ("conv_rate", "float64"), ("trips", "int64")]
    src = defs.sources["customer_stats"]
    assert (src.format, src.location, src.timestamp_field, src.created_timestamp_field) == (
        "parquet", "/repo/customer_stats.parquet", "event_timestamp", "created")
    assert defs.services["churn_v1"].features == ("customer_stats:conv_rate", "customer_stats:trips")
    assert defs.files["feature_views.customer_stats"] == "customer.toml"


def test_a_bad_ttl_names_the_file_and_key_path():
    lines = problems(CUSTOMER.replace('ttl = "7d"', 'ttl = "7 days"'))
    assert lines == ['features/customer.toml: feature_views.customer_stats.ttl: expected a duration like "7d", '
                     'got "7 days"']


def test_every_problem_is_reported_at_once():
    text = CUSTOMER.replace('ttl = "7d"', 'ttl = "soon"').replace('"int64"', '"integer"').replace(
        'entities = ["customer"]', 'entities = ["custmer"]')
    lines = problems(text + '\n[feature_view.x]\nentities = []\n')
    joined = "\n".join(lines)
    assert "feature_views.customer_stats.ttl" in joined
    assert "feature_views.customer_stats.schema.trips: unknown dtype \"integer\"" in joined
    assert "feature_views.customer_stats.entities: no entity 'custmer'; did you mean 'customer'?" in joined
    assert "feature_view: unknown section; did you mean 'feature_views'?" in joined
    assert all(line.startswith("features/customer.toml: ") for line in lines)


def test_unknown_keys_get_a_did_you_mean():
    lines = problems(CUSTOMER.replace("ttl =", "tll ="))
    assert "features/customer.toml: feature_views.customer_stats.tll: unknown key; did you mean 'ttl'?" in lines


def test_a_service_naming_an_unknown_feature():
    lines = problems(CUSTOMER.replace('"customer_stats:trips"]', '"customer_stats:trip"]'))
    assert len(lines) == 1
    assert lines[0].startswith("features/customer.toml: feature_services.churn_v1.features[1]: unknown feature "
                               "'trip' of view 'customer_stats'")
    assert "did you mean 'trips'?" in lines[0]


def test_objects_declared_twice_name_both_files():
    lines = problems(CUSTOMER, **{"more.toml": "[entities.customer]\njoin_keys = [\"id\"]\n"})
    assert lines == ["features/more.toml: entities.customer: declared twice: also in features/customer.toml"]


def test_a_source_needs_path_or_query():
    lines = problems(CUSTOMER.replace('path = "customer_stats.parquet"', ""))
    assert "sources.customer_stats: give either path" in lines[0]


def test_push_sources_and_views_over_them():
    defs = parse(CUSTOMER + '\n[push_sources.live]\nbatch_source = "customer_stats"\n'
                 '[feature_views.live_stats]\nentities = ["customer"]\nsource = "live"\n'
                 'schema = { trips = "int64" }\n')
    view = defs.feature_views["live_stats"]
    assert (view.source, view.push_source, view.ttl_seconds) == ("customer_stats", "live", 0)


def test_on_demand_views_and_composite_entities():
    defs = parse(CUSTOMER + textwrap.dedent("""
        [entities.route]
        join_keys = ["origin", "destination"]

        [on_demand_feature_views.boost]
        function = "boost:boost"
        sources = ["customer_stats"]
        request_schema = { bonus = "float64" }
        schema = { boosted = "float64" }
        """))
    assert defs.entities["route"].join_keys == ("origin", "destination")
    odfv = defs.on_demand_views["boost"]
    assert (odfv.function, odfv.sources, odfv.mode) == ("boost:boost", ("customer_stats",), "pandas")
    assert problems(CUSTOMER + '[on_demand_feature_views.b]\nfunction = "not a function"\nsources = '
                    '["customer_stats"]\nschema = { x = "float64" }\n') == [
        'features/customer.toml: on_demand_feature_views.b.function: expected "module:function", '
        'got "not a function"']


def test_a_service_may_take_a_whole_view():
    defs = parse(CUSTOMER + '[feature_services.all]\nfeatures = ["customer_stats:*"]\n')
    assert defs.services["all"].features == ("customer_stats:conv_rate", "customer_stats:trips")


def test_invalid_toml_is_one_line_with_the_file():
    lines = problems("[entities.customer\njoin_keys = 1")
    assert len(lines) == 1 and lines[0].startswith("features/customer.toml: not valid TOML")


@pytest.mark.parametrize("text, seconds", [("7d", 604800), ("12h", 43200), ("1d12h", 129600), ("90m", 5400),
                                           ("30s", 30), ("2w", 1209600), ("0", 0), (0, 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["7 days", "", "d", "7x", "-1d", "1.5d", True, 7, None, "7d 1h"])
def test_bad_durations_say_what_is_expected(bad):
    with pytest.raises(ValueError, match='expected a duration like "7d"'):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=10**9))
def test_durations_round_trip(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.text(max_size=12))
def test_any_text_parses_or_raises_value_error(text):
    try:
        assert parse_duration(text) >= 0
    except ValueError as exc:
        assert "duration" in str(exc)


# ---- checked against the sources ------------------------------------------------------------------------
def checked(repo, text=CUSTOMER):
    from matih_lite.features.definitions import load_repo

    (repo / "customer.toml").write_text(textwrap.dedent(text))
    return check_definitions(load_repo(repo, project="default", label="features"), label="features")


def test_join_key_types_are_read_from_the_sources(platform):
    defs = checked(platform.repo)
    assert defs.entities["customer"].dtypes == {"customer_id": "int64"}


def test_a_missing_source_file(repo):
    with pytest.raises(DefinitionError) as info:
        checked(repo)
    assert info.value.message.startswith("features/customer.toml: sources.customer_stats.path: source "
                                         "'customer_stats': file not found:")


def test_a_column_of_the_wrong_type(platform):
    import pyarrow as pa

    platform.table("customer_stats.parquet", {"customer_id": [1], "event_timestamp": pa.array(
        [0], pa.timestamp("us", "UTC")), "created": pa.array([0], pa.timestamp("us", "UTC")),
        "conv_rate": ["high"], "trips": [1.5]})
    with pytest.raises(DefinitionError) as info:
        checked(platform.repo)
    lines = info.value.message.splitlines()
    assert ("features/customer.toml: feature_views.customer_stats.schema.conv_rate: declared float64, but column "
            "'conv_rate' of source 'customer_stats' is VARCHAR") in lines
    assert any("schema.trips: declared int64, but column 'trips'" in line for line in lines)


def test_a_missing_column_and_a_timestamp_that_is_not_one(platform):
    import pyarrow as pa

    platform.table("customer_stats.parquet", {"customer_id": [1], "event_timestamp": ["yesterday"],
                                              "created": pa.array([0], pa.timestamp("us", "UTC")), "trips": [1]})
    with pytest.raises(DefinitionError) as info:
        checked(platform.repo)
    text = info.value.message
    assert "sources.customer_stats.timestamp_field: column 'event_timestamp' is VARCHAR, not a timestamp" in text
    assert "feature_views.customer_stats.schema.conv_rate: no column 'conv_rate' in source 'customer_stats'" in text


def test_csv_and_query_sources(platform):
    (platform.repo / "stats.csv").write_text("customer_id,ts,score\n1,2025-01-09T00:00:00Z,0.5\n")
    text = CUSTOMER + textwrap.dedent("""
        [sources.csv_stats]
        path = "stats.csv"
        timestamp_field = "ts"

        [sources.query_stats]
        query = "SELECT customer_id, ts, score * 2 AS doubled FROM read_csv('stats.csv')"
        timestamp_field = "ts"

        [feature_views.csv_view]
        entities = ["customer"]
        source = "csv_stats"
        schema = { score = "float64" }

        [feature_views.query_view]
        entities = ["customer"]
        source = "query_stats"
        schema = { doubled = "float64" }
        """)
    defs = checked(platform.repo, text)
    assert defs.sources["csv_stats"].format == "csv" and defs.sources["query_stats"].format == "query"


def test_an_entity_declared_as_string_but_stored_as_integer(platform):
    text = CUSTOMER.replace('join_keys = ["customer_id"]', 'join_keys = ["customer_id"]\ndtypes = { customer_id = '
                                                             '"string" }')
    with pytest.raises(DefinitionError, match="join key 'customer_id' is string"):
        checked(platform.repo, text)


def test_errors_are_invalid_input():
    assert issubclass(DefinitionError, InvalidInput)
