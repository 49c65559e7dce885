"""The run filter / order-by parser in matih_lite.contracts.search: MLflow's grammar, positioned errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matih_lite.contracts.search import (
    ATTRIBUTE_ALIASES,
    ATTRIBUTES,
    DATASET_KEYS,
    LIFECYCLE_STAGES,
    RUN_STATUSES,
    Comparison,
    OrderBy,
    RunFilter,
    parse_filter,
    parse_order_by,
)
from matih_lite.errors import InvalidInput

C = Comparison


def one(text: str) -> Comparison:
    (clause,) = parse_filter(text).clauses
    return clause


def error_of(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_filter(text)
    return info.value


# --------------------------------------------------------------------------- happy paths


def test_the_documented_example() -> None:
    text = "metrics.auc > 0.85 and params.model = 'xgboost' and tags.team = 'growth' and attributes.status = 'FINISHED'"
    assert parse_filter(text) == RunFilter(
        clauses=(
            C("metric", "auc", ">", 0.85),
            C("param", "model", "=", "xgboost"),
            C("tag", "team", "=", "growth"),
            C("attribute", "status", "=", "FINISHED"),
        )
    )


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t "])
def test_empty_filter_matches_everything(text: str | None) -> None:
    assert parse_filter(text) == RunFilter()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("params.a = 'plain'", "plain"),
        ("params.a = ''", ""),
        ("params.a = 'it''s'", "it's"),
        (r"params.a = 'it\'s'", "it's"),
        ('params.a = "it\'s"', "it's"),
        (r'params.a = "say \"hi\""', 'say "hi"'),
        ('params.a = "say ""hi"""', 'say "hi"'),
        (r"params.a = 'back\\slash'", "back\\slash"),
        (r"params.a LIKE '50\%'", "50\\%"),
        ("params.a = 'and or = ( )'", "and or = ( )"),
        ("params.a = 'naïve ✓'", "naïve ✓"),
    ],
)
def test_string_quoting_and_escaping(text: str, value: str) -> None:
    assert one(text).value == value


@pytest.mark.parametrize(
    ("text", "kind", "key"),
    [
        ("tags.mlflow.runName = 'x'", "tag", "mlflow.runName"),
        ("metrics.`f1 score` > 0.5", "metric", "f1 score"),
        ("metrics.`odd``tick` > 0.5", "metric", "odd`tick"),
        ('tags."mlflow.user" = \'me\'', "tag", "mlflow.user"),
        ("params.'my param' = 'x'", "param", "my param"),
        ("metrics.val-loss < 1", "metric", "val-loss"),
        ("params.a/b = 'x'", "param", "a/b"),
        ("metric.auc>0.5", "metric", "auc"),
        ("parameters.lr = '0.1'", "param", "lr"),
        ("parameter.lr = '0.1'", "param", "lr"),
        ("tag.t = 'x'", "tag", "t"),
        ("attr.status = 'RUNNING'", "attribute", "status"),
        ("run.status = 'RUNNING'", "attribute", "status"),
        ("attribute.status = 'RUNNING'", "attribute", "status"),
        ("dataset.name = 'train'", "dataset", "name"),
        ("datasets.digest = 'abc'", "dataset", "digest"),
        ("datasets.context IN ('training')", "dataset", "context"),
    ],
)
def test_keys_and_prefixes(text: str, kind: str, key: str) -> None:
    clause = one(text)
    assert (clause.kind, clause.key) == (kind, key)


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [(a, c) for a, c in ATTRIBUTE_ALIASES.items()] + [(k, k) for k in ATTRIBUTES],
)
def test_attribute_aliases_resolve(alias: str, canonical: str) -> None:
    value = {"status": "'RUNNING'", "lifecycle_stage": "'active'"}.get(canonical, "'x'")
    if ATTRIBUTES[canonical] == "int":
        value = "5"
    clause = one(f"attributes.`{alias}` = {value}")
    assert clause.key == canonical


