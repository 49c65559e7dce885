"""Open Inference Protocol v2: requests built by the real tritonclient decode; our responses decode in it."""

from __future__ import annotations

import gzip
import json

import msgspec
import numpy as np
import pytest
import tritonclient.http as httpclient

from matih_lite.errors import InvalidInput
from matih_lite.serving.flavors.base import InputSchema, TensorSpec, named_outputs, schema_from_names
from matih_lite.serving.oip import (
    HEADER_LENGTH,
    decode_infer_request,
    encode_infer_response,
    model_inputs,
    model_metadata,
    output_specs,
)


def request_bytes(inputs, outputs=None, request_id="", parameters=None):
    body, header_length = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id=request_id, parameters=parameters)
    headers = {} if header_length is None else {HEADER_LENGTH: str(header_length)}
    return body, headers


def result_of(body, headers):
    length = headers.get(HEADER_LENGTH)
    return httpclient.InferResult.from_response_body(body, header_length=int(length) if length else None)


@pytest.fixture(scope="module")
def onnx_predictor(tmp_path_factory):
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    from matih_lite.serving.flavors.onnx import OnnxFlavor

    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 20)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    model = GradientBoostingClassifier(n_estimators=20, max_depth=2).fit(X, y)
    folder = tmp_path_factory.mktemp("onnx")
    OnnxFlavor().save(to_onnx(model, X[:1], options={"zipmap": False}), folder)
    return OnnxFlavor().load(folder), X


@pytest.mark.parametrize("binary_in, binary_out", [(True, True), (False, False), (True, False), (False, True)])
def test_tritonclient_round_trip_equals_predict(onnx_predictor, binary_in, binary_out):
    predictor, X = onnx_predictor
    rows = X[:5]
    inp = httpclient.InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=binary_in)
    outputs = [httpclient.InferRequestedOutput("label", binary_data=binary_out),
               httpclient.InferRequestedOutput("probabilities", binary_data=binary_out)]
    body, headers = request_bytes([inp], outputs, request_id="r-1")
    request = decode_infer_request(body, headers)
    assert request.id == "r-1" and request.inputs[0].data.dtype == np.float32
    got = predictor.predict(model_inputs(request, predictor.input_schema))
    out_body, out_headers = encode_infer_response("churn", named_outputs(got, predictor.output_names),
                                                  model_version="3", request=request)
    assert (HEADER_LENGTH in out_headers) == binary_out
    result = result_of(out_body, out_headers)
    expected = predictor.predict(rows)
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])
    assert result.get_response()["model_version"] == "3" and result.get_response()["id"] == "r-1"


def test_default_client_request_gets_binary_outputs(onnx_predictor):
    predictor, X = onnx_predictor
    inp = httpclient.InferInput("input", [2, 20], "FP32")
    inp.set_data_from_numpy(X[:2])
    body, headers = request_bytes([inp])  # no outputs named: binary_data_output
    request = decode_infer_request(body, headers)
    assert request.binary_output
    out_body, out_headers = encode_infer_response("m", named_outputs(predictor.predict(X[:2]), predictor.output_names),
                                                  request=request)
    header = json.loads(out_body[:int(out_headers[HEADER_LENGTH])])
    assert all("binary_data_size" in o["parameters"] for o in header["outputs"])
    np.testing.assert_array_equal(result_of(out_body, out_headers).as_numpy("label"), predictor.predict(X[:2])["label"])


@pytest.mark.parametrize("datatype, array", [
    ("BOOL", np.array([[True, False]])), ("INT8", np.array([[-3, 4]], dtype=np.int8)),
    ("INT16", np.array([[-300, 4]], dtype=np.int16)), ("INT32", np.array([[7, 8]], dtype=np.int32)),
    ("INT64", np.array([[2**40, -1]], dtype=np.int64)), ("UINT8", np.array([[255, 0]], dtype=np.uint8)),
    ("UINT16", np.array([[65535, 1]], dtype=np.uint16)), ("UINT32", np.array([[2**31, 1]], dtype=np.uint32)),
    ("UINT64", np.array([[2**63, 1]], dtype=np.uint64)), ("FP16", np.array([[0.5, -2.0]], dtype=np.float16)),
    ("FP32", np.array([[0.1, 2.5]], dtype=np.float32)), ("FP64", np.array([[0.1, 1e300]])),
    ("BYTES", np.array([[b"ab", "ç".encode()]], dtype=object)),
])
@pytest.mark.parametrize("binary", [True, False])
def test_every_datatype_decodes_and_encodes(datatype, array, binary):
    inp = httpclient.InferInput("x", list(array.shape), datatype)
    inp.set_data_from_numpy(array, binary_data=binary)
    request = decode_infer_request(*request_bytes([inp], [httpclient.InferRequestedOutput("x", binary_data=binary)]))
    got = request.inputs[0].data
    assert got.shape == array.shape
    assert got.tolist() == array.tolist()
    body, headers = encode_infer_response("m", {"x": got}, request=request)
    back = result_of(body, headers).as_numpy("x")
    if datatype == "BYTES" and not binary:  # JSON carries BYTES as text; tritonclient hands back str
        back = np.vectorize(lambda v: v.encode(), otypes=[object])(back)
    assert back.tolist() == array.tolist()


