"""Streaming inference on Kafka: the scenarios of the DuckDB streaming tests, run unchanged on the Kafka backend.

``tests/serving/test_stream_inference.py`` (a consumer: in order, at least once, no duplicates after a
crash between writing and committing, replays answered once, independent groups, outages retried) and
``tests/serving/test_stream_deployments.py`` (a service consuming a topic through a deployment's routes,
stopped and started again, resuming from its group's offset) are loaded from the core's tests and
collected here with an events store, or a ``matih.toml``, on the tansu broker.

The service scenario restarts the service: the new one learns the consumers it ran, and their lag,
from the ends of streams the first one wrote, so its producer sends one record per batch (tansu's
fault 2: its high watermark is exact only then).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from kafka_helpers import kafka_store

from matih_lite.testing.tansu import EXACT_END_OFFSETS

CORE_TESTS = Path(__file__).resolve().parents[3] / "tests" / "serving"


def _scenarios(name: str) -> dict:
    """The test functions (and what they need) of one of the core's streaming test modules."""
    path = CORE_TESTS / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"{path} is not here (run from a checkout)", allow_module_level=True)
    if str(CORE_TESTS) not in sys.path:
        sys.path.insert(0, str(CORE_TESTS))  # their helpers (serving_helpers) import from there
    spec = importlib.util.spec_from_file_location(f"kafka_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the models it saves name their class by this module
    spec.loader.exec_module(module)
    return {k: v for k, v in vars(module).items() if k.startswith("test_") or k == "home"}


_consumer = _scenarios("test_stream_inference")
_service = _scenarios("test_stream_deployments")
pytestmark = pytest.mark.slow


@pytest.fixture
def store(tansu, prefix):
    s = kafka_store(tansu, prefix)
    yield s
    s.close()


@pytest.fixture
def hermetic(hermetic, tansu, prefix):
    """The core's hermetic working folder, with a matih.toml whose events slot is this Kafka."""
    events = tansu.events_toml(topic_prefix=prefix, producer=EXACT_END_OFFSETS, timeout_ms=60_000)
    (hermetic / "matih.toml").write_text(f"[profiles.lite]\nevents = {events}\n")
    yield hermetic


home = _service.pop("home")
globals().update({f"{k}_on_kafka": v for k, v in {**_consumer, **_service}.items()})


def test_the_scenarios_run_against_kafka(hermetic):
    from matih_lite.host import Host

    host = Host.open()
    try:
        assert type(host.backend("events")).__name__ == "KafkaEventStore"
    finally:
        host.close()
    assert len(_consumer) >= 7 and len(_service) >= 2
