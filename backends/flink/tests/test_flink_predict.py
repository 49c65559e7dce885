"""Streaming inference on Flink against the in-process consumer: the same requests topic, the same deployment
(two ONNX versions split 30/70, sticky by request key, and a third as a shadow), the same predictions, variants
and counts, and the same inference log (the shadow's answers in it, marked as a shadow's)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from flink_helpers import P, make_host, read_all

from matih_lite.registry import Registry
from matih_lite.serving.deployments import Deployments
from matih_lite.serving.stream_plan import stream_job_plan
from matih_lite.testing.flink import wait_until
from matih_lite.tracking import Tracking

N = 10_000


def _onnx_model(coef):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    model = LinearRegression().fit(x, x @ np.asarray(coef, dtype=np.float32) + 1.0)
    return to_onnx(model, x[:1])


def _register(host, name, model):
    from matih_lite.serving import flavor as flavor_of

    tracking = Tracking(host)
    run = tracking.create_run(P.tenant, tracking.get_or_create_experiment(P.tenant, "flink-predict").experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        flavor_of(host, "onnx").save(model, tmp)
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                tracking.log_artifact(P.tenant, run.run_id, f"model/{f.relative_to(tmp).as_posix()}", f.read_bytes())
    registry = Registry(host)
    version = registry.register_version(P, name, run_id=run.run_id, path="model", flavor="onnx")
    registry.promote(P, name, version.version, "Staging", reason="flink predict test")


def _requests(n, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).round(4)
    return [{"timestamp": int(time.time() * 1000), "request_id": f"r{i}", "request_key": f"user-{i % 500}",
             "inputs": [x[i].tolist()]} for i in range(n)]


def _in_process(host, source, sink):
    """The in-process consumer (``predict stream run --until-idle``) over ``source`` into ``sink``."""
    from matih_lite.serving.streams import DeploymentStreams
    from matih_lite.serving.traffic import attach_traffic, detach_traffic

    async def main():
        manager = attach_traffic(host)
        manager.start()
        streams = DeploymentStreams(host, manager, asyncio.get_running_loop())
        spec = await asyncio.to_thread(streams.spec, P, "scorer", source, sink, batch_size=1000)
        consumer = streams.consumer(spec)
        while await asyncio.to_thread(consumer.run_once):
            pass
        await manager.stop()
        return dict(consumer.stats)

    try:
        return asyncio.run(main())
    finally:
        detach_traffic(host)


@pytest.mark.slow
def test_flink_job_answers_like_the_in_process_consumer(tmp_path, kafka, flink_env):
    from matih_flink.streaming import FlinkStreamJob

    # Every shadow copy made, however many wait (the consumer hands the service 1,000 requests at once).
    host = make_host(tmp_path, kafka, extra="[server]\nshadow_max_pending = 100000\n")
    job = None
    try:
        _register(host, "m", _onnx_model([1.0, 2.0, 3.0]))
        _register(host, "m", _onnx_model([-1.0, 0.5, 4.0]))
        _register(host, "m", _onnx_model([0.5, 0.5, 0.5]))
        Deployments(host).deploy(P, "scorer", "m", split="1=30,2=70", shadows=[3])
        events = host.backend("events")
        sent = _requests(N)
        events.append("requests", sent)

        started = time.monotonic()
        stats = _in_process(host, "requests", "answers")
        local_s = time.monotonic() - started
        assert stats["consumed"] == N and stats["predicted"] == N
        local = {a["request_id"]: a for a in read_all(events, "answers")}
        assert len(local) == N

        plan = stream_job_plan(host, P, "scorer", "requests", "flink-answers")
        assert [(r.version, r.weight, r.flavor) for r in plan.routes] == [(1, 30.0, "onnx"), (2, 70.0, "onnx")]
        assert [(r.variant, r.version, r.weight) for r in plan.shadows] == [("v3", 3, 0.0)]
        job = FlinkStreamJob(plan, tmp_path / "flink", env=flink_env, checkpoint_interval="2s")
        started = time.monotonic()
        job.start()
        got = wait_until(lambda: (lambda a: a if len(a) >= N else None)(read_all(events, "flink-answers")),
                         timeout=600, interval=2.0, what=f"{N} predictions from the Flink job",
                         describe=lambda: job.job.log_tail(30))
        flink_s = time.monotonic() - started
        print(f"\n{N} requests: in-process consumer {local_s:.1f} s, Flink job (start included) {flink_s:.1f} s")

        assert len(got) == N and len({a["request_id"] for a in got}) == N
        for a in got:
            want = local[a["request_id"]]
            for field in ("deployment", "version", "variant", "source", "source_offset", "consumer"):
                assert a[field] == want[field], (field, a, want)
            # The same model files and onnxruntime: equal to float32 precision. Not bit for bit: the service
            # micro-batches requests and onnxruntime's batched kernel rounds some rows one ulp apart from a
            # single-row run (the in-process answer itself depends on which requests shared a batch).
            assert np.asarray(a["predictions"]).shape == np.asarray(want["predictions"]).shape
            np.testing.assert_allclose(a["predictions"], want["predictions"], rtol=2e-6, atol=2e-6)
            assert "error" not in a
        counts = {v: sum(1 for a in got if a["version"] == v) for v in (1, 2)}
        assert counts == {v: sum(1 for a in local.values() if a["version"] == v) for v in (1, 2)}
        assert 0.25 * N < counts[1] < 0.35 * N
        # Each key met one variant, in both.
        by_key: dict[str, set[int]] = {}
        for r, a in zip(sent, sorted(got, key=lambda a: a["source_offset"])):
            by_key.setdefault(r["request_key"], set()).add(a["version"])
        assert all(len(v) == 1 for v in by_key.values())

        assert {a["version"] for a in got} == {1, 2}  # the shadow answers no one

        # Logged to the inference log like HTTP predictions: each request four times (in-process, then Flink;
        # the routed version's answer, then the shadow's).
        def logged():
            rows = read_all(events, "inference.scorer")
            return rows if len(rows) >= 4 * N else None

        rows = wait_until(logged, timeout=120, interval=1.0, what="the Flink job's inference-log records")
        assert len(rows) == 4 * N
        per_request: dict[tuple[str, bool], list[dict]] = {}
        for row in rows:
            per_request.setdefault((row["request_id"], row["shadow"]), []).append(row)
        assert len(per_request) == 2 * N
        for (rid, shadow), pair in per_request.items():
            assert len(pair) == 2
            a, b = pair
            assert (a["version"], a["variant"], a["deployment"]) == (b["version"], b["variant"], b["deployment"])
            assert (a["version"] == "3") == shadow and (a["version"] == str(local[rid]["version"])) != shadow
            assert a["features"] == b["features"]
            assert a["prediction"] == pytest.approx(b["prediction"], rel=2e-6, abs=2e-6)  # float32, as above
        # What a canary is judged on (the log's answers, shadows left out, as every replica and the job wrote
        # them): each routed request twice, once per consumer.
        from matih_lite.serving.inference_log import variant_outcomes

        outcomes = variant_outcomes(events, "scorer", 0)
        assert not outcomes.failed.any()
        assert {v: int((outcomes.version == v).sum()) for v in (1, 2, 3)} == {1: 2 * counts[1], 2: 2 * counts[2], 3: 0}

        # The job's own counters, over Flink's REST API (reported every few seconds).
        job_counts = wait_until(lambda: (lambda c: c if c["shadowed"] == N else None)(job.counts()), timeout=60,
                                interval=1.0, what="the job's shadow counter")
        assert (job_counts["shadow_failed"], job_counts["predicted"], job_counts["failed"]) == (0, N, 0)
    finally:
        if job is not None:
            job.stop(drain=False)
        host.close()


@pytest.mark.slow
def test_a_killed_job_restarts_from_its_checkpoint_with_no_answer_missing_or_twice(tmp_path, kafka, flink_env):
    from matih_flink.streaming import FlinkStreamJob

    host = make_host(tmp_path, kafka)
    job = None
    try:
        _register(host, "m", _onnx_model([1.0, 2.0, 3.0]))
        Deployments(host).deploy(P, "scorer", "m", version=1)
        events = host.backend("events")
        half = N // 2
        sent = _requests(N)
        events.append("requests", sent[:half])
        plan = stream_job_plan(host, P, "scorer", "requests", "flink-answers")
        job = FlinkStreamJob(plan, tmp_path / "flink", env=flink_env, checkpoint_interval="1s")
        job.start()
        wait_until(lambda: len(read_all(events, "flink-answers")) >= half, timeout=600, interval=1.0,
                   what="the first half answered", describe=lambda: job.job.log_tail(30))
        time.sleep(1.5)  # a checkpoint or so past the first answers, none past the last, perhaps
        job.kill()  # as a crash: no savepoint
        assert not job.alive()
        events.append("requests", sent[half:])
        job.start()  # from its latest checkpoint (or its group offsets), skipping what the sink holds
        assert job.job.restored_from is not None
        got = wait_until(lambda: (lambda a: a if len(a) >= N else None)(read_all(events, "flink-answers")),
                         timeout=600, interval=1.0, what="every request answered after the restart",
                         describe=lambda: job.job.log_tail(30))
        time.sleep(3.0)  # replays, were any let through, would land meanwhile
        got = read_all(events, "flink-answers")
        ids = [a["request_id"] for a in got]
        assert len(ids) == len(set(ids)) == N
        assert sorted(a["source_offset"] for a in got) == list(range(N))
    finally:
        if job is not None:
            job.stop(drain=False)
        host.close()
