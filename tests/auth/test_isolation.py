"""Two tenants and several users against a real service with auth on: isolation and role gates.

Every interface is tried: REST ``/api/v1``, the MLflow REST paths (through the real ``mlflow``
client, with ``MLFLOW_TRACKING_TOKEN``), and the proxied ``mlflow-artifacts``. A tenant never
sees, lists, searches or downloads another's records, and another tenant's ids answer 404.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlflow  # a test dependency ([test] extra): missing, this suite fails, it does not skip
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from matih_lite.auth import Accounts
from matih_lite.config import load_config
from matih_lite.host import Host

USERS = {
    "alice": ("acme", ["admin"]),
    "ed": ("acme", ["editor"]),
    "vic": ("acme", ["viewer"]),
    "lee": ("acme", ["lead"]),
    "gina": ("globex", ["admin"]),
    "gus": ("globex", ["editor"]),
}
AUTH_TOML = "[auth]\nenabled = true\ncache_seconds = 1\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_host(folder: Path) -> Host:
    return Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))


class Service:
    """The running service, its folder, and one token per user."""

    def __init__(self, url: str, folder: Path, secrets: dict[str, str], token_ids: dict[str, str]) -> None:
        self.url = url
        self.folder = folder
        self.secrets = secrets
        self.token_ids = token_ids

    def http(self, user: str | None = None, secret: str | None = None) -> httpx.Client:
        secret = secret or (self.secrets[user] if user else None)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """Users bootstrapped on the folder (as the CLI does), then the service under uvicorn with auth on."""
    import uvicorn

    from matih_lite.service import create_app

    folder = tmp_path_factory.mktemp("auth-service")
    (folder / "matih.toml").write_text(AUTH_TOML)
    home = folder / "home"
    home.mkdir()
    bootstrap = open_host(folder)
    accounts = Accounts(bootstrap)
    secrets, token_ids = {}, {}
    for name, (tenant, roles) in USERS.items():
        accounts.create_user(tenant, name, roles)
        issued = accounts.create_token(tenant, name, name="tests")
        secrets[name], token_ids[name] = issued.secret, issued.token.token_id
    bootstrap.close()

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID",
                    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            mp.delenv(var, raising=False)
        host = open_host(folder)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(host), host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="on"))
        thread = threading.Thread(target=server.run, name="matih-auth-test-server", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the ml-service did not start")
            time.sleep(0.02)
        mlflow.set_tracking_uri(url)  # mlflow-artifacts: URIs resolve against it
        try:
            yield Service(url, folder, secrets, token_ids)
        finally:
            mlflow.set_tracking_uri(None)
            server.should_exit = True
            thread.join(timeout=10)


@contextmanager
def mlflow_as(service: Service, user: str):
    """The real mlflow client, sending ``user``'s token as MLFLOW_TRACKING_TOKEN."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_TOKEN", service.secrets[user])
        yield MlflowClient(service.url)


def error_code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.error_code


@pytest.fixture(scope="module")
def acme(service, tmp_path_factory) -> dict[str, Any]:
    """What editor ed of tenant acme made: through REST v1 and through the mlflow client."""
    with service.http("ed") as c:
        exp = c.post("/api/v1/experiments/", json={"name": "churn", "tags": {"team": "acme"}}).json()
        run = c.post("/api/v1/runs/", json={"experiment_id": exp["experiment_id"], "name": "acme-run"}).json()
        r = c.post(f"/api/v1/runs/{run['run_id']}/batch",
                   json={"metrics": [{"key": "auc", "value": 0.93}], "params": {"lr": "0.1"}})
        assert r.status_code == 200, r.text
        r = c.put(f"/api/v1/runs/{run['run_id']}/artifacts/model/weights.bin", content=b"acme weights")
        assert r.status_code in (200, 201), r.text
    local = tmp_path_factory.mktemp("acme-files") / "report.txt"
    local.write_text("acme confidential report")
    with mlflow_as(service, "ed") as client:
        mexp = client.create_experiment("mlflow-churn")
        mrun = client.create_run(mexp, run_name="acme-mlflow-run")
        client.log_param(mrun.info.run_id, "depth", "7")
        client.log_metric(mrun.info.run_id, "auc", 0.95)
        client.log_artifact(mrun.info.run_id, str(local))
        client.set_terminated(mrun.info.run_id)
    return {"experiment_id": exp["experiment_id"], "run_id": run["run_id"], "mlflow_experiment_id": mexp,
            "mlflow_run_id": mrun.info.run_id}


