#!/usr/bin/env python
"""Serving benchmark: one model behind four HTTP servers, the same load generator, one run.

Not a test: it prints a table of throughput, p50 and p99 and the ratios, and optionally writes
them as JSON. See scripts/bench/README.md for the setup and the last figures.

    python scripts/bench/serving.py                       # 4 servers x 2 concurrencies x 10 s (~3 minutes)
    python scripts/bench/serving.py --duration 5 --sides matih-onnx,bare
    python scripts/bench/serving.py --json /tmp/serving.json --profile /tmp/serving-prof

The model: ``GradientBoostingClassifier(n_estimators=100)`` fitted on a DataFrame of 20 generated
features ``f0``..``f19`` (binary), so MLflow records a column signature; converted to ONNX with skl2onnx
(``zipmap`` off: a ``label`` and a ``probabilities`` tensor) keeping that signature.

Sides
  mlflow          ``mlflow models serve -m DIR --env-manager local`` (``mlflow.sklearn.save_model``, skops)
  matih-sklearn   ``matih-lite up``; the MLflow model folder logged to a run over HTTP (``import matih_lite as
                  ml``), registered twice (versions 1 and 2), deployed with an A/B split 1=50,2=50;
                  inference logging on (the default: the ``duckdb`` events slot)
  matih-onnx      the same with the ONNX model (matih-lite's ``onnx`` flavor)
  bare            the ONNX model in onnxruntime inside a minimal Starlette app (uvicorn, one worker): the ceiling

Load: ``wrk`` (keep-alive) posting one row as ``{"dataframe_split": {"columns": [...], "data": [[...]]}}``
(``--payload inputs``: ``{"inputs": [[20 floats]]}``; all four servers accept both), ``-t1 -c1`` and
``-t2 -c16``, after a warm-up. At c1, p50/p99 are each request's latency as wrk sees it, timed by the
script (LuaJIT's FFI clock in wrk's ``request``/``response`` hooks; wrk's own histogram, which disagreed
with both that and a tcpdump of the same run, is kept in the JSON as ``wrk_hist_p99_ms``); at c16 they are
wrk's histogram (``--latency``). Each server is first checked to return the
model's own ``predict`` for 64 single rows and one 8-row request. The table also gives each server's
CPU time per request (from /proc), which the machine's other load disturbs less than requests/s.

Every server binds 127.0.0.1 on a free port in its own process group and is stopped (the whole group)
when its side is done, also on error, Ctrl-C or SIGTERM. Everything runs in a temporary folder with a
temporary HOME and ``MLFLOW_DISABLE_TELEMETRY=true``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

N_FEATURES = 20
COLUMNS = [f"f{i}" for i in range(N_FEATURES)]
PAYLOADS = ("dataframe_split", "inputs")
N_TREES = 100
CHECK_ROWS = 64
SPLIT = "1=50,2=50"
CONCURRENCY = {1: 1, 16: 2}  # connections -> wrk threads
MATIH_SETTLE_S = 8.0  # the first timed run on matih-lite starts at least this long after the service started

SIDES = ("mlflow", "matih-sklearn", "matih-onnx", "bare")
TRITON_SIDES = ("matih-triton",)
"""--backend triton: one side that measures tritonclient's request straight to Triton, then through the ml-service."""
LABELS = {"triton-direct": "tritonclient request -> Triton", "matih-triton": "same -> matih-lite over Triton (A/B+log)",
          "mlflow": "mlflow models serve", "matih-sklearn": "matih-lite sklearn (A/B+log)",
          "matih-onnx": "matih-lite onnx (A/B+log)", "bare": "bare onnxruntime+starlette"}
# What the issue measured on its machine (req/s at c1, c16; p50 c1 ms; p99 c16 ms), printed for scale.
ISSUE_REFERENCE = {"mlflow": (130, 150, 7.5, 270), "bare": (4_500, 7_650, None, None)}

LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
"""

# Each request's latency as the load generator sees it: the time from wrk building the request (just before it
# writes it) to wrk reading the whole response, one line per response in a file per wrk thread. Used where each
# wrk thread has one connection (c1), so the thread's clock belongs to one request at a time. wrk's own latency
# histogram is not used there: on this machine, at c1, it reported a p99 of 6-7 ms for a server whose requests,
# timed this way (and on the wire with tcpdump), took at most 0.5 ms at p99, and a mean whose sum over the
# requests exceeded the run's duration on a single connection. c16 keeps wrk's histogram.
LUA_TIMED = LUA + """\
local ffi = require("ffi")
ffi.cdef[[ typedef struct {{ long tv_sec; long tv_usec; }} bench_timeval;
           int gettimeofday(bench_timeval *tv, void *tz); ]]
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("bench_id", counter)
end
local tv = ffi.new("bench_timeval")
local out, req, started = nil, nil, 0
local function now_us()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec)
end
function request()
  if req == nil then
    req = wrk.format()
    out = io.open("{latency_dir}/latency-" .. bench_id .. ".txt", "w")
  end
  started = now_us()
  return req
end
function response(status, headers, body)
  out:write(now_us() - started, "\\n")
