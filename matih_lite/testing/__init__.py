"""The contract test kit: the suites every backend of a slot must pass, ours and third parties'.

Subclass a suite in your backend's tests and override its fixture (the fsspec pattern)::

    from matih_lite.testing import ArtifactStoreContract

    class TestMyStore(ArtifactStoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(tmp_path)

Importing this package needs pytest; the core never imports it.
"""

from matih_lite.testing.artifacts import ArtifactStoreContract
from matih_lite.testing.compute import ComputeBackendContract
from matih_lite.testing.drift import DriftRunnerContract
from matih_lite.testing.events import EventStoreContract
from matih_lite.testing.features import FeatureDefinitionStoreContract, FeatureStoreContract
from matih_lite.testing.metadata import MetadataStoreContract
from matih_lite.testing.serving import ServingBackendContract

__all__ = [
    "ArtifactStoreContract",
    "ComputeBackendContract",
    "DriftRunnerContract",
    "EventStoreContract",
    "FeatureDefinitionStoreContract",
    "FeatureStoreContract",
    "MetadataStoreContract",
    "ServingBackendContract",
]