# ---- who gets in -----------------------------------------------------------------------------------
def test_open_routes_answer_without_a_token(service):
    with service.http() as c:
        for path in ("/health", "/ready", "/metrics", "/schema/openapi.json"):
            assert c.get(path).status_code == 200, path


def test_no_token_is_401_in_each_interface_own_shape(service, acme):
    with service.http() as c:
        r = c.get("/api/v1/experiments/")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "MATIH_TOKEN" in r.json()["detail"]
        mlflow_requests = [
            ("POST", "/api/2.0/mlflow/experiments/search", {"json": {}}),
            ("GET", "/api/2.0/mlflow/runs/get", {"params": {"run_id": acme["mlflow_run_id"]}}),
            ("POST", "/ajax-api/2.0/mlflow/runs/search", {"json": {}}),
            ("GET", "/api/2.0/mlflow-artifacts/artifacts", {"params": {"path": "x"}}),
            ("GET", f"/api/2.0/mlflow-artifacts/artifacts/{acme['mlflow_experiment_id']}/{acme['mlflow_run_id']}"
                    "/artifacts/report.txt", {}),
            ("GET", "/api/3.0/mlflow/server-info", {}),
        ]
        for method, path, kw in mlflow_requests:
            r = c.request(method, path, **kw)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error_code"] == "UNAUTHENTICATED", path
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
        with pytest.raises(MlflowException) as exc:
            MlflowClient(service.url).search_experiments()
        assert error_code(exc) == "UNAUTHENTICATED"


def test_bad_token_is_401(service):
    for secret in ("mth_" + "x" * 43, "garbage", service.secrets["ed"][:-2]):
        with service.http(secret=secret) as c:
            r = c.get("/api/v1/experiments/")
            assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
            assert c.post("/api/2.0/mlflow/experiments/search", json={}).json()["error_code"] == "UNAUTHENTICATED"


def test_whoami_names_the_token_owner(service):
    with service.http("lee") as c:
        assert c.get("/api/v1/auth/whoami").json() == {
            "tenant": "acme", "user": "lee", "roles": ["viewer", "editor", "lead"], "authenticated": True}
    with service.http("gus") as c:
        assert c.get("/api/v1/auth/whoami").json()["tenant"] == "globex"
    # HTTP Basic with the token as the password (MLFLOW_TRACKING_USERNAME/PASSWORD) is the same token
    r = httpx.get(f"{service.url}/api/v1/auth/whoami", auth=("anything", service.secrets["vic"]))
    assert r.json()["user"] == "vic"
    assert httpx.get(f"{service.url}/api/v1/auth/whoami", auth=("vic", "wrong")).status_code == 401


# ---- isolation ---------------------------------------------------------------------------------------
def test_rest_v1_another_tenant_lists_and_searches_nothing(service, acme):
    with service.http("gus") as c:
        assert c.get("/api/v1/experiments/", params={"lifecycle": "all"}).json()["experiments"] == []
        r = c.post("/api/v1/runs/search", json={"experiment_ids": [acme["experiment_id"]]})
        assert r.status_code == 404 or r.json()["runs"] == []
        r = c.post("/api/v1/runs/search", json={"experiment_names": ["churn"]})
        assert r.status_code == 404 or r.json()["runs"] == []
    with service.http("ed") as c:  # the owner's view, for contrast
        assert [e["name"] for e in c.get("/api/v1/experiments/").json()["experiments"]] == ["mlflow-churn", "churn"]