def test_keywords_are_case_insensitive() -> None:
    text = (
        "params.a like 'x%' AND params.b ILike 'Y%' And tags.c in ('1', '2') aNd tags.d Not   In ('3') "
        "and params.e is null and params.f IS NOT NULL"
    )
    assert parse_filter(text).clauses == (
        C("param", "a", "LIKE", "x%"),
        C("param", "b", "ILIKE", "Y%"),
        C("tag", "c", "IN", ("1", "2")),
        C("tag", "d", "NOT IN", ("3",)),
        C("param", "e", "IS NULL", None),
        C("param", "f", "IS NOT NULL", None),
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("attributes.run_id IN ('a', 'b')", ("a", "b")),
        ("attributes.run_id IN('a','b')", ("a", "b")),
        ("attributes.run_id in ( 'a' )", ("a",)),
        ('params.x NOT IN ("a", \'b,c\')', ("a", "b,c")),
        ("attributes.status IN ('RUNNING', 'FAILED')", ("RUNNING", "FAILED")),
    ],
)
def test_in_lists(text: str, value: tuple[str, ...]) -> None:
    assert one(text).value == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("metrics.a = 1", 1.0),
        ("metrics.a = -3", -3.0),
        ("metrics.a = +2.5", 2.5),
        ("metrics.a < .5", 0.5),
        ("metrics.a < 5.", 5.0),
        ("metrics.a >= 1e-4", 1e-4),
        ("metrics.a >= 2.5E+3", 2500.0),
        ("attributes.start_time > 1700000000000", 1700000000000),
        ("attributes.end_time <= -1", -1),
        ("attributes.created >= 42", 42),
    ],
)
def test_numeric_values(text: str, value: float) -> None:
    got = one(text).value
    assert got == value
    assert type(got) is type(value)


def test_not_equal_spellings() -> None:
    assert one("metrics.a <> 1").op == "!="
    assert one("metrics.a != 1").op == "!="


def test_status_and_lifecycle_values_are_validated() -> None:
    for status in RUN_STATUSES:
        assert one(f"attributes.status = '{status}'").value == status
    for stage in LIFECYCLE_STAGES:
        assert one(f"attributes.lifecycle_stage != '{stage}'").value == stage
    assert one("attributes.status LIKE 'RUN%'").value == "RUN%"  # patterns are not checked
    for bad in (
        "attributes.status = 'running'",
        "attributes.status != 'DONE'",
        "attributes.status IN ('RUNNING', 'nope')",
        "attributes.lifecycle_stage = 'Active'",
    ):
        err = error_of(bad)
        assert "must be one of" in err.message


# --------------------------------------------------------------------------- comparator restrictions


@pytest.mark.parametrize(
    "text",
    [
        "metrics.a LIKE 1",
        "metrics.a ILIKE 1",
        "metrics.a IN (1)",
        "metrics.a IS NULL",
        "params.a > 'x'",
        "params.a <= 'x'",
        "tags.a < 'x'",
        "attributes.status > 'RUNNING'",
        "attributes.run_id IS NULL",
        "attributes.run_name IS NOT NULL",
        "attributes.start_time LIKE '1%'",
        "attributes.end_time IN ('1')",
        "datasets.name > 'x'",
        "datasets.name IS NULL",
    ],
)
def test_comparator_not_allowed_for_kind(text: str) -> None:
    err = error_of(text)
    assert "accept" in err.message and "only" in err.message
    op_start = err.detail["position"]
    assert text[op_start:].upper().startswith(err.detail["token"].upper())


@pytest.mark.parametrize(
    "text",
    [
        "metrics.a > 'x'",
        "metrics.a > nan",
        "metrics.a > 1e999",
        "params.a = 1",
        "params.a = xgboost",
        "tags.a = 1",
        "attributes.status = RUNNING",
        "attributes.start_time > 1.5",
        "attributes.start_time > '1'",
        "attributes.start_time > 1e3",
        "attributes.start_time > 99999999999999999999",
        "datasets.name = 1",
        "params.a IN (1, 2)",
        "params.a IN 'x'",
    ],
)
def test_value_type_must_match_kind(text: str) -> None:
    error_of(text)


