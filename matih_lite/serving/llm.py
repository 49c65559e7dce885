"""LLM deployments: completions and chat completions routed by the traffic manager, like predictions.

A version of flavor ``llm`` is loaded into the ``llm`` slot (an
:class:`~matih_lite.contracts.llm.LLMBackend`: vLLM) instead of the serving slot, so one profile
serves tabular models (Triton or in-process) and LLMs side by side, one backend per slot. Above the
slots nothing changes: the same deployment records, weighted A/B splits, sticky keys (the request's
``user``, or the ``X-Request-Key`` header), shadows and canaries. Each request adds a sample to its
variant's stats (end-to-end latency; a server that is down or fails counts as an error of that
variant only, a request the server refuses as the caller's fault does not), so a canary is judged
on error rate and latency exactly as a tabular one is.

The inference log gets one record per request in ``inference.<deployment>``::

    features.prompt_tokens      tokens in the prompt (drift on prompt length)
    prediction                  completion tokens
    outputs.ttft_ms             time to the first token the caller saw: the first streamed chunk with text,
                                or the whole answer when it was not streamed
    outputs.tokens_per_s        completion tokens / end-to-end latency
    outputs.finish_reason       the first choice's (stop, length...)

Prompts and completions themselves are not logged. Shadows get the same request, unstreamed, once
the caller has the answer; their agreement is the share of choices whose text equals the primary's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.contracts.clock import now_ms
from matih_lite.contracts.deployments import Deployment
from matih_lite.contracts.llm import ChatRequest, Chunk, CompletionRequest, ServedLLM, Usage
from matih_lite.errors import InvalidInput, MatihError, NotFound, StoreError
from matih_lite.serving.routing import variant_name

if TYPE_CHECKING:
    from matih_lite.host import Host


LLM_SLOT = "llm"


class Generation(msgspec.Struct):
    """An unstreamed answer, and who gave it."""

    answer: Any
    """A :class:`~matih_lite.contracts.llm.Completion` or :class:`~matih_lite.contracts.llm.ChatCompletion`."""
    request_id: str
    deployment: str
    model: str
    variant: str
    version: int
    latency_ms: float


def llm_backend(host: Host) -> Any:
    """The ``llm`` slot's backend. Raises ModelUnavailable (503) saying how to fill the slot when it is empty."""
    from matih_lite.serving.traffic import ModelUnavailable

    if host.active(LLM_SLOT) is None:
        raise ModelUnavailable(
            f"no backend fills the llm slot of profile {host.profile!r}, so llm versions cannot be served: add "
            f"llm = {{ backend = \"vllm\", url = \"http://HOST:8000\" }} to [profiles.{host.profile}] "
            "(pip install matih-vllm)")
    return host.backend(LLM_SLOT)


def load_llm_version(host: Host, tenant: str, version: Any, *, key: str) -> ServedLLM:
    """Materialize an ``llm`` version (its MLmodel) and load it into the llm slot under ``key``."""
    from matih_lite.serving.flavors.llm import llm_model
    from matih_lite.serving.materialize import materialize

    folder = materialize(host, tenant, version)
    return llm_backend(host).load(llm_model(folder, key))


def serves_llm(served: Any) -> bool:
    """Whether a loaded version (a traffic manager's ``ServedVersion``) lives in the llm slot."""
    return isinstance(getattr(served, "info", None), ServedLLM)


async def llm_target(manager: Any, tenant: str, name: str, *, key: str | None = None,
                     version: int | None = None) -> Any:
    """Route one LLM request (:meth:`TrafficManager.target`). Raises InvalidInput when the routed version is
    not an llm model, NotFound, ModelUnavailable."""
    target = await manager.target(tenant, name, key=key, version=version)
    if not serves_llm(target.served):
        d = target.live.deployment
        raise InvalidInput(f"deployment {name!r} serves version {target.route.version} of {d.model!r}, a "
                           f"{target.served.flavor or 'tabular'} model, not an llm: send its requests to "
                           f"POST /api/v1/deployments/{name}/predict", detail={"deployment": name})
    return target


def check_request(request: CompletionRequest | ChatRequest) -> None:
    """What every server would refuse, refused before routing. Raises InvalidInput naming the field."""
    if isinstance(request, ChatRequest):
        if not request.messages:
            raise InvalidInput("messages must hold at least one message", detail={"field": "messages"})
    elif request.prompt in ("", []):
        raise InvalidInput("prompt must not be empty", detail={"field": "prompt"})
    if request.max_tokens is not None and request.max_tokens < 1:
        raise InvalidInput("max_tokens must be at least 1", detail={"field": "max_tokens"})
    if request.n is not None and request.n < 1:
        raise InvalidInput("n must be at least 1", detail={"field": "n"})


