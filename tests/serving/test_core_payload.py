"""MLflow scoring JSON to arrays: every shape mlflow serve accepts, errors that name the field, no pandas."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matih_lite.errors import InvalidInput
from matih_lite.serving.flavors.base import InputSchema, TensorSpec, schema_from_names, schema_from_width
from matih_lite.serving.payload import encode_predictions, parse_scoring_request

NAMES = ["age", "income", "tenure"]
SCHEMA = schema_from_names(NAMES)


def parse(doc, schema=SCHEMA):
    return parse_scoring_request(json.dumps(doc).encode(), schema).inputs


def shapes_of(rows, names):
    records = [dict(zip(names, r)) for r in rows]
    columns = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    shuffled = list(reversed(names))
    return [
        {"dataframe_split": {"columns": names, "data": rows}},
        {"dataframe_split": {"columns": shuffled, "data": [[dict(zip(names, r))[n] for n in shuffled] for r in rows],
                             "index": list(range(len(rows)))}},
        {"dataframe_records": records},
        {"instances": rows},
        {"instances": records},
        {"inputs": columns},
        {"inputs": rows},
    ]


def test_every_shape_gives_the_same_array_in_schema_order():
    rows = [[31, 5000.5, 2], [45, 7200.0, 10]]
    arrays = [parse(doc) for doc in shapes_of(rows, NAMES)]
    for arr in arrays:
        assert arr.dtype == np.float64 and arr.shape == (2, 3)
        np.testing.assert_array_equal(arr, np.array(rows, dtype=np.float64))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=3, max_size=3),
                min_size=1, max_size=8))
def test_records_split_and_instances_agree(rows):
    arrays = [parse(doc) for doc in shapes_of(rows, NAMES)]
    for arr in arrays[1:]:
        np.testing.assert_array_equal(arr, arrays[0])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20)
KEYS = st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs", "params", "columns", "data",
                        *NAMES])
BODIES = JSON | st.dictionaries(KEYS, JSON, max_size=3) | st.builds(
    lambda fmt, v: {fmt: v}, st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs"]),
    JSON | st.dictionaries(KEYS, JSON, max_size=3) | st.lists(st.dictionaries(KEYS, JSON, max_size=4), max_size=3))
SCHEMAS = st.sampled_from([
    SCHEMA, schema_from_width(3), InputSchema(),
    InputSchema("columns", (TensorSpec("plan", "str"), TensorSpec("age", "int64"), TensorSpec("ok", "bool"))),
    InputSchema("tensors", (TensorSpec("a", "float32", (-1, 2)), TensorSpec("b", "int64", (-1,)))),
    InputSchema("columns", (TensorSpec("x", "float64", optional=True), TensorSpec("blob", "bytes")))])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODIES, SCHEMAS)
def test_arbitrary_json_raises_nothing_but_invalid_input(body, schema):
    try:
        parse_scoring_request(json.dumps(body).encode(), schema)
    except InvalidInput:
        pass


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=40))
def test_arbitrary_bytes_raise_nothing_but_invalid_input(body):
    try:
        parse_scoring_request(body, SCHEMA)
    except InvalidInput:
        pass


@pytest.mark.parametrize("doc, field, words", [
    ({"dataframe_records": [{"age": 1, "income": "lots", "tenure": 2}]}, "income", "string"),
    ({"dataframe_split": {"columns": ["age", "income"], "data": [[1, 2]]}}, "tenure", "missing column 'tenure'"),
    ({"dataframe_records": [{"age": 1, "income": 2, "tenure": 3, "zip": 4}]}, "zip", "extra column 'zip'"),
    ({"dataframe_split": {"columns": NAMES, "data": [[1, 2, 3], [1, 2]]}}, "dataframe_split", "row 1"),
    ({"instances": [[1, 2]]}, "instances", "shape"),
    ({"instances": []}, "instances", "no rows"),
    ({"dataframe_records": []}, "dataframe_records", "no rows"),
    ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, "inputs", "exactly one"),
    ({"rows": [[1, 2, 3]]}, "rows", "unknown field"),
])
def test_errors_name_the_field(doc, field, words):
    with pytest.raises(InvalidInput, match=words) as err:
        parse(doc)
    assert err.value.detail["field"] == field


def test_dtypes_follow_the_schema():
    schema = InputSchema("columns", (TensorSpec("plan", "str"), TensorSpec("n", "int64"), TensorSpec("ok", "bool")))
    got = parse({"dataframe_records": [{"plan": "pro", "n": 3, "ok": True}]}, schema)
    assert got["plan"].tolist() == ["pro"] and got["n"].dtype == np.int64 and got["ok"].dtype == np.bool_
    with pytest.raises(InvalidInput, match="whole numbers|integers"):
        parse({"dataframe_records": [{"plan": "pro", "n": 3.5, "ok": True}]}, schema)
    with pytest.raises(InvalidInput, match="takes strings"):
        parse({"dataframe_records": [{"plan": 4, "n": 3, "ok": True}]}, schema)
    # null in a float column is a missing value (NaN), as pandas reads it in mlflow serve
    assert np.isnan(parse({"instances": [[1, None, 3]]})[0, 1])
    tensors = schema_from_width(3, "float32")
    assert parse({"instances": [[1, 2, 3]]}, tensors).dtype == np.float32


def test_named_tensors():
    schema = InputSchema("tensors", (TensorSpec("a", "float32", (-1, 2)), TensorSpec("b", "int64", (-1,))))
    got = parse({"inputs": {"a": [[1, 2], [3, 4]], "b": [5, 6]}}, schema)
    assert got["a"].shape == (2, 2) and got["b"].tolist() == [5, 6]
    with pytest.raises(InvalidInput, match="missing"):
        parse({"inputs": {"a": [[1, 2]]}}, schema)


def test_predictions_encode_like_mlflow():
    assert msgspec.json.decode(encode_predictions(np.array([0, 1]))) == {"predictions": [0, 1]}
    body = msgspec.json.decode(encode_predictions({"label": np.array([1]), "probabilities": np.array([[0.25, 0.75]])},
                                                  extra={"version": 3}))
    assert body == {"predictions": {"label": [1], "probabilities": [[0.25, 0.75]]}, "version": 3}
    assert msgspec.json.decode(encode_predictions(np.array([np.nan]))) == {"predictions": [None]}
    assert msgspec.json.decode(encode_predictions(np.array(["yes"], dtype=object))) == {"predictions": ["yes"]}


def test_parsing_does_not_import_pandas():
    import subprocess
    import sys

    code = ("import sys, json; from matih_lite.serving.payload import parse_scoring_request as p; "
            "from matih_lite.serving.flavors.base import schema_from_names as s; "
            "p(json.dumps({'dataframe_records': [{'a': 1}]}).encode(), s(['a'])); "
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
