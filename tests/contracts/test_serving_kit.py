"""The in-process serving backend passes the serving contract kit."""

from __future__ import annotations

import pytest

from matih_lite.builtin.inprocess_serving import InprocessServing
from matih_lite.testing import ServingBackendContract


class TestInprocessServing(ServingBackendContract):
    @pytest.fixture
    def backend(self, model_cache):
        backend = InprocessServing(model_cache=model_cache)
        yield backend
        backend.close()
