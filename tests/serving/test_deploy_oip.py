"""The Open Inference Protocol v2, driven by the real ``tritonclient.http`` against a real uvicorn server."""

from __future__ import annotations

import numpy as np
import pytest
from serving_helpers import register_model

from matih_lite.host import Host
from matih_lite.testing.service import serve

T = "default"


class Raising:
    def predict(self, inputs):
        raise ZeroDivisionError("the model divided by zero")


@pytest.fixture(scope="module")
def models():
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] - X[:, 3] + 0.5 * X[:, 5] > 0).astype(np.int64)
    return (GradientBoostingClassifier(n_estimators=20, random_state=0).fit(X, y),
            LinearRegression().fit(X, X @ np.arange(1.0, 7.0)), X)


@pytest.fixture
def server(hermetic, models):
    classifier, regressor, X = models
    host = Host.open()
    register_model(host, "churn", classifier, "sklearn", X[:2])
    register_model(host, "churn", regressor, "sklearn", X[:2])
    register_model(host, "broken", Raising(), "pyfunc", X[:2])
    with serve(host) as base:
        import httpx

        url = base.removeprefix("http://")  # tritonclient takes host:port
        with httpx.Client(base_url=base, timeout=30) as c:
            for body in ({"name": "churn-api", "model": "churn", "version": 1, "shadows": [2]},
                         {"name": "broken-api", "model": "broken", "version": 1}):
                assert c.post("/api/v1/deployments", json=body).status_code == 201
        yield url
    host.close()


def _infer(client, name, X, *, binary, version=""):
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("input", list(X.shape), "FP64")
    inp.set_data_from_numpy(X, binary_data=binary)
    out = httpclient.InferRequestedOutput("predictions", binary_data=binary)
    return client.infer(name, [inp], model_version=version, outputs=[out], request_id="req-1")


def test_tritonclient_talks_to_every_deployment(server, models):
    import tritonclient.http as httpclient

    classifier, regressor, X = models
    client = httpclient.InferenceServerClient(url=server)
    try:
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_server_metadata()
        assert meta["name"] == "matih-lite" and "binary_tensor_data" in meta["extensions"]
        assert client.is_model_ready("churn-api")
        model = client.get_model_metadata("churn-api")
        assert model["name"] == "churn-api" and model["versions"] == ["1", "2"] and model["platform"] == "sklearn"
        assert model["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 6]}]
        assert [o["name"] for o in model["outputs"]] == ["predictions"]
        assert client.get_model_metadata("churn-api", "2")["versions"] == ["2"]

        rows = X[:17]
        for binary in (True, False):
            result = _infer(client, "churn-api", rows, binary=binary)
            assert np.array_equal(result.as_numpy("predictions"), classifier.predict(rows))
            response = result.get_response()
            assert response["model_name"] == "churn-api" and response["model_version"] == "1"
            assert response["id"] == "req-1" and response["parameters"]["variant"] == "v1"
            assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) is binary
        pinned = _infer(client, "churn-api", rows, binary=True, version="2")  # the shadow, pinned
        assert np.allclose(pinned.as_numpy("predictions"), regressor.predict(rows))
        assert pinned.get_response()["model_version"] == "2"
        import ml_dtypes  # tritonclient's own dependency for BF16

        half = rows.astype(ml_dtypes.bfloat16)
        inp = httpclient.InferInput("input", list(half.shape), "BF16")
        inp.set_data_from_numpy(half, binary_data=True)
        bf16 = client.infer("churn-api", [inp], model_version="1")
        assert np.array_equal(bf16.as_numpy("predictions"), classifier.predict(half.astype(np.float64)))
    finally:
        client.close()


def test_protocol_errors_name_the_tensor_and_a_raising_model_is_a_500(server, models):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    _, _, X = models
    client = httpclient.InferenceServerClient(url=server)
    try:
        with pytest.raises(InferenceServerException) as bad_shape:
            _infer(client, "churn-api", X[:3, :4], binary=True)
        assert bad_shape.value.status() == "400" and "'input'" in bad_shape.value.message()
        assert "[N, 6]" in bad_shape.value.message() or "6" in bad_shape.value.message()
        with pytest.raises(InferenceServerException) as unknown:
            _infer(client, "nope", X[:3], binary=False)
        assert unknown.value.status() == "404" and "nope" in unknown.value.message()
        with pytest.raises(InferenceServerException) as not_served:
            _infer(client, "churn-api", X[:3], binary=False, version="7")
        assert not_served.value.status() == "404" and "does not serve version 7" in not_served.value.message()
        with pytest.raises(InferenceServerException) as raised:
            _infer(client, "broken-api", X[:3], binary=True)
        assert raised.value.status() == "500" and "ZeroDivisionError" in raised.value.message()
        assert not client.is_model_ready("churn-api", "7")
        assert client.is_model_ready("churn-api")  # the service carries on
    finally:
        client.close()
