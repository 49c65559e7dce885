"""The llm-slot contract: every LLMBackend passes these, against a real OpenAI-compatible server.

Override ``backend`` (built on servers that are up), ``served_name`` (a name one of them serves) and,
when it is not 2048, ``context_tokens`` (that model's context window). Requests ask for a handful of
tokens at temperature 0, so a 135M-parameter model on a CPU answers the suite in seconds. The suite
is slow-marked: each test talks to a real model.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from matih_lite.contracts.llm import (
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    Completion,
    CompletionRequest,
    LLMBackend,
    LLMModel,
    ServedLLM,
)
from matih_lite.errors import InvalidInput, NotFound

COUNTING = "Count from one to one hundred: one, two, three, four,"
"""A prompt a small model continues for longer than any test lets it."""


def chat(text: str, **kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage("user", text)], temperature=0.0, **kwargs)


async def collect(chunks: Any) -> list[Any]:
    return [c async for c in chunks]


@pytest.mark.slow
class LLMBackendContract:
    """Override ``backend``, ``served_name`` and (if not 2048) ``context_tokens``."""

    @pytest.fixture
    def backend(self) -> Any:
        raise NotImplementedError("override the 'backend' fixture to build your llm backend on running servers")

    @pytest.fixture
    def served_name(self) -> str:
        raise NotImplementedError("override 'served_name': a model name one of the backend's servers serves")

    @pytest.fixture
    def context_tokens(self) -> int:
        return 2048

    def model(self, name: str, key: str = "t/chat/1", **kwargs: Any) -> LLMModel:
        return LLMModel(key=key, model=f"hf/{name}", served_model_name=name, **kwargs)

    # ---- loading ----------------------------------------------------------------------------------
    def test_backend_satisfies_the_protocol_and_is_healthy(self, backend):
        assert isinstance(backend, LLMBackend)
        health = backend.health()
        assert health.ok, health.detail

    def test_load_finds_the_server_that_serves_the_name(self, backend, served_name):
        info = backend.load(self.model(served_name))
        assert isinstance(info, ServedLLM)
        assert info.key == "t/chat/1" and info.served_model_name == served_name and info.server.startswith("http")
        assert set(backend.loaded()) == {"t/chat/1"}

    def test_a_name_no_server_serves_is_not_found_and_says_what_they_serve(self, backend, served_name):
        with pytest.raises(NotFound, match=served_name):
            backend.load(self.model("no-such-model-anywhere"))
        assert backend.loaded() == {}

    def test_loading_the_same_model_again_is_a_no_op(self, backend, served_name):
        first = backend.load(self.model(served_name))
        again = backend.load(self.model(served_name))
        assert again.loaded_at == first.loaded_at

    # ---- generating -------------------------------------------------------------------------------
    def test_completion_in_openai_shape_with_usage(self, backend, served_name):
        backend.load(self.model(served_name))
        answer = asyncio.run(backend.complete("t/chat/1", CompletionRequest(prompt=COUNTING, max_tokens=3,
                                                                            temperature=0.0)))
        assert isinstance(answer, Completion) and answer.object == "text_completion"
        assert len(answer.choices) == 1 and isinstance(answer.choices[0].text, str) and answer.choices[0].text
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage is not None and answer.usage.completion_tokens == 3
        assert answer.usage.prompt_tokens > 5
        assert answer.usage.total_tokens == answer.usage.prompt_tokens + 3

    def test_chat_completion_in_openai_shape(self, backend, served_name):
        backend.load(self.model(served_name))
        answer = asyncio.run(backend.chat("t/chat/1", chat("Say hello.", max_tokens=4)))
        assert isinstance(answer, ChatCompletion) and answer.object == "chat.completion"
        message = answer.choices[0].message
        assert message.role == "assistant" and isinstance(message.content, str) and message.content
        assert answer.usage is not None and 1 <= answer.usage.completion_tokens <= 4

    def test_the_versions_sampling_fills_what_the_request_leaves_out(self, backend, served_name):
        backend.load(self.model(served_name, sampling={"max_tokens": 2, "temperature": 0.0}))
        short = asyncio.run(backend.complete("t/chat/1", CompletionRequest(prompt=COUNTING)))
        assert short.usage.completion_tokens == 2 and short.choices[0].finish_reason == "length"
        longer = asyncio.run(backend.complete("t/chat/1", CompletionRequest(prompt=COUNTING, max_tokens=5)))
        assert longer.usage.completion_tokens == 5

    def test_stream_yields_chunks_then_usage(self, backend, served_name):
        backend.load(self.model(served_name))
        chunks = asyncio.run(collect(backend.stream("t/chat/1", chat("Say hello.", max_tokens=4))))
        assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
        text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices if c.delta is not None)
        assert text
        assert chunks[-1].usage is not None and 1 <= chunks[-1].usage.completion_tokens <= 4
        assert chunks[-1].usage.prompt_tokens > 0

    def test_streamed_completion_matches_the_unstreamed_one(self, backend, served_name):
        backend.load(self.model(served_name))
        request = CompletionRequest(prompt=COUNTING, max_tokens=4, temperature=0.0)
        whole = asyncio.run(backend.complete("t/chat/1", request)).choices[0].text
        chunks = asyncio.run(collect(backend.stream("t/chat/1", request)))
        assert "".join(c.text or "" for chunk in chunks for c in chunk.choices) == whole
        assert chunks[-1].usage.completion_tokens == 4

    def test_requests_in_flight_together_all_answer(self, backend, served_name):
        backend.load(self.model(served_name))

        async def many() -> list[Any]:
            return await asyncio.gather(*(backend.complete("t/chat/1", CompletionRequest(
                prompt=f"{COUNTING} ({i})", max_tokens=2, temperature=0.0)) for i in range(4)))

        answers = asyncio.run(many())
        assert [a.usage.completion_tokens for a in answers] == [2, 2, 2, 2]

    # ---- refusals and counters --------------------------------------------------------------------
    def test_a_prompt_over_the_context_is_refused_with_the_servers_reason(self, backend, served_name,
                                                                           context_tokens):
        backend.load(self.model(served_name))
        too_long = "word " * (context_tokens + 200)
        with pytest.raises(InvalidInput, match="context") as caught:
            asyncio.run(backend.complete("t/chat/1", CompletionRequest(prompt=too_long, max_tokens=2)))
        assert caught.value.detail.get("error", {}).get("message")
        with pytest.raises(InvalidInput, match="context"):
            asyncio.run(collect(backend.stream("t/chat/1", chat(too_long, max_tokens=2))))
        info = backend.loaded()["t/chat/1"]
        assert info.rejected == 2 and info.errors == 0

    def test_unknown_key_is_not_found(self, backend):
        with pytest.raises(NotFound):
            asyncio.run(backend.complete("never-loaded", CompletionRequest(prompt="hi", max_tokens=1)))
        with pytest.raises(NotFound):
            asyncio.run(collect(backend.stream("never-loaded", chat("hi", max_tokens=1))))

    def test_counters_count_requests_and_tokens(self, backend, served_name):
        backend.load(self.model(served_name))
        for _ in range(2):
            asyncio.run(backend.complete("t/chat/1", CompletionRequest(prompt=COUNTING, max_tokens=2,
                                                                       temperature=0.0)))
        asyncio.run(collect(backend.stream("t/chat/1", CompletionRequest(prompt=COUNTING, max_tokens=2,
                                                                         temperature=0.0))))
        info = backend.loaded()["t/chat/1"]
        assert (info.requests, info.rejected, info.errors) == (3, 0, 0)
        assert info.completion_tokens == 6 and info.prompt_tokens > 15
        snapshot = backend.loaded()["t/chat/1"]
        asyncio.run(backend.complete("t/chat/1", CompletionRequest(prompt="hi", max_tokens=1)))
        assert snapshot.requests == 3 and backend.loaded()["t/chat/1"].requests == 4

    def test_unload_forgets_and_ignores_unknown_keys(self, backend, served_name):
        backend.load(self.model(served_name))
        backend.unload("t/chat/1")
        backend.unload("t/chat/1")
        backend.unload("never-loaded")
        assert backend.loaded() == {}
        with pytest.raises(NotFound):
            asyncio.run(backend.complete("t/chat/1", CompletionRequest(prompt="hi", max_tokens=1)))
