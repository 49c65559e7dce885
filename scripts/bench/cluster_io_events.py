#!/usr/bin/env python
"""Cluster data-plane benchmark, the Kafka half: the inference log into Kafka, and predictions with it on.

Not a test: it prints a table and never fails on a number. ``scripts/bench/cluster_io.py`` imports it for
its ``events`` and ``predict`` sections (``run(args) -> list[dict]``); it also runs on its own:

    python scripts/bench/cluster_io_events.py                        # both sections (~2 minutes)
    python scripts/bench/cluster_io_events.py --only events --records 500000
    python scripts/bench/cluster_io.py --only events,predict --duration 20 --repeat 2

Sections (one tansu broker, memory storage, on a free 127.0.0.1 port, for all of them)
  events   N one-row requests of 20 features into Kafka, timed from the first record to the last one
           acknowledged (idempotent producer, acks=all on every side):
             bare producer       confluent-kafka ``Producer.produce`` of the records as JSON (msgspec), one
                                 message each, then ``flush``: the ceiling the peer sets
             events slot         ``KafkaEventStore.append`` of the same records as 5,000-row Arrow tables
             inference log       ``InferenceLog.record`` per request (what a prediction costs the request
                                 path) on an event loop the log is attached to, as in the service: the loop
                                 builds the tables between requests, the log's writer thread appends them
                                 through the slot; then ``flush``; target >= 50,000 records/s
             inference log (duckdb)  the same into the lite DuckDB backend, for scale
  predict  ``matih-lite up`` twice, the same model (a LogisticRegression on 20 features, sklearn flavor)
           deployed on each: events in DuckDB (the lite default), then in Kafka. wrk, 16 connections (2
           threads), posting ``{"inputs": [[20 floats]]}`` after a warm-up; p50/p99 from wrk's histogram;
           ``--predict-repeat`` alternates the two, each turn on fresh events (a new DuckDB file, a new
           topic prefix: on tansu, whose time lookups all answer offset 0, the drift runner's first look
           at a deployment would otherwise read the whole, ever longer, topic). Afterwards each
           service's ``/metrics`` says how many requests its inference log wrote and dropped.
           Target: Kafka's p99 within 1.2x DuckDB's.

Every server runs in its own process group on free loopback ports and is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SERVING_BENCH = Path(__file__).resolve().with_name("serving.py")
N_FEATURES = 20
TABLE_ROWS = 5_000
TARGET_RATE = 50_000
TARGET_P99_RATIO = 1.2
T0 = 1_700_000_000_000


def parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The options of this module's sections (``cluster_io.py`` passes them through as ``args.rest``)."""
    ap = argparse.ArgumentParser(description="the events and predict sections of cluster_io", add_help=add_help)
    ap.add_argument("--records", type=int, default=200_000, help="requests per events side (default 200,000)")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of each timed wrk run (default 15)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of wrk before the timed runs (default 3)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16, 2 threads)")
    ap.add_argument("--events-repeat", type=int, default=3,
                    help="timed runs per events side, the sides taking turns; the best is reported (default 3)")
    ap.add_argument("--predict-repeat", type=int, default=1, help="timed runs per predict side, alternating")
    return ap


# ---- shared -------------------------------------------------------------------------------------------
def _rate(n: int, seconds: float) -> int:
    return int(n / seconds) if seconds > 0 else 0


def _requests(n: int):
    """``n`` one-row requests as the serving path logs them: a (1, 20) float array and a one-value output."""
    import numpy as np

    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, N_FEATURES))
    y = (x[:, 0] > 0).astype(np.int64)
    return x, y, tuple(f"f{j}" for j in range(N_FEATURES))


def _kafka_store(broker: Any, prefix: str, **settings: Any) -> Any:
    from matih_kafka.plugin import KafkaEventsSettings
    from matih_kafka.store import KafkaEventStore

    return KafkaEventStore(KafkaEventsSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                                               **settings))


