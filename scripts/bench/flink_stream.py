#!/usr/bin/env python
"""Streaming inference on Flink against the in-process consumer: the same deployment, the same requests, timed.

Not a test: it prints a table and never fails on a number (that both answer the same is tested by
``backends/flink/tests/test_flink_predict.py`` and ``test_flink_stream_service.py``). Needs matih-flink and
matih-kafka with their test extras.

    python scripts/bench/flink_stream.py                       # 50,000 requests, 20 s at 1,000/s (~4 minutes)
    python scripts/bench/flink_stream.py --records 100000 --rate 1000 --seconds 30 --flavor sklearn

A tansu broker on a free loopback port; a 100-tree random forest (depth 8, 3 features) registered as ONNX
(skl2onnx, run by onnxruntime) or, with ``--flavor sklearn``, as scikit-learn (the sklearn flavor); the
ml-service in a thread with ``drift = { backend = "flink", enabled = false }``. For each engine
(``inprocess`` then ``flink``), a stream consumer is started through ``POST /api/v1/deployments/{name}/streams``:

- ``throughput``: N one-row requests are put on the requests topic first; predictions/s is N over the time from
  the first answer on the sink to the last (the job's start-up is printed apart);
- ``kafka``: the floor of this harness, the same requests read back from the requests topic itself;
- ``latency``: then, requests produced at ``--rate`` per second for ``--seconds`` (10 per 10 ms), each
  stamped with its produce time; end to end is from that stamp to the moment this process reads its answer
  from the sink (reading the sink every 5 ms): p50, p99, max.

The load average is printed: the figures of a shared machine are taken under others' load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "backends" / "flink" / "tests"))


def _model(flavor: str, folder: Path):
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)).astype(np.float32)
    forest = RandomForestRegressor(n_estimators=100, max_depth=8, random_state=0).fit(x, x @ [1.0, -2.0, 0.5])
    if flavor == "onnx":
        from skl2onnx import to_onnx

        return to_onnx(forest, x[:1])
    return forest


def _register(host, model, flavor):
    from flink_helpers import P

    from matih_lite.registry import Registry
    from matih_lite.serving import flavor as flavor_of
    from matih_lite.tracking import Tracking

    tracking = Tracking(host)
    run = tracking.create_run(P.tenant, tracking.get_or_create_experiment(P.tenant, "bench").experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        if flavor == "onnx":
            flavor_of(host, "onnx").save(model, tmp)
        else:
            flavor_of(host, "sklearn").save(model, tmp, input_example=np.zeros((1, 3), dtype=np.float32))
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                tracking.log_artifact(P.tenant, run.run_id, f"model/{f.relative_to(tmp).as_posix()}", f.read_bytes())
    version = Registry(host).register_version(P, "forest", run_id=run.run_id, path="model", flavor=flavor)
    Registry(host).promote(P, "forest", version.version, "Staging", reason="benchmark")


def _sink_reader(bootstrap, topic, on_record, stop):
    """Read ``topic`` from its start with a consumer of this process's own (no group, 5 ms fetch waits): the
    moment each answer can be read, without the events backend's per-call overhead."""
    import json

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 5, "log_level": 0})
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        while not stop.is_set():
            messages = consumer.consume(num_messages=5000, timeout=0.01)
            now = time.time()
            for m in messages:
                if m.error() is None:
                    on_record(json.loads(m.value()), now)
    finally:
        consumer.close()