def test_rest_v1_ids_of_another_tenant_answer_404(service, acme):
    eid, rid = acme["experiment_id"], acme["run_id"]
    requests = [
        ("GET", f"/api/v1/experiments/{eid}", {}),
        ("GET", "/api/v1/experiments/by-name/churn", {}),
        ("PATCH", f"/api/v1/experiments/{eid}", {"json": {"description": "mine now"}}),
        ("PUT", f"/api/v1/experiments/{eid}/tags", {"json": {"tags": {"x": "y"}}}),
        ("DELETE", f"/api/v1/experiments/{eid}", {}),
        ("POST", "/api/v1/runs/", {"json": {"experiment_id": eid}}),
        ("GET", f"/api/v1/runs/{rid}", {}),
        ("GET", "/api/v1/runs/compare", {"params": {"run_ids": rid}}),
        ("PATCH", f"/api/v1/runs/{rid}", {"json": {"status": "KILLED"}}),
        ("POST", f"/api/v1/runs/{rid}/batch", {"json": {"metrics": [{"key": "auc", "value": 0.0}]}}),
        ("DELETE", f"/api/v1/runs/{rid}/tags/x", {}),
        ("GET", f"/api/v1/runs/{rid}/metrics/auc/history", {}),
        ("GET", f"/api/v1/runs/{rid}/artifacts", {}),
        ("GET", f"/api/v1/runs/{rid}/artifacts/model/weights.bin", {}),
        ("PUT", f"/api/v1/runs/{rid}/artifacts/model/evil.bin", {"content": b"x"}),
        ("DELETE", f"/api/v1/runs/{rid}", {}),
    ]
    with service.http("gus") as c:
        for method, path, kw in requests:
            r = c.request(method, path, **kw)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert "acme" not in r.text and "0.93" not in r.text
    with service.http("ed") as c:  # and nothing changed
        run = c.get(f"/api/v1/runs/{rid}").json()
        assert run["status"] == "RUNNING" and run["metrics"]["auc"]["value"] == 0.93
        assert c.get(f"/api/v1/runs/{rid}/artifacts/model/weights.bin").content == b"acme weights"
        assert c.get(f"/api/v1/experiments/{eid}").json()["description"] == ""


def test_mlflow_client_of_another_tenant_sees_nothing(service, acme, tmp_path):
    eid, rid = acme["mlflow_experiment_id"], acme["mlflow_run_id"]
    with mlflow_as(service, "gus") as client:
        names = [e.name for e in client.search_experiments()]
        assert "mlflow-churn" not in names and "churn" not in names
        assert client.get_experiment_by_name("mlflow-churn") is None
        for call in (lambda: client.get_experiment(eid), lambda: client.get_run(rid),
                     lambda: client.get_metric_history(rid, "auc"), lambda: client.list_artifacts(rid),
                     lambda: client.log_metric(rid, "auc", 0.0), lambda: client.set_tag(rid, "owner", "globex"),
                     lambda: client.delete_run(rid)):
            with pytest.raises(MlflowException) as exc:
                call()
            assert error_code(exc) == "RESOURCE_DOES_NOT_EXIST"
        assert list(client.search_runs([eid])) == []
        assert list(client.search_runs([eid], filter_string="metrics.auc > 0")) == []
        with pytest.raises(MlflowException):
            mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="report.txt", dst_path=str(tmp_path))
        assert not list(tmp_path.rglob("report.txt"))
    with mlflow_as(service, "ed") as client:  # the owner still has everything, untouched
        run = client.get_run(rid)
        assert run.data.metrics == {"auc": 0.95} and "owner" not in run.data.tags
        assert [a.path for a in client.list_artifacts(rid)] == ["report.txt"]
        assert len(client.search_runs([eid])) == 1


def test_mlflow_artifacts_of_another_tenant_answer_404(service, acme):
    eid, rid = acme["mlflow_experiment_id"], acme["mlflow_run_id"]
    base = "/api/2.0/mlflow-artifacts/artifacts"
    with service.http("gus") as c:
        for method, path, kw in [
            ("GET", f"{base}/{eid}/{rid}/artifacts/report.txt", {}),
            ("GET", base, {"params": {"path": f"{eid}/{rid}/artifacts"}}),
            ("GET", base, {"params": {"path": f"{eid}/{rid}"}}),
            ("PUT", f"{base}/{eid}/{rid}/artifacts/planted.txt", {"content": b"x"}),
            ("DELETE", f"{base}/{eid}/{rid}/artifacts/report.txt", {}),
            ("GET", "/api/2.0/mlflow/artifacts/list", {"params": {"run_id": rid}}),
        ]:
            r = c.request(method, path, **kw)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    with service.http("ed") as c:
        r = c.get(f"{base}/{eid}/{rid}/artifacts/report.txt")
        assert r.status_code == 200 and r.content == b"acme confidential report"
        listing = c.get(base, params={"path": f"{eid}/{rid}/artifacts"}).json()
        assert [f["path"] for f in listing["files"]] == ["report.txt"]


