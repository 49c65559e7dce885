"""What a model version becomes in Triton's repository: names, tensors, and config.pbtxt (golden files).

No server here: these are the rules the backend writes by. Triton's own reading of the same configs
(``get_model_config``) is in test_triton_models.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matih_triton.backend import feeds
from matih_triton.model_config import (
    Tensor,
    io_for,
    model_config,
    onnx_graph,
    render_pbtxt,
    schema_from_config,
    triton_name,
    triton_version,
)
from matih_triton.repository import S3Location

from matih_lite.contracts.flavors import InputSchema, TensorSpec
from matih_lite.errors import ConfigError, InvalidInput
from matih_lite.testing.serving import write_linear_onnx

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str, text: str) -> None:
    """``text`` equals the golden file (MATIH_UPDATE_GOLDEN=1 rewrites it, for a deliberate change)."""
    import os

    path = GOLDEN / name
    if os.environ.get("MATIH_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if on purpose, rerun with MATIH_UPDATE_GOLDEN=1"


def test_onnx_model_config_for_the_onnxruntime_platform_matches_the_golden_file(tmp_path):
    folder = write_linear_onnx(tmp_path / "m", [1.0, 2.0, 3.0], 0.5)
    io = io_for(None, onnx_graph(str(folder / "model.onnx")))
    cfg = model_config("default--churn--3", io, platform="onnxruntime_onnx", version=3, instances=2,
                       max_batch_size=32, max_queue_delay_us=100, default_model_filename="model.onnx")
    golden("onnxruntime_onnx.config.pbtxt", render_pbtxt(cfg))


def test_python_backend_config_of_mixed_columns_matches_the_golden_file():
    schema = InputSchema("columns", (TensorSpec("age", "float64"), TensorSpec("plan", "str"),
                                     TensorSpec("active", "bool")))
    io = io_for(schema)
    cfg = model_config("acme--churn--7", io, backend="python", version=7, parameters={
        "matih_flavor_class": "matih_lite.serving.flavors.sklearn:SklearnFlavor", "matih_layout": io.layout,
        "matih_verify": "true"})
    golden("python_columns.config.pbtxt", render_pbtxt(cfg))


def test_numeric_columns_are_one_rows_tensor_as_the_ml_services_metadata_shows_them():
    io = io_for(InputSchema("columns", tuple(TensorSpec(f"f{i}", "float64") for i in range(20))))
    assert io.layout == "rows" and io.inputs == (Tensor("input", "float64", (-1, 20)),)
    cfg = model_config("m", io, backend="python")
    assert cfg["input"] == [{"name": "input", "data_type": "TYPE_FP64", "dims": [20]}]
    assert cfg["max_batch_size"] == 64 and "dynamic_batching" in cfg


def test_a_graph_with_a_fixed_batch_is_not_batched(tmp_path):
    io = io_for(None, ((Tensor("x", "float32", (1, 3)),), (Tensor("y", "float32", (1, 1)),)))
    cfg = model_config("m", io, platform="onnxruntime_onnx")
    assert cfg["max_batch_size"] == 0 and "dynamic_batching" not in cfg
    assert cfg["input"][0]["dims"] == [1, 3]


def test_a_model_without_a_signature_declares_its_own_tensors():
    io = io_for(None)
    assert io.layout == "auto" and not io.inputs
    assert "input" not in model_config("m", io, backend="python")
    declared = {"max_batch_size": 64, "input": [{"name": "age", "data_type": "TYPE_FP64", "dims": [1]},
                                                {"name": "plan", "data_type": "TYPE_STRING", "dims": [1]}]}
    assert schema_from_config(declared) == InputSchema("columns", (TensorSpec("age", "float64"),
                                                                   TensorSpec("plan", "str")))
    anything = {"max_batch_size": 64, "input": [{"name": "input", "data_type": "TYPE_FP64", "dims": [-1]}]}
    assert schema_from_config(anything).kind == "any"


# ---- names -------------------------------------------------------------------------------------------------------
def test_keys_become_readable_triton_names_and_versions():
    assert triton_name("default/churn/3") == "default--churn--3"
    assert triton_version("default/churn/3") == 3
    assert triton_version("k") == 1
    assert re.fullmatch(r"default--ch_rn--3-[0-9a-f]{10}", triton_name("default/ch.rn/3"))


@given(st.lists(st.text(min_size=1, max_size=40), min_size=2, max_size=2, unique=True))
def test_distinct_keys_never_share_a_triton_name_and_names_are_url_safe(keys):
    names = [triton_name(k) for k in keys]
    assert names[0] != names[1]
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name) and len(name) <= 131


def test_s3_repositories_are_parsed_as_triton_writes_them():
    assert S3Location.parse("s3://models/triton") == S3Location("models", "triton", None)
    assert S3Location.parse("s3://http://127.0.0.1:9000/models/a/b/") == \
        S3Location("models", "a/b", "http://127.0.0.1:9000")
    with pytest.raises(InvalidInput, match="s3://bucket/prefix"):
        S3Location.parse("s3://")


# ---- inputs to tensors -------------------------------------------------------------------------------------------
def test_rows_are_cast_to_the_tensor_dtype_and_checked_for_width():
    io = io_for(InputSchema("tensors", (TensorSpec("input", "float32", (-1, 3)),)))
    [(tensor, arr)] = feeds(np.ones((2, 3)), io)
    assert tensor.name == "input" and arr.dtype == np.float32 and arr.shape == (2, 3)
    with pytest.raises(InvalidInput, match=r"shape \[2, 5\]; the model takes \['N', 3\]"):
        feeds(np.ones((2, 5)), io)
    with pytest.raises(InvalidInput, match="takes float32 numbers"):
        feeds(np.array([["a", "b", "c"]]), io)


def test_mixed_columns_go_one_tensor_each_and_text_as_bytes():
    schema = InputSchema("columns", (TensorSpec("age", "float64"), TensorSpec("plan", "str")))
    sent = {t.name: a for t, a in feeds({"age": np.array([41.0, 7.0]), "plan": np.array(["a", "b"],
                                                                                            dtype=object)},
                                              io_for(schema))}
    assert sent["age"].shape == (2, 1) and sent["plan"].tolist() == [[b"a"], [b"b"]]
    with pytest.raises(InvalidInput, match="missing input 'plan'"):
        feeds({"age": np.array([1.0])}, io_for(schema))


# ---- settings ----------------------------------------------------------------------------------------------------
def test_bad_settings_name_the_key(tmp_path):
    from matih_lite.host import Host

    (tmp_path / "matih.toml").write_text('[profiles.lite]\nserving = { backend = "triton", url = "triton:8000" }\n')
    with pytest.raises(ConfigError, match=r"profiles\.lite\.serving.*url.*http://host:port"):
        Host.open(str(tmp_path / "matih.toml"))
    (tmp_path / "matih.toml").write_text('[profiles.lite]\nserving = { backend = "triton", instances = 0 }\n')
    with pytest.raises(ConfigError, match=r"profiles\.lite\.serving\.instances"):
        Host.open(str(tmp_path / "matih.toml"))


def test_the_default_repository_is_in_the_state_folder(tmp_path):
    from matih_lite.host import Host

    (tmp_path / "matih.toml").write_text('[profiles.lite]\nserving = { backend = "triton" }\n')
    host = Host.open(str(tmp_path / "matih.toml"))
    try:
        backend = host.backend("serving")
        assert backend.repository.url == str(host.context.home / "triton-models")
        assert backend.settings.url == "http://127.0.0.1:8000"
    finally:
        host.close()


# ---- the wire ----------------------------------------------------------------------------------------------------
def test_binary_requests_and_responses_are_the_protocols_own_bytes():
    """What matih_triton.wire writes, the ml-service's OIP decoder (and so Triton) reads, and the other way round."""
    import tritonclient.http as httpclient
    from matih_triton.wire import decode_response, encode_request

    from matih_lite.serving.oip import decode_infer_request, encode_infer_response

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    text = np.array([[b"a"], ["\u00e9t\u00e9".encode()]], dtype=object)
    body, length = encode_request([(Tensor("x", "float32", (-1, 3)), x), (Tensor("t", "str", (-1,)), text)], ["y"])
    request = decode_infer_request(body, {"Inference-Header-Content-Length": str(length)})
    assert [t.name for t in request.inputs] == ["x", "t"] and np.array_equal(request.inputs[0].data, x)
    assert request.inputs[1].data.reshape(-1).tolist() == [b"a", "\u00e9t\u00e9".encode()]
    assert [(o.name, o.binary) for o in request.outputs] == [("y", True)]
    inp = httpclient.InferInput("x", [2, 3], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    theirs, their_length = httpclient.InferenceServerClient.generate_request_body(
        [inp], outputs=[httpclient.InferRequestedOutput("y", binary_data=True)])
    ours, our_length = encode_request([(Tensor("x", "float32", (-1, 3)), x)], ["y"])
    assert ours[our_length:] == theirs[their_length:]  # the same tensor bytes tritonclient sends
    out, headers = encode_infer_response("m", {"y": np.array([1.5, 2.5]), "label": np.array(["a", "b"])},
                                         request=request)
    got = decode_response(out, int(headers.get("Inference-Header-Content-Length", len(out))))
    assert got["y"].tolist() == [1.5, 2.5]