# ---- events -------------------------------------------------------------------------------------------
def bare_producer(broker: Any, records: list[dict[str, Any]]) -> float:
    """Seconds for a bare confluent-kafka producer to send ``records`` as JSON and have them acknowledged."""
    import msgspec
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bare-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5})
    producer.produce(topic, b"{}")  # the idempotent producer's start (~0.5 s on tansu) is not timed
    producer.flush(30)
    encode = msgspec.json.Encoder().encode
    started = time.perf_counter()
    for record in records:
        while True:
            try:
                producer.produce(topic, encode(record), timestamp=record["timestamp"])
                break
            except BufferError:
                producer.poll(0.001)
    left = producer.flush(120)
    took = time.perf_counter() - started
    if left:
        raise RuntimeError(f"the bare producer left {left} messages unacknowledged")
    return took


def slot_append(store: Any, tables: list[Any], n: int) -> float:
    store.append("warm", [{"timestamp": T0}])  # producer start and the column catalogue: not timed
    started = time.perf_counter()
    for table in tables:
        store.append("slot", table)
    took = time.perf_counter() - started
    if store.end_offset("slot") != n:
        raise RuntimeError(f"the events slot holds {store.end_offset('slot')} records, not {n}")
    return took


def inference_log(store: Any, n: int, x: Any, y: Any, names: tuple[str, ...]) -> tuple[float, float, dict]:
    """(seconds to write ``n`` requests, mean microseconds per ``record`` call, the log's stats).

    As in the service: ``record`` is called on an event loop the log is attached to, which builds the
    tables between the calls (a slice at a time), while the log's writer thread appends them."""
    import asyncio
    import threading

    from matih_lite.serving.inference_log import InferenceLog, inference_stream

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bench-loop", daemon=True)
    thread.start()
    log = InferenceLog(store, max_pending=max(n + 1, 200_000))
    log.attach(loop)
    log.record("warm", "w", "primary", 1, x[0:1], y[0:1], 0.5, timestamp=T0, feature_names=names)
    log.flush()  # the stream's first append (topic, columns, producer) is not timed
    recording = 0.0

    async def requests() -> None:
        nonlocal recording
        for i in range(n):
            t = time.perf_counter()
            log.record("bench", f"r{i}", "primary", 1, x[i:i + 1], y[i:i + 1], 0.5, timestamp=T0 + i,
                       feature_names=names)
            recording += time.perf_counter() - t
            if i % 64 == 63:
                await asyncio.sleep(0)  # what else the loop has to do runs between requests

    started = time.perf_counter()
    asyncio.run_coroutine_threadsafe(requests(), loop).result()
    log.flush()
    took = time.perf_counter() - started
    stats = dict(log.stats)
    log.close()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()
    written = store.end_offset(inference_stream("bench"))
    if written != n:
        raise RuntimeError(f"the inference log wrote {written} of {n} requests (stats {stats})")
    return took, recording / n * 1e6, stats