def test_tenants_may_use_the_same_names_without_meeting(service, acme):
    with service.http("gus") as c:
        r = c.post("/api/v1/experiments/", json={"name": "churn"})
        assert r.status_code == 201, r.text
        theirs = r.json()["experiment_id"]
        assert theirs != acme["experiment_id"]
        run = c.post("/api/v1/runs/", json={"experiment_name": "churn", "name": "globex-run"}).json()
        assert run["experiment_id"] == theirs
        assert [x["name"] for x in c.get("/api/v1/experiments/").json()["experiments"]] == ["churn"]
    with service.http("ed") as c:
        assert c.get("/api/v1/experiments/by-name/churn").json()["experiment_id"] == acme["experiment_id"]
        runs = c.post("/api/v1/runs/search", json={"experiment_names": ["churn"]}).json()["runs"]
        assert [r["name"] for r in runs] == ["acme-run"]
        assert c.get(f"/api/v1/runs/{run['run_id']}").status_code == 404


# ---- registered models and versions -----------------------------------------------------------------
@pytest.fixture(scope="module")
def acme_models(service, acme) -> dict[str, Any]:
    """Ed's models: one through REST v1 (Staging, an alias, a pending Production request), one through mlflow."""
    with service.http("ed") as c:
        r = c.post("/api/v1/models/churn-model/versions", json={"source": f"runs:/{acme['run_id']}/model",
                                                                 "flavor": "custom", "description": "acme only"})
        assert r.status_code == 201, r.text
        assert c.post("/api/v1/models/churn-model/versions/1/promote", json={"to": "Staging"}).status_code == 200
        assert c.put("/api/v1/models/churn-model/aliases/champion", json={"version": 1}).status_code == 200
        r = c.post("/api/v1/models/churn-model/versions/1/promote", json={"to": "Production"})
        assert r.status_code == 202, r.text
        approval_id = r.json()["approval_id"]
    with mlflow_as(service, "ed") as client:
        client.create_registered_model("mlflow-model", description="acme mlflow model")
        mv = client.create_model_version("mlflow-model", source=f"runs:/{acme['run_id']}/model",
                                         run_id=acme["run_id"])
        client.set_registered_model_alias("mlflow-model", "champion", mv.version)
    return {"approval_id": approval_id}


def test_registry_rest_of_another_tenant_answers_404(service, acme, acme_models):
    base = "/api/v1/models/churn-model"
    with service.http("gus") as c:
        assert c.get("/api/v1/models/").json()["models"] == []
        assert acme_models["approval_id"] not in c.get("/api/v1/approvals/").text
        for method, path, kw in [
            ("GET", base, {}),
            ("PATCH", base, {"json": {"description": "mine now"}}),
            ("DELETE", base, {}),
            ("GET", f"{base}/versions", {}),
            ("GET", f"{base}/versions/1", {}),
            ("PATCH", f"{base}/versions/1", {"json": {"description": "mine now"}}),
            ("POST", f"{base}/versions/1/promote", {"json": {"to": "Archived"}}),
            ("POST", f"{base}/rollback", {"json": {}}),
            ("GET", f"{base}/approvals", {}),
            ("GET", f"{base}/aliases/champion", {}),
            ("PUT", f"{base}/aliases/champion", {"json": {"version": 1}}),
            ("GET", f"/api/v1/approvals/{acme_models['approval_id']}", {}),
            ("POST", f"/api/v1/approvals/{acme_models['approval_id']}/approve", {"json": {"comment": "ok"}}),
            # and no registering another tenant's run as one's own model
            ("POST", "/api/v1/models/stolen/versions", {"json": {"source": f"runs:/{acme['run_id']}/model"}}),
        ]:
            r = c.request(method, path, **kw)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert "acme only" not in r.text
        # The audit log outlives a deleted model, so an unknown name reads as an empty history, not 404.
        r = c.get(f"{base}/audit")
        assert r.status_code == 404 or r.json()["entries"] == [], r.text
        r = c.post("/api/v1/models/", json={"name": "churn-model"})  # the same name is free in globex
        assert r.status_code == 201 and r.json()["owner"] == "gus"
    with service.http("ed") as c:  # untouched
        version = c.get(f"{base}/versions/1").json()
        assert version["stage"] == "Staging" and version["description"] == "acme only"
        assert c.get("/api/v1/approvals/").json()["approvals"][0]["status"] == "pending"
        assert c.get(base).json()["owner"] == "ed"


