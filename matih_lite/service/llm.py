"""``/api/v1/deployments/{name}/chat/completions`` and ``.../completions``: LLM deployments in OpenAI's shape.

The ``openai`` client works unchanged, streaming included::

    from openai import OpenAI

    client = OpenAI(base_url="http://127.0.0.1:8000/api/v1/deployments/assistant", api_key="MATIH_TOKEN or any")
    client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "Hi"}], user="u-42")

The deployment in the URL routes the request (``model`` is accepted and ignored), sticky by the
``X-Request-Key`` header or else the ``user`` field; fields beyond OpenAI's (``top_k``,
``response_format``...) reach the server as they are. The answer carries ``X-Request-Id``,
``X-Model-Version`` and ``X-Variant``. ``stream: true`` answers server-sent events (``data: {chunk}``
... ``data: [DONE]``), with the usage chunk when ``stream_options.include_usage`` asks for it.
Errors are problem details (RFC 9457) with OpenAI's ``error`` object as an extension member, so
OpenAI clients read ``code`` (``context_length_exceeded``) and ``message``: a prompt over the
model's context is a 400 with the server's reason, a server that is down a 503. A stream that fails
after it began ends with a ``data: {"error": ...}`` event, as vLLM's does.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from matih_lite.contracts.llm import ChatCompletion, ChatRequest, Completion, CompletionRequest
from matih_lite.errors import InvalidInput, MatihError
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.service.deployments import REQUEST_KEY, checked_request_id
from matih_lite.service.problems import PROBLEM_JSON, problem_of
from matih_lite.serving.traffic import attach_traffic

_json = msgspec.json.Encoder()
OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                      404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
                      429: "rate_limit_error"}


class ChatCompletionIn(ChatRequest, kw_only=True):
    """OpenAI's chat completion request. ``model`` is ignored (the URL names the deployment); ``extra`` and
    any other field go to the LLM server as they are."""

    model: str | None = None


class CompletionIn(CompletionRequest, kw_only=True):
    """OpenAI's (legacy) completion request. ``model`` is ignored (the URL names the deployment); ``extra``
    and any other field go to the LLM server as they are."""

    model: str | None = None


class OpenAIError(msgspec.Struct):
    message: str
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class LLMProblem(msgspec.Struct):
    """Problem details (RFC 9457), with OpenAI's ``error`` object beside them."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    error: OpenAIError


def openai_error(doc: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``error`` object for a problem document: the LLM server's own when it gave one."""
    found = doc.get("error")
    if isinstance(found, dict) and found.get("message"):
        return found
    status = int(doc.get("status", 500))
    message = str(doc.get("detail", ""))
    errors = doc.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):  # the body's validation
        message = f"{message}: {'; '.join(str(e.get('message')) for e in errors if isinstance(e, dict))}"
    return {"message": message, "type": OPENAI_ERROR_TYPES.get(status, "server_error"),
            "param": doc.get("field"), "code": None}


def llm_problem(request: Request, exc: Exception) -> Response:
    """This controller's error layer: the service's problem details plus OpenAI's ``error`` member."""
    status, doc, headers = problem_of(exc, request.method, request.url.path)
    doc["error"] = openai_error(doc)
    return Response(doc, status_code=status, media_type=PROBLEM_JSON, headers=headers or None)


def _request(data: Any, raw: Any, kind: type) -> Any:
    """The contract's request from the parsed body, with the fields it does not know gathered in ``extra``."""
    fields = kind.__struct_fields__
    extra = {k: v for k, v in raw.items() if k not in fields and k != "model"} if isinstance(raw, dict) else {}
    values = {f: getattr(data, f) for f in fields}
    values["extra"] = {**(data.extra or {}), **extra}
    return kind(**values)


async def _answer(request: Request, name: str, data: Any, kind: type) -> Response:
    from matih_lite.serving.llm import generate, open_stream

    host = request.app.state["host"]
    who = request.scope.get("matih_principal") or LOCAL_ADMIN
    call = _request(data, msgspec.json.decode(await request.body()), kind)
    key = request.headers.get(REQUEST_KEY)
    if key is not None and (not key or len(key) > 1024):
        raise InvalidInput(f"{REQUEST_KEY} must be 1 to 1024 characters", detail={"field": REQUEST_KEY})
    rid = checked_request_id(request.headers.get("x-request-id"))
    manager = attach_traffic(host)
    if call.stream:
        stream = await open_stream(manager, who.tenant, name, call, key=key, request_id=rid)
        usage = bool((call.stream_options or {}).get("include_usage"))
        return Stream(_events(stream, usage, request.url.path), media_type="text/event-stream",
                      headers={**_identity(stream), "Cache-Control": "no-cache"})
    answer = await generate(manager, who.tenant, name, call, key=key, request_id=rid)
    return Response(_json.encode(answer.answer), media_type="application/json", headers=_identity(answer))


def _identity(answer: Any) -> dict[str, str]:
    return {"X-Request-Id": answer.request_id, "X-Model-Version": str(answer.version), "X-Variant": answer.variant}


async def _events(stream: Any, include_usage: bool, path: str) -> Any:
    """The stream as server-sent events, in OpenAI's framing."""
    try:
        async for chunk in stream.chunks():
            if chunk.usage is not None and not include_usage:
                if not chunk.choices:
                    continue  # the usage chunk the caller did not ask for
                chunk = msgspec.structs.replace(chunk, usage=None)
            yield b"data: " + _json.encode(chunk) + b"\n\n"
    except (MatihError, HTTPException) as exc:
        _, doc, _ = problem_of(exc, "POST", path)
        yield b"data: " + _json.encode({"error": openai_error(doc)}) + b"\n\n"
    yield b"data: [DONE]\n\n"


_ERRORS = {
    400: ResponseSpec(LLMProblem, description="A bad request, or one the LLM server refused (a prompt over the "
                      "model's context: error.code context_length_exceeded)", media_type=PROBLEM_JSON),
    404: ResponseSpec(LLMProblem, description="No such deployment", media_type=PROBLEM_JSON),
    503: ResponseSpec(LLMProblem, description="The LLM server is down, or the llm slot is empty",
                      media_type=PROBLEM_JSON),
}


class LLMController(Controller):
    path = "/api/v1/deployments"
    tags = ["llm"]
    exception_handlers = {MatihError: llm_problem, HTTPException: llm_problem, Exception: llm_problem}

    @post("/{name:str}/chat/completions", status_code=200,
          summary="Chat completion through the deployment's routes (OpenAI's shape; stream: true for events)",
          responses={200: ResponseSpec(ChatCompletion, description="The answer; with stream: true, "
                                       "text/event-stream of chat.completion.chunk objects, then [DONE]"),
                     **_ERRORS})
    async def chat(self, name: FromPath[str], data: JSONBody[ChatCompletionIn], request: Request) -> Response:
        return await _answer(request, name, data, ChatRequest)

    @post("/{name:str}/completions", status_code=200,
          summary="Text completion through the deployment's routes (OpenAI's shape; stream: true for events)",
          responses={200: ResponseSpec(Completion, description="The answer; with stream: true, "
                                       "text/event-stream of text_completion chunks, then [DONE]"),
                     **_ERRORS})
    async def complete(self, name: FromPath[str], data: JSONBody[CompletionIn], request: Request) -> Response:
        return await _answer(request, name, data, CompletionRequest)


CONTROLLERS = [LLMController]