@pytest.mark.parametrize(
    "text", ["attributes.nope = 'x'", "attributes.`run id` = 'x'", "datasets.size = 'x'", "run.metrics = 'x'"]
)
def test_unknown_attribute_or_dataset_field(text: str) -> None:
    err = error_of(text)
    assert err.detail["position"] == text.index(".") + 1
    assert "valid" in err.message


# --------------------------------------------------------------------------- positioned errors


@pytest.mark.parametrize(
    ("text", "position", "token", "phrase"),
    [
        ("metrics.auc >", 13, "", "expected a number"),
        ("metrics.auc > 'x'", 14, "'x'", "expected a number"),
        ("metrics.auc", 11, "", "expected a comparator"),
        ("params.model xgboost", 13, "xgboost", "expected a comparator"),
        ("params.a = 1 or params.b = 2", 11, "1", "quoted string"),
        ("params.a = '1' or params.b = '2'", 15, "or", "OR is not supported"),
        ("params.a = '1' OR params.b = '2'", 15, "OR", "OR is not supported"),
        ("params.a = 'abc", 11, "'abc", "unterminated"),
        ('params.a = "abc\\"', 11, '"abc\\"', "unterminated"),
        ("metrics.`abc > 1", 8, "`abc > 1", "unterminated"),
        ("foo.bar = 1", 0, "foo", "unknown entity"),
        ("statuz = 'RUNNING'", 0, "statuz", "unknown entity 'statuz'"),
        ("metrics auc > 1", 7, "", "expected '.'"),
        ("metrics. > 1", 8, "", "expected a key"),
        ("metrics.`` > 1", 8, "``", "empty key"),
        ("(metrics.a > 1)", 0, "(", "parentheses"),
        ("metrics.a > 1 and", 17, "", "expected a clause"),
        ("metrics.a > 1 and and metrics.b > 2", 18, "and", "unknown entity"),
        ("metrics.a > 1 metrics.b > 2", 14, "metrics.b", "expected AND"),
        ("metrics.a > 1x", 12, "1x", "expected a number"),
        ("metrics.a == 1", 11, "=", "expected a number"),
        ("params.a NOT LIKE 'x'", 13, "LIKE", "expected IN after NOT"),
        ("params.a IS NUL", 12, "NUL", "expected NULL or NOT NULL"),
        ("params.a IS NOT nothing", 16, "nothing", "expected NULL or NOT NULL"),
        ("params.a IN ()", 13, ")", "at least one value"),
        ("params.a IN ('x',)", 17, ")", "quoted string"),
        ("params.a IN ('x' 'y')", 17, "'y'", "expected ',' or ')'"),
        ("params.a IN ('x'", 16, "", "expected ',' or ')'"),
        ("attributes.status = 'DONE'", 20, "'DONE'", "must be one of"),
        ("tags.t = 'x' and metrics.m LIKE 'y'", 27, "LIKE", "metrics accept only"),
    ],
)
def test_error_points_at_the_offending_token(text: str, position: int, token: str, phrase: str) -> None:
    err = error_of(text)
    assert err.detail["position"] == position, err.message
    assert err.detail["token"] == token, err.message
    assert phrase in err.message
    assert err.message.startswith(f"invalid filter at position {position} near ")
    if token:
        assert repr(token) in err.message
    else:
        assert "near end of input" in err.message
    assert err.status == 400


def test_non_string_filter_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        parse_filter(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties

_FRAGMENTS = [
    "metrics.", "params.", "tags.", "attributes.", "datasets.", "run.", "auc", "status", "start_time", "name",
    "=", "!=", "<>", ">", ">=", "<", "<=", "LIKE", "ilike", "IN", "NOT", "IS", "NULL", "and", "OR",
    "'x'", '"y"', "'", '"', "`", "`k`", "(", ")", ",", "1", "-2.5e3", ".", "\\", "''", " ", "\n", "1e999",
    "'RUNNING'", "é",
]
_soup = st.lists(st.sampled_from(_FRAGMENTS), max_size=14).flatmap(
    lambda parts: st.sampled_from(["", " "]).map(lambda sep: sep.join(parts))
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), _soup))
def test_arbitrary_text_gives_a_filter_or_invalid_input(text: str) -> None:
    try:
        result = parse_filter(text)
    except InvalidInput as err:
        assert isinstance(err.detail["position"], int)
        assert 0 <= err.detail["position"] <= len(text)
        assert isinstance(err.detail["token"], str)
    else:
        assert isinstance(result, RunFilter)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), _soup))