def test_gzip_bodies_are_inflated(onnx_predictor):
    _, X = onnx_predictor
    inp = httpclient.InferInput("input", [1, 20], "FP32")
    inp.set_data_from_numpy(X[:1])
    body, headers = request_bytes([inp])
    request = decode_infer_request(gzip.compress(body), {**headers, "Content-Encoding": "gzip"})
    np.testing.assert_array_equal(request.inputs[0].data, X[:1])


def test_columns_models_take_one_matrix_or_one_tensor_per_column():
    schema = schema_from_names(["a", "b"])
    matrix = decode_infer_request(json.dumps({"inputs": [
        {"name": "input", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}).encode())
    np.testing.assert_array_equal(model_inputs(matrix, schema), [[1, 2], [3, 4]])
    by_column = decode_infer_request(json.dumps({"inputs": [
        {"name": "b", "shape": [2], "datatype": "INT64", "data": [2, 4]},
        {"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 3]}]}).encode())
    np.testing.assert_array_equal(model_inputs(by_column, schema), [[1, 2], [3, 4]])
    mixed = InputSchema("columns", (TensorSpec("plan", "str"), TensorSpec("age", "float64")))
    req = decode_infer_request(json.dumps({"inputs": [
        {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
        {"name": "age", "shape": [1], "datatype": "FP64", "data": [3]}]}).encode())
    got = model_inputs(req, mixed)
    assert got["plan"].tolist() == ["pro"] and got["age"].tolist() == [3.0]


@pytest.mark.parametrize("doc, headers, words", [
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP99", "data": [1, 2]}]}, {}, "datatype"),
    ({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}, {}, "elements"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1.5, 2]}]}, {}, "fractional"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}]}, {}, "strings"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]},
     {HEADER_LENGTH: "0"}, "binary_data_size|not valid JSON"),
    ({"inputs": []}, {}, "non-empty"),
])
def test_bad_requests_name_the_tensor(doc, headers, words):
    body = json.dumps(doc).encode()
    if headers:
        headers = {HEADER_LENGTH: str(len(body))}
    with pytest.raises(InvalidInput, match=words):
        decode_infer_request(body, headers)


def test_wrong_width_and_unknown_output_are_refused(onnx_predictor):
    predictor, _ = onnx_predictor
    req = decode_infer_request(json.dumps({"inputs": [
        {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}).encode())
    with pytest.raises(InvalidInput, match="shape"):
        model_inputs(req, predictor.input_schema)
    req = decode_infer_request(json.dumps({"inputs": [
        {"name": "input", "shape": [1, 20], "datatype": "FP32", "data": [0] * 20}],
        "outputs": [{"name": "nope"}]}).encode())
    with pytest.raises(InvalidInput, match="unknown output 'nope'"):
        encode_infer_response("m", named_outputs(predictor.predict(np.zeros((1, 20))), predictor.output_names),
                              request=req)


def test_model_metadata(onnx_predictor):
    predictor, _ = onnx_predictor
    meta = model_metadata("churn", [3], "onnx", predictor.input_schema, output_specs(predictor))
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["3"]
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 20]}]  # skl2onnx's name
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert meta["outputs"][0]["datatype"] == "INT64"
    msgspec.json.encode(meta)
    cols = model_metadata("m", [1], "sklearn", schema_from_names(["a", "b"]), [{"name": "predictions",
                                                                               "datatype": "INT64", "shape": [-1]}])
    assert cols["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 2]}]


def test_bf16_arrives_as_the_float32_values_it_holds():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([[0.5, -2.0, 3.140625, 1e30, -0.0, 65280.0]], dtype=np.float32)
    array = values.astype(ml_dtypes.bfloat16)
    inp = httpclient.InferInput("x", list(array.shape), "BF16")
    inp.set_data_from_numpy(array, binary_data=True)
    request = decode_infer_request(*request_bytes([inp], [httpclient.InferRequestedOutput("x", binary_data=True)]))
    got = request.inputs[0].data
    assert got.dtype == np.float32 and got.shape == array.shape
    assert got.tolist() == array.astype(np.float32).tolist()  # exactly: every bfloat16 is a float32
    body, headers = encode_infer_response("m", {"x": got}, request=request)
    assert result_of(body, headers).as_numpy("x").dtype == np.float32  # answers are never BF16


def test_bf16_as_json_or_with_a_wrong_size_is_refused():
    doc = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BF16", "data": [1.0, 2.0]}]}
    with pytest.raises(InvalidInput, match="BF16: send it as binary"):
        decode_infer_request(json.dumps(doc).encode())
    header = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BF16", "parameters": {"binary_data_size": 3}}]}
    raw = json.dumps(header).encode()
    with pytest.raises(InvalidInput, match="3 bytes of BF16"):
        decode_infer_request(raw + b"abc", {"Inference-Header-Content-Length": str(len(raw))})
