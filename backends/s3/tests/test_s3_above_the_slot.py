"""Everything above the artifacts slot, unchanged, lands in S3 when the profile says ``s3``.

The unchanged ``mlflow`` client logging through the service's artifact proxy, a training job's
checkpoints (written by a Ray worker that builds its own store from matih.toml, and read back
after a crash), and drift baselines: each is found in the bucket with its sha256 as object
metadata, and nothing is written to the local artifacts folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from matih_lite.config import load_config
from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.testing.artifacts import MiB, PatternStream
from matih_lite.testing.service import serve
from matih_lite.testing.sources import placeholder_source

HERE = Path(__file__).resolve().parent


def s3_host(work: Path, seaweed, bucket: str, prefix: str, extra: str = "") -> Host:
    """A host whose lite profile keeps its artifacts in S3 (5 MiB parts, so 12 MiB goes up in three)."""
    (work / "matih.toml").write_text(
        "[profiles.lite]\n"
        f"artifacts = {seaweed.artifacts_toml(bucket, prefix=prefix, multipart_threshold='5MiB', part_size='5MiB')}\n"
        + extra)
    return Host(load_config(work / "matih.toml"))


def objects(seaweed, bucket: str, prefix: str) -> dict[str, dict]:
    """Every object under ``prefix/``: key (without the prefix) -> HEAD answer."""
    client = seaweed.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
            for o in page.get("Contents") or ()]
    return {k[len(prefix) + 1:]: client.head_object(Bucket=bucket, Key=k) for k in keys}


def no_local_artifacts(work: Path) -> bool:
    folder = work / ".matih" / "artifacts"
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


# ---- MLflow's artifact proxy ---------------------------------------------------------------------
@pytest.fixture
def mlflow_env(monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    yield mlflow
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.tracking.fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


@pytest.mark.slow
def test_the_mlflow_client_logs_artifacts_through_the_proxy_into_s3(hermetic, mlflow_env, seaweed, shared_bucket,
                                                                    prefix, tmp_path):
    mlflow = mlflow_env
    host = s3_host(hermetic, seaweed, shared_bucket, prefix)
    small = tmp_path / "params.json"
    small.write_text(json.dumps({"max_depth": 6}))
    big = tmp_path / "weights.bin"
    big.write_bytes(PatternStream(12 * MiB).read())
    try:
        with serve(host) as url:
            mlflow.set_tracking_uri(url)
            mlflow.set_experiment("s3-proxy")
            with mlflow.start_run() as run:
                mlflow.log_artifact(str(small))
                mlflow.log_artifact(str(big), artifact_path="model")
                mlflow.log_dict({"features": ["age", "plan"]}, "features.json")
            client = mlflow.MlflowClient(url)
            listed = {(f.path, f.is_dir, f.file_size) for f in client.list_artifacts(run.info.run_id)
                      if f.path != "features.json"}
            assert listed == {("params.json", False, small.stat().st_size), ("model", True, None)}
            back = Path(client.download_artifacts(run.info.run_id, "model/weights.bin", str(tmp_path / "dl")))
            assert back.read_bytes() == big.read_bytes()
            assert mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/features.json") == {"features": ["age", "plan"]}
    finally:
        host.close()
    stored = objects(seaweed, shared_bucket, prefix)
    weights = next(head for key, head in stored.items() if key.endswith(f"{run.info.run_id}/artifacts/model/weights.bin"))
    assert weights["Metadata"]["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert weights["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    names = {key.rsplit("/artifacts/", 1)[-1] for key in stored if f"{run.info.run_id}/artifacts/" in key}
    assert names == {"params.json", "model/weights.bin", "features.json"}
    assert all(head["Metadata"].get("sha256") for head in stored.values())
    assert no_local_artifacts(hermetic)


# ---- drift baselines ---------------------------------------------------------------------------
@pytest.mark.slow
def test_drift_baselines_are_stored_in_s3_and_read_back_by_another_process(hermetic, seaweed, shared_bucket, prefix):
    from litestar.testing import TestClient

    from matih_lite.registry.service import Registry
    from matih_lite.service import create_app

    rng = np.random.default_rng(0)
    age = rng.normal(40, 10, 2000)
    columns = {"age": age.tolist(), "plan": rng.choice(["basic", "plus", "pro"], 2000).tolist(),
               "y": (age > 42).astype(int).tolist(), "pred": (age > 41).astype(int).tolist()}
    host = s3_host(hermetic, seaweed, shared_bucket, prefix)
    try:
        Registry(host).register_version(LOCAL_ADMIN, "churn", placeholder_source(host, LOCAL_ADMIN),
                                         flavor="sklearn")
        with TestClient(create_app(host)) as client:
            made = client.post("/api/v1/drift/baselines/churn/versions/1",
                               json={"columns": columns, "target": "y", "prediction": "pred"})
            assert made.status_code == 201, made.text
    finally:
        host.close()
    stored = objects(seaweed, shared_bucket, prefix)
    baseline = stored["default/_drift/churn/v1/baseline.json"]
    body = seaweed.client().get_object(Bucket=shared_bucket, Key=f"{prefix}/default/_drift/churn/v1/baseline.json")
    data = body["Body"].read()
    assert baseline["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads(data)["rows"] == 2000
    assert no_local_artifacts(hermetic)

    again = Host(load_config(hermetic / "matih.toml"))  # a fresh process's view: nothing cached
    try:
        with TestClient(create_app(again)) as client:
            got = client.get("/api/v1/drift/baselines/churn/versions/1")
            assert got.status_code == 200 and got.json()["features"]["plan"]["kind"] == "categorical"
    finally:
        again.close()


# ---- training checkpoints ----------------------------------------------------------------------
@pytest.mark.slow
def test_training_checkpoints_go_to_s3_and_a_crashed_worker_resumes_from_them(hermetic, seaweed, shared_bucket,
                                                                             prefix, monkeypatch):
    pytest.importorskip("ray")
    from matih_lite.tracking.service import Tracking
    from matih_lite.training.jobs import Jobs, JobSupervisor

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    host = s3_host(hermetic, seaweed, shared_bucket, prefix,
                   'compute = { backend = "ray-local", num_cpus = 2 }\n')
    events, marker = hermetic / "events.txt", hermetic / "crashed-once"
    try:
        jobs = Jobs(host)
        job = jobs.submit(LOCAL_ADMIN, {
            "entrypoint": "s3_jobfns:crashes_once_then_resumes", "base_dir": str(HERE), "experiment": "s3-ckpt",
            "max_failures": 1, "params": {"steps": 6, "crash_after": 3, "events": str(events), "marker": str(marker)}})
        done = jobs.wait(LOCAL_ADMIN, job.job_id, timeout=600)
        assert done.status == "SUCCEEDED", (done, jobs.logs(LOCAL_ADMIN, job.job_id)[-3000:])
        starts = events.read_text().split()
        assert starts == ["step=0", "step=3"]  # the second attempt began from the checkpoint of step 3
        tracking = Tracking(host)
        run = tracking.get_run("default", done.run_id)
        assert run.metrics["total"].value == sum(range(6))  # the state carried over through S3 exactly
        assert [m.step for m in tracking.metric_history("default", done.run_id, "loss").items] == list(range(6))
    finally:
        JobSupervisor.of(host, start=False).stop()
        host.close()
    stored = objects(seaweed, shared_bucket, prefix)
    checkpoints = sorted(k.rsplit("/artifacts/", 1)[-1] for k in stored
                         if f"{done.run_id}/artifacts/checkpoints/" in k)
    assert checkpoints == [f"checkpoints/train/{step:06d}/state.pkl" for step in range(6)]
    assert all(stored[k]["Metadata"].get("sha256") for k in stored if "/checkpoints/" in k)
    assert no_local_artifacts(hermetic)
