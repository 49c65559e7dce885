"""Features: written once the feature store's domain service exists (see the module docstring of the package)."""

from __future__ import annotations

CONTROLLERS: list = []