end
"""

BARE_APP = '''\
"""A bare onnxruntime model inside a minimal Starlette app: the practical ceiling of Python HTTP serving."""
import json
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], sess_options=opts, providers=["CPUExecutionProvider"])
INPUT = session.get_inputs()[0].name
OUTPUTS = [o.name for o in session.get_outputs()]


async def invocations(request):
    doc = json.loads(await request.body())
    rows = doc["dataframe_split"]["data"] if "dataframe_split" in doc else doc["inputs"]  # columns in model order
    x = np.asarray(rows, dtype=np.float32)
    results = session.run(OUTPUTS, {INPUT: x})
    return JSONResponse({"predictions": {n: r.tolist() for n, r in zip(OUTPUTS, results)}})


async def ping(request):
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), workers=1, log_level="warning", access_log=False,
            server_header=False)
'''


class Skip(Exception):
    """A side that cannot run (a part of matih-lite missing): reported, not fatal."""


@dataclass
class Result:
    side: str
    concurrency: int
    threads: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    avg_ms: float
    max_ms: float
    server_cpu_us: float | None = None
    """Server CPU time (user + system, all its processes and threads) per request answered in the run."""
    non_2xx: int = 0
    socket_errors: str = ""
    load_before: float = 0.0
    ratios: dict[str, float] = field(default_factory=dict)
    target: str = ""
    target_met: bool | None = None
    wrk_output: str = ""
    wrk_hist_p99_ms: float | None = None
    """p99 from wrk's own latency histogram (not the one in the table: see LUA_TIMED)."""
    timed_requests: int = 0


# ---- environment and servers ---------------------------------------------------------------------------
def prepare_env(work: Path) -> dict[str, str]:
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "RAY_AUTH_MODE": "disabled",
        "GIT_PYTHON_REFRESH": "quiet",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # mlflow models serve runs `uvicorn`
    }
    for key in ("MATIH_URL", "MATIH_TOKEN", "MATIH_CONFIG", "MATIH_PROFILE", "MATIH_HOME", "MLFLOW_TRACKING_URI",
                "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID", "MLFLOW_MODELS_WORKERS"):
        os.environ.pop(key, None)
    os.environ.update(env)
    return dict(os.environ)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_cpu_seconds(pgid: int | None) -> float | None:
    """User + system CPU seconds of every live process in a process group (the server and its workers)."""
    if pgid is None:
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total, found = 0.0, False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[2]) != pgid:  # field 5: pgrp
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # fields 14, 15: utime, stime
        found = True
    return total if found else None


def loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


class Server:
    """A server subprocess in its own process group; stop() ends the whole group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name, self.argv, self.env, self.cwd, self.log_path = name, argv, env, cwd, log
        self.proc: subprocess.Popen | None = None
        self._log: Any = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, ready_url: str, timeout: float = 120.0) -> float:
        import httpx

        t0 = self.started_at = time.perf_counter()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open while the server runs
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(ready_url, timeout=2.0).status_code == 200:
                    return time.perf_counter() - t0
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
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # children that outlived the leader (uvicorn under mlflow) still share the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            with contextlib.suppress(Exception):
                self._log.close()


def _on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ---- the model -----------------------------------------------------------------------------------------
class Model:
    """The classifier, its MLflow folder, its ONNX folder, and rows to check and load with.

    Fitted on a DataFrame with named columns ``f0``..``f19``, as teams log models: MLflow records a
    column signature (20 doubles), and the ONNX copy keeps it (as ``matih-lite models convert`` does).
    With ``--payload inputs`` it is fitted on a plain array instead (a tensor signature), the one case
    where ``mlflow models serve`` takes ``{"inputs": [[...]]}`` without going through pandas.
    """

    def __init__(self, work: Path, payload: str) -> None:
        import numpy as np
        import pandas as pd
        from sklearn.datasets import make_classification
        from sklearn.ensemble import GradientBoostingClassifier

        t0 = time.perf_counter()
        self.payload = payload
        X, y = make_classification(n_samples=4_000, n_features=N_FEATURES, n_informative=10, random_state=0)
        # dataframe_split: fitted on named columns (a column signature); inputs: on an array (a tensor signature)
        frame = pd.DataFrame(X, columns=COLUMNS) if payload == "dataframe_split" else X
        self.model = GradientBoostingClassifier(n_estimators=N_TREES, random_state=0).fit(frame[:3_000], y[:3_000])
        self.rows = X[3_000:3_000 + CHECK_ROWS]
        self.expected = self.model.predict(frame[3_000:3_000 + CHECK_ROWS])
        self.load_row = [float(v) for v in X[3_999]]
        self.fit_seconds = time.perf_counter() - t0

        import warnings

        import mlflow.sklearn

        self.mlflow_dir = work / "models" / "mlflow-sklearn"
        with warnings.catch_warnings():  # "Inferred schema contains integer column(s)": the labels
            warnings.simplefilter("ignore", UserWarning)
            mlflow.sklearn.save_model(self.model, str(self.mlflow_dir), input_example=frame[:2],
                                      skops_trusted_types=["sklearn.tree._tree.Tree"],
                                      pip_requirements=["scikit-learn", "skops"])  # no requirement inference

        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType

        from matih_lite.registry.signature import infer_signature
        from matih_lite.serving.flavors.onnx import OnnxFlavor

        onx = to_onnx(self.model, initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
                      options={id(self.model): {"zipmap": False}})
        self.onnx_dir = work / "models" / "onnx"
        OnnxFlavor().save(onx, self.onnx_dir,
                          signature=infer_signature(frame[:2]) if payload == "dataframe_split" else None)
        self.onnx_file = self.onnx_dir / "model.onnx"

        import onnxruntime as ort

        sess = ort.InferenceSession(str(self.onnx_file), providers=["CPUExecutionProvider"])
        self.onnx_expected = sess.run(["label"], {"input": self.rows.astype(np.float32)})[0]
        self.onnx_agrees = int((self.onnx_expected == self.expected).sum())

    def body(self, rows: Any) -> dict[str, Any]:
        data = [[float(v) for v in r] for r in rows]
        if self.payload == "dataframe_split":
            return {"dataframe_split": {"columns": COLUMNS, "data": data}}
        return {"inputs": data}


def labels_of(doc: Any) -> list[Any]:
    """The predicted labels in a response: ``{"predictions": [...]}`` or ``{"predictions": {"label": [...]}}``."""
    preds = doc["predictions"] if isinstance(doc, dict) else doc
    if isinstance(preds, dict):
        preds = preds.get("label", next(iter(preds.values())))
    out = []
    for p in preds:
        if isinstance(p, dict):  # records-oriented outputs
            p = p.get("label", next(iter(p.values())))
        if isinstance(p, list) and len(p) == 1:
            p = p[0]
        out.append(int(p))
    return out


# ---- wrk ---------------------------------------------------------------------------------------------
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"cannot read wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    lat = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.MULTILINE)
    if lat:
        found["avg_ms"], found["max_ms"] = _ms(lat.group(1)), _ms(lat.group(3))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s*{pct}%\s+(\S+)", out, re.MULTILINE)
        if m:
            found[f"p{pct}_ms"] = _ms(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if m:
        found["requests"] = int(m.group(1))
        found["seconds"] = _ms(m.group(2) + m.group(3)) / 1000
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        found["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    found["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:\s+(.*)", out)
    found["socket_errors"] = m.group(1).strip() if m else ""
    missing = [k for k in ("rps", "p50_ms", "p99_ms", "requests") if k not in found]
    if missing:
        raise RuntimeError(f"could not read {', '.join(missing)} from wrk's output:\n{out}")
    return found


def wrk(url: str, lua: Path, connections: int, threads: int, seconds: float,
        latency_dir: Path | None = None) -> tuple[dict[str, Any], str]:
    """Run wrk; with ``latency_dir`` (where a LUA_TIMED script writes), the percentiles come from the
    per-request latencies the script recorded, and wrk's own histogram is kept under ``wrk_hist_*``."""
    if latency_dir is not None:
        shutil.rmtree(latency_dir, ignore_errors=True)
        latency_dir.mkdir(parents=True)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s",
            "-s", str(lua), url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    found = parse_wrk(proc.stdout)
    if latency_dir is not None:
        found.update(per_request_latency(latency_dir, found))
    return found, proc.stdout


