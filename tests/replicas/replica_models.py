"""Models the replica tests register: importable by the ``matih-lite up`` processes that unpickle them
(the test puts this folder on their ``PYTHONPATH``)."""

from __future__ import annotations

import numpy as np


class Doubling:
    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64)[:, 0] * 2.0


class FailsOnNegatives:
    """Doubles like :class:`Doubling`, but raises on any negative x0: half of normal traffic."""

    def predict(self, inputs):
        x = np.asarray(inputs, dtype=np.float64)
        if (x[:, 0] < 0).any():
            raise ValueError("negative x0: this build forgot to clip its inputs")
        return x[:, 0] * 2.0
