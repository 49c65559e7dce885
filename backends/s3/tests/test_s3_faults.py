"""S3 goes away while the service runs on it, and comes back: the real SeaweedFS is killed and restarted.

What a user relies on: ``/ready`` names the artifacts slot and why it is down; artifact writes and
reads get a 503 problem with Retry-After (never a 500); an upload cut off half-way leaves no object
and no multipart upload behind; what was stored before is intact; once the server is back the same
service (not restarted) serves again.
"""

from __future__ import annotations

import hashlib
import threading

import httpx
import pytest

from matih_lite.config import load_config
from matih_lite.host import Host
from matih_lite.testing.artifacts import MiB, PatternStream
from matih_lite.testing.processes import wait_for
from matih_lite.testing.service import serve

pytestmark = pytest.mark.slow

BUCKET = "faults"


@pytest.fixture
def own_seaweed(fresh_seaweed):
    fresh_seaweed.create_bucket(BUCKET)
    return fresh_seaweed


@pytest.fixture
def service(hermetic, own_seaweed):
    """The ml-service with its artifacts in ``own_seaweed`` (5 MiB parts), its metadata in SQLite."""
    (hermetic / "matih.toml").write_text(
        "[profiles.lite]\n"
        f"artifacts = {own_seaweed.artifacts_toml(BUCKET, multipart_threshold='5MiB', part_size='5MiB')}\n")
    host = Host(load_config(hermetic / "matih.toml"))
    try:
        with serve(host) as url, httpx.Client(base_url=url, timeout=60) as client:
            yield client
    finally:
        host.close()


def keys(seaweed) -> list[str]:
    found = seaweed.client().list_objects_v2(Bucket=BUCKET)
    return sorted(o["Key"] for o in found.get("Contents") or ())


def assert_unavailable_problem(resp: httpx.Response, why: str = "cannot reach") -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert int(resp.headers["retry-after"]) > 0
    problem = resp.json()
    assert problem["status"] == 503 and why in problem["detail"]


def test_s3_down_then_back_while_the_service_runs(service, own_seaweed):
    run = service.post("/api/v1/runs", json={"experiment_name": "faults"}).json()["run_id"]
    artifacts = f"/api/v1/runs/{run}/artifacts"
    before = PatternStream(7 * MiB).read()
    assert service.put(f"{artifacts}/before.bin", content=before).status_code == 200
    ready = service.get("/ready")
    assert ready.status_code == 200 and ready.json()["slots"]["artifacts"]["ok"]
    stored = keys(own_seaweed)

    own_seaweed.stop()

    ready = service.get("/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    slots = ready.json()["slots"]
    assert not slots["artifacts"]["ok"] and own_seaweed.endpoint_url in slots["artifacts"]["detail"]
    assert "is the server up?" in slots["artifacts"]["detail"]
    assert slots["metadata"]["ok"]  # only the slot that is down is named
    assert_unavailable_problem(service.put(f"{artifacts}/during.txt", content=b"small"))
    assert_unavailable_problem(service.put(f"{artifacts}/during-big.bin", content=PatternStream(12 * MiB).read()))
    assert_unavailable_problem(service.get(f"{artifacts}/before.bin"))
    assert_unavailable_problem(service.get(artifacts))
    assert service.get(f"/api/v1/runs/{run}").status_code == 200  # the rest of the service still answers

    own_seaweed.start()

    wait_for(lambda: service.get("/ready").status_code == 200, timeout=60, what="the service ready again")
    assert service.put(f"{artifacts}/after.txt", content=b"back").status_code == 200
    assert service.get(f"{artifacts}/before.bin").content == before
    listed = sorted(a["path"] for a in service.get(artifacts).json()["files"])
    assert listed == ["after.txt", "before.bin"]  # nothing from the outage, half-written or whole
    assert keys(own_seaweed) == sorted([*stored, next(k for k in keys(own_seaweed) if k.endswith("/after.txt"))])
    assert own_seaweed.multipart_uploads(BUCKET) == []


def test_an_upload_cut_off_by_the_server_leaves_no_object_and_no_multipart_debris(service, own_seaweed):
    run = service.post("/api/v1/runs", json={"experiment_name": "faults"}).json()["run_id"]
    artifacts = f"/api/v1/runs/{run}/artifacts"
    assert service.put(f"{artifacts}/model.bin", content=b"version 1").status_code == 200
    data = PatternStream(120 * MiB).read()
    answer: dict[str, httpx.Response] = {}
    upload = threading.Thread(target=lambda: answer.update(resp=service.put(f"{artifacts}/model.bin", content=data)))
    upload.start()
    # Stop the server once its multipart upload has begun: parts are on their way.
    wait_for(lambda: own_seaweed.multipart_uploads(BUCKET), timeout=60, what="the multipart upload to begin",
             interval=0.02)
    own_seaweed.stop()
    upload.join(timeout=120)
    # "cannot reach", or the server's own InternalError if it answered while shutting down
    assert_unavailable_problem(answer["resp"], why="S3 put of")

    own_seaweed.start()
    # The service could not abort while the server was down; its next health check does.
    wait_for(lambda: service.get("/ready").status_code == 200 and not own_seaweed.multipart_uploads(BUCKET),
             timeout=60, what="the abandoned upload aborted")
    kept = service.get(f"{artifacts}/model.bin")
    assert kept.status_code == 200 and kept.content == b"version 1"  # the old version, whole
    assert kept.headers["x-sha256"] == hashlib.sha256(b"version 1").hexdigest()
    assert service.put(f"{artifacts}/model.bin", content=data).status_code == 200  # and the retry goes through
    assert hashlib.sha256(service.get(f"{artifacts}/model.bin").content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert own_seaweed.multipart_uploads(BUCKET) == []