@pytest.mark.filterwarnings("ignore::FutureWarning")  # stages and get_latest_versions, deprecated by MLflow
def test_mlflow_registry_of_another_tenant_sees_nothing(service, acme, acme_models, tmp_path):
    with mlflow_as(service, "gus") as client:
        names = [m.name for m in client.search_registered_models()]
        assert "mlflow-model" not in names
        assert client.search_model_versions("name='mlflow-model'") == []
        for call in (lambda: client.get_registered_model("mlflow-model"),
                     lambda: client.get_model_version("mlflow-model", "1"),
                     lambda: client.get_model_version_by_alias("mlflow-model", "champion"),
                     lambda: client.get_model_version_download_uri("mlflow-model", "1"),
                     lambda: client.transition_model_version_stage("mlflow-model", "1", "Archived"),
                     lambda: client.update_registered_model("mlflow-model", description="mine now"),
                     lambda: client.delete_registered_model("mlflow-model")):
            with pytest.raises(MlflowException) as exc:
                call()
            assert error_code(exc) == "RESOURCE_DOES_NOT_EXIST"
        with pytest.raises(MlflowException):
            client.get_latest_versions("mlflow-model")
        with pytest.raises(MlflowException):
            mlflow.artifacts.download_artifacts("models:/mlflow-model/1", dst_path=str(tmp_path))
        assert not list(tmp_path.rglob("weights.bin"))
    with mlflow_as(service, "ed") as client:
        model = client.get_registered_model("mlflow-model")
        assert model.description == "acme mlflow model" and model.aliases == {"champion": "1"}
        path = mlflow.artifacts.download_artifacts("models:/mlflow-model/1", dst_path=str(tmp_path))
        assert (Path(path) / "weights.bin").read_bytes() == b"acme weights"


def test_registry_roles(service, acme, acme_models):
    with service.http("vic") as c:
        assert {"churn-model", "mlflow-model"} <= {m["name"] for m in c.get("/api/v1/models/").json()["models"]}
        assert c.get("/api/v1/models/churn-model/versions/1").status_code == 200
        for method, path, kw in [
            ("POST", "/api/v1/models/", {"json": {"name": "viewer-model"}}),
            ("POST", "/api/v1/models/churn-model/versions/1/promote", {"json": {"to": "Archived"}}),
            ("POST", f"/api/v1/approvals/{acme_models['approval_id']}/approve", {"json": {"comment": "ok"}}),
        ]:
            assert c.request(method, path, **kw).status_code == 403, path
    with mlflow_as(service, "vic") as client:
        assert client.get_model_version_by_alias("mlflow-model", "champion").version == "1"
        with pytest.raises(MlflowException) as exc:
            client.create_registered_model("viewer-model")
        assert error_code(exc) == "PERMISSION_DENIED"
    with service.http("ed") as c:  # an editor registers and requests; the requester may not approve
        r = c.post("/api/v1/models/roles-model/versions", json={"source": f"runs:/{acme['run_id']}/model"})
        assert r.status_code == 201, r.text
        assert c.post("/api/v1/models/roles-model/versions/1/promote", json={"to": "Staging"}).status_code == 200
        r = c.post("/api/v1/models/roles-model/versions/1/promote", json={"to": "Production"})
        assert r.status_code == 202, r.text
        approve = f"/api/v1/approvals/{r.json()['approval_id']}/approve"
        assert c.post(approve, json={"comment": "mine"}).status_code == 403
    with service.http("vic") as c:
        assert c.post(approve, json={"comment": "ok"}).status_code == 403
    with service.http("lee") as c:  # a lead may (decided by the registry with Principal.has("lead"))
        r = c.post(approve, json={"comment": "looks good"})
        assert r.status_code == 200 and r.json()["status"] == "approved" and r.json()["decided_by"] == "lee"
    with service.http("ed") as c:
        assert c.get("/api/v1/models/roles-model/versions/1").json()["stage"] == "Production"


