"""The prediction routes served before Litestar (``matih_lite.service.fastpath``): the same gate, limits,
errors, metrics and OpenAPI entries as every other route, with tokens on and two tenants."""

from __future__ import annotations

import numpy as np
import pytest
from litestar.testing import TestClient
from serving_helpers import register_model

from matih_lite.auth import Accounts
from matih_lite.config import load_config
from matih_lite.host import Host
from matih_lite.identity import Principal
from matih_lite.service import create_app
from matih_lite.serving.deployments import Deployments

PREDICT = "/api/v1/deployments/scorer/predict"
INFER = "/v2/models/scorer/infer"
ROW = {"inputs": [[1.0, 2.0, 3.0]]}


class Doubler:
    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64).sum(axis=1) * 2


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fastpath")
    (folder / "matih.toml").write_text("[auth]\nenabled = true\ncache_seconds = 1\n")
    host = Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))
    accounts = Accounts(host)
    tokens = {}
    for tenant, user, roles in (("acme", "vera", ["viewer"]), ("acme", "ed", ["editor"]),
                                ("globex", "gus", ["editor"])):
        accounts.create_user(tenant, user, roles)
        tokens[user] = accounts.create_token(tenant, user, name="tests").secret
    ed = Principal("acme", "ed", ("editor",))
    register_model(host, "doubler", Doubler(), example=np.array([[1.0, 2.0, 3.0]]), principal=ed)
    Deployments(host).create(ed, "scorer", "doubler", version=1)
    with TestClient(create_app(host)) as client:
        yield client, tokens
    host.close()


def bearer(tokens, user):
    return {"Authorization": f"Bearer {tokens[user]}"}


def test_a_viewer_predicts_through_both_protocols(service):
    client, tokens = service
    resp = client.post(PREDICT, json=ROW, headers=bearer(tokens, "vera"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"] == [12.0] and resp.headers["x-model-version"] == "1"
    infer = client.post(INFER, headers=bearer(tokens, "vera"), json={
        "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}]})
    assert infer.status_code == 200, infer.text
    assert infer.json()["outputs"][0]["data"] == [12.0]


def test_without_a_token_both_answer_401_with_a_challenge(service):
    client, _ = service
    resp = client.post(PREDICT, json=ROW)
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.json()["title"] == "Unauthorized" and "bearer token" in resp.json()["detail"]
    oip = client.post(INFER, json={"inputs": []}, headers={"Authorization": "Bearer not-a-token"})
    assert oip.status_code == 401 and oip.json()["error"] == oip.json()["detail"]
    assert 'error="invalid_token"' in oip.headers["www-authenticate"]


def test_another_tenant_does_not_see_the_deployment(service):
    client, tokens = service
    resp = client.post(PREDICT, json=ROW, headers=bearer(tokens, "gus"))
    assert resp.status_code == 404 and resp.json()["instance"] == PREDICT


def test_bad_input_and_an_oversized_body_are_problems(service):
    client, tokens = service
    bad = client.post(PREDICT, content=b"{not json", headers=bearer(tokens, "vera"))
    assert bad.status_code == 400 and bad.json()["field"] == "body"
    wide = client.post(PREDICT, json={"inputs": [[1.0, 2.0]]}, headers=bearer(tokens, "vera"))
    assert wide.status_code == 400, wide.text
    huge = client.post(PREDICT, content=b"x" * 10_000_001, headers=bearer(tokens, "vera"))
    assert huge.status_code == 413 and huge.json()["title"] == "Payload too large"


def test_other_methods_and_shapes_fall_through_to_the_router(service):
    client, tokens = service
    assert client.get(PREDICT, headers=bearer(tokens, "vera")).status_code == 405
    assert client.post("/v2/models/scorer/versions/x/infer", json={}, headers=bearer(tokens, "vera")
                       ).status_code in (400, 404)


def test_metrics_and_openapi_name_the_routes_as_the_router_does(service):
    client, tokens = service
    client.post(PREDICT, json=ROW, headers=bearer(tokens, "vera"))
    metrics = client.get("/metrics").text
    assert 'route="/api/v1/deployments/{name}/predict"' in metrics
    assert 'route="/v2/models/{name}/infer"' in metrics
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert "/api/v1/deployments/{name}/predict" in paths and "/v2/models/{name}/infer" in paths
    assert "/v2/models/{name}/versions/{version}/infer" in paths
