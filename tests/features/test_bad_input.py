"""Bad input gets a clear error naming the thing; nothing is lost."""

from __future__ import annotations

import pyarrow as pa
import pytest

from matih_lite.errors import InvalidInput, NotFound
from matih_lite.testing.features import BOOST, T0


def test_entity_rows_without_the_timestamp_column(applied):
    with pytest.raises(InvalidInput, match="no 'event_timestamp' column .*did you mean 'event_time'"):
        applied.features.historical(applied.who, {"customer_id": [1], "event_time": [T0]}, ["customer_stats:trips"])


def test_entity_rows_without_a_join_key(applied):
    with pytest.raises(InvalidInput, match="no join key 'customer_id' \\(needed by feature view customer_stats\\)"):
        applied.features.historical(applied.who, {"customer": [1], "event_timestamp": [T0]}, ["customer_stats:trips"])
    with pytest.raises(InvalidInput, match="no join key 'customer_id'"):
        applied.features.online(applied.who, {"customer": [1]}, ["customer_stats:trips"])


def test_a_join_key_of_the_wrong_type(applied):
    with pytest.raises(InvalidInput, match="join key 'customer_id' is string in the entity rows"):
        applied.features.historical(applied.who, {"customer_id": ["a"], "event_timestamp": [T0]},
                                    ["customer_stats:trips"])
    with pytest.raises(InvalidInput, match="customer_id='x' is not an integer"):
        applied.features.online(applied.who, {"customer_id": ["x"]}, ["customer_stats:trips"])


def test_unknown_views_and_features_have_a_did_you_mean(applied):
    with pytest.raises(InvalidInput, match="unknown feature view 'customer_stat' .*did you mean 'customer_stats'"):
        applied.features.online(applied.who, {"customer_id": [1]}, ["customer_stat:trips"])
    with pytest.raises(InvalidInput, match="unknown feature 'trip' .*did you mean 'trips'"):
        applied.features.online(applied.who, {"customer_id": [1]}, ["customer_stats:trip"])
    with pytest.raises(NotFound, match="no feature service 'churn_v2'; did you mean 'churn_v1'"):
        applied.features.online(applied.who, {"customer_id": [1]}, service="churn_v2")
    with pytest.raises(InvalidInput, match="expected a 'view:feature' reference"):
        applied.features.online(applied.who, {"customer_id": [1]}, ["trips"])


def test_a_source_that_changed_type_after_apply(applied):
    applied.table("customer_stats.parquet", {"customer_id": [1], "event_timestamp": pa.array(
        [T0], pa.timestamp("us", "UTC")), "created": pa.array([T0], pa.timestamp("us", "UTC")),
        "conv_rate": ["high"], "trips": [1]})
    with pytest.raises(InvalidInput, match="customer_stats.*'high'"):
        applied.historical({"customer_id": [1], "event_timestamp": [T0]})


def test_an_on_demand_function_that_raises(applied):
    applied.write("boost.toml", BOOST)
    (applied.repo / "boost.py").write_text("def boost(df):\n    raise ZeroDivisionError('no bonus today')\n")
    applied.apply()
    with pytest.raises(InvalidInput, match="on-demand view 'conv_boost': boost:boost raised ZeroDivisionError: no "
                                           "bonus today"):
        applied.historical({"customer_id": [1], "event_timestamp": [T0], "bonus": [1.0]}, ["conv_boost:boosted"])


def test_an_on_demand_function_that_cannot_be_imported_fails_the_apply(applied):
    applied.write("boost.toml", BOOST)
    with pytest.raises(InvalidInput, match="on-demand view 'conv_boost': cannot import 'boost'"):
        applied.apply()
    assert applied.host.metadata.latest_feature_definition_version(applied.who.tenant) == 1


def test_null_entity_times_and_unreadable_ones(applied):
    with pytest.raises(InvalidInput, match="1 null times"):
        applied.historical({"customer_id": [1, 2], "event_timestamp": pa.array([T0, None],
                                                                               pa.timestamp("us", "UTC"))})
    with pytest.raises(InvalidInput, match="not an ISO 8601 time"):
        applied.features.historical(applied.who, {"customer_id": [1], "event_timestamp": ["last tuesday"]},
                                    ["customer_stats:trips"])


def test_a_feature_named_like_an_entity_column(applied):
    with pytest.raises(InvalidInput, match="already have a column 'trips'"):
        applied.historical({"customer_id": [1], "event_timestamp": [T0], "trips": [0]})


def test_pandas_in_pandas_out_with_the_index_kept(applied):
    import pandas as pd

    frame = pd.DataFrame({"customer_id": [2, 1], "event_timestamp": [T0.replace(tzinfo=None)] * 2,
                          "label": [1, 0]}, index=["b", "a"])
    out = applied.features.historical(applied.who, frame, service="churn_v1")
    assert isinstance(out, pd.DataFrame) and list(out.index) == ["b", "a"]
    assert out["event_timestamp"].dtype == frame["event_timestamp"].dtype
    assert out["conv_rate"].tolist() == [0.4, 0.2] and out["label"].tolist() == [1, 0]


def test_iso_strings_are_times_too(applied):
    out = applied.features.historical(applied.who, {"customer_id": [1], "event_timestamp": ["2025-01-10T00:00:00Z"]},
                                      ["customer_stats:trips"])
    assert out.column("trips").to_pylist() == [2]
