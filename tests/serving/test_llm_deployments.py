"""LLM deployments end to end: the ``openai`` client against the ml-service, the ml-service against real
llama.cpp servers (SmolLM2-135M) through the vllm backend, every request through the same traffic manager
as predictions: A/B sticky by user, shadow, canaries both ways, the inference log, and the faults.

Two shared servers serve aliases ``smollm2-a`` (version 1) and ``smollm2-b`` (version 2); a test that
stops a server starts its own. Requests ask for a token or a few at temperature 0.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_helpers import register_model

import matih_lite as ml
from matih_lite.contracts.clock import now_ms
from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.serving.deployments import Deployments
from matih_lite.serving.flavors.llm import LanguageModel, save_llm
from matih_lite.serving.traffic import attach_traffic
from matih_lite.testing.llmserver import LlamaServer, llama_server_missing, running_servers, shared_server
from matih_lite.testing.processes import engine_missing
from matih_lite.testing.service import serve

pytestmark = pytest.mark.slow
T = "default"
HI = [{"role": "user", "content": "Say hi."}]
COUNTING = "Count from one to one hundred: one, two, three, four,"

try:
    import matih_vllm  # noqa: F401
    import openai
except ImportError as exc:  # pragma: no cover - depends on the environment
    _why = f"the LLM tests need matih-vllm and openai ({exc}); pip install -e 'backends/vllm[test]'"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        raise ImportError(_why) from exc
    pytest.skip(_why, allow_module_level=True)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    why = llama_server_missing()
    if why and not {"smollm2-a", "smollm2-b"} <= set(running_servers()):
        engine_missing(why)
    base = tmp_path_factory.getbasetemp()
    return shared_server("smollm2-a", base), shared_server("smollm2-b", base)


def config(urls: list[str], canary: str = "") -> str:
    listed = ", ".join(f'"{u}"' for u in urls)
    return (f'[profiles.lite]\nllm = {{ backend = "vllm", url = [{listed}] }}\n\n'
            '[models."*"]\nproduction_approvers = []\n\n'
            f'[canary]\ntick_seconds = 0\n{canary}')


def register_llm(host: Host, name: str, served: str, folder: Path, **sampling) -> int:
    save_llm(LanguageModel("HuggingFaceTB/SmolLM2-135M-Instruct", served_model_name=served,
                           sampling={"temperature": 0.0, "max_tokens": 4, **sampling}), folder)
    with ml.start_run(experiment="llm") as run:
        ml.log_artifacts(folder, "model")
    registry = Registry(host)
    version = registry.register_version(LOCAL_ADMIN, name, run_id=run.run_id, path="model").version
    registry.promote(LOCAL_ADMIN, name, version, "Staging")  # where a version may take live traffic
    return version


@pytest.fixture
def host(hermetic, servers):
    a, b = servers
    (hermetic / "matih.toml").write_text(config([a.url, b.url]))
    h = Host.open()
    assert register_llm(h, "chat", "smollm2-a", hermetic / "v1") == 1
    assert register_llm(h, "chat", "smollm2-b", hermetic / "v2") == 2
    yield h
    h.close()


def deploy(url: str, **body) -> dict:
    made = httpx.post(f"{url}/api/v1/deployments", json={"model": "chat", **body}, timeout=30)
    assert made.status_code == 201, made.text
    return made.json()


def client_for(url: str, deployment: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/api/v1/deployments/{deployment}", api_key="not-needed-on-lite",
                         max_retries=0, timeout=60)


def wait_until(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


# ---- the OpenAI shape -------------------------------------------------------------------------------
def test_the_openai_client_chats_completes_and_streams_through_a_deployment(host):
    with serve(host) as url:
        deploy(url, name="assistant", version=1)
        client = client_for(url, "assistant")
        raw = client.chat.completions.with_raw_response.create(model="assistant", messages=HI, max_tokens=3)
        answer = raw.parse()
        assert raw.headers["x-variant"] == "v1" and raw.headers["x-model-version"] == "1"
        assert answer.model == "smollm2-a" and answer.choices[0].message.role == "assistant"
        assert answer.choices[0].message.content and 1 <= answer.usage.completion_tokens <= 3

        text = client.completions.create(model="assistant", prompt=COUNTING, max_tokens=3)
        assert text.choices[0].finish_reason == "length" and text.usage.completion_tokens == 3

        chunks = list(client.chat.completions.create(model="assistant", messages=HI, max_tokens=3, stream=True,
                                                     stream_options={"include_usage": True}))
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None and 1 <= chunks[-1].usage.completion_tokens <= 3

        plain = list(client.completions.create(model="assistant", prompt=COUNTING, max_tokens=3, stream=True))
        assert "".join(c.choices[0].text for c in plain if c.choices) == text.choices[0].text
        assert all(getattr(c, "usage", None) is None for c in plain)  # not asked for, not sent

        # The version's sampling fills what the request leaves out (max_tokens = 4 there).
        assert client.completions.create(model="x", prompt=COUNTING).usage.completion_tokens == 4


def test_a_prompt_over_the_context_is_a_400_with_the_servers_reason(host):
    with serve(host) as url:
        deploy(url, name="assistant", version=1)
        client = client_for(url, "assistant")
        too_long = "word " * 2300
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model="x", messages=[{"role": "user", "content": too_long}],
                                               max_tokens=2, stream=stream)
            assert caught.value.status_code == 400 and caught.value.code == "context_length_exceeded"
            problem = caught.value.response.json()
            assert problem["title"] == "Invalid input" and "maximum context length is 2048" in problem["detail"]
        stats = httpx.get(f"{url}/api/v1/deployments/assistant/stats").json()["variants"]
        assert stats.get("v1", {}).get("errors", 0) == 0  # the caller's fault, not the model's


# ---- routing ------------------------------------------------------------------------------------------
def test_ab_between_two_llm_versions_is_sticky_by_user_or_header(host):
    with serve(host) as url:
        deploy(url, name="assistant", split="1=50,2=50")
        client = client_for(url, "assistant")
        users = [f"user-{i}" for i in range(10)]

        def served(user=None, key=None):
            extra = {"X-Request-Key": key} if key else None
            raw = client.chat.completions.with_raw_response.create(model="x", messages=HI, max_tokens=1,
                                                                   user=user, extra_headers=extra)
            return raw.headers["x-variant"], raw.parse().model

        first = {u: served(user=u) for u in users}
        assert {v for v, _ in first.values()} == {"v1", "v2"}
        assert all(model == {"v1": "smollm2-a", "v2": "smollm2-b"}[v] for v, model in first.values())
        assert {u: served(user=u) for u in users} == first
        # The header wins over the user field: the same key, the same variant, whoever sends it.
        keyed = {served(user=u, key="team-blue")[0] for u in users[:4]}
        assert len(keyed) == 1
        stats = httpx.get(f"{url}/api/v1/deployments/assistant/stats").json()["variants"]
        assert stats["v1"]["requests"] + stats["v2"]["requests"] == 24
        assert stats["v1"]["errors"] == stats["v2"]["errors"] == 0


def test_a_shadow_gets_a_copy_after_the_answer_and_is_compared(host):
    with serve(host) as url:
        deploy(url, name="assistant", version=1, shadows=[2])
        client = client_for(url, "assistant")
        answer = client.completions.create(model="x", prompt=COUNTING, max_tokens=3)
        assert answer.model == "smollm2-a"
        list(client.chat.completions.create(model="x", messages=HI, max_tokens=3, stream=True))

        def shadowed():
            s = httpx.get(f"{url}/api/v1/deployments/assistant/stats").json()["shadows"].get("v2")
            return s if s and s["requests"] == 2 else None

        shadow = wait_until(shadowed)
        # The same weights at temperature 0: the shadow says exactly what the primary said.
        assert shadow["errors"] == 0 and shadow["agreement_rate"] == 1.0
        stats = httpx.get(f"{url}/api/v1/deployments/assistant/stats").json()["variants"]
        assert list(stats) == ["v1"] and stats["v1"]["requests"] == 2


# ---- the inference log ------------------------------------------------------------------------------------
def test_the_inference_log_records_tokens_time_to_first_token_and_tokens_per_second(host):
    start = now_ms()
    with serve(host) as url:
        deploy(url, name="assistant", version=1)
        client = client_for(url, "assistant")
        client.completions.create(model="x", prompt=COUNTING, max_tokens=4)
        list(client.completions.create(model="x", prompt=COUNTING, max_tokens=4, stream=True))
        window = attach_traffic(host).inference_log.window("assistant", start, now_ms() + 1)
    assert len(window) == 2
    rows = window.table.to_pylist()
    for row in rows:
        assert row["features.prompt_tokens"] >= 10 and row["prediction"] == 4
        assert row["outputs.finish_reason"] == "length" and row["variant"] == "v1"
        assert 0 < row["outputs.ttft_ms"] <= row["latency_ms"] + 1e-6
        assert row["outputs.tokens_per_s"] == pytest.approx(4 * 1000 / row["latency_ms"], rel=1e-3)
    unstreamed, streamed = rows
    assert unstreamed["outputs.ttft_ms"] == pytest.approx(unstreamed["latency_ms"], rel=1e-3)
    assert streamed["outputs.ttft_ms"] < streamed["latency_ms"]  # the first token came before the last


def test_a_caller_that_leaves_mid_stream_stops_the_generation_and_is_logged_as_disconnected(host):
    start = now_ms()
    with serve(host) as url:
        deploy(url, name="assistant", version=1)
        body = {"model": "x", "prompt": COUNTING, "max_tokens": 200, "stream": True}
        with httpx.stream("POST", f"{url}/api/v1/deployments/assistant/completions", json=body, timeout=60) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            lines = resp.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
        manager = attach_traffic(host)
        rows = wait_until(lambda: manager.inference_log.window("assistant", start, now_ms() + 1).table.to_pylist())
    assert [r["outputs.finish_reason"] for r in rows] == ["disconnected"]
    assert rows[0]["outputs.ttft_ms"] <= rows[0]["latency_ms"]
    assert manager.stats(T, "assistant")["variants"].get("v1", {}).get("requests", 0) == 0  # no canary sample


class Doubling:
    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64)[:, 0] * 2.0


def test_one_profile_serves_a_tabular_model_and_an_llm_side_by_side(host):
    register_model(host, "doubler", Doubling(), "pyfunc", np.array([[1.0, 2.0]]))
    with serve(host) as url:
        deploy(url, name="assistant", version=1)
        made = httpx.post(f"{url}/api/v1/deployments", json={"name": "double", "model": "doubler", "version": 1})
        assert made.status_code == 201, made.text
        predicted = httpx.post(f"{url}/api/v1/deployments/double/predict", json={"inputs": [[1.5, 0.0]]})
        assert predicted.status_code == 200 and predicted.json()["predictions"] == [3.0]
        chat = client_for(url, "assistant").chat.completions.create(model="x", messages=HI, max_tokens=1)
        assert chat.model == "smollm2-a"
        ready = httpx.get(f"{url}/ready").json()["slots"]
        assert ready["serving"]["ok"] and ready["llm"]["ok"]


# ---- canaries -----------------------------------------------------------------------------------------------
CANARY = ("initial_percent = 50\nstep_percent = 50\ninterval_seconds = 60\nmin_requests = 4\n"
          "max_error_rate_delta = 0.1\nmax_p99_ratio = 3\np99_floor_ms = 2000\n")


def _traffic(client, n: int) -> dict[str, int]:
    """``n`` unkeyed chat requests; the count of answers (or of failures, as ``!vN``) by variant."""
    seen: dict[str, int] = {}
    for _ in range(n):
        try:
            raw = client.chat.completions.with_raw_response.create(model="x", messages=HI, max_tokens=1)
            variant = raw.headers["x-variant"]
        except openai.APIStatusError as exc:
            assert exc.status_code == 503, exc.response.text
            problem = exc.response.json()
            variant = "!" + (problem.get("variant") or f"v{problem['version']}")
        seen[variant] = seen.get(variant, 0) + 1
    return seen


def test_a_candidate_whose_server_goes_down_is_rolled_back_and_ready_names_the_server(hermetic, servers, tmp_path):
    a, _ = servers
    with LlamaServer(tmp_path / "c", alias="smollm2-c") as candidate_server:
        (hermetic / "matih.toml").write_text(config([a.url, candidate_server.url], CANARY))
        h = Host.open()
        try:
            register_llm(h, "chat", "smollm2-a", hermetic / "v1")
            register_llm(h, "chat", "smollm2-c", hermetic / "v2")
            with serve(h) as url:
                deploy(url, name="assistant", version=1, canary=True)
                changed = httpx.patch(f"{url}/api/v1/deployments/assistant", json={"version": 2}, timeout=30)
                assert changed.json()["canary"]["status"] == "running", changed.text
                client = client_for(url, "assistant")
                assert set(_traffic(client, 6)) <= {"v1", "v2"}  # both answer while the server is up

                candidate_server.stop()
                seen = _traffic(client, 16)
                assert seen.get("!v2", 0) >= 4 and "!v1" not in seen
                ready = httpx.get(f"{url}/ready")
                assert ready.status_code == 503 and candidate_server.url in ready.json()["slots"]["llm"]["detail"]

                attach_traffic(h).step(now=now_ms() + 1000)  # a crossed threshold does not wait
                d = Deployments(h).get(LOCAL_ADMIN, "assistant")
                assert d.canary.status == "rolled_back" and [(r.version, r.weight) for r in d.routes] == [(1, 100.0)]
                assert "error rate" in d.canary.reason
                assert _traffic(client, 4) == {"v1": 4}
        finally:
            h.close()


def test_a_healthy_candidate_is_promoted(hermetic, servers):
    a, b = servers
    (hermetic / "matih.toml").write_text(config([a.url, b.url], CANARY))
    h = Host.open()
    try:
        register_llm(h, "chat", "smollm2-a", hermetic / "v1")
        register_llm(h, "chat", "smollm2-b", hermetic / "v2")
        with serve(h) as url:
            deploy(url, name="assistant", version=1, canary=True)
            httpx.patch(f"{url}/api/v1/deployments/assistant", json={"version": 2}, timeout=30)
            client = client_for(url, "assistant")
            seen = {}
            while seen.get("v2", 0) < 4 or seen.get("v1", 0) < 1:  # the candidate needs min_requests
                for variant, n in _traffic(client, 4).items():
                    seen[variant] = seen.get(variant, 0) + n
                assert sum(seen.values()) <= 40 and not any(v.startswith("!") for v in seen)
            attach_traffic(h).step(now=now_ms() + 61_000)
            d = Deployments(h).get(LOCAL_ADMIN, "assistant")
            assert d.canary.status == "promoted" and [(r.version, r.weight) for r in d.routes] == [(2, 100.0)]
            assert Registry(h).get_version(LOCAL_ADMIN, "chat", 2).stage == "Production"
            assert _traffic(client, 2) == {"v2": 2}
    finally:
        h.close()
