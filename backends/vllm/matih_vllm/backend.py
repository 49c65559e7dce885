"""The :class:`~matih_lite.contracts.llm.LLMBackend` contract over vLLM's OpenAI-compatible HTTP API.

``load`` asks each configured server's ``/v1/models`` which names it serves (and vLLM's
``max_model_len``) and keeps the version on the one that serves its ``served_model_name``: a
server that falls back to its default model for an unknown name (llama.cpp's does) would
otherwise answer with the wrong model. Requests get the version's default sampling for the fields
they leave out. Streams ask for ``stream_options.include_usage`` so the last chunk carries the
token counts; a server that ignores it gets them counted here (a chunk per token, and the prompt
through the server's tokenizer endpoint when it has one). Every error says which server and why:
a refusal (HTTP 400/422: a prompt over the context) is InvalidInput with the server's reason and
OpenAI's ``error`` object in the detail; a server that is down, slow or failing is StoreError.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from matih_lite.contracts import Health
from matih_lite.contracts.llm import (
    ChatCompletion,
    ChatRequest,
    Chunk,
    Completion,
    CompletionRequest,
    LLMModel,
    ServedLLM,
    Usage,
)
from matih_lite.errors import InvalidInput, NotFound, StoreError

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode
_JSON = {"content-type": "application/json"}
_REFUSED = (400, 413, 422)


class _Loaded:
    __slots__ = ("info", "lock", "model")

    def __init__(self, model: LLMModel, info: ServedLLM) -> None:
        self.model = model
        self.info = info
        self.lock = threading.Lock()


class VllmBackend:
    """LLM versions on one or more OpenAI-compatible servers (see the module docstring)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.servers: list[str] = list(settings.servers)
        self._headers = {"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._timeout = httpx.Timeout(settings.timeout_seconds, connect=settings.connect_timeout_seconds)
        self._limits = httpx.Limits(max_connections=settings.max_connections * len(self.servers),
                                    max_keepalive_connections=min(settings.max_connections, 64) * len(self.servers))
        # trust_env off: a proxy from the environment must never see prompts meant for these servers.
        self._client = httpx.Client(timeout=self._timeout, limits=self._limits, headers=self._headers,
                                    trust_env=False)
        self._async_clients: weakref.WeakKeyDictionary[Any, httpx.AsyncClient] = weakref.WeakKeyDictionary()
        self._models: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        self._tokenizers: dict[str, str | None] = {}
        self._closed = False

    # ---- the servers ------------------------------------------------------------------------------
    def served_models(self, server: str, timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """What ``server`` lists in ``/v1/models``, by name. Raises StoreError when it does not answer."""
        doc = self._call("GET", server, "/v1/models", None, timeout=timeout)
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list):
            raise StoreError(f"the LLM server at {server} answered /v1/models without a 'data' list")
        return {str(m["id"]): m for m in data if isinstance(m, dict) and m.get("id")}

    def health(self) -> Health:
        parts, ok = [], True
        for server in self.servers:
            try:
                names = sorted(self.served_models(server, timeout=min(2.0, self.settings.timeout_seconds)))
                parts.append(f"{server} serves {', '.join(names) or 'nothing'}")
            except StoreError as exc:
                ok = False
                parts.append(exc.message)
        with self._lock:
            loaded = len(self._models)
        return Health(ok, "; ".join(parts) + f"; {loaded} version(s) loaded")

    # ---- loading ----------------------------------------------------------------------------------
    def load(self, model: LLMModel) -> ServedLLM:
        if not isinstance(model.key, str) or not model.key:
            raise InvalidInput("a serving key must be a non-empty string")
        name = model.served_model_name
        refused: list[str] = []
        listed: list[str] = []
        for server in self.servers:
            try:
                served = self.served_models(server)
            except StoreError as exc:
                refused.append(exc.message)
                continue
            entry = served.get(name)
            if entry is None:
                listed.append(f"{server} serves {', '.join(sorted(served)) or 'nothing'}")
                continue
            limit = entry.get("max_model_len")
            limit = int(limit) if isinstance(limit, int) and not isinstance(limit, bool) else model.max_model_len
            with self._lock:
                current = self._models.get(model.key)
                if current is not None and current.model == model and current.info.server == server:
                    return msgspec.structs.replace(current.info)
                info = ServedLLM(key=model.key, served_model_name=name, server=server,
                                 loaded_at=int(time.time() * 1000), max_model_len=limit)
                self._models[model.key] = _Loaded(model, info)
                return msgspec.structs.replace(info)
        if refused and not listed:
            raise StoreError(f"no LLM server answered to load {name!r}: {'; '.join(refused)}")
        raise NotFound(f"no LLM server serves {name!r} ({'; '.join(listed + refused)}): start the server with "
                       f"--served-model-name {name}, or register the version with a name a server serves")

    def unload(self, key: str) -> None:
        with self._lock:
            self._models.pop(key, None)

    def loaded(self) -> dict[str, ServedLLM]:
        with self._lock:
            models = list(self._models.items())
        out = {}
        for key, m in models:
            with m.lock:
                out[key] = msgspec.structs.replace(m.info)
        return out

    def close(self) -> None:
        with self._lock:
            self._models.clear()
            if self._closed:
                return
            self._closed = True
            clients = list(self._async_clients.items())
            self._async_clients.clear()
        self._client.close()
        for loop, client in clients:  # closed on their own loops, when those still run
            try:
                loop.call_soon_threadsafe(lambda lp=loop, c=client: lp.create_task(c.aclose()))
            except RuntimeError:
                pass

    # ---- generating -------------------------------------------------------------------------------
    async def complete(self, key: str, request: CompletionRequest) -> Completion:
        return await self._answer(key, "/v1/completions", request, Completion)

    async def chat(self, key: str, request: ChatRequest) -> ChatCompletion:
        return await self._answer(key, "/v1/chat/completions", request, ChatCompletion)

    def stream(self, key: str, request: CompletionRequest | ChatRequest) -> AsyncIterator[Chunk]:
        path = "/v1/chat/completions" if isinstance(request, ChatRequest) else "/v1/completions"
        return self._chunks(key, path, request)

    async def _answer(self, key: str, path: str, request: Any, kind: type) -> Any:
        m = self._get(key)
        server = m.info.server
        body = request_body(m.model, request, stream=False)
        try:
            try:
                resp = await self._async_client().post(server + path, content=_encode(body), headers=_JSON)
            except httpx.TimeoutException:
                raise StoreError(f"the LLM server at {server} did not answer within "
                                 f"{self.settings.timeout_seconds:g} s") from None
            except httpx.TransportError as exc:
                raise StoreError(f"the LLM server at {server} cannot be reached: {type(exc).__name__}: {exc}") \
                    from None
            if resp.status_code >= 400:
                raise refusal(server, m.model.served_model_name, resp.status_code, resp.content)
            try:
                answer = msgspec.json.decode(resp.content, type=kind)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise StoreError(f"the LLM server at {server} answered {path} in a shape that is not "
                                 f"OpenAI's: {exc}") from None
        except InvalidInput:
            self._count(m, rejected=True)
            raise
        except StoreError as exc:
            self._count(m, error=exc.message)
            raise
        self._count(m, usage=answer.usage)
        return answer

    async def _chunks(self, key: str, path: str, request: Any) -> AsyncIterator[Chunk]:
        m = self._get(key)
        server = m.info.server
        body = request_body(m.model, request, stream=True)
        usage: Usage | None = None
        last: Chunk | None = None
        pieces = 0
        finished = False
        try:
            async with self._async_client().stream("POST", server + path, content=_encode(body),
                                                   headers=_JSON) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise refusal(server, m.model.served_model_name, resp.status_code, resp.content)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # comments (keep-alives) and event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        finished = True
                        break
                    chunk = stream_chunk(server, m.model.served_model_name, data)
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if chunk.choices:
                        last = chunk
                        pieces += sum(1 for c in chunk.choices if (c.text if c.delta is None else c.delta.content))
                    yield chunk
            if not finished and last is None:
                await self._why_the_stream_died(m, path, body)
            if usage is None and last is not None:
                # The server ignored include_usage (llama.cpp's does): one token per chunk, as both stream.
                prompt = await self._count_prompt(m, body)
                usage = Usage(prompt, pieces, prompt + pieces)
                yield Chunk(id=last.id, created=last.created, model=last.model, object=last.object, usage=usage)
        except httpx.TimeoutException:
            self._count(m, error="timeout")
            raise StoreError(f"the LLM server at {server} sent nothing for {self.settings.timeout_seconds:g} s") \
                from None
        except httpx.TransportError as exc:
            self._count(m, error=str(exc))
            raise StoreError(f"the LLM server at {server} cannot be reached: {type(exc).__name__}: {exc}") from None
        except InvalidInput:
            self._count(m, rejected=True)
            raise
        except StoreError as exc:
            self._count(m, error=exc.message)
            raise
        self._count(m, usage=usage)

    async def _why_the_stream_died(self, m: _Loaded, path: str, body: dict[str, Any]) -> None:
        """Raise the reason a stream ended before its first chunk. llama.cpp's server checks the context
        only once it streams, answering 200 and then nothing (and resetting that connection): the same
        request unstreamed gets its 400 with the reason. vLLM refuses before streaming, never reaching this."""
        server = m.info.server
        plain = {**body, "stream": False}
        plain.pop("stream_options", None)
        for attempt in range(2):
            try:
                resp = await self._async_client().post(server + path, content=_encode(plain), headers=_JSON)
                break
            except httpx.TransportError as exc:  # the first may meet the connection the failed stream broke
                if attempt:
                    raise StoreError(f"the LLM server at {server} cannot be reached: {type(exc).__name__}: "
                                     f"{exc}") from None
        if resp.status_code >= 400:
            raise refusal(server, m.model.served_model_name, resp.status_code, resp.content)
        raise StoreError(f"the LLM server at {server} ended a stream before its first chunk")

    async def _count_prompt(self, m: _Loaded, body: dict[str, Any]) -> int:
        """The prompt's tokens by the server's tokenizer endpoint (vLLM's ``/tokenize``, llama.cpp's
        ``/extras/tokenize/count``, tried in that order once per server), 0 when it has neither. Through
        llama.cpp's, chat messages count by their text, without the chat template's tokens."""
        server = m.info.server
        routes = [self._tokenizers[server]] if server in self._tokenizers else list(TOKENIZERS)
        for path in routes:
            if path is None:
                return 0
            payload = TOKENIZERS[path](body)
            if payload is None:
                return 0
            try:
                resp = await self._async_client().post(server + path, content=_encode(payload), headers=_JSON,
                                                       timeout=5.0)
            except httpx.HTTPError:
                return 0
            if resp.status_code == 200:
                self._tokenizers[server] = path
                count = _decode(resp.content).get("count")
                return count if isinstance(count, int) else 0
        self._tokenizers[server] = None
        return 0

    def _async_client(self) -> httpx.AsyncClient:
        """This event loop's client: an AsyncClient's connections belong to the loop that opened them."""
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            if self._closed:
                raise StoreError("the vllm backend is closed")
            client = httpx.AsyncClient(timeout=self._timeout, limits=self._limits, headers=self._headers,
                                       trust_env=False)
            self._async_clients[loop] = client
        return client

    # ---- plumbing ---------------------------------------------------------------------------------
    def _get(self, key: str) -> _Loaded:
        found = self._models.get(key)
        if found is None:
            raise NotFound(f"no LLM version is loaded under {key!r}")
        return found

    def _count(self, m: _Loaded, *, usage: Usage | None = None, rejected: bool = False, error: str = "") -> None:
        with m.lock:
            info = m.info
            if rejected:
                info.rejected += 1
            elif error:
                info.errors += 1
                info.last_error = error[:500]
            else:
                info.requests += 1
                if usage is not None:
                    info.prompt_tokens += usage.prompt_tokens
                    info.completion_tokens += usage.completion_tokens

    def _call(self, method: str, server: str, path: str, body: Any, *, timeout: float | None = None) -> Any:
        try:
            resp = self._client.request(method, server + path, content=None if body is None else _encode(body),
                                        headers=_JSON if body is not None else None,
                                        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TimeoutException:
            raise StoreError(f"the LLM server at {server} did not answer {path} in time") from None
        except httpx.TransportError as exc:
            raise StoreError(f"the LLM server at {server} cannot be reached: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            served = body.get("model", "") if isinstance(body, dict) else ""
            raise refusal(server, served, resp.status_code, resp.content)
        try:
            return _decode(resp.content)
        except msgspec.DecodeError:
            raise StoreError(f"the LLM server at {server} answered {path} with something that is not JSON") from None


def stream_chunk(server: str, served: str, data: str) -> Chunk:
    """One ``data:`` line of a stream as a chunk; an error event (vLLM sends ``{"error": {...}}`` when a
    generation fails after it started) raises as :func:`refusal` does."""
    try:
        doc = _decode(data)
    except msgspec.DecodeError:
        raise StoreError(f"the LLM server at {server} streamed a line that is not JSON: {data[:200]!r}") from None
    if isinstance(doc, dict) and "error" in doc and "choices" not in doc:
        err = doc["error"] if isinstance(doc["error"], dict) else {"message": str(doc["error"])}
        status = err.get("code") if isinstance(err.get("code"), int) else 500
        raise refusal(server, served, status, _encode(doc))
    try:
        return msgspec.convert(doc, Chunk)
    except msgspec.ValidationError as exc:
        raise StoreError(f"the LLM server at {server} streamed a chunk that is not OpenAI's: {exc}") from None


def _vllm_tokenize(body: dict[str, Any]) -> dict[str, Any]:
    key = "prompt" if "prompt" in body else "messages"
    return {"model": body["model"], key: body[key]}


def _llama_cpp_count(body: dict[str, Any]) -> dict[str, Any] | None:
    if "prompt" in body:
        return {"input": body["prompt"]} if isinstance(body["prompt"], str) else None
    return {"input": "\n".join(str(msg.get("content") or "") for msg in body.get("messages", []))}


TOKENIZERS = {"/tokenize": _vllm_tokenize, "/extras/tokenize/count": _llama_cpp_count}
"""Tokenizer endpoints and the payload each takes for a request body (None: it cannot count this one)."""


def request_body(model: LLMModel, request: Any, *, stream: bool) -> dict[str, Any]:
    """The JSON sent to the server: the version's default sampling, under the request's own fields, under
    its ``extra`` ones; ``model`` is always the version's served name."""
    fields = msgspec.to_builtins(request)
    extra = fields.pop("extra", None) or {}
    for name in ("stream", "stream_options"):
        fields.pop(name, None)
    body = {**model.sampling, **fields, **extra, "model": model.served_model_name, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def refusal(server: str, served: str, status: int, content: bytes) -> Exception:
    """The error for an HTTP error answer: InvalidInput for a refused request (with OpenAI's ``error``
    object as the detail), StoreError for everything that is the server's side."""
    error = server_error(content)
    message = error["message"] or f"HTTP {status}"
    if status in _REFUSED:
        if "context length" in message and not isinstance(error.get("code"), str):
            error["code"] = "context_length_exceeded"  # OpenAI's code, which vLLM leaves as the HTTP status
        return InvalidInput(f"the LLM server refused the request: {message}", detail={"error": error})
    if status in (401, 403):
        return StoreError(f"the LLM server at {server} refused the backend's credentials (HTTP {status}): set "
                          "api_key in the llm slot's settings")
    if status == 404:
        return StoreError(f"the LLM server at {server} does not serve {served!r} (any more): {message}")
    return StoreError(f"the LLM server at {server} failed (HTTP {status}): {message}")


def server_error(content: bytes) -> dict[str, Any]:
    """OpenAI's ``error`` object (message, type, param, code) from an error answer in vLLM's shape
    (``{"error": {...}}``, or the older ``{"object": "error", "message": ...}``) or FastAPI's."""
    try:
        doc = _decode(content)
    except msgspec.DecodeError:
        doc = None
    if not isinstance(doc, dict):
        text = content.decode("utf-8", "replace").strip()[:1000]
        return {"message": text, "type": None, "param": None, "code": None}
    err = doc["error"] if isinstance(doc.get("error"), dict) else doc
    message = err.get("message")
    if message is None and "detail" in doc:  # FastAPI's validation answer: {"detail": [{"loc":..., "msg":...}]}
        detail = doc["detail"]
        if isinstance(detail, list):
            message = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', ())[1:])}: {d.get('msg')}"
                                for d in detail if isinstance(d, dict))
        else:
            message = str(detail)
    return {"message": str(message or "")[:2000], "type": err.get("type"), "param": err.get("param"),
            "code": err.get("code")}