def per_request_latency(folder: Path, found: dict[str, Any]) -> dict[str, Any]:
    """Percentiles (ms) of the latencies a LUA_TIMED script wrote (microseconds, one per line)."""
    import numpy as np

    values = [int(line) for f in sorted(folder.glob("latency-*.txt")) for line in f.read_text().split() if line]
    if not values:
        raise RuntimeError(f"the timed wrk script recorded no latencies in {folder}")
    us = np.asarray(values, dtype=np.float64)
    out = {f"wrk_hist_{k}": found[k] for k in ("p50_ms", "p75_ms", "p90_ms", "p99_ms", "avg_ms") if k in found}
    p50, p75, p90, p99 = np.percentile(us, [50, 75, 90, 99]) / 1000
    out.update(p50_ms=p50, p75_ms=p75, p90_ms=p90, p99_ms=p99, avg_ms=us.mean() / 1000, max_ms=us.max() / 1000,
               timed_requests=len(values))
    return out


# ---- the benchmark -------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
        self.args = args
        self.work = work
        self.env = env
        self.model: Model | None = None
        self.results: list[Result] = []
        self.skipped: list[tuple[str, str]] = []
        self.notes: dict[str, dict[str, Any]] = {}
        self.servers: list[Server] = []
        self.py_spy = args.py_spy or shutil.which("py-spy")

    # -- driver -----------------------------------------------------------------------------------------
    def run(self) -> None:
        t0 = time.perf_counter()
        self.model = Model(self.work, self.args.payload)
        m = self.model
        print(f"  model: GradientBoostingClassifier(n_estimators={N_TREES}) on {N_FEATURES} features, fitted and "
              f"saved in {time.perf_counter() - t0:.1f} s; ONNX labels equal sklearn's on {m.onnx_agrees}/"
              f"{CHECK_ROWS} check rows", flush=True)
        for side in self.args.sides:
            print(f"\n{LABELS[side]}", flush=True)
            try:
                getattr(self, "side_" + side.replace("-", "_"))(side)
            except Skip as exc:
                self.skip(side, str(exc))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one side failing does not end the run
                if self.args.verbose:
                    traceback.print_exc()
                self.skip(side, f"{type(exc).__name__}: {exc}")
            finally:
                self.stop_servers()

    def skip(self, side: str, why: str) -> None:
        self.skipped.append((side, why))
        print(f"  SKIPPED: {why.splitlines()[0] if why else ''}", flush=True)
        if len(why.splitlines()) > 1:
            print("    " + "\n    ".join(why.splitlines()[1:])[:4000], flush=True)

    def start(self, name: str, argv: list[str], ready: str, cwd: Path, env: dict[str, str] | None = None) -> Server:
        srv = Server(name, argv, env or self.env, cwd, self.work / f"{name.replace(' ', '-')}.log")
        self.servers.append(srv)
        took = srv.start(ready)
        print(f"  {name} ready on {ready.rsplit('/', 1)[0]} in {took:.1f} s (pid {srv.pid})", flush=True)
        return srv

    def stop_servers(self) -> None:
        for srv in reversed(self.servers):
            with contextlib.suppress(Exception):
                srv.stop()
        self.servers.clear()

    def close(self) -> None:
        self.stop_servers()

    # -- shared steps -------------------------------------------------------------------------------------
    def check(self, side: str, url: str, expected: Any) -> dict[str, Any]:
        """Every check row alone, then 8 rows at once, must equal the model's own predict."""
        import httpx

        m = self.model
        assert m is not None
        variants: dict[str, int] = {}
        wrong = 0
        with httpx.Client(timeout=60.0) as client:
            for i, row in enumerate(m.rows):
                resp = client.post(url, json=m.body([row]))
                if resp.status_code != 200:
                    raise RuntimeError(f"{side}: HTTP {resp.status_code} for a one-row request: {resp.text[:500]}")
                doc = resp.json()
                if labels_of(doc) != [int(expected[i])]:
                    wrong += 1
                if isinstance(doc, dict) and "variant" in doc:
                    key = f"{doc['variant']} (v{doc.get('version')})"
                    variants[key] = variants.get(key, 0) + 1
            resp = client.post(url, json=m.body(m.rows[:8]))
            if resp.status_code != 200:
                raise RuntimeError(f"{side}: HTTP {resp.status_code} for an 8-row request: {resp.text[:500]}")
            batch_ok = labels_of(resp.json()) == [int(v) for v in expected[:8]]
        if wrong or not batch_ok:
            raise RuntimeError(f"{side}: WRONG PREDICTIONS: {wrong}/{len(m.rows)} single rows differ from the "
                               f"model's own predict; 8-row request {'ok' if batch_ok else 'differs'}")
        line = f"  predictions equal the model's own predict: {len(m.rows)} single rows and one 8-row request"
        if variants:
            line += f"; variants answering: {', '.join(f'{k} x{n}' for k, n in sorted(variants.items()))}"
        print(line, flush=True)
        return {"check_rows": len(m.rows), "variants": variants}

    def load(self, side: str, url: str, server: Any, request_lua: str | None = None) -> None:
        m = self.model
        assert m is not None
        body = json.dumps(m.body([m.load_row]), separators=(",", ":"))
        lua, timed_lua = self.work / f"{side}.lua", self.work / f"{side}-timed.lua"
        latency_dir = self.work / f"{side}-latency"
        # request_lua: another request (the binary OIP body of --backend triton) with the same timing hooks
        request_lua = request_lua if request_lua is not None else LUA.format(body=body)
        lua.write_text(request_lua)
        timed_lua.write_text(request_lua + LUA_TIMED[len(LUA):].format(latency_dir=latency_dir))
        if side.startswith("matih"):
            # matih-lite's drift scheduler takes its first look 5 s after the service starts (start-up work,
            # once): let it pass before measuring, so the timed runs see the steady state.
            wait = MATIH_SETTLE_S - self.args.warmup - (time.perf_counter() - server.started_at)
            if wait > 0:
                time.sleep(wait)
        if self.args.warmup > 0:
            wrk(url, lua, 16, 2, self.args.warmup)
        for conns, threads in CONCURRENCY.items():
            before = loadavg()[0]
            cpu0 = group_cpu_seconds(server.pid)
            if conns == threads:  # one connection per wrk thread: the script times each request exactly
                got, out = wrk(url, timed_lua, conns, threads, self.args.duration, latency_dir)
            else:
                got, out = wrk(url, lua, conns, threads, self.args.duration)
            cpu1 = group_cpu_seconds(server.pid)
            res = Result(side, conns, threads, got.get("seconds", self.args.duration), got["requests"], got["rps"],
                         got["p50_ms"], got.get("p75_ms", float("nan")), got.get("p90_ms", float("nan")),
                         got["p99_ms"], got.get("avg_ms", float("nan")), got.get("max_ms", float("nan")),
                         None, got["non_2xx"], got["socket_errors"], before, wrk_output=out,
                         wrk_hist_p99_ms=got.get("wrk_hist_p99_ms"), timed_requests=got.get("timed_requests", 0))
            if cpu0 is not None and cpu1 is not None and res.requests:
                res.server_cpu_us = (cpu1 - cpu0) / res.requests * 1e6
            self.results.append(res)
            bad = f"  NON-2XX: {res.non_2xx}" if res.non_2xx else ""
            print(f"  c{conns:<2} {res.rps:>9,.0f} req/s  p50 {fmt_ms(res.p50_ms):>8}  p99 {fmt_ms(res.p99_ms):>8}  "
                  f"server CPU {fmt_us(res.server_cpu_us)}/request  ({res.requests:,} requests; load average {before:.2f}){bad}", flush=True)
        if self.args.profile and side.startswith("matih"):
            self.profile(side, url, lua, server)

    def profile(self, side: str, url: str, lua: Path, server: Server) -> None:
        """py-spy over the server while wrk loads it again (not timed): one flame input per concurrency."""
        if not self.py_spy:
            print("  (no py-spy: pip install py-spy, or --py-spy PATH)", flush=True)
            return
        out_dir = Path(self.args.profile)
        out_dir.mkdir(parents=True, exist_ok=True)
        for conns, threads in CONCURRENCY.items():
            target = out_dir / f"{side}-c{conns}.txt"
            spy = subprocess.Popen([self.py_spy, "record", "--pid", str(server.pid), "--duration",
                                    str(max(2, round(self.args.duration))), "--rate", "250", "--threads",
                                    "--nonblocking", "--format", "raw", "--output", str(target)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)
            got, _ = wrk(url, lua, conns, threads, self.args.duration)
            _, err = spy.communicate(timeout=self.args.duration + 60)
            print(f"  profiled c{conns} ({got['rps']:,.0f} req/s under py-spy) -> {target}"
                  + (f"  [py-spy: {err.strip().splitlines()[-1]}]" if spy.returncode else ""), flush=True)

    # -- sides ------------------------------------------------------------------------------------------
    def side_mlflow(self, side: str) -> None:
        m = self.model
        assert m is not None
        port = free_port()
        srv = self.start("mlflow models serve", [str(BIN / "mlflow"), "models", "serve", "-m", str(m.mlflow_dir),
                                                 "--env-manager", "local", "--host", "127.0.0.1", "--port",
                                                 str(port)], f"http://127.0.0.1:{port}/ping", self.work)
        url = f"http://127.0.0.1:{port}/invocations"
        self.notes[side] = self.check(side, url, m.expected)
        self.load(side, url, srv)

    def side_bare(self, side: str) -> None:
        m = self.model
        assert m is not None
        app = self.work / "bare_app.py"
        app.write_text(BARE_APP)
        port = free_port()
        srv = self.start("bare onnx starlette", [sys.executable, str(app), str(m.onnx_file), str(port)],
                         f"http://127.0.0.1:{port}/ping", self.work)
        url = f"http://127.0.0.1:{port}/invocations"
        self.notes[side] = self.check(side, url, m.onnx_expected)
        self.load(side, url, srv)

    def side_matih_triton(self, side: str) -> None:
        """--backend triton: tritonclient's own binary request for one row, sent by wrk straight to Triton and to
        ``matih-lite up`` (serving = triton on that Triton, A/B 50/50 over two versions, inference log on)."""
        import types

        import httpx
        import numpy as np

        try:
            import tritonclient.http as httpclient

            from matih_lite.testing.triton import TritonServer, triton_env
            from matih_triton.model_config import triton_name
        except ImportError as exc:
            raise Skip(f"needs tritonclient and matih-triton (pip install -e backends/triton): {exc}") from None
        m = self.model
        assert m is not None
        print("  Triton environment (built on first use, then cached) ...", flush=True)
        try:
            triton = TritonServer(self.work / "triton", triton_env())
        except RuntimeError as exc:
            raise Skip(f"the Triton environment cannot be built here: {exc}") from None
        t0 = time.perf_counter()
        triton.start()
        self.servers.append(types.SimpleNamespace(stop=triton.stop))
        print(f"  tritonserver ready on {triton.url} in {time.perf_counter() - t0:.1f} s (pid {triton.process.pid})",
              flush=True)
        folder = self.work / side
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "matih.toml").write_text(
            f'[profiles.lite]\nserving = {{ backend = "triton", url = "{triton.url}", repository = '
            f'"{triton.repository}", onnx_runtime = "python" }}\n')
        env = {**self.env, "MATIH_HOME": str(folder / ".matih")}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cli = BIN / "matih-lite"
        argv = [str(cli)] if cli.exists() else [sys.executable, "-m", "matih_lite"]
        srv = self.start("matih-lite up (triton)", [*argv, "up", "--host", "127.0.0.1", "--port", str(port),
                                                    "--log-level", "warning"], f"{base}/health", folder, env)
        model_name, deployment = "bench-gbc-onnx", "gbc-triton"
        os.environ["MATIH_URL"] = base
        try:
            import matih_lite as ml
            from matih_lite.registry.client import RegistryClient

            with ml.start_run(experiment="serving-bench", run_name="gbc-triton", capture=False) as run:
                ml.log_artifacts(str(m.onnx_dir), "model")
            with RegistryClient(base) as registry:
                versions = [registry.register_version(model_name, run_id=run.run_id, path="model", flavor="onnx",
                                                      description=f"bench copy {i}").version for i in (1, 2)]
                for v in versions:  # live traffic goes to Staging and Production versions
                    registry.promote(model_name, v, "Staging", reason="serving bench")
        finally:
            os.environ.pop("MATIH_URL", None)
        with httpx.Client(base_url=base, timeout=300.0) as client:
            resp = client.post("/api/v1/deployments", json={"name": deployment, "model": model_name,
                                                            "split": f"{versions[0]}=50,{versions[1]}=50"})
            if resp.status_code >= 400:
                raise RuntimeError(f"creating the deployment: HTTP {resp.status_code}: {resp.text[:800]}")

        def request(rows: Any) -> tuple[bytes, int]:
            inp = httpclient.InferInput("input", [len(rows), N_FEATURES], "FP32")
            inp.set_data_from_numpy(np.asarray(rows, dtype=np.float32), binary_data=True)
            out = httpclient.InferRequestedOutput("label", binary_data=True)
            body, length = httpclient.InferenceServerClient.generate_request_body([inp], outputs=[out])
            return body, length or len(body)

        direct_name = triton_name(f"default/{model_name}/{versions[0]}")
        urls = {"matih-triton": (base.removeprefix("http://"), deployment, ""),
                "triton-direct": (triton.url.removeprefix("http://"), direct_name, str(versions[0]))}
        for which, (address, name, version) in urls.items():  # tritonclient itself, every check row
            client = httpclient.InferenceServerClient(address, network_timeout=300.0)
            try:
                for i, row in enumerate(m.rows):
                    inp = httpclient.InferInput("input", [1, N_FEATURES], "FP32")
                    inp.set_data_from_numpy(np.asarray([row], dtype=np.float32), binary_data=True)
                    got = client.infer(name, [inp], model_version=version,
                                       outputs=[httpclient.InferRequestedOutput("label", binary_data=True)])
                    if int(got.as_numpy("label").reshape(-1)[0]) != int(m.onnx_expected[i]):
                        raise RuntimeError(f"{which}: WRONG PREDICTION for check row {i}")
            finally:
                client.close()
        print(f"  tritonclient gets the model's own labels for {len(m.rows)} check rows from both; Triton serves "
              f"{direct_name} (version {versions[0]}), matih-lite splits {deployment} 50/50 over versions "
              f"{versions[0]} and {versions[1]}", flush=True)
        body, length = request([m.load_row])
        escaped = "".join(f"\\{b:03d}" for b in body)
        lua = (f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/octet-stream"\n'
               f'wrk.headers["Inference-Header-Content-Length"] = "{length}"\nwrk.body = "{escaped}"\n')
        print(f"\n{LABELS['triton-direct']}", flush=True)
        direct = types.SimpleNamespace(pid=triton.process.pid, started_at=0.0)
        self.load("triton-direct", f"{triton.url}/v2/models/{direct_name}/versions/{versions[0]}/infer", direct, lua)
        print(f"\n{LABELS[side]}", flush=True)
        self.load(side, f"{base}/v2/models/{deployment}/infer", srv, lua)
        with httpx.Client(base_url=base, timeout=30.0) as client:
            stats = client.get(f"/api/v1/deployments/{deployment}/stats").json()
        served = {k: v.get("total_requests") for k, v in (stats.get("variants") or {}).items()}
        total = sum(v or 0 for v in served.values())
        print("  A/B as served: " + ", ".join(f"{k} {n:,} ({100 * n / total:.1f} %)" for k, n in served.items()),
              flush=True)
        srv.stop()
        note = {"stats": stats, "inference_log": self.inference_log_count(folder / ".matih", deployment)}
        logged = note["inference_log"].get("records")
        print(f"  inference log: {'n/a' if logged is None else f'{logged:,} records'} for {total:,} requests served",
              flush=True)
        self.notes[side] = note

    def side_matih_sklearn(self, side: str) -> None:
        assert self.model is not None
        self.matih(side, "sklearn", self.model.mlflow_dir, self.model.expected)

    def side_matih_onnx(self, side: str) -> None:
        assert self.model is not None
        self.matih(side, "onnx", self.model.onnx_dir, self.model.onnx_expected)

    def matih(self, side: str, flavor: str, model_dir: Path, expected: Any) -> None:
        import httpx

        folder = self.work / side
        folder.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "MATIH_HOME": str(folder / ".matih")}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cli = BIN / "matih-lite"
        argv = [str(cli)] if cli.exists() else [sys.executable, "-m", "matih_lite"]
        srv = self.start(f"matih-lite up ({flavor})", [*argv, "up", "--host", "127.0.0.1", "--port", str(port),
                                                       "--log-level", "warning"], f"{base}/health", folder, env)
        model_name, deployment = f"bench-gbc-{flavor}", f"gbc-{flavor}"
        t0 = time.perf_counter()
        os.environ["MATIH_URL"] = base
        try:
            try:
                import matih_lite as ml
                from matih_lite.registry.client import RegistryClient
            except ImportError as exc:
                raise Skip(f"matih-lite's SDK or registry client is not importable: {exc}") from None
            # The model's files go to a run through the SDK, over HTTP; the registry registers the run's folder.
            with ml.start_run(experiment="serving-bench", run_name=f"gbc-{flavor}", capture=False) as run:
                ml.log_artifacts(str(model_dir), "model")
            with RegistryClient(base) as registry:
                versions = [registry.register_version(model_name, run_id=run.run_id, path="model", flavor=flavor,
                                                      description=f"bench copy {i}").version for i in (1, 2)]
                for v in versions:  # live traffic goes to Staging and Production versions
                    registry.promote(model_name, v, "Staging", reason="serving bench")
        finally:
            os.environ.pop("MATIH_URL", None)
        with httpx.Client(base_url=base, timeout=60.0) as client:
            resp = client.post("/api/v1/deployments", json={"name": deployment, "model": model_name,
                                                            "split": f"{versions[0]}=50,{versions[1]}=50",
                                                            "description": "serving benchmark: A/B 50/50"})
            if resp.status_code == 404 and "deployments" not in resp.text:
                raise Skip("matih-lite up has no /api/v1/deployments yet")
            if resp.status_code >= 400:
                raise RuntimeError(f"creating the deployment: HTTP {resp.status_code}: {resp.text[:800]}")
            routes = [(r["variant"], r["version"], r["weight"]) for r in resp.json()["routes"]]
        print(f"  registered {model_name} v{versions[0]} and v{versions[1]} ({flavor}) and deployed {deployment} "
              f"with routes {routes} in {time.perf_counter() - t0:.1f} s", flush=True)
        url = f"{base}/api/v1/deployments/{deployment}/predict"
        note = self.check(side, url, expected)
        if len(note["variants"]) < 2:
            print(f"  NOTE: only {list(note['variants'])} answered the check rows; A/B expected both", flush=True)
        self.load(side, url, srv)
        with httpx.Client(base_url=base, timeout=30.0) as client:
            resp = client.get(f"/api/v1/deployments/{deployment}/stats")
            stats = resp.json() if resp.status_code == 200 else {"error": resp.text[:300]}
        served = {k: v.get("total_requests", v.get("requests")) for k, v in (stats.get("variants") or {}).items()}
        total = sum(v or 0 for v in served.values())
        note["stats"] = stats
        split = ", ".join(f"{k} {n:,} ({100 * n / total:.1f} %)" for k, n in served.items()) if total else "n/a"
        print(f"  A/B as served (the deployment's /stats): {split}", flush=True)
        srv.stop()  # the events store is the service's own file: read it once the service is gone
        note["inference_log"] = self.inference_log_count(folder / ".matih", deployment)
        logged = note["inference_log"].get("records")
        print(f"  inference log ({note['inference_log'].get('where', '?')}): "
              f"{'n/a' if logged is None else f'{logged:,} records'} for {total:,} requests served"
              + (f"  [{note['inference_log']['error']}]" if "error" in note["inference_log"] else ""), flush=True)
        self.notes[side] = note

    @staticmethod
    def inference_log_count(home: Path, deployment: str) -> dict[str, Any]:
        files = sorted(home.rglob("*.duckdb"))
        if not files:
            return {"error": f"no DuckDB file under {home}"}
        try:
            import duckdb
        except ImportError as exc:
            return {"error": str(exc)}
        for path in files:
            try:
                con = duckdb.connect(str(path), read_only=True)
                try:
                    rows = con.execute("SELECT name, next_offset FROM _streams").fetchall()
                finally:
                    con.close()
            except duckdb.Error:  # not an events store (another DuckDB file of the service)
                continue
            for name, offset in rows:
                if name == f"inference.{deployment}":
                    return {"where": path.name, "stream": name, "records": int(offset)}
            return {"where": path.name, "error": f"no stream inference.{deployment} among {[r[0] for r in rows]}"}
        return {"error": f"no events catalogue in {[f.name for f in files]}"}

    # -- report -----------------------------------------------------------------------------------------
    def rate(self, side: str, conns: int) -> float | None:
        for r in self.results:
            if r.side == side and r.concurrency == conns:
                return r.rps
        return None

    def finish(self) -> None:
        for r in self.results:
            for ref in ("mlflow", "bare"):
                base = self.rate(ref, r.concurrency)
                if base and r.side != ref:
                    r.ratios[ref] = r.rps / base
            if r.side.startswith("matih") and r.concurrency == 16:
                vs_mlflow, vs_bare = r.ratios.get("mlflow"), r.ratios.get("bare")
                parts, ok = [], True
                if vs_mlflow is not None:
                    parts.append(f">=20x mlflow {'ok' if vs_mlflow >= 20 else 'MISSED'}")
                    ok &= vs_mlflow >= 20
                if vs_bare is not None:
                    parts.append(f">=1/3 bare {'ok' if vs_bare >= 1 / 3 else 'MISSED'}")
                    ok &= vs_bare >= 1 / 3
                if parts:
                    r.target, r.target_met = ", ".join(parts), ok
            if r.side == "matih-triton" and r.concurrency == 16:
                direct = [d for d in self.results if d.side == "triton-direct" and d.concurrency == 16]
                if direct:
                    p50x, rpsx = r.p50_ms / direct[0].p50_ms, r.rps / direct[0].rps
                    r.ratios["p50 vs direct"], r.ratios["throughput vs direct"] = p50x, rpsx
                    r.target = (f"p50 {p50x:.2f}x direct (<=1.3 {'ok' if p50x <= 1.3 else 'MISSED'}), "
                                f"throughput {rpsx:.2f}x (>=0.7 {'ok' if rpsx >= 0.7 else 'MISSED'})")
                    r.target_met = p50x <= 1.3 and rpsx >= 0.7
            if r.side == "matih-onnx" and r.concurrency == 1:
                r.target, r.target_met = f"p99<=2ms {'ok' if r.p99_ms <= 2.0 else 'MISSED'}", r.p99_ms <= 2.0


