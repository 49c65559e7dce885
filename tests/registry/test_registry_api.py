"""``/api/v1/models`` and ``/api/v1/approvals`` as a client uses them; bad input is a 4xx problem, never a 500."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from matih_lite.config import load_config
from matih_lite.host import Host
from matih_lite.identity import Principal
from matih_lite.service import create_app

POLICY = """
[models."*"]
staging_requires = ["auc >= 0.85", "latency_ms <= 20"]
production_approvers = ["owner", "lead"]
"""
ANN = {"x-test-principal": "default:ann:editor"}
BOB = {"x-test-principal": "default:bob:editor"}
LENA = {"x-test-principal": "default:lena:lead"}
EVE = {"x-test-principal": "other:eve:admin"}


def as_principal(inner):
    """The service with the caller named by an ``x-test-principal: TENANT:USER:ROLE,ROLE`` header.

    The auth middleware (off here) would set the same scope key from a bearer token.
    """

    async def app(scope, receive, send):
        for key, value in scope.get("headers", ()):
            if key == b"x-test-principal":
                tenant, user, roles = value.decode().split(":")
                scope["matih_principal"] = Principal(tenant, user, tuple(r for r in roles.split(",") if r))
        await inner(scope, receive, send)

    return app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry-rest")
    (folder / "matih.toml").write_text(textwrap.dedent(POLICY))
    with TestClient(as_principal(create_app(Host(load_config(cwd=folder))))) as c:
        yield c


def trained_run(client, headers=ANN, **metrics) -> str:
    run = client.post("/api/v1/runs", json={"experiment_name": "churn"}, headers=headers).json()
    metrics = metrics or {"auc": 0.9, "latency_ms": 10}
    client.post(f"/api/v1/runs/{run['run_id']}/batch", headers=headers,
                json={"metrics": [{"key": k, "value": v} for k, v in metrics.items()],
                      "tags": {"matih.dataset.train": "s3://data/train.parquet"}})
    client.put(f"/api/v1/runs/{run['run_id']}/artifacts/model/model.pkl", content=b"bytes", headers=headers)
    return run["run_id"]


def register(client, name, headers=ANN, **metrics):
    r = client.post(f"/api/v1/models/{name}/versions", headers=headers,
                    json={"run_id": trained_run(client, headers, **metrics), "path": "model", "flavor": "sklearn",
                          "input_example": [{"age": 31, "plan": "pro"}]})
    assert r.status_code == 201, r.text
    return r.json()


def promote(client, name, version, to, headers=ANN, **body):
    return client.post(f"/api/v1/models/{name}/versions/{version}/promote", json={"to": to, **body}, headers=headers)


def test_model_crud(client):
    r = client.post("/api/v1/models", json={"name": "crud", "description": "d", "tags": {"team": "growth"}},
                    headers=ANN)
    assert r.status_code == 201 and r.json()["owner"] == "ann" and r.json()["tags"] == {"team": "growth"}
    assert client.post("/api/v1/models", json={"name": "crud"}, headers=ANN).status_code == 409
    assert "crud" in [m["name"] for m in client.get("/api/v1/models", headers=ANN).json()["models"]]
    assert client.get("/api/v1/models", params={"name_like": "cr%"}, headers=ANN).json()["models"][0]["name"] == "crud"
    r = client.patch("/api/v1/models/crud", json={"description": "new", "tags": {"tier": "1"}}, headers=BOB)
    assert r.json()["description"] == "new" and r.json()["tags"] == {"team": "growth", "tier": "1"}
    assert client.patch("/api/v1/models/crud", json={"owner": "bob"}, headers=BOB).status_code == 403
    assert client.patch("/api/v1/models/crud", json={"new_name": "crud2"}, headers=ANN).json()["name"] == "crud2"
    assert client.delete("/api/v1/models/crud2/tags/tier", headers=ANN).status_code == 204
    assert client.delete("/api/v1/models/crud2", headers=BOB).status_code == 403
    assert client.delete("/api/v1/models/crud2", headers=ANN).status_code == 204
    assert client.get("/api/v1/models/crud2", headers=ANN).status_code == 404


def test_register_list_get_and_update_versions(client):
    v = register(client, "versions")
    assert (v["version"], v["stage"], v["status"], v["flavor"], v["created_by"]) == \
        (1, "Development", "READY", "sklearn", "ann")
    assert v["signature"]["inputs"] == [{"name": "age", "type": "long"}, {"name": "plan", "type": "string"}]
    assert v["training_data"] == [{"name": "train", "uri": "s3://data/train.parquet"}]
    assert v["source"] == f"runs:/{v['run_id']}/model" and v["storage_location"].endswith("/artifacts/model")
    register(client, "versions")
    assert [x["version"] for x in client.get("/api/v1/models/versions/versions", headers=ANN).json()["versions"]] \
        == [2, 1]
    r = client.patch("/api/v1/models/versions/versions/1", json={"description": "first", "tags": {"k": "v"}},
                     headers=ANN)
    assert r.json()["description"] == "first" and r.json()["tags"] == {"k": "v"}
    assert client.patch("/api/v1/models/versions/versions/1", json={"source": "s3://elsewhere"},
                        headers=ANN).status_code == 400  # immutable: not even a field to send
    assert client.get("/api/v1/models/versions/versions/2", headers=ANN).json()["version"] == 2
    assert client.get("/api/v1/models/versions/versions/9", headers=ANN).status_code == 404
    assert client.get("/api/v1/models/versions", headers=ANN).json()["latest_version"] == 2
    assert client.delete("/api/v1/models/versions/versions/2", headers=ANN).status_code == 204
    assert client.get("/api/v1/models/versions/policy", headers=ANN).json() == {
        "name": "versions", "staging_requires": ["auc >= 0.85", "latency_ms <= 20"],
        "production_approvers": ["owner", "lead"], "needs_approval": True,
        "sources": {"staging_requires": 'models."*"', "production_approvers": 'models."*"'}}


def test_governed_promotion_over_rest(client):
    v1 = register(client, "gov")
    low = register(client, "gov", auc=0.7, latency_ms=10)
    r = promote(client, "gov", low["version"], "Staging")
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert "auc >= 0.85 (actual: 0.7)" in problem["detail"]
    assert [(u["rule"], u["actual"]) for u in problem["unmet"]] == [("auc >= 0.85", 0.7)]
    r = promote(client, "gov", v1["version"], "Staging", reason="passes")
    assert r.status_code == 200 and (r.json()["from_stage"], r.json()["to_stage"]) == ("Development", "Staging")
    r = promote(client, "gov", v1["version"], "Production", headers=BOB, reason="launch")
    assert r.status_code == 202
    approval = r.json()
    assert (approval["status"], approval["requested_by"], approval["reason"]) == ("pending", "bob", "launch")
    aid = approval["approval_id"]
    assert client.get("/api/v1/approvals", params={"status": "pending"}, headers=ANN).json()["approvals"][0][
        "approval_id"] == aid
    assert client.get("/api/v1/models/gov/approvals", headers=ANN).json()["approvals"][0]["approval_id"] == aid
    assert client.post(f"/api/v1/approvals/{aid}/approve", json={}, headers=BOB).status_code == 403
    assert client.post(f"/api/v1/approvals/{aid}/reject", json={}, headers=LENA).status_code == 400
    r = client.post(f"/api/v1/approvals/{aid}/approve", json={"comment": "ship it"}, headers=LENA)
    assert r.status_code == 200 and (r.json()["status"], r.json()["decided_by"]) == ("approved", "lena")
    assert client.get(f"/api/v1/approvals/{aid}", headers=ANN).json()["comment"] == "ship it"
    assert client.get(f"/api/v1/models/gov/versions/{v1['version']}", headers=ANN).json()["stage"] == "Production"
    # A second one archives the first; rollback restores it.
    v3 = register(client, "gov")
    promote(client, "gov", v3["version"], "Staging")
    aid = promote(client, "gov", v3["version"], "Production", headers=BOB).json()["approval_id"]
    client.post(f"/api/v1/approvals/{aid}/approve", json={"comment": "ok"}, headers=ANN)
    stages = {v["version"]: v["stage"] for v in client.get("/api/v1/models/gov/versions", headers=ANN).json()[
        "versions"]}
    assert stages == {v1["version"]: "Archived", low["version"]: "Development", v3["version"]: "Production"}
    assert client.get("/api/v1/models/gov/versions", params={"stage": "production"}, headers=ANN).json()[
        "versions"][0]["version"] == v3["version"]
    assert client.post("/api/v1/models/gov/rollback", json={"reason": "x"}, headers=BOB).status_code == 403
    r = client.post("/api/v1/models/gov/rollback", json={"reason": "bad canary"}, headers=ANN)
    assert r.status_code == 200 and (r.json()["version"], r.json()["archived"]) == (v1["version"], [v3["version"]])
    audit = client.get("/api/v1/models/gov/audit", headers=ANN).json()["entries"]
    actions = [e["action"] for e in audit]
    assert actions.count("approval.requested") == 2 and actions.count("approval.approved") == 2
    assert "transition.refused" in actions and "model.rolled_back" in actions
    assert audit[-1]["to_stage"] == "Archived" and audit[-1]["actor"] == "ann"


def test_aliases(client):
    v = register(client, "aliased")
    r = client.put("/api/v1/models/aliased/aliases/champion", json={"version": v["version"]}, headers=ANN)
    assert r.status_code == 200 and r.json()["aliases"] == ["champion"]
    assert client.get("/api/v1/models/aliased/aliases/champion", headers=ANN).json()["version"] == v["version"]
    assert client.get("/api/v1/models/aliased", headers=ANN).json()["aliases"] == {"champion": v["version"]}
    assert client.put("/api/v1/models/aliased/aliases/latest", json={"version": 1}, headers=ANN).status_code == 400
    assert client.put("/api/v1/models/aliased/aliases/x", json={"version": 99}, headers=ANN).status_code == 404
    assert client.delete("/api/v1/models/aliased/aliases/champion", headers=ANN).status_code == 204
    assert client.get("/api/v1/models/aliased/aliases/champion", headers=ANN).status_code == 404


def test_another_tenant_gets_404_everywhere(client):
    v = register(client, "private")
    promote(client, "private", v["version"], "Staging")
    aid = promote(client, "private", v["version"], "Production", headers=BOB).json()["approval_id"]
    for method, path, body in [
        ("GET", "/api/v1/models/private", None), ("GET", "/api/v1/models/private/versions", None),
        ("GET", f"/api/v1/models/private/versions/{v['version']}", None), ("GET", "/api/v1/models/private/audit", None),
        ("POST", f"/api/v1/models/private/versions/{v['version']}/promote", {"to": "Archived"}),
        ("GET", f"/api/v1/approvals/{aid}", None), ("POST", f"/api/v1/approvals/{aid}/approve", {}),
        ("POST", "/api/v1/models/private/rollback", {}),
        ("PUT", "/api/v1/models/private/aliases/a", {"version": v["version"]}),
    ]:
        r = client.request(method, path, json=body, headers=EVE)
        assert r.status_code == 404, (method, path, r.text)
    assert client.get("/api/v1/models", headers=EVE).json()["models"] == []
    assert client.get("/api/v1/approvals", headers=EVE).json()["approvals"] == []


@pytest.mark.parametrize("method, path, body, status", [
    ("POST", "/api/v1/models", {"name": ""}, 400),
    ("POST", "/api/v1/models", {"name": "a/b"}, 400),
    ("POST", "/api/v1/models", {"name": "x", "bogus": 1}, 400),
    ("POST", "/api/v1/models", [], 400),
    ("POST", "/api/v1/models/bad/versions", {}, 400),
    ("POST", "/api/v1/models/bad/versions", {"source": "runs:/nope/model"}, 404),
    ("POST", "/api/v1/models/bad/versions", {"source": "runs:/"}, 400),
    ("POST", "/api/v1/models/bad/versions", {"source": "s3://x", "input_example": {}}, 400),
    ("POST", "/api/v1/models/bad/versions", {"source": "s3://x", "signature": {"nope": 1}}, 400),
    ("POST", "/api/v1/models/bad/versions", {"source": "s3://x", "training_data": [{"uri": 3}]}, 400),
    ("POST", "/api/v1/models/bad/versions", {"source": "x" * 5000}, 400),
    ("POST", "/api/v1/models/nope/versions/1/promote", {"to": "Staging"}, 404),
    ("POST", "/api/v1/models/nope/versions/0/promote", {"to": "Staging"}, 400),
    ("POST", "/api/v1/models/nope/versions/x/promote", {"to": "Staging"}, 404),
    ("POST", "/api/v1/models/nope/versions/1/promote", {}, 400),
    ("POST", "/api/v1/models/nope/versions/1/promote", {"to": 5}, 400),
    ("GET", "/api/v1/models", {"max_results": 0}, 400),
    ("GET", "/api/v1/models?page_token=garbage", None, 400),
    ("GET", "/api/v1/approvals?status=maybe", None, 400),
    ("POST", "/api/v1/approvals/nope/approve", {}, 404),
    ("POST", "/api/v1/approvals/nope/approve", {"comment": 3}, 400),
    ("PUT", "/api/v1/models/nope/aliases/a", {"version": "one"}, 400),
    ("POST", "/api/v1/models/nope/rollback", {}, 404),
])
def test_bad_input_is_a_4xx_problem(client, method, path, body, status):
    if method == "GET" and body:
        r = client.get(path, params=body, headers=ANN)
    else:
        r = client.request(method, path, json=body, headers=ANN)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["status"] == status


def test_unknown_stage_and_repeated_requests(client):
    v = register(client, "stages")
    assert promote(client, "stages", v["version"], "Limbo").status_code == 400
    assert promote(client, "stages", v["version"], "Development").status_code == 409
    assert promote(client, "stages", v["version"], "Production").status_code == 422
    promote(client, "stages", v["version"], "Staging")
    assert promote(client, "stages", v["version"], "Production", headers=BOB).status_code == 202
    assert promote(client, "stages", v["version"], "Production", headers=BOB).status_code == 409


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=30), to=st.one_of(st.text(max_size=12), st.integers(), st.none()),
       version=st.integers(min_value=-3, max_value=2**63), extra=st.dictionaries(st.text(max_size=5), st.integers(),
                                                                                max_size=2))
def test_fuzzed_promotions_never_500(client, name, to, version, extra):
    from urllib.parse import quote

    body = {"to": to, **extra}
    r = client.post(f"/api/v1/models/{quote(name, safe='')}/versions/{version}/promote", json=body, headers=ANN)
    assert r.status_code < 500, r.text
