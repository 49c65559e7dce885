"""A request larger than the model's ``max_batch_size`` is answered whole, as the in-process backend answers it.

Triton refuses a request of more rows than the model config's ``max_batch_size`` ("inference request
batch-size must be <= 64"); the ml-service's micro-batcher sends a large request as one call, so the
triton backend splits it into requests Triton takes and joins their answers in order.
"""

from __future__ import annotations

import numpy as np
import pytest
from serving_helpers import register_model
from triton_models import Linear

from matih_lite.identity import LOCAL_ADMIN
from matih_lite.serving import load_version

pytestmark = pytest.mark.slow
T = LOCAL_ADMIN.tenant


def test_a_request_of_more_rows_than_max_batch_size_is_answered_whole_and_in_order(triton_host):
    host = triton_host()
    model = Linear(3.0, 1.0)
    rows = np.random.default_rng(3).normal(size=(500, 2))
    mv = register_model(host, "wide", model, "pyfunc", rows[:2])
    load_version(host, T, mv)
    backend = host.backend("serving")
    before = backend.loaded()[f"{T}/wide/1"].predictions
    got = np.asarray(backend.predict(f"{T}/wide/1", rows), dtype=np.float64)  # 500 rows; the config takes 64
    assert got.shape == (500,)
    assert np.allclose(got, model.predict(rows))
    assert backend.loaded()[f"{T}/wide/1"].predictions == before + 1  # one prediction, in eight Triton requests
