"""``llm = { backend = "vllm", url = "http://vllm:8000" }``: the llm slot on vLLM servers' OpenAI API.

``url`` is one server or a list of them (vLLM serves one model per process, so two LLMs are two
servers); a version goes to the server whose ``/v1/models`` lists its ``served_model_name``. Any
OpenAI-compatible server that answers ``/v1/models``, ``/v1/completions`` and
``/v1/chat/completions`` works the same (llama.cpp's server is what the tests run). Plain HTTP:
vLLM itself is never imported, and the settings are validated without importing httpx.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from matih_lite.contracts import BackendContext
from matih_lite.hookspecs import hookimpl

_URL = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")


def server_url(url: str) -> str:
    """A server's base URL as the backend keeps it: no trailing ``/`` or ``/v1`` (the API paths add it).
    Raises ValueError for anything that is not ``http(s)://HOST[:PORT][/PATH]``."""
    if not isinstance(url, str) or not _URL.match(url.strip()):
        raise ValueError(f"url: {url!r} is not an http(s) URL; write e.g. 'http://vllm:8000'")
    base = url.strip().rstrip("/")
    return base.removesuffix("/v1")


class VllmSettings(msgspec.Struct, forbid_unknown_fields=True):
    url: str | list[str]
    """The server (``http://vllm:8000``, ``/v1`` optional), or a list of servers."""
    api_key: str = ""
    """Sent as ``Authorization: Bearer ...`` (a vLLM started with ``--api-key``); use ``${VLLM_API_KEY}``."""
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    """How long one answer may take (the gap between two streamed chunks, when streaming)."""
    connect_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256
    """Connections open at once to each server: requests in flight (vLLM batches them itself)."""

    def __post_init__(self) -> None:
        urls = [self.url] if isinstance(self.url, str) else list(self.url)
        if not urls:
            raise ValueError("url: name at least one server")
        self.url = [server_url(u) for u in urls]
        if len(set(self.url)) != len(self.url):
            raise ValueError("url: a server is listed twice")

    @property
    def servers(self) -> list[str]:
        return list(self.url)


def create_backend(settings: VllmSettings, context: BackendContext):
    from matih_vllm.backend import VllmBackend

    return VllmBackend(settings)


@hookimpl
def register_backends(register):
    register("llm", "vllm", create_backend, settings=VllmSettings,
             summary="LLM versions on vLLM (or any OpenAI-compatible) servers: completions, chat, streaming")