# ---- roles ------------------------------------------------------------------------------------------
def test_viewer_reads_and_searches_but_cannot_write(service, acme, tmp_path):
    eid, rid = acme["experiment_id"], acme["run_id"]
    with service.http("vic") as c:
        assert c.get(f"/api/v1/runs/{rid}").json()["metrics"]["auc"]["value"] == 0.93
        assert len(c.post("/api/v1/runs/search", json={"experiment_ids": [eid]}).json()["runs"]) == 1
        assert c.get(f"/api/v1/runs/{rid}/artifacts/model/weights.bin").content == b"acme weights"
        for method, path, kw in [
            ("POST", "/api/v1/experiments/", {"json": {"name": "viewer-exp"}}),
            ("POST", "/api/v1/runs/", {"json": {"experiment_id": eid}}),
            ("POST", f"/api/v1/runs/{rid}/batch", {"json": {"metrics": [{"key": "auc", "value": 0.1}]}}),
            ("PUT", f"/api/v1/runs/{rid}/artifacts/x.bin", {"content": b"x"}),
            ("DELETE", f"/api/v1/runs/{rid}", {}),
        ]:
            r = c.request(method, path, **kw)
            assert r.status_code == 403, (method, path, r.text)
            assert "editor role" in r.json()["detail"]
        r = c.post("/api/2.0/mlflow/runs/log-metric", json={"run_id": rid, "key": "auc", "value": 0, "timestamp": 1})
        assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"
    with mlflow_as(service, "vic") as client:
        assert len(client.search_runs([acme["mlflow_experiment_id"]])) == 1
        assert client.get_experiment_by_name("mlflow-churn") is not None
        with pytest.raises(MlflowException) as exc:
            client.create_experiment("viewer-exp")
        assert error_code(exc) == "PERMISSION_DENIED"
        path = mlflow.artifacts.download_artifacts(run_id=acme["mlflow_run_id"], artifact_path="report.txt",
                                                   dst_path=str(tmp_path))
        assert Path(path).read_text() == "acme confidential report"


def test_editor_and_lead_log_runs(service):
    with service.http("lee") as c:
        run = c.post("/api/v1/runs/", json={"experiment_name": "lead-exp", "name": "by-lee"})
        assert run.status_code == 201, run.text
        assert run.json()["user_id"] == "lee"
    with mlflow_as(service, "ed") as client:
        eid = client.create_experiment("editor-exp")
        run = client.create_run(eid)
        client.log_batch(run.info.run_id, metrics=[mlflow.entities.Metric("loss", 0.5, 1, 0)])
        client.set_terminated(run.info.run_id)
        got = client.get_run(run.info.run_id)
        assert got.data.metrics == {"loss": 0.5} and got.info.user_id == "ed"


def test_admin_manages_only_their_own_tenant(service):
    with service.http("alice") as c:
        users = c.get("/api/v1/auth/users").json()["users"]
        assert sorted(u["name"] for u in users) == ["alice", "ed", "lee", "vic"]
        listed = c.get("/api/v1/auth/tokens").json()["tokens"]
        assert {t["user"] for t in listed} == {"alice", "ed", "lee", "vic"}
        assert all("secret" not in t and "hash" not in json.dumps(t) for t in listed)
        r = c.post("/api/v1/auth/users", json={"name": "newbie", "roles": ["viewer"]})
        assert r.status_code == 201 and r.json()["tenant"] == "acme"
        made = c.post("/api/v1/auth/tokens", json={"user": "newbie", "name": "ci", "expires_in_days": 1}).json()
        assert made["secret"].startswith("mth_") and "shown once" in made["note"]
        assert c.get(f"/api/v1/auth/users/{'gus'}").status_code == 404
        assert c.delete(f"/api/v1/auth/tokens/{service.token_ids['gus']}").status_code == 404
    with service.http(secret=made["secret"]) as c:
        assert c.get("/api/v1/auth/whoami").json()["user"] == "newbie"
    with service.http("gina") as c:
        assert [u["name"] for u in c.get("/api/v1/auth/users").json()["users"]] == ["gina", "gus"]
        assert c.get("/api/v1/auth/users/ed").status_code == 404
        assert c.patch("/api/v1/auth/users/ed", json={"disabled": True}).status_code == 404
        assert c.delete(f"/api/v1/auth/tokens/{service.token_ids['ed']}").status_code == 404
        assert c.post("/api/v1/auth/tokens", json={"user": "ed"}).status_code == 404
    for user in ("ed", "lee", "vic"):
        with service.http(user) as c:
            assert c.get("/api/v1/auth/users").status_code == 403
            assert c.post("/api/v1/auth/tokens", json={"user": user}).status_code == 403
    with service.http("ed") as c:
        assert c.get("/api/v1/experiments/").status_code == 200  # ed was never disabled by gina


