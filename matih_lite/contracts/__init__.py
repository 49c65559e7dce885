"""One typed interface per slot. Backends implement these; domain code calls only these.

A backend may import this package (and :mod:`matih_lite.errors`), never domain code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SLOTS: tuple[str, ...] = ("metadata", "artifacts", "compute", "serving", "llm", "events", "drift", "features")
"""Every slot a profile fills, in the order tables and ``plugins list`` show them."""


@dataclass(frozen=True)
class BackendContext:
    """What a backend factory is told besides its settings.

    ``home`` is the state folder (``./.matih`` or ``MATIH_HOME``); ``base_dir`` is where
    relative paths in settings are resolved (the folder of matih.toml, or the working
    folder without one); ``profile`` names the active profile. ``migrate`` is False when the
    caller only looks (``doctor``): a metadata backend then opens its database as it finds it,
    creates and changes nothing, and its health names the schema version found ("empty" for none).
    """

    home: Path
    base_dir: Path
    profile: str
    migrate: bool = True

    @property
    def model_cache(self) -> Path:
        """The serving cache: verified copies of the registry's model files, the only folders from which a
        serving backend loads models whose loading runs code (see :mod:`matih_lite.contracts.flavors`)."""
        return self.home / "serving-cache"

    def resolve(self, path: str | Path) -> Path:
        """A settings path made absolute against ``base_dir``."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


from matih_lite.contracts.artifacts import ArtifactInfo, ArtifactStore  # noqa: E402
from matih_lite.contracts.features import FeatureStore  # noqa: E402
from matih_lite.contracts.llm import LLMBackend  # noqa: E402
from matih_lite.contracts.metadata import MetadataStore  # noqa: E402
from matih_lite.contracts.records import Experiment, Health, Metric, Page, Run  # noqa: E402
from matih_lite.contracts.slots import (  # noqa: E402
    ComputeBackend,
    DriftRunner,
    EventStore,
    ServingBackend,
)

CONTRACTS: dict[str, type] = {
    "metadata": MetadataStore,
    "artifacts": ArtifactStore,
    "compute": ComputeBackend,
    "serving": ServingBackend,
    "llm": LLMBackend,
    "events": EventStore,
    "drift": DriftRunner,
    "features": FeatureStore,
}

__all__ = [
    "SLOTS",
    "CONTRACTS",
    "ArtifactInfo",
    "ArtifactStore",
    "BackendContext",
    "ComputeBackend",
    "DriftRunner",
    "EventStore",
    "Experiment",
    "FeatureStore",
    "Health",
    "LLMBackend",
    "MetadataStore",
    "Metric",
    "Page",
    "Run",
    "ServingBackend",
]