def fmt_ms(v: float) -> str:
    if math.isnan(v):
        return "-"
    return f"{v * 1000:.0f} us" if v < 1 else f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"


def fmt_us(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} us"


def fmt_x(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}x" if v < 10 else f"{v:.1f}x"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    versions = {}
    for pkg in ("mlflow", "scikit-learn", "onnxruntime", "skl2onnx", "starlette", "uvicorn", "litestar", "msgspec"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[pkg] = version(pkg)
    wrk_v = ""
    with contextlib.suppress(Exception):
        wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False).stdout.split("\n")[0]
    return {"date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu,
            "cpus": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "wrk": wrk_v}


def report(bench: Bench, info: dict[str, Any], args: argparse.Namespace, load: dict[str, Any]) -> None:
    print(f"\nmatih-lite serving benchmark  {info['date']}  {info['cpu']} x{info['cpus']}  {info['memory']}  "
          f"Python {info['python']}  mlflow {info['versions'].get('mlflow', '?')}")
    shape = (f'{{"dataframe_split": {{"columns": [f0..f{N_FEATURES - 1}], "data": [[{N_FEATURES} floats]]}}}}'
             if args.payload == "dataframe_split" else f'{{"inputs": [[{N_FEATURES} floats]]}}')
    if args.backend == "triton":
        shape = f"tritonclient's binary OIP request (input FP32 [1, {N_FEATURES}], output label)"
    print(f"wrk keep-alive, one-row {'JSON ' if args.backend != 'triton' else ''}{shape}, {args.duration:g} s per "
          f"measurement after a {args.warmup:g} s warm-up; c1 = -t1 -c1, c16 = -t2 -c16")
    print(f"load average (1/5/15 min): before {fmt_load(load['before'])}, after {fmt_load(load['after'])}")
    header = ("server", "conc", "req/s", "p50", "p99", "vs mlflow", "vs bare", "CPU/req", "target")
    rows = []
    for r in bench.results:
        rows.append((LABELS[r.side], f"c{r.concurrency}", f"{r.rps:,.0f}", fmt_ms(r.p50_ms), fmt_ms(r.p99_ms),
                     "-" if r.side == "mlflow" else fmt_x(r.ratios.get("mlflow")),
                     "-" if r.side == "bare" else fmt_x(r.ratios.get("bare")), fmt_us(r.server_cpu_us), r.target))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    right = {2, 3, 4, 5, 6, 7}
    line = "  ".join(h.rjust(w) if i in right else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line.rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    print("CPU/req: the server's CPU time (user + system, all its processes and threads) per request answered, "
          "from /proc; less sensitive than req/s to other load on the machine")
    errors = [r for r in bench.results if r.non_2xx or re.search(r"[1-9]", r.socket_errors or "")]
    for r in errors:
        print(f"  WARNING {LABELS[r.side]} c{r.concurrency}: {r.non_2xx} non-2xx responses; socket errors: "
              f"{r.socket_errors or 'none'}")
    for side, (c1, c16, p50, p99) in ISSUE_REFERENCE.items():
        mine = [bench.rate(side, 1), bench.rate(side, 16)]
        if any(mine):
            print(f"  for scale, the issue measured {LABELS[side]} at {c1:,} / {c16:,} req/s (c1 / c16)"
                  + (f", p50 {p50} ms at c1, p99 {p99} ms at c16" if p50 else "")
                  + f"; here {' / '.join('-' if v is None else f'{v:,.0f}' for v in mine)}")
    for side, why in bench.skipped:
        print(f"  skipped {side}: {why.splitlines()[0] if why else ''}")


def fmt_load(v: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (wrk -d), default 10")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of c16 load before measuring, default 3")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {', '.join(SIDES)}")
    ap.add_argument("--payload", choices=PAYLOADS, default="dataframe_split",
                    help="request shape: dataframe_split (default; {columns: [f0..f19], data: [[...]]}, the "
                         "model fitted on a DataFrame) or inputs ([[20 floats]], the model fitted on an array)")
    ap.add_argument("--backend", choices=("inprocess", "triton"), default="inprocess",
                    help="triton: tritonclient's binary one-row request straight to a Triton (nvidia-pytriton, started "
                         "here) vs the same through matih-lite up over that Triton; the --sides are not run")
    ap.add_argument("--json", metavar="FILE", help="write the machine, every result and wrk's output as JSON")
    ap.add_argument("--profile", metavar="DIR", help="after timing each matih-lite side, load it again under "
                    "py-spy (raw collapsed stacks, all threads) into DIR; not part of the timings")
    ap.add_argument("--py-spy", metavar="PATH", help="the py-spy executable (default: on PATH)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (models, stores, server logs)")
    ap.add_argument("-v", "--verbose", action="store_true", help="tracebacks of sides that fail")
    args = ap.parse_args()
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        ap.error(f"unknown side(s) {', '.join(unknown)}; choose from {', '.join(SIDES)}")
    args.sides = [s for s in SIDES if s in sides] if args.backend == "inprocess" else list(TRITON_SIDES)
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _on_signal)
    work = Path(tempfile.mkdtemp(prefix="matih-bench-serving-"))
    old_cwd = os.getcwd()
    os.chdir(work)
    env = prepare_env(work)
    info = machine()
    load = {"before": loadavg()}
    print(f"serving benchmark in {work}; load average {fmt_load(load['before'])} on {info['cpus']} CPUs", flush=True)
    bench = Bench(args, work, env)
    code = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers", file=sys.stderr)
        code = 130
    finally:
        bench.close()
        os.chdir(old_cwd)
    load["after"] = loadavg()
    bench.finish()
    report(bench, info, args, load)
    if args.json:
        doc = {"machine": info, "load_average": load, "duration_s": args.duration, "warmup_s": args.warmup,
               "payload": args.payload,
               "model": {"kind": "GradientBoostingClassifier", "n_estimators": N_TREES, "n_features": N_FEATURES},
               "results": [asdict(r) for r in bench.results], "notes": bench.notes,
               "skipped": [{"side": s, "why": w} for s, w in bench.skipped]}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {args.json}")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
