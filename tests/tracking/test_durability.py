"""Many writers, and crashes: nothing acknowledged is lost, no 'database is locked' reaches a caller."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from matih_lite.config import load_config
from matih_lite.contracts import Metric
from matih_lite.host import Host
from matih_lite.tracking import Tracking

WRITERS = 8
BATCHES = 40
PER_BATCH = 25


def _writer(folder: str, run_id: str, worker: int, errors) -> None:
    try:
        tracking = Tracking(Host(load_config(cwd=__import__("pathlib").Path(folder))))
        for b in range(BATCHES):
            points = [Metric(f"w{worker}", float(b * PER_BATCH + i), 1, b * PER_BATCH + i) for i in range(PER_BATCH)]
            tracking.log_batch("default", run_id, metrics=points, params={f"p{worker}_{b}": "x"})
    except BaseException as exc:  # reported to the parent, which fails the test
        errors.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_eight_processes_log_concurrently_without_loss(tmp_path):
    tracking = Tracking(Host(load_config(cwd=tmp_path)))
    exp = tracking.create_experiment("default", "concurrent")
    run = tracking.create_run("default", exp.experiment_id)
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), run.run_id, w, errors)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    assert all(p.exitcode == 0 for p in procs)
    for w in range(WRITERS):
        history = tracking.metric_history("default", run.run_id, f"w{w}").items
        assert [m.step for m in history] == list(range(BATCHES * PER_BATCH))
    assert len(tracking.get_run("default", run.run_id).params) == WRITERS * BATCHES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(folder, port):
    proc = subprocess.Popen([sys.executable, "-m", "matih_lite", "up", "--port", str(port), "--log-level", "warning"],
                            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=0.5).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"service did not start: {proc.stderr.read()}")


@pytest.mark.slow
def test_sigkill_while_clients_log_loses_no_acknowledged_point(tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, port)
    try:
        run = httpx.post(f"{url}/api/v1/runs", json={"experiment_name": "crash"}).json()
        acknowledged: dict[int, list[int]] = {c: [] for c in range(4)}
        stop = threading.Event()

        def client(c: int) -> None:
            with httpx.Client(timeout=5) as http:
                step = 0
                while not stop.is_set():
                    try:
                        r = http.post(f"{url}/api/v1/runs/{run['run_id']}/batch",
                                      json={"metrics": [{"key": f"c{c}", "value": step, "step": step}]})
                    except httpx.TransportError:
                        return  # the server is gone; unacknowledged points may be lost
                    if r.status_code == 200:
                        acknowledged[c].append(step)
                    step += 1

        threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
        assert sum(len(v) for v in acknowledged.values()) > 50
        proc = _start(tmp_path, port)  # restarts cleanly on the same files
        for c, steps in acknowledged.items():
            history = httpx.get(f"{url}/api/v1/runs/{run['run_id']}/metrics/history", params={"key": f"c{c}"}).json()["metrics"]
            stored = {m["step"] for m in history}
            assert set(steps) <= stored, f"client {c} lost {sorted(set(steps) - stored)[:5]}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
