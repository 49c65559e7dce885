"""matih-vllm: the ``llm`` slot on vLLM's OpenAI-compatible API (see :mod:`matih_vllm.plugin`)."""

__version__ = "0.1.0"