async def generate(manager: Any, tenant: str, name: str, request: CompletionRequest | ChatRequest, *,
                   key: str | None = None, request_id: str | None = None) -> Generation:
    """One unstreamed completion or chat completion through deployment ``name``'s routes.

    Raises InvalidInput (the request, or the server's refusal: a prompt over the context), NotFound,
    ModelUnavailable, StoreError (the server is down: counted against the variant), ModelFailed.
    """
    from matih_lite.serving.traffic import next_request_id

    check_request(request)
    target = await llm_target(manager, tenant, name, key=key if key is not None else request.user)
    d, route, served = target.live.deployment, target.route, target.served
    request_id = request_id or next_request_id()
    backend = llm_backend(manager.host)
    call = backend.chat if isinstance(request, ChatRequest) else backend.complete
    start = time.perf_counter()
    try:
        answer = await call(served.key, request)
    except InvalidInput:
        raise
    except Exception as exc:
        raise _failed(manager, d, route.version, request_id, start, exc) from exc
    latency = (time.perf_counter() - start) * 1000
    manager._variant_stats(d.tenant, d.name, route.version).add(now_ms(), latency, False)
    _log(manager, d, request_id, route.version, answer.usage, latency, latency, _finish(answer.choices), False)
    if d.shadows and route.weight > 0:
        _start_shadows(manager, d, request, _texts(answer.choices), latency, request_id)
    return Generation(answer, request_id, d.name, d.model, route.variant, route.version, latency)


async def open_stream(manager: Any, tenant: str, name: str, request: CompletionRequest | ChatRequest, *,
                      key: str | None = None, request_id: str | None = None) -> GenerationStream:
    """Start a streamed answer through deployment ``name``'s routes; returns once its first chunk is in, so
    every error :func:`generate` raises is raised here, before anything is sent to the caller."""
    from matih_lite.serving.traffic import next_request_id

    check_request(request)
    target = await llm_target(manager, tenant, name, key=key if key is not None else request.user)
    d, served = target.live.deployment, target.served
    request_id = request_id or next_request_id()
    start = time.perf_counter()
    chunks = llm_backend(manager.host).stream(served.key, request)
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = None
    except InvalidInput:
        raise
    except Exception as exc:
        raise _failed(manager, d, target.route.version, request_id, start, exc) from exc
    return GenerationStream(manager, target, request, chunks, first, start, request_id)


class GenerationStream:
    """A streamed answer whose first chunk has arrived: iterate :meth:`chunks` to pass it on.

    When the stream ends the variant gets its sample, the inference log its record (with the time to
    the first token) and the shadows their copy; a caller that goes away mid-stream stops the
    generation and is logged with what it got, without a canary sample.
    """

    def __init__(self, manager: Any, target: Any, request: Any, chunks: Any, first: Chunk | None, start: float,
                 request_id: str) -> None:
        self.manager, self.target, self.request = manager, target, request
        self._chunks, self._first, self._start = chunks, first, start
        self.request_id = request_id
        d = target.live.deployment
        self.deployment, self.model = d.name, d.model
        self.variant, self.version = target.route.variant, target.route.version

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The chunks, the first included. Raises as :func:`generate` does when the stream fails midway."""
        d = self.target.live.deployment
        ttft: float | None = None
        usage: Usage | None = None
        texts: dict[int, list[str]] = {}
        finish: dict[int, str | None] = {}
        chunk = self._first
        outcome = "disconnected"
        try:
            while chunk is not None:
                for c in chunk.choices:
                    piece = c.text if c.delta is None else c.delta.content
                    if isinstance(piece, str) and piece:
                        texts.setdefault(c.index, []).append(piece)
                        if ttft is None:
                            ttft = (time.perf_counter() - self._start) * 1000
                    if c.finish_reason is not None:
                        finish[c.index] = c.finish_reason
                if chunk.usage is not None:
                    usage = chunk.usage
                yield chunk
                try:
                    chunk = await self._chunks.__anext__()
                except StopAsyncIteration:
                    chunk = None
            outcome = "done"
        except InvalidInput:
            outcome = "refused"
            raise
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as exc:
            outcome = "failed"
            raise _failed(self.manager, d, self.version, self.request_id, self._start, exc) from exc
        finally:
            latency = (time.perf_counter() - self._start) * 1000
            if outcome == "done":
                self.manager._variant_stats(d.tenant, d.name, self.version).add(now_ms(), latency, False)
            if outcome in ("done", "disconnected"):  # what a caller got is logged, even when it left early
                reason = (finish.get(min(finish)) if finish else None) if outcome == "done" else outcome
                _log(self.manager, d, self.request_id, self.version, usage, latency,
                     ttft if ttft is not None else latency, reason, False)
            if outcome != "done":
                await _close(self._chunks)
        if d.shadows and self.target.route.weight > 0:
            primary = ["".join(texts.get(i, [])) for i in range(max([*texts, *finish], default=-1) + 1)]
            _start_shadows(self.manager, d, self.request, primary, latency, self.request_id)


async def _close(chunks: Any) -> None:
    """Stop the server's generation, even from a cancelled task (the caller went away)."""
    import anyio

    with anyio.CancelScope(shield=True):
        try:
            await chunks.aclose()
        except Exception:  # the server's connection may already be gone
            pass


