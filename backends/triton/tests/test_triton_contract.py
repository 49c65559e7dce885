"""The triton backend passes the serving contract kit against a real Triton (ONNX through its Python backend)."""

from __future__ import annotations

import pytest
from matih_triton.backend import TritonServing
from matih_triton.plugin import TritonSettings

from matih_lite.testing import ServingBackendContract

pytestmark = pytest.mark.slow


class TestTritonServing(ServingBackendContract):
    @pytest.fixture
    def backend(self, model_cache, triton):
        # "auto": the first ONNX load asks for the onnxruntime platform, which this Triton lacks, and falls back.
        backend = TritonServing(TritonSettings(url=triton.url, onnx_runtime="auto"), repository=triton.repository,
                                model_cache=model_cache)
        yield backend
        backend.close()
