"""The ``llm`` flavor and LLM deployments without a server: a version records what a server runs, registers like
any model (SDK, CLI, REST), and its deployment says plainly where its requests go and what it needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient
from serving_helpers import register_model

import matih_lite as ml
from matih_lite.errors import InvalidInput
from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.registry.client import RegistryClient
from matih_lite.service import create_app
from matih_lite.serving.flavors.llm import LanguageModel, LLMFlavor, check_sampling, llm_model, read_llm, save_llm

SMOLLM = LanguageModel("HuggingFaceTB/SmolLM2-135M-Instruct", served_model_name="smollm2",
                       sampling={"temperature": 0.2, "max_tokens": 64, "stop": ["\n\n"]}, max_model_len=2048)


class Doubling:
    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64)[:, 0] * 2.0


def test_a_version_records_the_reference_the_served_name_and_default_sampling(tmp_path):
    folder = save_llm(SMOLLM, tmp_path / "model")
    doc = yaml.safe_load((folder / "MLmodel").read_text())
    assert list(doc["flavors"]) == ["llm"]
    assert doc["flavors"]["llm"] == {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "served_model_name": "smollm2",
                                     "sampling": {"temperature": 0.2, "max_tokens": 64, "stop": ["\n\n"]},
                                     "max_model_len": 2048}
    assert read_llm(folder) == SMOLLM
    spec = llm_model(folder, "t/chat/3")
    assert (spec.key, spec.served_model_name, spec.sampling["max_tokens"]) == ("t/chat/3", "smollm2", 64)


def test_the_served_name_defaults_to_the_reference(tmp_path):
    LLMFlavor().save({"model": "/models/qwen2.5-0.5b"}, tmp_path)
    assert read_llm(tmp_path).served_model_name == "/models/qwen2.5-0.5b"


@pytest.mark.parametrize("spec, why", [
    (LanguageModel(""), "'model'"),
    (LanguageModel("m", sampling={"temperature": -1}), "temperature"),
    (LanguageModel("m", sampling={"max_tokens": 2.5}), "max_tokens"),
    (LanguageModel("m", sampling={"stop": [1]}), "stop"),
    (LanguageModel("m", sampling={"messages": []}), "not a sampling parameter"),
    (LanguageModel("m", max_model_len=0), "max_model_len"),
])
def test_a_bad_spec_is_refused_naming_the_field(tmp_path, spec, why):
    with pytest.raises(InvalidInput, match=why):
        save_llm(spec, tmp_path)
    assert not (tmp_path / "MLmodel").exists()


@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 2**32))
def test_sampling_numbers_are_kept_in_range_or_refused(temperature, max_tokens):
    ok = 0 <= temperature <= 100 and 1 <= max_tokens <= 2**31
    try:
        checked = check_sampling({"temperature": temperature, "max_tokens": max_tokens, "top_k": 20})
    except InvalidInput:
        assert not ok
    else:
        assert ok and checked == {"temperature": temperature, "max_tokens": max_tokens, "top_k": 20}


def test_it_is_not_loaded_in_process(tmp_path):
    save_llm(SMOLLM, tmp_path)
    with pytest.raises(InvalidInput, match="llm slot"):
        LLMFlavor().load(tmp_path)


def _logged(host: Host, tmp_path: Path) -> str:
    """A run of the SDK with an llm model logged under ``model/``; returns its id."""
    save_llm(SMOLLM, tmp_path / "model")
    with ml.start_run(experiment="chat") as run:
        ml.log_artifacts(tmp_path / "model", "model")
    return run.run_id


@pytest.mark.slow
def test_registered_from_the_sdk_the_cli_and_rest_with_its_flavor_read_from_the_mlmodel(hermetic, tmp_path):
    host = Host.open()
    run_id = _logged(host, tmp_path)
    with RegistryClient(host=host) as models:
        assert models.register_version("chat", run_id=run_id, path="model").flavor == "llm"
    cli = subprocess.run([sys.executable, "-m", "matih_lite", "models", "register", "chat", "--run", run_id,
                          "--json"], cwd=hermetic, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["flavor"] == "llm" and json.loads(cli.stdout)["version"] == 2
    with TestClient(create_app(host)) as client:
        made = client.post("/api/v1/models/chat/versions", json={"run_id": run_id, "path": "model"})
        assert made.status_code in (200, 201), made.text
        assert (made.json()["version"], made.json()["flavor"]) == (3, "llm")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One service for the module's requests (each test only reads): an llm and a tabular deployment."""
    work = tmp_path_factory.mktemp("llm-routes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(work))
        for var in ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN"):
            mp.delenv(var, raising=False)
        mp.chdir(work)
        host = Host.open()
        run_id = _logged(host, work)
        RegistryClient(host=host).register_version("chat", run_id=run_id, path="model")
        Registry(host).promote(LOCAL_ADMIN, "chat", 1, "Staging")
        register_model(host, "doubler", Doubling(), "pyfunc", np.array([[1.0, 2.0]]))
        with TestClient(create_app(host)) as c:
            assert c.post("/api/v1/deployments", json={"name": "assistant", "model": "chat", "version": 1}
                          ).status_code == 201
            assert c.post("/api/v1/deployments", json={"name": "double", "model": "doubler", "version": 1}
                          ).status_code == 201
            yield c
        host.close()


def test_without_an_llm_backend_the_deployment_answers_503_saying_how_to_add_one(client):
    answer = client.post("/api/v1/deployments/assistant/chat/completions",
                         json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "llm slot" in body["detail"] and 'backend = \\"vllm\\"' not in body["detail"]
    assert 'llm = { backend = "vllm"' in body["detail"] and body["error"]["type"] == "server_error"
    assert client.get("/ready").json()["slots"]["llm"] is None  # an empty slot, not a failing one


def test_each_kind_of_deployment_points_at_its_own_route(client):
    wrong = client.post("/api/v1/deployments/double/chat/completions",
                        json={"messages": [{"role": "user", "content": "hi"}]})
    assert wrong.status_code == 400 and "/api/v1/deployments/double/predict" in wrong.json()["detail"]
    assert wrong.json()["error"]["type"] == "invalid_request_error"
    assert client.post("/api/v1/deployments/double/predict", json={"inputs": [[1.0, 2.0]]}).status_code == 200


@pytest.mark.parametrize("body, field", [({"messages": []}, "messages"), ({"prompt": ""}, "prompt"),
                                         ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
                                         ({"prompt": 3}, "prompt")])
def test_bad_requests_are_400_problems_naming_the_field(client, body, field):
    path = "chat/completions" if "messages" in body else "completions"
    answer = client.post(f"/api/v1/deployments/assistant/{path}", json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.text and answer.json()["error"]["message"]


def test_the_openapi_document_describes_both_routes(client):
    doc = client.get("/schema/openapi.json").json()
    for path, kind in (("/api/v1/deployments/{name}/chat/completions", "ChatCompletion"),
                       ("/api/v1/deployments/{name}/completions", "Completion")):
        post = doc["paths"][path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        fields = doc["components"]["schemas"][body]["properties"]
        assert {"model", "stream", "max_tokens", "temperature", "user"} <= set(fields)
        assert ("messages" in fields) == (kind == "ChatCompletion") and ("prompt" in fields) == (kind == "Completion")
        answer = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert answer == kind and "usage" in doc["components"]["schemas"][answer]["properties"]
        assert {"400", "404", "503"} <= set(post["responses"])