def _failed(manager: Any, d: Deployment, version: int, request_id: str, start: float, exc: Exception) -> Exception:
    """The error a failed generation raises, after counting it against its variant."""
    from matih_lite.serving.traffic import ModelFailed, ModelUnavailable

    latency = (time.perf_counter() - start) * 1000
    manager.count_failure(d, version, latency, request_id)
    where = {"deployment": d.name, "variant": variant_name(version), "version": version, "request_id": request_id}
    if isinstance(exc, NotFound):  # the backend lost the version (it was restarted): load it again next time
        manager._models.pop(f"{d.tenant}/{d.model}/{version}", None)
        return ModelUnavailable(f"version {version} of model {d.model!r} is not loaded in the llm slot any more; "
                                "retry", detail=where)
    if isinstance(exc, StoreError):
        return StoreError(f"version {version} of model {d.model!r}: {exc.message}", detail=where)
    if isinstance(exc, MatihError):
        return exc
    return ModelFailed(f"version {version} of model {d.model!r} failed: {type(exc).__name__}: {exc}"[:1000],
                       detail=where)


def _texts(choices: Any) -> list[str]:
    out = []
    for c in sorted(choices, key=lambda c: c.index):
        text = getattr(c, "text", None)
        if text is None:
            content = c.message.content
            text = content if isinstance(content, str) else msgspec.json.encode(content).decode()
        out.append(text)
    return out


def _finish(choices: Any) -> str | None:
    return min(choices, key=lambda c: c.index).finish_reason if choices else None


def _log(manager: Any, d: Deployment, request_id: str, version: int, usage: Usage | None, latency: float,
         ttft: float, finish: str | None, shadow: bool) -> None:
    completion = usage.completion_tokens if usage is not None else None
    # To the microsecond, rounded down: an unstreamed answer's first token is its whole latency, never past it.
    outputs = {"completion_tokens": completion, "ttft_ms": math.floor(min(ttft, latency) * 1000) / 1000,
               "tokens_per_s": round(completion * 1000 / latency, 3) if completion and latency > 0 else 0.0,
               "finish_reason": finish}
    inputs = {"prompt_tokens": usage.prompt_tokens if usage is not None else None}
    manager._log_request(d, request_id, variant_name(version), version, inputs, outputs, latency, now_ms(), shadow,
                         None)


def _start_shadows(manager: Any, d: Deployment, request: Any, primary: list[str], primary_ms: float,
                   request_id: str) -> None:
    loop = asyncio.get_running_loop()
    copy = msgspec.structs.replace(request, stream=False, stream_options=None)
    for version in d.shadows:
        if len(manager._tasks) >= manager.shadow_max_pending:
            manager._shadow_of(d, version).dropped += 1
            continue
        task = loop.create_task(_shadow(manager, d, version, copy, primary, primary_ms, request_id))
        manager._tasks.add(task)
        task.add_done_callback(manager._tasks.discard)


async def _shadow(manager: Any, d: Deployment, version: int, request: Any, primary: list[str], primary_ms: float,
                  request_id: str) -> None:
    stats = manager._shadow_of(d, version)
    try:
        target = await llm_target(manager, d.tenant, d.name, version=version)
        backend = llm_backend(manager.host)
        call = backend.chat if isinstance(request, ChatRequest) else backend.complete
        start = time.perf_counter()
        answer = await call(target.served.key, request)
        latency = (time.perf_counter() - start) * 1000
        texts = _texts(answer.choices)
        agreeing = sum(1 for a, b in zip(primary, texts, strict=True) if a == b) if len(primary) == len(texts) else 0
        stats.add(len(primary), agreeing, latency, primary_ms)
        _log(manager, d, request_id, version, answer.usage, latency, latency, _finish(answer.choices), True)
    except Exception:  # a shadow never fails anything but itself
        stats.failed()