def events_section(opts: argparse.Namespace, work: Path, broker: Any) -> list[dict[str, Any]]:
    import pyarrow as pa

    from matih_lite.builtin.duckdb_events import DuckDBEventStore

    n = opts.records
    x, y, names = _requests(n)
    records = [{"timestamp": T0 + i, "request_id": f"r{i}", "row": 0, "deployment": "bench", "variant": "primary",
                "version": "1", "latency_ms": 0.5, "shadow": False, "prediction": int(y[i]),
                "features": dict(zip(names, x[i].tolist()))} for i in range(n)]
    columns: dict[str, Any] = {"timestamp": pa.array([r["timestamp"] for r in records], pa.int64())}
    for key in ("request_id", "row", "deployment", "variant", "version", "latency_ms", "shadow", "prediction"):
        columns[key] = pa.array([r[key] for r in records])
    for j, name in enumerate(names):
        columns[f"features.{name}"] = pa.array(x[:, j])
    whole = pa.table(columns)
    tables = [whole.slice(k, TABLE_ROWS) for k in range(0, n, TABLE_ROWS)]

    timings: dict[str, list[float]] = {"bare": [], "slot": [], "kafka": [], "duckdb": []}
    per_record: dict[str, list[float]] = {"kafka": [], "duckdb": []}
    dropped = {"kafka": 0, "duckdb": 0}
    for turn in range(max(opts.events_repeat, 1)):  # the sides take turns, so a busy moment hits them alike
        timings["bare"].append(bare_producer(broker, records))
        with contextlib.closing(_kafka_store(broker, f"slot{uuid.uuid4().hex[:6]}.")) as store:
            timings["slot"].append(slot_append(store, tables, n))
        with contextlib.closing(_kafka_store(broker, f"log{uuid.uuid4().hex[:6]}.")) as store:
            took, us, stats = inference_log(store, n, x, y, names)
        timings["kafka"].append(took)
        per_record["kafka"].append(us)
        dropped["kafka"] += stats["dropped"]
        duck = DuckDBEventStore(work / f"events-bench-{turn}.duckdb")
        try:
            took, us, stats = inference_log(duck, n, x, y, names)
        finally:
            duck.close()
        timings["duckdb"].append(took)
        per_record["duckdb"].append(us)
        dropped["duckdb"] += stats["dropped"]
    best = {side: min(values) for side, values in timings.items()}
    labels = {"bare": "bare confluent-kafka producer", "slot": "events slot append (kafka)",
              "kafka": "inference log -> kafka", "duckdb": "inference log -> duckdb (lite)"}
    rows: list[dict[str, Any]] = []
    for side, label in labels.items():
        rate = _rate(n, best[side])
        row = {"case": f"{n:,} requests, best of {len(timings[side])}", "side": label, "seconds": best[side],
               "records/s": rate, "median records/s": _rate(n, statistics.median(timings[side])),
               "vs bare": f"{best['bare'] / best[side]:.2f}x", "target": "", "all_seconds": timings[side]}
        if side in per_record:
            row["record() us"] = f"{min(per_record[side]):.1f}"
            row["dropped"] = dropped[side]
        if side == "kafka":
            row["target"] = f">= {TARGET_RATE:,}/s: {'ok' if rate >= TARGET_RATE else 'MISSED'}"
        rows.append(row)
    return [dict(r, section="events") for r in rows]


