"""The ``llm`` slot: what an LLM server backend (vLLM, any OpenAI-compatible server) offers, in OpenAI's shape.

A version of flavor ``llm`` reaches the backend as an :class:`LLMModel` (the reference the server was
started with, the name it serves it under, default sampling). Requests and answers are OpenAI's
completions and chat completions, streamed as chunks; fields a server understands beyond these
(``top_k``, ``response_format``, ``tools``...) travel in ``extra`` as they came.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

import msgspec

from matih_lite.contracts.records import Health


class LLMModel(msgspec.Struct, frozen=True):
    """One ``llm`` version as the backend is asked to serve it, under ``key`` (``tenant/model/version``)."""

    key: str
    model: str
    """A Hugging Face id or a path: what the server was started with."""
    served_model_name: str
    """The name the server lists in ``/v1/models`` and is asked for by."""
    sampling: dict[str, Any] = {}
    """Defaults for fields a request leaves out (``temperature``, ``max_tokens``...)."""
    max_model_len: int | None = None
    """The context window in tokens, when the version records it (else the server's word)."""


class ServedLLM(msgspec.Struct):
    """An ``llm`` version a backend holds, and how it has fared since it was loaded."""

    key: str
    served_model_name: str
    server: str
    """The base URL of the server that serves it."""
    loaded_at: int
    max_model_len: int | None = None
    flavor: str = "llm"
    requests: int = 0
    rejected: int = 0
    """Refused as InvalidInput (a prompt over the context, bad parameters)."""
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_error: str = ""


class Sampling(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Fields completions and chat completions share (OpenAI's names)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    extra: dict[str, Any] = {}


class CompletionRequest(Sampling, kw_only=True, omit_defaults=True):
    prompt: str | list[Any]


class ChatMessage(msgspec.Struct, omit_defaults=True):
    role: str
    content: str | list[Any] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None


class ChatRequest(Sampling, kw_only=True, omit_defaults=True):
    messages: list[ChatMessage]


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionChoice(msgspec.Struct):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: Any = None


class ChatChoice(msgspec.Struct):
    index: int
    message: ChatMessage
    finish_reason: str | None = None
    logprobs: Any = None


class Completion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    object: str = "text_completion"


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    object: str = "chat.completion"


class ChatDelta(msgspec.Struct, omit_defaults=True):
    """What a chat chunk adds to its message (the first names the role, the rest carry content)."""

    role: str | None = None
    content: str | None = None
    tool_calls: list[Any] | None = None


class ChunkChoice(msgspec.Struct):
    """One choice's piece of a streamed answer: ``text`` (completions) or ``delta`` (chat)."""

    index: int
    text: str | None = None
    delta: ChatDelta | None = None
    finish_reason: str | None = None
    logprobs: Any = None


class Chunk(msgspec.Struct):
    """A streamed piece (``text_completion`` or ``chat.completion.chunk``); the last may carry only ``usage``."""

    id: str
    created: int
    model: str
    object: str
    choices: list[ChunkChoice] = []
    usage: Usage | None = None


@runtime_checkable
class LLMBackend(Protocol):
    """Serves ``llm`` versions from LLM servers. Generation is async (a server streams for seconds, many at
    once); the rest is sync and safe to call from many threads.

    Generating raises NotFound for a key not loaded, InvalidInput when the server refuses the request (a
    prompt over the model's context: the server's reason, OpenAI's ``error`` object in ``detail``),
    StoreError when the server is down or fails. Proved by :class:`matih_lite.testing.llm.LLMBackendContract`.
    """

    def health(self) -> Health:
        """Whether every configured server answers; never raises."""

    def load(self, model: LLMModel) -> ServedLLM:
        """Find the server that serves ``model.served_model_name``; the same model again is a no-op. Raises
        NotFound when no server serves it, StoreError when none answers."""

    async def complete(self, key: str, request: CompletionRequest) -> Completion:
        """A text completion (``request.stream`` is ignored)."""

    async def chat(self, key: str, request: ChatRequest) -> ChatCompletion:
        """A chat completion (``request.stream`` is ignored)."""

    def stream(self, key: str, request: CompletionRequest | ChatRequest) -> AsyncIterator[Chunk]:
        """The answer as chunks (an async generator; closing it stops the generation); the last carries
        ``usage``. An error before the first chunk raises at the first ``__anext__``."""

    def unload(self, key: str) -> None:
        """Forget a loaded version; unknown keys are ignored."""

    def loaded(self) -> dict[str, ServedLLM]:
        """Every loaded version by key, with its counters (copies)."""

    def close(self) -> None:
        """Release connections (idempotent)."""
