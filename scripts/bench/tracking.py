#!/usr/bin/env python
"""Tracking benchmark: the same work through matih-lite and through MLflow, in one run.

Not a test: it prints a table of times, rates and ratios (matih-lite / MLflow), and
optionally writes them as JSON. See scripts/bench/README.md for what each case measures.

    python scripts/bench/tracking.py                 # everything, full sizes (several minutes)
    python scripts/bench/tracking.py --quick         # sizes / 10, a smoke check
    python scripts/bench/tracking.py --cases a,d --json /tmp/bench.json
    python scripts/bench/tracking.py --cases f --sides "matih sdk,mlflow sqlite"   # the SDK's floor

Cases
  a  metric points logged one call at a time (the run's end included in the time)
  b  metric points logged in batches of 1,000
  c  runs created, each with 5 params and 3 metrics (start, log, end)
  d  one filtered search over 10,000 runs, a page of up to 1,000 (the search alone)
  e  the full history of a 100,000-point metric
  f  50,000 buffered ``ml.log_metric`` calls and the run's end, vs MLflow's ``log_batch`` of the same
     points in batches of 1,000 (the SDK's per-call floor against MLflow's fastest way in)

Sides
  matih sdk             ``import matih_lite as ml``, embedded (in-process store)
  matih tracking        ``matih_lite.tracking.Tracking`` called directly (no SDK, no buffering)
  matih sdk http        the SDK with MATIH_URL pointing at ``matih-lite up``
  matih rest            raw HTTP (httpx) to ``matih-lite up``'s /api/v1
  mlflow-client>matih   the unchanged ``mlflow`` client against ``matih-lite up`` (if it speaks MLflow REST)
  mlflow sqlite         MLflow on a SQLite store, in-process (fluent API; MlflowClient for batch/search/history)
  mlflow server         ``mlflow server`` (SQLite, 1 worker) through ``MlflowClient`` over REST

Everything runs with a temporary HOME, MLFLOW_DISABLE_TELEMETRY=true and RAY_AUTH_MODE=disabled,
in a temporary working folder; both servers bind 127.0.0.1 and are stopped at the end, even on error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TENANT = "default"

# ---- sizes -------------------------------------------------------------------------------------------
FULL = {
    "a": 5_000,            # single-call points, matih sides
    "a_mlflow": 1_000,     # single-call points, MLflow sides (MLflow is slow per call; the rate is reported)
    "b": 100_000,          # batched points
    "batch": 1_000,        # points per batch
    "c": 1_000,            # runs created, matih sides and MLflow on SQLite
    "c_server": 300,       # runs created through mlflow server (about 3 requests per run)
    "d": 10_000,           # runs searched over
    "d_page": 1_000,       # page size of the search
    "e": 100_000,          # points in the history read back
    "f": 50_000,           # buffered single calls (matih) vs the same points through log_batch (MLflow)
}
REPEATS = {"d": 7, "e": 3}  # timed repetitions after one warm-up; the median is reported

SEARCH_FILTER = "metrics.auc > 0.9 and params.model = 'xgboost'"
MODELS = ("xgboost", "lightgbm", "random_forest", "logistic")

# Targets from the issue: (case, side) -> (kind, value, reference side)
#   "x"  : ratio against the reference at least value
#   "ms" : seconds below value/1000
TARGETS: dict[tuple[str, str], tuple[str, float, str | None]] = {
    ("a", "matih sdk"): ("x", 50, "mlflow sqlite"),
    ("a", "mlflow-client>matih"): ("x", 5, "mlflow server"),
    ("b", "matih sdk"): ("x", 20, "mlflow sqlite"),
    ("c", "matih sdk"): ("x", 10, "mlflow sqlite"),
    ("d", "matih sdk"): ("ms", 100, None),
    ("e", "matih sdk"): ("x", 10, "mlflow sqlite"),
    ("f", "matih sdk"): ("x", 20, "mlflow sqlite"),
}

MATIH_SIDES = ("matih sdk", "matih sdk nocapture", "matih tracking", "matih sdk http", "matih sdk http nocapture",
               "matih rest", "mlflow-client>matih")
MLFLOW_SIDES = ("mlflow sqlite", "mlflow server")
ALL_SIDES = tuple(s for s in MATIH_SIDES if "nocapture" not in s) + MLFLOW_SIDES


@dataclass
class Result:
    case: str
    side: str
    n: int                      # items done in the timed part (points, runs, searches' runs returned...)
    unit: str                   # "points", "runs", "search", "history"
    seconds: float              # the timed part (median for d and e)
    rate: float                 # items per second (points/s, runs/s); for d and e points or runs returned / s
    note: str = ""
    samples: list[float] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)  # reference side -> how many times better
    target: str = ""
    target_met: bool | None = None


class Skip(Exception):
    """A side that cannot run (a part of matih-lite not written yet): reported, not fatal."""


# ---- environment and servers ---------------------------------------------------------------------------
def prepare_env(work: Path) -> dict[str, str]:
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "RAY_AUTH_MODE": "disabled",
        "MATIH_HOME": str(work / "matih"),  # the embedded sides'; the service has its own (start_servers)
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "GIT_PYTHON_REFRESH": "quiet",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        # MlflowClient.set_terminated over REST otherwise prints "View run ..." and makes one more GET
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }
    store = work / "store"
    (work / "matih.toml").write_text(f'[profiles.lite]\n'
                                     f'metadata = {{ backend = "sqlite", path = "{store}/matih.db" }}\n'
                                     f'artifacts = {{ backend = "local", root = "{store}/artifacts" }}\n')
    for key in ("MATIH_URL", "MATIH_CONFIG", "MATIH_PROFILE", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME",
                "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        os.environ.pop(key, None)
    os.environ.update(env)
    return dict(os.environ)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess in its own process group; stop() ends the whole group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name, self.argv, self.env, self.cwd, self.log_path = name, argv, env, cwd, log
        self.proc: subprocess.Popen | None = None

    def start(self, ready_url: str, timeout: float = 90.0) -> None:
        import httpx

        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(ready_url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer {ready_url} within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # children that outlived the leader (uvicorn workers) still share the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self._log.close()


def _on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ---- timing helpers ----------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def repeated(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    fn()  # warm-up (caches, connections, prepared statements)
    samples, out = [], None
    for _ in range(repeats):
        dt, out = timed(fn)
        samples.append(dt)
    return statistics.median(samples), samples, out


def values(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


def search_population(n: int) -> list[tuple[dict[str, str], dict[str, float]]]:
    """The same 10,000 runs for every store: 5 params and 3 metrics each, seeded."""
    rng = random.Random(1234)
    out = []
    for i in range(n):
        params = {"model": MODELS[i % len(MODELS)], "lr": f"{rng.choice((0.01, 0.03, 0.1, 0.3))}",
                  "depth": str(rng.randint(2, 12)), "seed": str(i), "features": str(rng.randint(10, 200))}
        metrics = {"auc": 0.5 + rng.random() * 0.5, "loss": rng.random(), "accuracy": 0.5 + rng.random() * 0.5}
        out.append((params, metrics))
    return out


def expected_matches(population: list[tuple[dict[str, str], dict[str, float]]], page: int) -> int:
    return min(page, sum(1 for p, m in population if m["auc"] > 0.9 and p["model"] == "xgboost"))


# ---- the matih-lite SDK (written alongside this benchmark; adapt to what exists) ----------------------
class Sdk:
    """Thin adapter over ``matih_lite.sdk`` so the cases read the same for embedded and HTTP."""

    def __init__(self, url: str | None) -> None:
        try:
            import matih_lite.sdk as sdk
        except ImportError as exc:
            raise Skip(f"matih_lite.sdk not importable yet ({exc})") from None
        self.sdk = sdk
        self.url = url
        self._set_transport()

    def _set_transport(self) -> None:
        if self.url:
            os.environ["MATIH_URL"] = self.url
        else:
            os.environ.pop("MATIH_URL", None)

    def __enter__(self) -> Sdk:
        self._set_transport()
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(Exception):
            if self.sdk.active_run() is not None:
                self.sdk.end_run()
        os.environ.pop("MATIH_URL", None)

    def client(self) -> Any:
        return self.sdk.get_client()


# ---- cases ---------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
        self.args = args
        self.work = work
        self.env = env
        self.sizes = {k: (max(1, v // 10) if args.quick and k not in ("batch", "d_page") else v)
                      for k, v in FULL.items()}
        if args.quick:
            self.sizes["d_page"] = 100
        self.sides = [s for s in ALL_SIDES if s in args.sides]
        self.results: list[Result] = []
        self.skipped: list[tuple[str, str, str]] = []
        self.servers: list[Server] = []
        self.matih_url: str | None = None
        self.mlflow_url: str | None = None
        self.mlflow_db = work / "mlflow" / "mlflow.db"
        self.mlflow_uri = f"sqlite:///{self.mlflow_db}"
        self._tracking: Any = None
        self._host: Any = None
        self._matih_speaks_mlflow: bool | None = None
        self._d_matih: tuple[str, int] | None = None
        self._d_mlflow: dict[str, tuple[str, int]] = {}
        self._e_matih: str | None = None
        self._e_mlflow: dict[str, str] = {}
        self.mlflow_server_db: Path | None = None

    # -- setup ----------------------------------------------------------------------------------------
    def start_servers(self) -> None:
        need_matih = any(s in self.sides for s in ("matih sdk http", "matih rest", "mlflow-client>matih"))
        need_mlflow = "mlflow server" in self.sides
        exe = Path(sys.executable).parent
        if need_matih:
            port = free_port()
            cli = exe / "matih-lite"
            argv = [str(cli)] if cli.exists() else [sys.executable, "-m", "matih_lite"]
            # The service's state folder is not the embedded sides' (whose SDK would otherwise find the running
            # service in .matih/service.json and go over HTTP, as a user's should); matih.toml points both at one
            # store, so every side reads the runs the cases seed.
            srv = Server("matih-lite up", [*argv, "up", "--host", "127.0.0.1", "--port", str(port),
                                           "--log-level", "warning"],
                         {**self.env, "MATIH_HOME": str(self.work / "matih-server")}, self.work,
                         self.work / "matih-server.log")
            self.servers.append(srv)
            t, _ = timed(lambda: srv.start(f"http://127.0.0.1:{port}/health"))
            self.matih_url = f"http://127.0.0.1:{port}"
            print(f"  matih-lite up on {self.matih_url} (ready in {t:.1f} s)", flush=True)
        if need_mlflow or "mlflow sqlite" in self.sides:
            self.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
            # create the schema once, outside every timing (MLflow runs its migrations on first use)
            t, _ = timed(lambda: self.mlflow_client(None).search_experiments(max_results=1))
            print(f"  MLflow SQLite store at {self.mlflow_db} (schema made in {t:.1f} s)", flush=True)
        if need_mlflow:
            port = free_port()
            mlflow_db = self.work / "mlflow" / "server.db"
            srv = Server("mlflow server", [str(exe / "mlflow"), "server", "--backend-store-uri",
                                           f"sqlite:///{mlflow_db}", "--default-artifact-root",
                                           str(self.work / "mlflow" / "server-artifacts"),
                                           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                         self.env, self.work, self.work / "mlflow-server.log")
            self.servers.append(srv)
            t, _ = timed(lambda: srv.start(f"http://127.0.0.1:{port}/health", timeout=180))
            self.mlflow_url = f"http://127.0.0.1:{port}"
            self.mlflow_server_db = mlflow_db
            print(f"  mlflow server on {self.mlflow_url} (ready in {t:.1f} s)", flush=True)

    def stop_servers(self) -> None:
        for srv in reversed(self.servers):
            with contextlib.suppress(Exception):
                srv.stop()
        self.servers.clear()

    def close(self) -> None:
        self.stop_servers()
        if self._host is not None:
            with contextlib.suppress(Exception):
                self._host.close()

    @property
    def tracking(self) -> Any:
        if self._tracking is None:
            from matih_lite.host import Host
            from matih_lite.tracking import Tracking

            self._host = Host.open()
            self._tracking = Tracking(self._host)
        return self._tracking

    def mlflow_client(self, url: str | None) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=url or self.mlflow_uri)

    def http(self) -> Any:
        import httpx

        if not self.matih_url:
            raise Skip("matih-lite server not started")
        return httpx.Client(base_url=self.matih_url, timeout=120.0)

    def matih_speaks_mlflow(self) -> bool:
        if self._matih_speaks_mlflow is None:
            import httpx

            try:
                r = httpx.get(f"{self.matih_url}/api/2.0/mlflow/experiments/get-by-name",
                              params={"experiment_name": "Default"}, timeout=10)
                self._matih_speaks_mlflow = r.status_code in (200, 404) and "json" in r.headers.get(
                    "content-type", "") and (r.status_code == 200 or "RESOURCE_DOES_NOT_EXIST" in r.text)
            except httpx.HTTPError:
                self._matih_speaks_mlflow = False
        return self._matih_speaks_mlflow

    def exp_name(self, case: str, side: str) -> str:
        return f"bench-{case}-{side.replace(' ', '-').replace('>', '-')}-{uuid.uuid4().hex[:6]}"

    def matih_experiment(self, name: str) -> str:
        return self.tracking.get_or_create_experiment(TENANT, name).experiment_id

    def mlflow_experiment(self, client: Any, name: str) -> str:
        return client.create_experiment(name)

    # -- driver ---------------------------------------------------------------------------------------
    def run(self) -> None:
        for case in self.args.cases:
            runner = getattr(self, f"case_{case}")
            print(f"\ncase {case}: {CASE_TITLES[case].format(**self.sizes)}", flush=True)
            for side in self.sides:
                if side == "mlflow-client>matih" and self.matih_url and not self.matih_speaks_mlflow():
                    self.skip(case, side, "matih-lite up does not serve /api/2.0/mlflow yet")
                    continue
                try:
                    res = runner(side)
                except Skip as exc:
                    self.skip(case, side, str(exc))
                    continue
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # one broken side must not hide the others
                    self.skip(case, side, f"ERROR {type(exc).__name__}: {exc}")
                    if self.args.verbose:
                        traceback.print_exc()
                    continue
                for r in ([] if res is None else res if isinstance(res, list) else [res]):
                    self.results.append(r)
                    print(f"  {r.side:<20} {fmt_s(r.seconds):>9}  {fmt_rate(r):>16}  {r.note}", flush=True)
        self.compare()

    def skip(self, case: str, side: str, why: str) -> None:
        self.skipped.append((case, side, why))
        print(f"  {side:<20} skipped: {why}", flush=True)

    def compare(self) -> None:
        by = {(r.case, r.side): r for r in self.results}
        for r in self.results:
            if r.side not in MATIH_SIDES:
                continue
            for ref in MLFLOW_SIDES:
                base = by.get((r.case, ref))
                if base is None:
                    continue
                if r.case in ("d", "e"):  # latency: how many times faster
                    r.ratios[ref] = base.seconds / r.seconds if r.seconds else math.inf
                else:  # throughput
                    r.ratios[ref] = r.rate / base.rate if base.rate else math.inf
            t = TARGETS.get((r.case, r.side))
            if t:
                kind, value, ref = t
                if kind == "x":
                    r.target = f">={value:g}x {ref}"
                    if ref in r.ratios:
                        r.target_met = r.ratios[ref] >= value
                else:
                    r.target = f"<{value:g} ms"
                    r.target_met = r.seconds * 1000 < value

    # -- (a) single calls -------------------------------------------------------------------------------
    def case_a(self, side: str) -> Result | None:
        n = self.sizes["a_mlflow"] if side in MLFLOW_SIDES else self.sizes["a"]
        vals = values(n, 1)
        note = "start excluded, end included"
        if side in MLFLOW_SIDES and n < self.sizes["a"]:
            note += f"; {n} points, not {self.sizes['a']} (MLflow is slow per call)"
        if side in ("matih sdk", "matih sdk http"):
            with Sdk(self.matih_url if side.endswith("http") else None) as s:
                ml = s.sdk
                ml.set_experiment(self.exp_name("a", side))
                ml.start_run()

                def work() -> None:
                    for i, v in enumerate(vals):
                        ml.log_metric("loss", v, step=i)
                    ml.end_run()

                t, _ = timed(work)
        elif side == "matih tracking":
            from matih_lite.tracking.service import to_metric

            tr = self.tracking
            run = tr.create_run(TENANT, self.matih_experiment(self.exp_name("a", side)))

            def work() -> None:
                for i, v in enumerate(vals):
                    tr.log_batch(TENANT, run.run_id, metrics=[to_metric("loss", v, None, i)])
                tr.end_run(TENANT, run.run_id)

            t, _ = timed(work)
            note += "; one store write per point (no buffering)"
        elif side == "matih rest":
            with self.http() as c:
                exp = c.post("/api/v1/experiments/", json={"name": self.exp_name("a", side)}).raise_for_status()
                run = c.post("/api/v1/runs/", json={"experiment_id": exp.json()["experiment_id"]}).raise_for_status()
                rid = run.json()["run_id"]

                def work() -> None:
                    for i, v in enumerate(vals):
                        c.post(f"/api/v1/runs/{rid}/batch", json={"metrics": [
                            {"key": "loss", "value": v, "step": i, "timestamp": int(time.time() * 1000)}]}
                        ).raise_for_status()
                    c.patch(f"/api/v1/runs/{rid}", json={"status": "FINISHED"}).raise_for_status()

                t, _ = timed(work)
            note += "; one POST /batch per point"
        elif side == "mlflow sqlite":
            import mlflow

            mlflow.set_tracking_uri(self.mlflow_uri)
            mlflow.set_experiment(self.exp_name("a", side))
            mlflow.start_run()

            def work() -> None:
                for i, v in enumerate(vals):
                    mlflow.log_metric("loss", v, step=i)
                mlflow.end_run()

            t, _ = timed(work)
            note += "; mlflow.log_metric"
        else:  # MlflowClient over REST: mlflow server, or matih-lite's MLflow API
            url = self.mlflow_url if side == "mlflow server" else self.matih_url
            if not url:
                raise Skip("server not started")
            client = self.mlflow_client(url)
            run = client.create_run(self.mlflow_experiment(client, self.exp_name("a", side)))
            rid = run.info.run_id

            def work() -> None:
                for i, v in enumerate(vals):
                    client.log_metric(rid, "loss", v, step=i)
                client.set_terminated(rid)

            t, _ = timed(work)
            note += "; MlflowClient.log_metric"
        return Result("a", side, n, "points", t, n / t, note)

    # -- (b) batches ---------------------------------------------------------------------------------------
    def case_b(self, side: str) -> Result | None:
        n, size = self.sizes["b"], self.sizes["batch"]
        vals = values(n, 2)
        chunks = [(i, vals[i:i + size]) for i in range(0, n, size)]
        note = f"{len(chunks)} batches of {size}"
        if side in ("matih sdk", "matih sdk http"):
            with Sdk(self.matih_url if side.endswith("http") else None) as s:
                ml = s.sdk
                ml.set_experiment(self.exp_name("b", side))
                run = ml.start_run()
                batch = sdk_batch_fn(ml, run)

                def work() -> None:
                    for start, chunk in chunks:
                        batch("loss", chunk, start)
                    ml.end_run()

                t, _ = timed(work)
            note += f"; {batch.__doc__}"
        elif side == "matih tracking":
            from matih_lite.contracts import Metric

            tr = self.tracking
            run = tr.create_run(TENANT, self.matih_experiment(self.exp_name("b", side)))

            def work() -> None:
                for start, chunk in chunks:
                    ts = int(time.time() * 1000)
                    tr.log_batch(TENANT, run.run_id, metrics=[Metric("loss", v, ts, start + j)
                                                             for j, v in enumerate(chunk)])
                tr.end_run(TENANT, run.run_id)

            t, _ = timed(work)
            note += "; Tracking.log_batch"
        elif side == "matih rest":
            with self.http() as c:
                exp = c.post("/api/v1/experiments/", json={"name": self.exp_name("b", side)}).raise_for_status()
                run = c.post("/api/v1/runs/", json={"experiment_id": exp.json()["experiment_id"]}).raise_for_status()
                rid = run.json()["run_id"]

                def work() -> None:
                    for start, chunk in chunks:
                        ts = int(time.time() * 1000)
                        c.post(f"/api/v1/runs/{rid}/batch", json={"metrics": [
                            {"key": "loss", "value": v, "step": start + j, "timestamp": ts}
                            for j, v in enumerate(chunk)]}).raise_for_status()
                    c.patch(f"/api/v1/runs/{rid}", json={"status": "FINISHED"}).raise_for_status()

                t, _ = timed(work)
            note += "; POST /batch"
        else:
            from mlflow.entities import Metric as MlMetric

            url = {"mlflow sqlite": None, "mlflow server": self.mlflow_url,
                   "mlflow-client>matih": self.matih_url}[side]
            if side != "mlflow sqlite" and not url:
                raise Skip("server not started")
            client = self.mlflow_client(url)
            rid = client.create_run(self.mlflow_experiment(client, self.exp_name("b", side))).info.run_id

            def work() -> None:
                for start, chunk in chunks:
                    ts = int(time.time() * 1000)
                    client.log_batch(rid, metrics=[MlMetric("loss", v, ts, start + j) for j, v in enumerate(chunk)])
                client.set_terminated(rid)

            t, _ = timed(work)
            note += "; MlflowClient.log_batch"
        return Result("b", side, n, "points", t, n / t, note)

    # -- (c) run creation ------------------------------------------------------------------------------------
    def case_c(self, side: str) -> Result | list[Result] | None:
        n = self.sizes["c_server"] if side == "mlflow server" else self.sizes["c"]
        rng = random.Random(3)
        payloads = [({"model": MODELS[i % 4], "lr": "0.1", "depth": str(i % 10), "seed": str(i), "fold": "3"},
                     {"auc": rng.random(), "loss": rng.random(), "accuracy": rng.random()}) for i in range(n)]
        note = "start + 5 params + 3 metrics + end"
        if side in MLFLOW_SIDES and n < self.sizes["c"]:
            note += f"; {n} runs, not {self.sizes['c']}"
        if side in ("matih sdk", "matih sdk http"):
            out = []
            with Sdk(self.matih_url if side.endswith("http") else None) as s:
                ml = s.sdk
                for capture in (True, False):
                    ml.set_experiment(self.exp_name("c", side))

                    def work() -> None:
                        for params, metrics in payloads:
                            ml.start_run(capture=capture)
                            ml.log_params(params)
                            ml.log_metrics(metrics)
                            ml.end_run()

                    t, _ = timed(work)
                    if capture:
                        out.append(Result("c", side, n, "runs", t, n / t, note + "; ml.start_run() (default: "
                                          "environment capture on)/log_params/log_metrics/end_run"))
                    else:
                        out.append(Result("c", side + " nocapture", n, "runs", t, n / t,
                                          note + "; ml.start_run(capture=False), for comparison"))
            return out
        elif side == "matih tracking":
            from matih_lite.contracts import Metric

            tr = self.tracking
            exp = self.matih_experiment(self.exp_name("c", side))

            def work() -> None:
                for params, metrics in payloads:
                    run = tr.create_run(TENANT, exp)
                    ts = int(time.time() * 1000)
                    tr.log_batch(TENANT, run.run_id, params=params,
                                 metrics=[Metric(k, v, ts, 0) for k, v in metrics.items()])
                    tr.end_run(TENANT, run.run_id)

            t, _ = timed(work)
            note += "; create_run + log_batch + end_run"
        elif side == "matih rest":
            with self.http() as c:
                exp = c.post("/api/v1/experiments/", json={"name": self.exp_name("c", side)}).raise_for_status()
                eid = exp.json()["experiment_id"]

                def work() -> None:
                    for params, metrics in payloads:
                        rid = c.post("/api/v1/runs/", json={"experiment_id": eid}).raise_for_status().json()["run_id"]
                        c.post(f"/api/v1/runs/{rid}/batch", json={
                            "params": params, "metrics": [{"key": k, "value": v} for k, v in metrics.items()]}
                        ).raise_for_status()
                        c.patch(f"/api/v1/runs/{rid}", json={"status": "FINISHED"}).raise_for_status()

                t, _ = timed(work)
            note += "; 3 requests per run"
        elif side == "mlflow sqlite":
            import mlflow

            mlflow.set_tracking_uri(self.mlflow_uri)
            mlflow.set_experiment(self.exp_name("c", side))

            def work() -> None:
                for params, metrics in payloads:
                    mlflow.start_run()
                    mlflow.log_params(params)
                    mlflow.log_metrics(metrics)
                    mlflow.end_run()

            t, _ = timed(work)
            note += "; fluent start_run/log_params/log_metrics/end_run"
        else:
            from mlflow.entities import Metric as MlMetric
            from mlflow.entities import Param

            url = self.mlflow_url if side == "mlflow server" else self.matih_url
            if not url:
                raise Skip("server not started")
            client = self.mlflow_client(url)
            exp = self.mlflow_experiment(client, self.exp_name("c", side))

            def work() -> None:
                for params, metrics in payloads:
                    rid = client.create_run(exp).info.run_id
                    ts = int(time.time() * 1000)
                    client.log_batch(rid, metrics=[MlMetric(k, v, ts, 0) for k, v in metrics.items()],
                                     params=[Param(k, v) for k, v in params.items()])
                    client.set_terminated(rid)

            t, _ = timed(work)
            note += "; MlflowClient create_run + log_batch + set_terminated"
        return Result("c", side, n, "runs", t, n / t, note)

    # -- (d) filtered search -----------------------------------------------------------------------------------
    def populate_d_matih(self) -> tuple[str, int]:
        if self._d_matih is None:
            from matih_lite.contracts import Metric

            tr = self.tracking
            pop = search_population(self.sizes["d"])
            exp = self.matih_experiment(self.exp_name("d", "matih"))
            t0 = time.perf_counter()
            ts = int(time.time() * 1000)
            for i, (params, metrics) in enumerate(pop):
                run = tr.create_run(TENANT, exp, start_time=ts + i)
                tr.log_batch(TENANT, run.run_id, params=params,
                             metrics=[Metric(k, v, ts, 0) for k, v in metrics.items()])
                tr.update_run(TENANT, run.run_id, status="FINISHED", end_time=ts + i + 1)
            print(f"  (populated {len(pop)} matih-lite runs through Tracking in {time.perf_counter() - t0:.1f} s)",
                  flush=True)
            self._d_matih = (exp, expected_matches(pop, self.sizes["d_page"]))
        return self._d_matih

    def populate_d_mlflow(self, which: str) -> tuple[str, int]:
        """Insert the runs straight into MLflow's tables (its own API would take minutes); search is what's timed."""
        if which not in self._d_mlflow:
            url = None if which == "mlflow sqlite" else self.mlflow_url
            db = self.mlflow_db if which == "mlflow sqlite" else self.mlflow_server_db
            client = self.mlflow_client(url)
            exp = self.mlflow_experiment(client, self.exp_name("d", which))
            pop = search_population(self.sizes["d"])
            t0 = time.perf_counter()
            ts = int(time.time() * 1000)
            runs, params, metrics, tags = [], [], [], []
            for i, (p, m) in enumerate(pop):
                rid = uuid.uuid4().hex
                runs.append((rid, f"run-{i}", "LOCAL", "bench", "", "bench", "FINISHED", ts + i, ts + i + 1, "",
                             "active", f"{self.work}/mlflow/artifacts/{exp}/{rid}/artifacts", int(exp), None))
                params += [(k, v, rid) for k, v in p.items()]
                metrics += [(k, v, ts, rid, 0, 0) for k, v in m.items()]
                tags.append(("mlflow.runName", f"run-{i}", rid))
            con = sqlite3.connect(db, timeout=60)
            with con:
                con.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
                                "user_id, status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, "
                                "experiment_id, deleted_time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
                con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params)
                con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                                "VALUES (?,?,?,?,?,?)", metrics)
                con.executemany("INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) "
                                "VALUES (?,?,?,?,?,?)", metrics)
                con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", tags)
            con.close()
            print(f"  (populated {len(pop)} {which} runs by SQL in {time.perf_counter() - t0:.1f} s)", flush=True)
            self._d_mlflow[which] = (exp, expected_matches(pop, self.sizes["d_page"]))
        return self._d_mlflow[which]

    def case_d(self, side: str) -> Result | None:
        page = self.sizes["d_page"]
        reps = REPEATS["d"]
        note = f"median of {reps} after a warm-up"
        if side in MATIH_SIDES:
            exp, expected = self.populate_d_matih()
        else:
            exp, expected = self.populate_d_mlflow(side)
        if side in ("matih sdk", "matih sdk http"):
            with Sdk(self.matih_url if side.endswith("http") else None) as s:
                client = s.client()
                search = sdk_search_fn(client)
                t, samples, got = repeated(lambda: search(exp, SEARCH_FILTER, page), reps)
            note += f"; {search.__doc__}"
        elif side == "matih tracking":
            tr = self.tracking
            t, samples, page_out = repeated(
                lambda: tr.search_runs(TENANT, [exp], filter=SEARCH_FILTER, max_results=page), reps)
            got = len(page_out.items)
            note += "; Tracking.search_runs"
        elif side == "matih rest":
            with self.http() as c:
                def search() -> int:
                    r = c.post("/api/v1/runs/search", json={"experiment_ids": [exp], "filter": SEARCH_FILTER,
                                                            "max_results": page}).raise_for_status()
                    return len(r.json()["runs"])

                t, samples, got = repeated(search, reps)
            note += "; POST /runs/search"
        else:
            url = {"mlflow sqlite": None, "mlflow server": self.mlflow_url, "mlflow-client>matih": self.matih_url}[side]
            client = self.mlflow_client(url)
            t, samples, res = repeated(lambda: client.search_runs([exp], SEARCH_FILTER, max_results=page), reps)
            got = len(res)
            note += "; MlflowClient.search_runs"
        if got != expected:
            note += f"; WRONG COUNT {got} != {expected}"
        return Result("d", side, got, "runs", t, got / t if t else math.inf,
                      f"{got} of {self.sizes['d']} runs matched; " + note, samples)

    # -- (e) metric history -------------------------------------------------------------------------------------
    def populate_e_matih(self) -> str:
        if self._e_matih is None:
            from matih_lite.contracts import Metric

            tr = self.tracking
            n = self.sizes["e"]
            run = tr.create_run(TENANT, self.matih_experiment(self.exp_name("e", "matih")))
            ts = int(time.time() * 1000)
            t0 = time.perf_counter()
            tr.log_points(TENANT, run.run_id, [Metric("loss", v, ts + i // 100, i) for i, v in enumerate(values(n, 5))])
            tr.end_run(TENANT, run.run_id)
            print(f"  (logged {n} matih-lite points through Tracking.log_points in {time.perf_counter() - t0:.1f} s)",
                  flush=True)
            self._e_matih = run.run_id
        return self._e_matih

    def populate_e_mlflow(self, which: str) -> str:
        if which not in self._e_mlflow:
            url = None if which == "mlflow sqlite" else self.mlflow_url
            db = self.mlflow_db if which == "mlflow sqlite" else self.mlflow_server_db
            client = self.mlflow_client(url)
            rid = client.create_run(self.mlflow_experiment(client, self.exp_name("e", which))).info.run_id
            n = self.sizes["e"]
            ts = int(time.time() * 1000)
            t0 = time.perf_counter()
            rows = [("loss", v, ts + i // 100, rid, i, 0) for i, v in enumerate(values(n, 5))]
            con = sqlite3.connect(db, timeout=60)
            with con:
                con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                                "VALUES (?,?,?,?,?,?)", rows)
                con.execute("INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) "
                            "VALUES (?,?,?,?,?,?)", rows[-1])
            con.close()
            client.set_terminated(rid)
            print(f"  (inserted {n} {which} points by SQL in {time.perf_counter() - t0:.1f} s)", flush=True)
            self._e_mlflow[which] = rid
        return self._e_mlflow[which]

    def case_e(self, side: str) -> Result | None:
        n = self.sizes["e"]
        reps = REPEATS["e"]
        note = f"median of {reps} after a warm-up"
        rid = self.populate_e_matih() if side in MATIH_SIDES else self.populate_e_mlflow(side)
        if side in ("matih sdk", "matih sdk http"):
            with Sdk(self.matih_url if side.endswith("http") else None) as s:
                client = s.client()
                history = sdk_history_fn(client)
                t, samples, got = repeated(lambda: history(rid, "loss"), reps)
            note += f"; {history.__doc__}"
        elif side == "matih tracking":
            tr = self.tracking
            t, samples, p = repeated(lambda: tr.metric_history(TENANT, rid, "loss"), reps)
            got = len(p.items)
            note += "; Tracking.metric_history"
        elif side == "matih rest":
            with self.http() as c:
                def history() -> int:
                    total, token = 0, None
                    while True:
                        q = {"key": "loss", **({"page_token": token} if token else {})}
                        r = c.get(f"/api/v1/runs/{rid}/metrics/history", params=q)
                        if r.status_code in (404, 405) and "metrics" not in r.text:  # the older route
                            q.pop("key")
                            r = c.get(f"/api/v1/runs/{rid}/metrics/loss/history", params=q)
                        body = r.raise_for_status().json()
                        total += len(body["metrics"])
                        token = body.get("next_page_token")
                        if not token:
                            return total

                t, samples, got = repeated(history, reps)
            note += "; GET .../history (JSON)"
        else:
            url = {"mlflow sqlite": None, "mlflow server": self.mlflow_url, "mlflow-client>matih": self.matih_url}[side]
            client = self.mlflow_client(url)
            t, samples, res = repeated(lambda: client.get_metric_history(rid, "loss"), reps)
            got = len(res)
            note += "; MlflowClient.get_metric_history"
        if got != n:
            note += f"; WRONG COUNT {got} != {n}"
        return Result("e", side, got, "points", t, got / t if t else math.inf, note, samples)


    # -- (f) buffered single calls against MLflow's batches -------------------------------------------------
    def case_f(self, side: str) -> Result | None:
        n, size = self.sizes["f"], self.sizes["batch"]
        vals = values(n, 6)
        note = "start excluded, end included"
        if side in ("matih sdk", "matih sdk http"):
            with Sdk(self.matih_url if side.endswith("http") else None):
                import matih_lite as ml  # the package, as users call it: its lazy attribute lookup is timed too

                ml.set_experiment(self.exp_name("f", side))
                run_id = ml.start_run().run_id

                def work() -> None:
                    for i, v in enumerate(vals):
                        ml.log_metric("loss", v, step=i)
                    ml.end_run()

                t, _ = timed(work)
                stored = len(ml.get_client().metric_history(run_id, "loss").items)
            note += f"; {n:,} ml.log_metric calls (buffered)" + ("" if stored == n else f"; WRONG COUNT {stored}")
        elif side in ("mlflow sqlite", "mlflow server"):
            from mlflow.entities import Metric as MlMetric

            url = self.mlflow_url if side == "mlflow server" else None
            if side == "mlflow server" and not url:
                raise Skip("server not started")
            client = self.mlflow_client(url)
            rid = client.create_run(self.mlflow_experiment(client, self.exp_name("f", side))).info.run_id
            chunks = [(i, vals[i:i + size]) for i in range(0, n, size)]

            def work() -> None:
                for start, chunk in chunks:
                    ts = int(time.time() * 1000)
                    client.log_batch(rid, metrics=[MlMetric("loss", v, ts, start + j) for j, v in enumerate(chunk)])
                client.set_terminated(rid)

            t, _ = timed(work)
            note += f"; MlflowClient.log_batch, {len(chunks)} batches of {size}"
        else:
            return None  # this case sets the SDK's buffered calls against MLflow's batches only
        return Result("f", side, n, "points", t, n / t, note)


CASE_TITLES = {
    "a": "{a} metric points, one call each (MLflow sides: {a_mlflow}); the run's end included",
    "b": "{b} metric points in batches of {batch}",
    "c": "{c} runs, 5 params + 3 metrics each (mlflow server: {c_server})",
    "d": "filtered search over {d} runs, page of up to {d_page}: " + SEARCH_FILTER,
    "e": "full history of a {e}-point metric",
    "f": "{f} buffered ml.log_metric calls + the run's end (MLflow sides: the same points, log_batch of {batch})",
}


# ---- SDK call shapes (matih_lite.sdk + matih_lite.tracking.client) ---------------------------------------
def sdk_batch_fn(ml: Any, run: Any) -> Callable[[str, list[float], int], None]:
    """The SDK's batch path: ``ml.get_client().log_batch(run_id, metrics=[Metric...])``, 1,000 points a call."""
    from matih_lite.contracts import Metric

    client = ml.get_client()
    run_id = run.run_id

    def batch(key: str, chunk: list[float], start: int) -> None:
        ts = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, v, ts, start + j) for j, v in enumerate(chunk)])

    batch.__doc__ = "ml.get_client().log_batch(run_id, metrics=[...])"
    return batch