def run_engine(host, url, events, engine, args, rows, bootstrap):
    import httpx

    source, sink = f"req-{engine}", f"ans-{engine}"
    if engine == "kafka":  # the floor: the requests topic read back as it is written, nothing answering
        sink = source
    n = args.records
    now = int(time.time() * 1000)
    for start in range(0, n, 5000):
        events.append(source, [{"timestamp": now, "request_id": f"t{i}", "request_key": f"k{i % 1000}",
                                "inputs": [rows[i % len(rows)].tolist()]} for i in range(start, min(n, start + 5000))])
    seen: dict[str, float] = {}
    lock = threading.Lock()

    def on_record(data, at):
        with lock:
            seen[str(data.get("request_id"))] = at

    stop = threading.Event()
    reader = threading.Thread(target=_sink_reader, args=(bootstrap, sink, on_record, stop), daemon=True)
    reader.start()
    t0 = time.time()
    if engine != "kafka":
        answer = httpx.post(f"{url}/api/v1/deployments/scorer/streams", timeout=120,
                            json={"source": source, "sink": sink, "engine": engine, "batch_size": 1000})
        answer.raise_for_status()
    while True:
        with lock:
            done = sum(1 for k in seen if k.startswith("t"))
        if done >= n:
            break
        if time.time() - t0 > 1200:
            raise SystemExit(f"{engine}: only {done} of {n} answered in 20 minutes")
        time.sleep(0.05)
    with lock:
        stamps = [v for k, v in seen.items() if k.startswith("t")]
    first, last = min(stamps), max(stamps)
    # Answers that all land within one read (a few thousand, answered in one batch) cannot be timed: nan.
    result = {"engine": engine, "startup_s": first - t0,
              "throughput": n / (last - first) if last - first >= 0.05 else float("nan")}

    sent: dict[str, float] = {}
    per_tick = max(args.rate // 100, 1)
    ticks = int(args.seconds * 100)
    start = time.time()
    for tick in range(ticks):
        at = time.time()
        batch = []
        for j in range(per_tick):
            rid = f"l{tick * per_tick + j}"
            sent[rid] = at
            batch.append({"timestamp": int(at * 1000), "request_id": rid, "request_key": f"k{j}",
                          "inputs": [rows[(tick * per_tick + j) % len(rows)].tolist()]})
        events.append(source, batch)
        pause = start + (tick + 1) * 0.01 - time.time()
        if pause > 0:
            time.sleep(pause)
    deadline = time.time() + 120
    while time.time() < deadline:
        with lock:
            if all(k in seen for k in sent):
                break
        time.sleep(0.05)
    stop.set()
    with lock:
        lat = np.asarray([(seen[k] - sent[k]) * 1000 for k in sent if k in seen])
    result.update(rate=len(sent) / max(ticks / 100, 1e-9), answered=len(lat), sent=len(sent),
                  p50=float(np.percentile(lat, 50)), p99=float(np.percentile(lat, 99)), max=float(lat.max()))
    if engine != "kafka":
        httpx.delete(f"{url}/api/v1/deployments/scorer/streams/scorer", timeout=120)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--flavor", choices=["onnx", "sklearn"], default="onnx")
    parser.add_argument("--engines", default="kafka,inprocess,flink",
                        help="kafka: the floor of this harness (the requests topic read back, nothing answering)")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from flink_helpers import P, make_host

    from matih_lite.serving.deployments import Deployments
    from matih_lite.testing.flink import FlinkService, flink_environment
    from matih_lite.testing.tansu import Tansu

    env = flink_environment()
    os.environ["MATIH_FLINK_ENV"] = str(env.root)
    loads = [os.getloadavg()[0]]
    rows = np.random.default_rng(1).normal(size=(5000, 3)).round(4).astype(np.float32)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = Tansu(folder / "tansu")
        broker.start()
        host = make_host(folder, broker, drift={"enabled": False})
        try:
            _register(host, _model(args.flavor, folder), args.flavor)
            Deployments(host).deploy(P, "scorer", "forest", version=1)
            events = host.backend("events")
            with FlinkService(host) as url:
                for engine in args.engines.split(","):
                    results.append(run_engine(host, url, events, engine, args, rows, broker.bootstrap_servers))
                    loads.append(os.getloadavg()[0])
        finally:
            host.close()
            broker.stop()
    print(f"\nstreaming inference, a 100-tree forest ({args.flavor}), {args.records:,} requests, then "
          f"{args.rate:,}/s for {args.seconds:g} s; load average {' -> '.join(f'{x:.1f}' for x in loads)} "
          f"on {os.cpu_count()} cores")
    print(f"{'engine':<10} {'start s':>8} {'pred/s':>9} {'rate/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
          f" {'answered':>9}")
    for r in results:
        print(f"{r['engine']:<10} {r['startup_s']:>8.1f} {r['throughput']:>9,.0f} {r['rate']:>7,.0f} "
              f"{r['p50']:>8.1f} {r['p99']:>8.1f} {r['max']:>8.1f} {r['answered']:>5}/{r['sent']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
