"""Pyfunc model classes the Triton tests deploy: importable by Triton's own Python (this folder is on its path)."""

from __future__ import annotations

import time

import numpy as np


class Linear:
    """``y = scale * x0 + offset``; two versions with different offsets tell who answered."""

    def __init__(self, scale: float = 2.0, offset: float = 0.0) -> None:
        self.scale = scale
        self.offset = offset

    def predict(self, inputs):
        x = np.asarray(inputs, dtype=np.float64)
        return x[:, 0] * self.scale + self.offset


class Thresholded:
    """Agrees with ``Linear(2, 0)`` below x0 = 10 and says -1 above: a shadow that half agrees."""

    def predict(self, inputs):
        x = np.asarray(inputs, dtype=np.float64)
        return np.where(x[:, 0] < 10, x[:, 0] * 2.0, -1.0)


class FailsOnNegatives:
    """Doubles x0, but raises on any negative x0: half of normal traffic."""

    def predict(self, inputs):
        x = np.asarray(inputs, dtype=np.float64)
        if (x[:, 0] < 0).any():
            raise ValueError("negative x0: this build forgot to clip its inputs")
        return x[:, 0] * 2.0


class Sleepy:
    """Right answers, 80 ms late per call."""

    def predict(self, inputs):
        time.sleep(0.08)
        return np.asarray(inputs, dtype=np.float64)[:, 0] * 2.0


class Raising:
    def predict(self, inputs):
        raise ZeroDivisionError("the model divided by zero")


class BrokenOnLoad:
    """Its state cannot be restored: Triton refuses to load it (``__setstate__`` raises there, as anywhere)."""

    def __init__(self) -> None:
        self.weights = [1.0]

    def __setstate__(self, state):
        raise RuntimeError("weights file is for another architecture")

    def predict(self, inputs):
        return np.zeros(len(inputs))
