"""The parsers under the tracing routes, by property: MLflow's trace filter, and protobuf JSON times.

Whatever the filter text, the parser answers clauses or InvalidInput, never another error; a
filter written from clauses parses back to the same clauses (values are data, however quoted).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matih_lite.contracts.traces import TraceClause
from matih_lite.errors import InvalidInput
from matih_lite.service.mlflow.traces import duration_json, duration_ms, timestamp_json, timestamp_ms
from matih_lite.sqlstore import traces as trace_tables
from matih_lite.tracking.traces import parse_trace_filter, parse_trace_order

MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last time protobuf's Timestamp holds


@given(st.integers(0, MAX_MS))
def test_times_round_trip_through_protobuf_json(ms):
    text = timestamp_json(ms)
    assert text.endswith("Z") and timestamp_ms(text, "t") == ms


@given(st.integers(0, 10**12))
def test_durations_round_trip_through_protobuf_json(ms):
    assert duration_ms(duration_json(ms), "d") == ms


@pytest.mark.parametrize("text, ms", [
    ("1970-01-01T00:00:00Z", 0), ("2026-01-02T03:04:05.678Z", 1_767_323_045_678),
    ("2026-01-02T03:04:05.6789Z", 1_767_323_045_678), ("2026-01-02T04:04:05.678+01:00", 1_767_323_045_678),
    ("2026-01-02T03:04:05Z", 1_767_323_045_000)])
def test_rfc3339_times_the_client_may_send(text, ms):
    assert timestamp_ms(text, "t") == ms


@pytest.mark.parametrize("bad", ["", "2026-01-02", "2026-02-30T00:00:00Z", "1969-12-31T23:59:59Z", "soon", 5,
                                 "2026-01-02T03:04:05", "2026-01-02T03:04:05.Z"])
def test_a_bad_time_is_invalid_input(bad):
    with pytest.raises(InvalidInput):
        timestamp_ms(bad, "request_time")


@pytest.mark.parametrize("bad", ["-1s", "1", "1.5", "s", "0.5ms", None])
def test_a_bad_duration_is_invalid_input(bad):
    with pytest.raises(InvalidInput):
        duration_ms(bad, "execution_duration")


@given(st.text(max_size=80))
def test_any_filter_text_parses_or_is_invalid_input(text):
    try:
        clauses = parse_trace_filter(text)
    except InvalidInput:
        return
    assert all(isinstance(c, TraceClause) for c in clauses)


@given(st.text(max_size=60))
def test_any_order_by_text_parses_or_is_invalid_input(text):
    try:
        parse_trace_order([text])
    except InvalidInput:
        pass


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_KEY = st.text(st.characters(blacklist_characters="`", blacklist_categories=("Cs",)), min_size=1, max_size=20)
_VALUE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_TEXT_OPS = st.sampled_from(["=", "!=", "LIKE", "ILIKE"])
_CLAUSE = st.one_of(  # (the filter text, the clause it means)
    st.builds(lambda k, op, v: (f"tags.`{k}` {op} {_quoted(v)}", TraceClause("tag", k, op, v)),
              _KEY, _TEXT_OPS, _VALUE),
    st.builds(lambda k, op, v: (f"metadata.`{k}` {op} {_quoted(v)}", TraceClause("metadata", k, op, v)),
              _KEY, _TEXT_OPS, _VALUE),
    st.builds(lambda k: (f"tags.`{k}` IS NULL", TraceClause("tag", k, "IS NULL")), _KEY),
    st.builds(lambda v: (f"name = {_quoted(v)}", TraceClause("tag", "mlflow.traceName", "=", v)), _VALUE),
    st.builds(lambda op, n: (f"timestamp_ms {op} {n}", TraceClause("attribute", "request_time", op, n)),
              st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), st.integers(0, 2**62)),
    st.builds(lambda vs: (f"status IN ({', '.join(_quoted(v) for v in vs)})",
                          TraceClause("attribute", "state", "IN", tuple(vs))),
              st.lists(st.sampled_from(["OK", "ERROR", "IN_PROGRESS"]), min_size=1, max_size=3)),
)


@given(st.lists(_CLAUSE, min_size=1, max_size=4))
def test_a_filter_written_from_clauses_parses_back_to_them(parts):
    assert parse_trace_filter(" AND ".join(text for text, _ in parts)) == [clause for _, clause in parts]


def test_traces_migrate_in_their_own_range():
    assert all(400 <= version <= 449 for version, _, _ in trace_tables.MIGRATIONS)