def test_arbitrary_order_by_gives_order_or_invalid_input(text: str) -> None:
    try:
        result = parse_order_by(text)
    except InvalidInput as err:
        assert 0 <= err.detail["position"] <= len(text)
    else:
        assert all(isinstance(o, OrderBy) for o in result)


# ---- round trip: random valid comparisons -> text -> the same RunFilter

_PREFIX_SPELLINGS = {
    "metric": ["metrics", "metric"],
    "param": ["params", "param", "parameters", "parameter"],
    "tag": ["tags", "tag"],
    "attribute": ["attributes", "attribute", "attr", "run"],
    "dataset": ["datasets", "dataset"],
}
_BARE = re.compile(r"[A-Za-z0-9_./\-]+")
_TEXT_ATTRS = [k for k, t in ATTRIBUTES.items() if t == "str"]
_TIME_ATTRS = [k for k, t in ATTRIBUTES.items() if t == "int"]
_keys = st.one_of(st.text(min_size=1, max_size=10), st.from_regex(_BARE, fullmatch=True))
_strings = st.text(max_size=10)


@st.composite
def comparisons(draw: st.DrawFn) -> Comparison:
    kind = draw(st.sampled_from(["metric", "param", "tag", "attribute", "dataset"]))
    if kind == "metric":
        op = draw(st.sampled_from(["=", "!=", ">", ">=", "<", "<="]))
        value = draw(st.floats(allow_nan=False, allow_infinity=False))
        return C("metric", draw(_keys), op, value)
    if kind in ("param", "tag"):
        op = draw(st.sampled_from(["=", "!=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"]))
        value = (
            None
            if op.startswith("IS")
            else tuple(draw(st.lists(_strings, min_size=1, max_size=3)))
            if op.endswith("IN")
            else draw(_strings)
        )
        return C(kind, draw(_keys), op, value)
    if kind == "dataset":
        op = draw(st.sampled_from(["=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"]))
        value = tuple(draw(st.lists(_strings, min_size=1, max_size=3))) if op.endswith("IN") else draw(_strings)
        return C("dataset", draw(st.sampled_from(DATASET_KEYS)), op, value)
    if draw(st.booleans()):
        op = draw(st.sampled_from(["=", "!=", ">", ">=", "<", "<="]))
        return C("attribute", draw(st.sampled_from(_TIME_ATTRS)), op, draw(st.integers(-(2**63), 2**63 - 1)))
    key = draw(st.sampled_from(_TEXT_ATTRS))
    op = draw(st.sampled_from(["=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"]))
    enum = {"status": RUN_STATUSES, "lifecycle_stage": LIFECYCLE_STAGES}.get(key)
    element = st.sampled_from(enum) if enum and op not in ("LIKE", "ILIKE") else _strings
    value = tuple(draw(st.lists(element, min_size=1, max_size=3))) if op.endswith("IN") else draw(element)
    return C("attribute", key, op, value)


def render_string(draw: st.DrawFn, s: str) -> str:
    style = draw(st.sampled_from(["single-backslash", "single-doubled", "double-backslash", "double-doubled"]))
    quote = "'" if style.startswith("single") else '"'
    body = s.replace("\\", "\\\\")
    body = body.replace(quote, "\\" + quote if style.endswith("backslash") else quote * 2)
    return quote + body + quote


def render_key(draw: st.DrawFn, key: str) -> str:
    styles = ["backtick", "quoted"] + (["bare"] if _BARE.fullmatch(key) else [])
    style = draw(st.sampled_from(styles))
    if style == "bare":
        return key
    if style == "backtick":
        return "`" + key.replace("`", "``") + "`"
    return render_string(draw, key)


def random_case(draw: st.DrawFn, word: str) -> str:
    return draw(st.sampled_from([word, word.lower(), word.title()]))