# ---- predict ------------------------------------------------------------------------------------------
def _serving_bench() -> Any:
    """scripts/bench/serving.py, for its wrk runner and parser."""
    found = sys.modules.get("serving_bench")
    if found is not None:
        return found
    spec = importlib.util.spec_from_file_location("serving_bench", SERVING_BENCH)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["serving_bench"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _register(folder: Path) -> None:
    """A LogisticRegression on 20 features, saved with the sklearn flavor, logged and registered as ``bench`` v1."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.registry import Registry
    from matih_lite.serving import flavor
    from matih_lite.tracking import Tracking

    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, N_FEATURES))
    model = LogisticRegression(max_iter=200).fit(x, (x[:, 0] + x[:, 1] > 0).astype(int))
    # The service gets no MATIH_HOME (its state is the folder's); cluster_io.py sets one for its own sections.
    env = {k: v for k, v in os.environ.items() if k != "MATIH_HOME"}
    host = Host(load_config(folder / "matih.toml", env=env))
    try:
        tracking = Tracking(host)
        tenant = LOCAL_ADMIN.tenant
        run = tracking.create_run(tenant, tracking.get_or_create_experiment(tenant, "bench").experiment_id)
        with tempfile.TemporaryDirectory() as tmp:
            flavor(host, "sklearn").save(model, tmp, input_example=x[:2])
            for f in sorted(Path(tmp).rglob("*")):
                if f.is_file():
                    tracking.log_artifact(tenant, run.run_id, f"model/{f.relative_to(tmp).as_posix()}", f.read_bytes())
        registry = Registry(host)
        mv = registry.register_version(LOCAL_ADMIN, "bench", run_id=run.run_id, path="model", flavor="sklearn")
        registry.promote(LOCAL_ADMIN, "bench", mv.version, "Staging")  # what [governance] serve_stages lets serve
    finally:
        host.close()


class Service:
    """``matih-lite up`` in ``folder`` on a free port, in its own process group."""

    def __init__(self, name: str, folder: Path, env: dict[str, str]) -> None:
        from matih_lite.testing.processes import free_port

        self.name, self.folder, self.env = name, folder, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        import httpx

        log = (self.folder / "up.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "matih_lite", "up", "--port", str(self.port)],
                                     cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + 120
        last = "no answer"
        while True:
            try:
                answer = httpx.get(f"{self.url}/ready", timeout=10)
                if answer.status_code == 200:
                    return self
                last = f"{answer.status_code} {answer.text[:1000]}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.folder / "up.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"matih-lite up ({self.name}) did not get ready (last /ready: {last}); "
                                   f"exit code {self.proc.poll()}; its log ends:\n{tail}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def predict_section(opts: argparse.Namespace, work: Path, broker: Any, env: dict[str, str]) -> list[dict[str, Any]]:
    import httpx
    import numpy as np

    bench = _serving_bench()
    def events(side: str, turn: int) -> str:
        # Fresh events for every turn, on both sides: tansu answers every time lookup with offset 0, so the
        # drift runner's first look at a deployment (its latest complete windows) reads the whole topic
        # there, which grows turn after turn; Kafka would start at the window.
        if side == "duckdb":
            return f'events = {{ backend = "duckdb", path = "events-{turn}.duckdb" }}'
        return f"events = {broker.events_toml(topic_prefix=f'predict{turn}-{uuid.uuid4().hex[:6]}.')}"

    sides = ("duckdb", "kafka")
    services: dict[str, Service] = {}
    body = json.dumps({"inputs": [np.random.default_rng(1).normal(size=N_FEATURES).round(4).tolist()]})
    lua = work / "predict.lua"
    lua.write_text(bench.LUA.format(body=body))
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    try:
        for side in sides:
            folder = work / f"predict-{side}"
            folder.mkdir()
            (folder / "matih.toml").write_text(f"[profiles.lite]\n{events(side, 0)}\n")
            _register(folder)
            services[side] = service = Service(side, folder, env).start()
            made = httpx.post(f"{service.url}/api/v1/deployments",
                              json={"name": "bench", "model": "bench", "version": 1}, timeout=60)
            if made.status_code != 201:
                raise RuntimeError(f"deploying on {side}: {made.status_code} {made.text}")
            check = httpx.post(f"{service.url}/api/v1/deployments/bench/predict", content=body,
                               headers={"content-type": "application/json"}, timeout=60)
            if check.status_code != 200:
                raise RuntimeError(f"predicting on {side}: {check.status_code} {check.text}")
            service.stop()  # started again for its turn, so both run alone on the machine
        url = "/api/v1/deployments/bench/predict"
        for turn in range(max(opts.predict_repeat, 1)):
            for side, service in services.items():
                (service.folder / "matih.toml").write_text(f"[profiles.lite]\n{events(side, turn + 1)}\n")
                service.start()
                answer = httpx.post(service.url + url, content=body, headers={"content-type": "application/json"},
                                    timeout=120)  # loads the model
                if answer.status_code != 200:
                    raise RuntimeError(f"predicting on {side}: {answer.status_code} {answer.text}")
                time.sleep(8.0)  # the drift scheduler's first look, 5 s after start, passes before the timing
                if opts.warmup > 0:
                    bench.wrk(service.url + url, lua, opts.connections, 2, opts.warmup)
                got, _ = bench.wrk(service.url + url, lua, opts.connections, 2, opts.duration)
                time.sleep(2.5)  # the inference log's last flush (once a second)
                text = httpx.get(f"{service.url}/metrics", timeout=30).text
                got["logged"] = _metric(text, 'matih_inference_log_records_total{outcome="written"}')
                got["dropped"] = _metric(text, 'matih_inference_log_requests_total{outcome="dropped"}')
                got["recorded"] = _metric(text, 'matih_inference_log_requests_total{outcome="recorded"}')
                runs[side].append(got)
                service.stop()
    finally:
        for service in services.values():
            service.stop()
    rows = []
    base_p99 = statistics.median(r["p99_ms"] for r in runs["duckdb"])
    for side, results in runs.items():
        p50 = statistics.median(r["p50_ms"] for r in results)
        p99 = statistics.median(r["p99_ms"] for r in results)
        ratio = p99 / base_p99 if base_p99 else float("nan")
        target = "" if side == "duckdb" else \
            f"p99 <= {TARGET_P99_RATIO}x duckdb: {'ok' if ratio <= TARGET_P99_RATIO else 'MISSED'}"
        rows.append({"section": "predict", "case": f"c{opts.connections}, {len(results)} x {opts.duration:g} s",
                     "side": f"inference log -> {side}", "req/s": int(statistics.median(r["rps"] for r in results)),
                     "p50 ms": f"{p50:.2f}", "p99 ms": f"{p99:.2f}", "p99 vs duckdb": f"{ratio:.2f}x",
                     "target": target, "non-2xx": sum(r["non_2xx"] for r in results),
                     "logged": int(sum(r["logged"] or 0 for r in results)),
                     "dropped": int(sum(r["dropped"] or 0 for r in results)),
                     "all_seconds": results})
    return rows


# ---- entry points -------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows of the ``events`` and ``predict`` sections named in ``args.only`` (options in ``args.rest``)."""
    from matih_lite.testing.tansu import Tansu

    opts = parser().parse_args(getattr(args, "rest", []) or [])
    only = set(getattr(args, "only", ("events", "predict")))
    verbose = getattr(args, "verbose", False)
    work = Path(tempfile.mkdtemp(prefix="matih-cluster-io-events-"))
    env = dict(os.environ, HOME=str(work / "home"), MLFLOW_DISABLE_TELEMETRY="true", RAY_AUTH_MODE="disabled")
    for var in ("MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN"):
        env.pop(var, None)
    (work / "home").mkdir()
    rows: list[dict[str, Any]] = []
    broker = Tansu(work / "tansu")
    try:
        broker.start()
        for name, section in (("events", lambda: events_section(opts, work, broker)),
                              ("predict", lambda: predict_section(opts, work, broker, env))):
            if name not in only:
                continue
            if verbose:
                print(f"[{name}] running", file=sys.stderr, flush=True)
            try:
                rows += section()
            except Exception as exc:  # one section failing does not end the run
                if verbose:
                    traceback.print_exc()
                rows.append({"section": name, "case": "failed", "side": f"{type(exc).__name__}: {exc}"[:300]})
    finally:
        broker.stop()
        if not getattr(args, "keep", False):
            shutil.rmtree(work, ignore_errors=True)
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    for section in ("events", "predict"):
        part = [{k: v for k, v in r.items() if k not in ("section", "all_seconds")} for r in rows
                if r.get("section") == section]
        if not part:
            continue
        columns: list[str] = []
        for row in part:
            columns += [k for k in row if k not in columns]
        cells = [[(f"{v:.2f} s" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v or ""))
                  for v in (row.get(c) for c in columns)] for row in part]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        print(f"\n[{section}]")
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        print("  ".join("-" * w for w in widths))
        for r in cells:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[parser(add_help=False)],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="events,predict", help="sections to run: events,predict")
    ap.add_argument("--json", help="write every row (each predict run too) here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("-v", "--verbose", action="store_true", help="progress and tracebacks of failing sections")
    args, _ = ap.parse_known_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    args.rest = _own_options(argv if argv is not None else sys.argv[1:])
    load = os.getloadavg()[0]
    rows = run(args)
    print(f"cluster_io_events  Python {sys.version.split()[0]}  {os.cpu_count()} CPUs  load {load:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")
    _print(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2, default=str))
    return 0


def _own_options(argv: list[str]) -> list[str]:
    """The options :func:`parser` knows (with their values), from a command line that has others too."""
    known = {a for action in parser(add_help=False)._actions for a in action.option_strings
             if a not in ("-h", "--help")}
    out, i = [], 0
    while i < len(argv):
        name = argv[i].split("=", 1)[0]
        if name in known:
            out.append(argv[i])
            if "=" not in argv[i] and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
        i += 1
    return out


if __name__ == "__main__":
    sys.exit(main())
