"""matih-vllm against real OpenAI-compatible servers (llama.cpp's): the llm-slot kit unchanged, and what
only a backend of several servers can show; its settings and error parsing without a server."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matih_vllm.backend import VllmBackend, refusal, server_error
from matih_vllm.plugin import VllmSettings

from matih_lite.contracts.llm import CompletionRequest, LLMModel
from matih_lite.errors import ConfigError, InvalidInput, StoreError
from matih_lite.host import Host
from matih_lite.testing.llm import COUNTING, LLMBackendContract
from matih_lite.testing.llmserver import LlamaServer


def backend_on(*urls: str, **settings) -> VllmBackend:
    return VllmBackend(msgspec.convert({"url": list(urls), **settings}, VllmSettings))


class TestVllmContractOnLlamaCpp(LLMBackendContract):
    @pytest.fixture
    def backend(self, llama_a, llama_b):
        backend = backend_on(llama_a.url, llama_b.url)
        yield backend
        backend.close()

    @pytest.fixture
    def served_name(self):
        return "smollm2-b"  # on the second server: the backend must look past the first


# ---- several servers, and one that goes down ------------------------------------------------------
@pytest.mark.slow
def test_each_version_goes_to_the_server_that_serves_its_name(llama_a, llama_b):
    backend = backend_on(llama_a.url + "/v1", llama_b.url)
    try:
        a = backend.load(LLMModel("t/m/1", "HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-a"))
        b = backend.load(LLMModel("t/m/2", "HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-b"))
        assert (a.server, b.server) == (llama_a.url, llama_b.url)
        request = CompletionRequest(prompt=COUNTING, max_tokens=1, temperature=0.0)
        assert asyncio.run(backend.complete("t/m/1", request)).model == "smollm2-a"
        assert asyncio.run(backend.complete("t/m/2", request)).model == "smollm2-b"
        health = backend.health()
        assert health.ok and "smollm2-a" in health.detail and "smollm2-b" in health.detail
    finally:
        backend.close()


@pytest.mark.slow
def test_a_server_that_goes_down_is_a_store_error_counted_and_named_then_recovers(tmp_path):
    server = LlamaServer(tmp_path, alias="smollm2-down").start()
    backend = backend_on(server.url, connect_timeout_seconds=1.0)
    try:
        backend.load(LLMModel("t/m/1", "smollm2", "smollm2-down"))
        request = CompletionRequest(prompt=COUNTING, max_tokens=1, temperature=0.0)
        assert asyncio.run(backend.complete("t/m/1", request)).usage.completion_tokens == 1
        server.stop()
        with pytest.raises(StoreError, match=server.url):
            asyncio.run(backend.complete("t/m/1", request))
        with pytest.raises(StoreError, match="cannot be reached"):
            asyncio.run(_drain(backend.stream("t/m/1", request)))
        info = backend.loaded()["t/m/1"]
        assert (info.requests, info.errors) == (1, 2) and info.last_error
        health = backend.health()
        assert not health.ok and server.url in health.detail
        with pytest.raises(StoreError, match="no LLM server answered"):
            backend.load(LLMModel("t/m/2", "smollm2", "smollm2-down"))
        server.start()  # the same port: the loaded version answers again
        assert asyncio.run(backend.complete("t/m/1", request)).usage.completion_tokens == 1
    finally:
        backend.close()
        server.stop()


async def _drain(chunks):
    return [c async for c in chunks]


@pytest.mark.slow
def test_the_host_builds_it_from_the_profiles_llm_slot(hermetic_dir, llama_a):
    (hermetic_dir / "matih.toml").write_text(f'[profiles.lite]\nllm = {{ backend = "vllm", url = "{llama_a.url}" }}\n')
    host = Host.open(str(hermetic_dir / "matih.toml"))
    try:
        assert isinstance(host.backend("llm"), VllmBackend)
        assert host.health(["llm"])["llm"].ok
    finally:
        host.close()


# ---- settings and errors, no server needed --------------------------------------------------------
@pytest.fixture
def hermetic_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_settings_take_one_url_or_several_without_the_v1_suffix():
    one = msgspec.convert({"url": "http://vllm:8000/v1/"}, VllmSettings)
    assert one.servers == ["http://vllm:8000"]
    two = msgspec.convert({"url": ["http://a:8000", "https://b.example/llm/v1"]}, VllmSettings)
    assert two.servers == ["http://a:8000", "https://b.example/llm"]


@pytest.mark.parametrize("url, why", [("ftp://vllm:8000", "not an http"), ([], "at least one"),
                                      (["http://a:1", "http://a:1/v1"], "listed twice")])
def test_bad_settings_are_a_config_error_naming_the_slot(hermetic_dir, url, why):
    # A JSON string or array of strings is TOML too.
    (hermetic_dir / "matih.toml").write_text(
        f'[profiles.lite]\nllm = {{ backend = "vllm", url = {msgspec.json.encode(url).decode()} }}\n')
    with pytest.raises(ConfigError, match=why) as caught:
        Host.open(str(hermetic_dir / "matih.toml"))
    assert "profiles.lite.llm" in caught.value.message


def test_error_answers_in_each_servers_shape_become_openai_errors():
    vllm = b'{"error": {"message": "This model\'s maximum context length is 2048 tokens.", ' \
           b'"type": "BadRequestError", "param": null, "code": 400}}'
    assert server_error(vllm)["message"].startswith("This model's maximum context length")
    older = b'{"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}'
    assert server_error(older) == {"message": "too long", "type": "BadRequestError", "param": None, "code": 400}
    fastapi = b'{"detail": [{"loc": ["body", "max_tokens"], "msg": "must be positive", "type": "value_error"}]}'
    assert server_error(fastapi)["message"] == "max_tokens: must be positive"
    assert server_error(b"<html>Bad Gateway</html>")["message"] == "<html>Bad Gateway</html>"


def test_refusals_are_the_callers_and_the_rest_the_servers():
    refused = refusal("http://v:1", "m", 400, b'{"error": {"message": "context too long", "code": '
                                                b'"context_length_exceeded"}}')
    assert isinstance(refused, InvalidInput) and "context too long" in refused.message
    assert refused.detail["error"]["code"] == "context_length_exceeded"
    assert isinstance(refusal("http://v:1", "m", 503, b"busy"), StoreError)
    assert "api_key" in refusal("http://v:1", "m", 401, b"").message
    assert "does not serve 'm'" in refusal("http://v:1", "m", 404, b'{"message": "gone"}').message


@given(st.binary(max_size=300))
def test_any_error_body_parses_to_a_message(content):
    error = server_error(content)
    assert isinstance(error["message"], str) and set(error) == {"message", "type", "param", "code"}