def test_revoked_token_is_401(service):
    with service.http("alice") as c:
        made = c.post("/api/v1/auth/tokens", json={"user": "ed", "name": "short-lived"}).json()
    with service.http(secret=made["secret"]) as c:
        assert c.get("/api/v1/experiments/").status_code == 200
        with service.http("alice") as admin:
            assert admin.delete(f"/api/v1/auth/tokens/{made['token']['token_id']}").json()["revoked"] is True
        r = c.get("/api/v1/experiments/")
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        assert c.post("/api/2.0/mlflow/runs/search", json={}).json()["error_code"] == "UNAUTHENTICATED"


def test_an_admin_cannot_revoke_the_token_they_are_using(service):
    """Like disabling oneself: the tenant's admin would be locked out."""
    with service.http("alice") as c:
        spare = c.post("/api/v1/auth/tokens", json={"user": "alice", "name": "spare"}).json()
    spare_id = spare["token"]["token_id"]
    with service.http(secret=spare["secret"]) as c:
        r = c.delete(f"/api/v1/auth/tokens/{spare_id}")
        assert r.status_code == 403 and "this request uses" in r.json()["detail"]
        assert c.get("/api/v1/auth/users").status_code == 200  # still works
    with service.http("alice") as c:  # with another token of hers, she may
        assert c.delete(f"/api/v1/auth/tokens/{spare_id}").json()["revoked"] is True


def test_revocation_on_the_servers_folder_counts_within_cache_seconds(service):
    """``matih-lite tokens revoke`` on the folder works on the store, not through the service."""
    with service.http("alice") as c:
        made = c.post("/api/v1/auth/tokens", json={"user": "lee"}).json()
    with service.http(secret=made["secret"]) as c:
        assert c.get("/api/v1/experiments/").status_code == 200
        host = open_host(service.folder)
        Accounts(host).revoke_token("acme", made["token"]["token_id"])
        host.close()
        deadline = time.monotonic() + 5
        while c.get("/api/v1/experiments/").status_code != 401:
            assert time.monotonic() < deadline, "the revoked token still works after cache_seconds"
            time.sleep(0.1)


def test_disabled_user_is_401(service):
    with service.http("alice") as c:
        c.post("/api/v1/auth/users", json={"name": "leaver", "roles": ["editor"]})
        made = c.post("/api/v1/auth/tokens", json={"user": "leaver"}).json()
        with service.http(secret=made["secret"]) as leaver:
            assert leaver.get("/api/v1/experiments/").status_code == 200
            assert c.patch("/api/v1/auth/users/leaver", json={"disabled": True}).json()["disabled"] is True
            r = leaver.get("/api/v1/experiments/")
            assert r.status_code == 401 and "disabled" in r.json()["detail"]
        assert c.patch("/api/v1/auth/users/alice", json={"disabled": True}).status_code == 403


# ---- binding beyond loopback ------------------------------------------------------------------------
def test_up_beyond_loopback_is_refused_without_auth_and_starts_with_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATIH_")}
    port = free_port()
    refused = subprocess.run([sys.executable, "-m", "matih_lite", "up", "--host", "0.0.0.0", "--port", str(port)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "refusing to listen on 0.0.0.0" in refused.stderr
    (tmp_path / "matih.toml").write_text(textwrap.dedent(AUTH_TOML))
    proc = subprocess.Popen([sys.executable, "-m", "matih_lite", "up", "--host", "0.0.0.0", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.05)
        closed = httpx.get(f"http://127.0.0.1:{port}/api/v1/experiments/", timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert health.status_code == 200
    assert closed.status_code == 401