def sdk_search_fn(client: Any) -> Callable[[str, str, int], int]:
    def search(exp: str, filter: str, page: int) -> int:
        return len(client.search_runs([exp], filter=filter, max_results=page).items)

    search.__doc__ = f"ml.get_client().search_runs ({client.transport})"
    return search


def sdk_history_fn(client: Any) -> Callable[[str, str], int]:
    def history(run_id: str, key: str) -> int:
        return len(client.metric_history(run_id, key).items)

    history.__doc__ = f"ml.get_client().metric_history ({client.transport})"
    return history


# ---- output -----------------------------------------------------------------------------------------------------
def fmt_s(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.1f} ms"
    return f"{s:.2f} s"


def fmt_rate(r: Result) -> str:
    if r.case == "d":
        return f"{1 / r.seconds:,.1f} searches/s" if r.seconds else "-"
    return f"{r.rate:,.0f} {r.unit}/s"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}x"
    return f"{x:.1f}x" if x >= 1 else f"{x:.2f}x"


def print_table(bench: Bench) -> None:
    rows = [("case", "side", "n", "seconds", "rate", "vs mlflow sqlite", "vs mlflow server", "target")]
    for case in bench.args.cases:
        for r in (r for r in bench.results if r.case == case):
            target = ""
            if r.target:
                target = r.target + (" ?" if r.target_met is None else " ok" if r.target_met else " MISSED")
            rows.append((case, r.side, f"{r.n:,}", fmt_s(r.seconds), fmt_rate(r),
                         fmt_ratio(r.ratios.get("mlflow sqlite")), fmt_ratio(r.ratios.get("mlflow server")), target))
        for c, side, why in bench.skipped:
            if c == case:
                rows.append((case, side, "-", "-", "-", "-", "-", "skipped: " + why[:70]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for j, row in enumerate(rows):
        line = "  ".join(cell.ljust(w) if i in (0, 1, 7) else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        print(line.rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))
    print("\nratios: matih rate / MLflow rate for a-c; MLflow seconds / matih seconds for d-e "
          "(both read 'times faster').")
    if bench.results:
        print("how each row was measured:")
    for case in bench.args.cases:
        rows_c = [r for r in bench.results if r.case == case]
        if not rows_c:
            continue
        parts = [r.note.split("; ") for r in rows_c]
        common = [p for p in parts[0] if all(p in q for q in parts[1:])]
        print(f"  {case}: {'; '.join(common) or CASE_TITLES[case].format(**bench.sizes)}")
        for r, p in zip(rows_c, parts, strict=True):
            own = [x for x in p if x not in common]
            if own:
                print(f"     {r.side}: {'; '.join(own)}")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        import mlflow

        mlflow_version = mlflow.__version__
    except ImportError:
        mlflow_version = None
    return {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "host": platform.node(),
            "cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "mlflow": mlflow_version}


# ---- main ------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="sizes divided by 10 (a smoke check)")
    p.add_argument("--cases", default="a,b,c,d,e,f", help="comma-separated subset of a,b,c,d,e,f")
    p.add_argument("--sides", default=",".join(ALL_SIDES),
                   help="comma-separated subset of: " + ", ".join(ALL_SIDES))
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (stores, server logs)")
    p.add_argument("--verbose", "-v", action="store_true", help="print tracebacks of sides that fail")
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in args.cases if c not in CASE_TITLES]
    if bad:
        p.error(f"unknown case(s) {', '.join(bad)}; choose from {', '.join(CASE_TITLES)}")
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    bad = [s for s in args.sides if s not in ALL_SIDES]
    if bad:
        p.error(f"unknown side(s) {', '.join(bad)}; choose from {', '.join(ALL_SIDES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="matih-bench-"))
    old_cwd = os.getcwd()
    env = prepare_env(work)
    os.chdir(work)  # no ./matih.toml, ./mlruns or git repository of the caller's leaks in
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    import logging

    logging.basicConfig(level=logging.WARNING)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    info = machine()
    print(f"matih-lite tracking benchmark  {info['date']}  {info['cpu']} x{info['cpus']}  "
          f"Python {info['python']}  MLflow {info['mlflow']}{'  (--quick)' if args.quick else ''}")
    print(f"  work folder {work}")
    bench = Bench(args, work, env)
    rc = 0
    try:
        bench.start_servers()
        bench.run()
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        rc = 130
    finally:
        bench.close()
        os.chdir(old_cwd)
    print_table(bench)
    if args.json:
        out = {"machine": info, "quick": args.quick, "sizes": bench.sizes, "filter": SEARCH_FILTER,
               "results": [asdict(r) for r in bench.results],
               "skipped": [{"case": c, "side": s, "why": w} for c, s, w in bench.skipped]}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
        print(f"\nwrote {args.json}")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
