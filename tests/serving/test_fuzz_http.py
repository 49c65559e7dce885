"""No input crashes the prediction and stream routes: arbitrary JSON and bytes answer 2xx or a 4xx problem,
never a 500, and the service keeps answering correctly afterwards."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from serving_helpers import register_model

from matih_lite.host import Host
from matih_lite.service import create_app

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
keys = st.sampled_from(["inputs", "instances", "dataframe_split", "dataframe_records", "params", "request_key",
                        "columns", "data", "x"])
bodies = st.dictionaries(keys, json_values, max_size=3) | json_values
oip_inputs = st.fixed_dictionaries({"name": st.sampled_from(["input", "x", ""]),
                                    "shape": st.lists(st.integers(-2, 5), max_size=3) | json_values,
                                    "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BF16", "BOOL",
                                                                 "nope"]),
                                    "data": json_values})


class Summer:
    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64).sum(axis=1)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MATIH_HOME", str(folder / ".matih"))
        mp.chdir(folder)
        host = Host.open()
        register_model(host, "summer", Summer(), example=np.array([[1.0, 2.0, 3.0]]))
        with TestClient(create_app(host)) as c:
            assert c.post("/api/v1/deployments", json={"name": "sum", "model": "summer", "version": 1}
                          ).status_code == 201
            yield c
        host.close()


def still_answers(client):
    resp = client.post("/api/v1/deployments/sum/predict", json={"inputs": [[1.0, 2.0, 3.0]]})
    assert resp.status_code == 200 and resp.json()["predictions"] == [6.0]


@FUZZ
@given(body=bodies, key=st.none() | st.text(max_size=5))
def test_predict_never_500(client, body, key):
    headers = {"content-type": "application/json"}
    if key:
        headers["x-request-key"] = key.encode("ascii", "ignore").decode() or "k"
    resp = client.post("/api/v1/deployments/sum/predict", content=json.dumps(body), headers=headers)
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert resp.headers["content-type"].startswith("application/problem+json") and resp.json()["detail"]


@FUZZ
@given(raw=st.binary(max_size=200))
def test_predict_and_infer_bytes_never_500(client, raw):
    for path in ("/api/v1/deployments/sum/predict", "/v2/models/sum/infer"):
        resp = client.post(path, content=raw)
        assert resp.status_code < 500, (path, resp.text)


@FUZZ
@given(inputs=st.lists(oip_inputs, max_size=2), outputs=st.none() | json_values, params=st.none() | json_values)
def test_infer_json_never_500(client, inputs, outputs, params):
    doc = {"inputs": inputs}
    if outputs is not None:
        doc["outputs"] = outputs
    if params is not None:
        doc["parameters"] = params
    resp = client.post("/v2/models/sum/infer", content=json.dumps(doc, allow_nan=True))
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert resp.json()["error"]


@FUZZ
@given(topic=st.text(max_size=12), records=json_values)
def test_stream_records_never_500(client, topic, records):
    from urllib.parse import quote

    path = f"/api/v1/streams/{quote(topic, safe='') or 'x'}/records"
    resp = client.post(path, content=json.dumps({"records": records}))
    assert resp.status_code < 500, resp.text
    resp = client.get(path, params={"from_offset": 0, "max_results": 3})
    assert resp.status_code < 500, resp.text


@FUZZ
@given(body=st.dictionaries(st.sampled_from(["source", "sink", "group", "batch_size", "x"]), json_values, max_size=4))
def test_stream_consumer_bodies_never_500(client, body):
    resp = client.post("/api/v1/deployments/sum/streams", content=json.dumps(body))
    assert resp.status_code < 500, resp.text
    if resp.status_code == 201:  # a valid one: stop it again
        assert client.delete(f"/api/v1/deployments/sum/streams/{resp.json()['group']}").status_code == 204


def test_the_service_still_answers_after_the_fuzzing(client):
    still_answers(client)