def render(draw: st.DrawFn, c: Comparison) -> str:
    prefix = draw(st.sampled_from(_PREFIX_SPELLINGS[c.kind]))
    key = c.key
    if c.kind == "attribute":
        key = draw(st.sampled_from([key] + [a for a, canon in ATTRIBUTE_ALIASES.items() if canon == key]))
    ws = lambda: draw(st.sampled_from([" ", "  ", "\t", "\n "]))  # noqa: E731
    op = {"!=": draw(st.sampled_from(["!=", "<>"]))}.get(c.op, c.op)
    op = ws().join(random_case(draw, part) for part in op.split(" "))
    text = f"{prefix}.{render_key(draw, key)}{ws()}{op}"
    if c.value is None:
        return text
    if isinstance(c.value, tuple):
        return text + ws() + "(" + ", ".join(render_string(draw, v) for v in c.value) + ")"
    if isinstance(c.value, float):
        return text + ws() + repr(c.value)
    if isinstance(c.value, int):
        return text + ws() + str(c.value)
    return text + ws() + render_string(draw, c.value)


@settings(max_examples=150, deadline=None)
@given(st.lists(comparisons(), max_size=4), st.data())
def test_round_trip(clauses: list[Comparison], data: st.DataObject) -> None:
    draw = data.draw
    joiner = draw(st.sampled_from([" and ", " AND ", "\nAnd\t"]))
    text = joiner.join(render(draw, c) for c in clauses)
    assert parse_filter(text) == RunFilter(clauses=tuple(clauses)), text


# --------------------------------------------------------------------------- order by


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (None, ()),
        ("", ()),
        ([], ()),
        ("metrics.auc DESC", (OrderBy("metric", "auc", ascending=False),)),
        ("metrics.auc desc", (OrderBy("metric", "auc", ascending=False),)),
        ("attributes.start_time", (OrderBy("attribute", "start_time"),)),
        ("params.lr ASC", (OrderBy("param", "lr"),)),
        ("metrics.`my metric` desc", (OrderBy("metric", "my metric", ascending=False),)),
        ("tags.mlflow.runName", (OrderBy("tag", "mlflow.runName"),)),
        ("attributes.created DESC", (OrderBy("attribute", "start_time", ascending=False),)),
        ("attr.name", (OrderBy("attribute", "run_name"),)),
        ("datasets.name", (OrderBy("dataset", "name"),)),
        (
            "metrics.auc DESC, params.lr,tags.`a,b` asc",
            (OrderBy("metric", "auc", False), OrderBy("param", "lr"), OrderBy("tag", "a,b")),
        ),
        (
            ["metrics.auc DESC", "attributes.end_time"],
            (OrderBy("metric", "auc", False), OrderBy("attribute", "end_time")),
        ),
        (("params.a desc, params.b",), (OrderBy("param", "a", False), OrderBy("param", "b"))),
    ],
)
def test_order_by(items: object, expected: tuple[OrderBy, ...]) -> None:
    assert parse_order_by(items) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("items", "position", "token"),
    [
        ("metrics.auc DESCENDING", 12, "DESCENDING"),
        ("metrics.auc DESC extra", 17, "extra"),
        ("metrics.auc,", 12, ""),
        ("metrics.auc,,params.a", 12, ","),
        ("auc DESC", 0, "auc"),
        ("attributes.nope", 11, "nope"),
        ("metrics.`x DESC", 8, "`x DESC"),
        ("metrics.auc > 1", 12, ">"),
        (["metrics.a", "bogus.b"], 0, "bogus"),
        (["metrics.a", "   "], 0, ""),
        ([1], 0, ""),
        (5, 0, ""),
    ],
)
def test_order_by_errors(items: object, position: int, token: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_order_by(items)  # type: ignore[arg-type]
    assert info.value.detail["position"] == position, info.value.message
    assert info.value.detail["token"] == token, info.value.message


def test_bare_attribute_names_read_as_attributes_like_mlflow():
    assert parse_filter("status = 'FINISHED'").clauses[0] == Comparison("attribute", "status", "=", "FINISHED")
    assert parse_filter("run_name LIKE 'a%'").clauses[0].kind == "attribute"
    assert parse_order_by("start_time DESC") == (OrderBy("attribute", "start_time", ascending=False),)
