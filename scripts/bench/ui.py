#!/usr/bin/env python
"""Workbench benchmark: the pages people open first, at 100,000 runs, against MLflow 3.17's own UI calls.

Not a test: it prints a table (and optionally JSON) and never fails on a number.

    python scripts/bench/ui.py                  # 100,000 runs x 10 params x 10 metrics, a 1,000,000-point metric
    python scripts/bench/ui.py --quick          # 10,000 runs, 100,000 points: a smoke check
    python scripts/bench/ui.py --json /tmp/ui.json --repeats 9 --keep

Both sides hold the same runs in one experiment (same run ids, params, metrics and start times):
matih-lite's in its SQLite store, written in bulk through the store's own database connection in
transactions of 5,000 runs (rows for runs, params, tags, metrics, latest metrics and the metric
series blocks that log_batch keeps); MLflow's in its own SQLite schema. The long metric is logged
through matih-lite's real write path (Tracking.log_points, batches of 1,000) and inserted by SQL
into MLflow's tables.

Then ``matih-lite up`` and ``mlflow server --workers 1`` (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false,
MLFLOW_DISABLE_TELEMETRY=true) run on free 127.0.0.1 ports. Each matih-lite case is the median of
``--repeats`` requests after one warm-up; each MLflow case of ``--mlflow-repeats`` (default 1; its runs
search over 100,000 runs takes minutes, so it gets no warm-up call either):

  runs      the runs page: first page of 100 runs, sorted by a metric, with a filter
            matih:  GET /ui/experiments/ID?filter=...&order=metrics.m1 DESC&size=100 (the HTML page)
            mlflow: POST /ajax-api/2.0/mlflow/runs/search (what its runs page calls), max_results 100
  compare   100 runs side by side
            matih:  GET /ui/compare?runs=ID1,...,ID100 (the HTML page)
            mlflow: GET /ajax-api/2.0/mlflow/runs/get for each of the 100 runs (what its compare page calls)
  chart     the data of a 1,000,000-point metric's chart
            matih:  GET /ui/api/series?runs=ID&key=loss&points=1000 (min and max kept per bucket)
            mlflow: GET /ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?...&max_results=320

For matih-lite the table shows the server's own time (its Server-Timing header, for the pages) and
the time the client saw; for MLflow the time the client saw. Page weights: matih-lite's HTML plus its
one stylesheet and one script; MLflow's index.html plus the scripts and stylesheets it loads first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TENANT = "default"
FULL = {"runs": 100_000, "points": 1_000_000}
QUICK = {"runs": 10_000, "points": 100_000}
PARAMS = 10
METRICS = 10
PAGE = 100
COMPARE = 100
CHART_POINTS = 1000
MLFLOW_CHART_POINTS = 320
FILTER = "metrics.m0 > 0.5 and params.p0 = 'a'"
ORDER = "metrics.m1 DESC"
TARGETS_MS = {"runs": 150, "compare": 300, "chart": 200}
PAGE_LIMIT = 200 * 1024
CHUNK = 5000


# ---- the population ------------------------------------------------------------------------------------
def population(n: int, seed: int = 0):
    """``n`` runs as (run_id, start_time, params, metrics): ids sortable by creation, values seeded."""
    rng = random.Random(seed)
    start = int(time.time() * 1000) - n * 1000
    for i in range(n):
        run_id = f"{i:08x}{uuid.UUID(int=rng.getrandbits(128)).hex[8:]}"
        params = {f"p{k}": (rng.choice("abcd") if k == 0 else str(rng.randint(0, 100))) for k in range(PARAMS)}
        metrics = {f"m{k}": rng.random() for k in range(METRICS)}
        yield run_id, start + i * 1000, params, metrics


def fill_matih(host: Any, experiment: str, n: int) -> float:
    """Bulk-insert the runs through the store's database; returns seconds."""
    db = host.metadata.db
    q = db.dialect.sql
    started = time.perf_counter()
    # A million rows into each of three (key, value) indexes land at random pages: a page cache that
    # holds them (256 MB, this connection only) instead of SQLite's 2 MB is most of the speed.
    db.connection().execute("PRAGMA cache_size = -262144")
    rows: dict[str, list] = {"runs": [], "params": [], "tags": [], "metrics": [], "blocks": []}

    def flush() -> None:
        def write(cur: Any) -> None:
            cur.executemany(q("INSERT INTO runs (run_id, experiment_id, tenant, name, status, start_time, end_time, "
                              "lifecycle_stage, parent_run_id, artifact_uri, user_id) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), rows["runs"])
            cur.executemany(q("INSERT INTO params (run_id, key, value) VALUES (?, ?, ?)"), rows["params"])
            cur.executemany(q("INSERT INTO tags (run_id, key, value) VALUES (?, ?, ?)"), rows["tags"])
            cur.executemany(q("INSERT INTO metrics (run_id, key, value, is_nan, timestamp, step) "
                              "VALUES (?, ?, ?, ?, ?, ?)"), rows["metrics"])
            cur.executemany(q("INSERT INTO latest_metrics (run_id, key, value, is_nan, timestamp, step) "
                              "VALUES (?, ?, ?, ?, ?, ?)"), rows["metrics"])
            # the rows log_batch's fold_points writes for one point per series
            cur.executemany(q("INSERT INTO metric_blocks (run_id, key, level, block, points, nans, min_value, "
                              "max_value, total, first_step, last_step, first_time, last_time) "
                              "VALUES (?, ?, 0, 0, 1, 0, ?, ?, ?, 0, 0, ?, ?)"), rows["blocks"])

        db.write(write)
        for v in rows.values():
            v.clear()

    for i, (run_id, start, params, metrics) in enumerate(population(n)):
        rows["runs"].append((run_id, int(experiment), TENANT, f"run-{i}", "FINISHED", start, start + 500, "active",
                             None, f"mlflow-artifacts:/{experiment}/{run_id}/artifacts", "bench"))
        rows["params"] += [(run_id, k, v) for k, v in params.items()]
        rows["tags"].append((run_id, "mlflow.runName", f"run-{i}"))
        rows["metrics"] += [(run_id, k, v, 0, start, 0) for k, v in metrics.items()]
        rows["blocks"] += [(run_id, k, v, v, v, start, start) for k, v in metrics.items()]
        if len(rows["runs"]) == CHUNK:
            flush()
    if rows["runs"]:
        flush()
    return time.perf_counter() - started


def long_metric(n: int) -> list[tuple[int, float, int]]:
    """(step, value, timestamp) of the long metric: a noisy decay with one spike near 65 %."""
    rng = random.Random(1)
    start = int(time.time() * 1000) - n
    spike = int(n * 0.654321)
    return [(i, 50.0 if i == spike else 1.0 / (1 + i / 1000) + rng.random() * 0.01, start + i) for i in range(n)]


def fill_mlflow(db: Path, experiment: str, n: int, points: list, long_run: str, work: Path) -> float:
    """The same runs, and the long metric, straight into MLflow's tables; returns seconds."""
    started = time.perf_counter()
    con = sqlite3.connect(db, timeout=60)
    con.execute("PRAGMA cache_size = -262144")  # as for matih-lite's fill
    runs, params, metrics, tags = [], [], [], []

    def flush() -> None:
        with con:
            con.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                            "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, "
                            "experiment_id, deleted_time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
            con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params)
            con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)",
                            metrics)
            con.executemany("INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) "
                            "VALUES (?,?,?,?,?,?)", metrics)
            con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", tags)
        for rows in (runs, params, metrics, tags):
            rows.clear()

    artifacts = work / "mlflow" / "artifacts"
    for i, (run_id, start, p, m) in enumerate(population(n)):
        runs.append((run_id, f"run-{i}", "LOCAL", "bench", "", "bench", "FINISHED", start, start + 500, "", "active",
                     f"{artifacts}/{experiment}/{run_id}/artifacts", int(experiment), None))
        params += [(k, v, run_id) for k, v in p.items()]
        metrics += [(k, v, start, run_id, 0, 0) for k, v in m.items()]
        tags.append(("mlflow.runName", f"run-{i}", run_id))
        if len(runs) == CHUNK:
            flush()
    start = points[0][2]
    runs.append((long_run, "long", "LOCAL", "bench", "", "bench", "FINISHED", start, points[-1][2], "", "active",
                 f"{artifacts}/{experiment}/{long_run}/artifacts", int(experiment), None))
    tags.append(("mlflow.runName", "long", long_run))
    flush()
    with con:
        con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,0)",
                        (("loss", v, ts, long_run, s) for s, v, ts in points))
        s, v, ts = points[-1]
        con.execute("INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,0)",
                    ("loss", v, ts, long_run, s))
    con.close()
    return time.perf_counter() - started


# ---- timing --------------------------------------------------------------------------------------------
def timed(call, repeats: int, *, warm_up: bool = True) -> dict[str, Any]:
    """Median wall and server time (ms) of ``repeats`` calls (after one warm-up); the last response under
    ``"response"``."""
    if warm_up:
        call()
    walls, servers = [], []
    r = None
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        r = call()
        walls.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        found = re.search(r"app;dur=([\d.]+)", r.headers.get("server-timing", ""))
        if found:
            servers.append(float(found.group(1)))
    return {"wall_ms": statistics.median(walls), "server_ms": statistics.median(servers) if servers else None,
            "bytes": len(r.content), "samples": walls, "response": r}


def _on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so the servers are stopped on the way out


def page_weight(client: Any, html: str, base: str) -> int:
    """Bytes of a page's HTML plus the scripts and stylesheets it names (fetched once each)."""
    total = len(html.encode())
    for ref in sorted(set(re.findall(r'(?:src|href)="([^"]+\.(?:js|css)(?:\?[^"]*)?)"', html))):
        if ref.startswith(("http://", "https://")) and not ref.startswith(base):
            continue
        url = ref if ref.startswith("http") else base.rstrip("/") + "/" + ref.lstrip("./").lstrip("/")
        r = client.get(url)
        if r.status_code == 200:
            total += len(r.content)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 runs and a 100,000-point metric")
    ap.add_argument("--runs", type=int, help="runs in the experiment (default 100,000)")
    ap.add_argument("--points", type=int, help="points of the long metric (default 1,000,000)")
    ap.add_argument("--repeats", type=int, default=7, help="timed requests per matih-lite case (median reported)")
    ap.add_argument("--mlflow-repeats", type=int, default=1,
                    help="timed requests per MLflow case (its runs search over 100,000 runs takes seconds)")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (stores, server logs)")
    ap.add_argument("--no-mlflow", action="store_true", help="time matih-lite only")
    args = ap.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    if args.runs:
        sizes["runs"] = args.runs
    if args.points:
        sizes["points"] = args.points

    import httpx

    sys.path.insert(0, str(REPO))
    from matih_lite.contracts import Metric
    from matih_lite.host import Host
    from matih_lite.testing.processes import EngineProcess, free_port, wait_for
    from matih_lite.tracking import Tracking

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)  # also when started in the background, where SIGINT is ignored
    work = Path(tempfile.mkdtemp(prefix="matih-bench-ui-"))
    env = dict(os.environ, HOME=str(work / "home"), MATIH_HOME=str(work / "matih"), MLFLOW_DISABLE_TELEMETRY="true",
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_LOGGING_LEVEL="WARNING", RAY_AUTH_MODE="disabled")
    for var in ("MATIH_URL", "MATIH_TOKEN", "MATIH_CONFIG", "MATIH_PROFILE"):
        env.pop(var, None)
    (work / "home").mkdir()
    os.environ.update({k: env[k] for k in ("MATIH_HOME", "MLFLOW_DISABLE_TELEMETRY")})
    os.chdir(work)
    print(f"workbench benchmark: {sizes['runs']:,} runs x {PARAMS} params x {METRICS} metrics, a "
          f"{sizes['points']:,}-point metric; folder {work}", flush=True)
    result: dict[str, Any] = {"sizes": sizes, "machine": {"python": platform.python_version(),
                                                         "cpus": os.cpu_count(), "platform": platform.platform()},
                              "cases": {}}
    procs: list[EngineProcess] = []
    try:
        # -- matih-lite's store
        host = Host.open()
        tracking = Tracking(host)
        exp = tracking.create_experiment(TENANT, "bench").experiment_id
        seconds = fill_matih(host, exp, sizes["runs"])
        print(f"  matih-lite: {sizes['runs']:,} runs inserted in {seconds:.1f} s", flush=True)
        long_run = tracking.create_run(TENANT, exp, name="long", start_time=int(time.time() * 1000))
        points = long_metric(sizes["points"])
        t0 = time.perf_counter()
        for i in range(0, len(points), 1000):
            tracking.log_points(TENANT, long_run.run_id, [Metric("loss", v, ts, s) for s, v, ts in points[i:i + 1000]])
        logged = time.perf_counter() - t0
        print(f"  matih-lite: {len(points):,} points logged through Tracking.log_points in {logged:.1f} s", flush=True)
        result["populate"] = {"matih_runs_s": seconds, "matih_points_s": logged}
        page_runs = tracking.search_runs(TENANT, [exp], filter=FILTER, order_by=[ORDER], max_results=PAGE).items
        compare_ids = [r.run_id for r in tracking.search_runs(TENANT, [exp], max_results=COMPARE + 1).items
                       if r.run_id != long_run.run_id][:COMPARE]
        host.close()

        # -- MLflow's store, same runs
        mlflow_url = None
        if not args.no_mlflow:
            from mlflow.tracking import MlflowClient

            db = work / "mlflow" / "mlflow.db"
            db.parent.mkdir(parents=True)
            client = MlflowClient(tracking_uri=f"sqlite:///{db}")
            mexp = client.create_experiment("bench", artifact_location=str(work / "mlflow" / "artifacts"))
            seconds = fill_mlflow(db, mexp, sizes["runs"], points, long_run.run_id, work)
            print(f"  mlflow: the same runs and points inserted by SQL in {seconds:.1f} s", flush=True)
            result["populate"]["mlflow_s"] = seconds
            port = free_port()
            exe = Path(sys.executable).parent
            proc = EngineProcess([exe / "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
                                  "--default-artifact-root", work / "mlflow" / "artifacts", "--host", "127.0.0.1",
                                  "--port", str(port), "--workers", "1"], name="mlflow", log_dir=work, env=env,
                                 cwd=work).start()
            procs.append(proc)
            mlflow_url = f"http://127.0.0.1:{port}"
            wait_for(lambda: httpx.get(f"{mlflow_url}/health", timeout=2).status_code == 200, timeout=180,
                     what="mlflow server", proc=proc)
        else:
            mexp = None

        # -- matih-lite up
        port = free_port()
        cli = Path(sys.executable).parent / "matih-lite"
        argv = [cli] if cli.exists() else [sys.executable, "-m", "matih_lite"]
        proc = EngineProcess([*argv, "up", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                             name="matih", log_dir=work, env=env, cwd=work).start()
        procs.append(proc)
        matih_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{matih_url}/health", timeout=2).status_code == 200, timeout=120,
                 what="matih-lite up", proc=proc)
        print(f"  matih-lite up on {matih_url}" + (f", mlflow server on {mlflow_url}" if mlflow_url else ""),
              flush=True)

        cases = result["cases"]
        with httpx.Client(base_url=matih_url, timeout=120) as m:
            runs_path = f"/ui/experiments/{exp}"
            runs_params = {"filter": FILTER, "order": ORDER, "size": PAGE}
            runs_case = timed(lambda: m.get(runs_path, params=runs_params), args.repeats)
            page = runs_case.pop("response")
            cases["runs"] = {"matih": runs_case, "rows": len(re.findall(r'<tr data-run="', page.text)),
                             "expected_rows": len(page_runs)}
            runs_case["page_weight"] = page_weight(m, page.text, matih_url)
            compare = {"runs": ",".join(compare_ids)}
            compare_case = timed(lambda: m.get("/ui/compare", params=compare), args.repeats)
            compare_case["page_weight"] = page_weight(m, compare_case.pop("response").text, matih_url)
            cases["compare"] = {"matih": compare_case}
            chart = {"runs": long_run.run_id, "key": "loss", "points": CHART_POINTS}
            chart_case = timed(lambda: m.get("/ui/api/series", params=chart), args.repeats)
            body = chart_case.pop("response").json()["series"][0]
            chart_case.update(buckets=len(body["x"]), max=max(v for v in body["max"] if v is not None))
            cases["chart"] = {"matih": chart_case}
        print("  matih-lite measured: " + ", ".join(
            f"{k} {v['matih']['server_ms'] or v['matih']['wall_ms']:.1f} ms" for k, v in cases.items()), flush=True)
        if mlflow_url:
            with httpx.Client(base_url=mlflow_url, timeout=600) as f:
                search = {"experiment_ids": [mexp], "filter": FILTER, "order_by": [ORDER], "max_results": PAGE,
                          "run_view_type": "ACTIVE_ONLY"}
                # MLflow's search over 100,000 runs takes minutes: no warm-up call (its first is timed)
                found = timed(lambda: f.post("/ajax-api/2.0/mlflow/runs/search", json=search), args.mlflow_repeats,
                              warm_up=False)
                cases["runs"]["mlflow_rows"] = len(found.pop("response").json().get("runs", []))
                cases["runs"]["mlflow"] = found
                print(f"  mlflow runs search: {found['wall_ms'] / 1000:.1f} s", flush=True)

                class All:
                    """The 100 runs/get calls of MLflow's compare page, as one timed call."""

                    def __init__(self) -> None:
                        self.headers: dict[str, str] = {}
                        self.content = b""

                    def raise_for_status(self) -> None:
                        pass

                def compare_calls() -> All:
                    out = All()
                    for rid in compare_ids:
                        r = f.get("/ajax-api/2.0/mlflow/runs/get", params={"run_id": rid})
                        r.raise_for_status()
                        out.content += r.content
                    return out

                compared = timed(compare_calls, args.mlflow_repeats)
                compared.pop("response")
                cases["compare"]["mlflow"] = compared
                print(f"  mlflow compare: {compared['wall_ms'] / 1000:.1f} s", flush=True)
                interval = {"run_ids": long_run.run_id, "metric_key": "loss", "max_results": MLFLOW_CHART_POINTS}
                charted = timed(lambda: f.get("/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                                              params=interval), args.mlflow_repeats)
                values = [p["value"] for p in charted.pop("response").json().get("metrics", [])]
                charted.update(buckets=len(values), max=max(values) if values else None)
                cases["chart"]["mlflow"] = charted
                index = f.get("/")
                result["mlflow_page_weight"] = page_weight(f, index.text, mlflow_url) if index.status_code == 200 \
                    else None
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(Exception):
                proc.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")

    report(result, sizes)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


def report(result: dict[str, Any], sizes: dict[str, int]) -> None:
    cases = result["cases"]
    print()
    print(f"{'case':<9} {'matih server':>13} {'matih client':>13} {'target':>8} {'mlflow client':>14} {'ratio':>7}"
          f"  notes")
    for name, label in (("runs", f"runs page: first {PAGE} of {sizes['runs']:,}, filtered, sorted by a metric"),
                        ("compare", f"compare {COMPARE} runs"),
                        ("chart", f"chart data of a {sizes['points']:,}-point metric")):
        c = cases.get(name, {})
        m = c.get("matih", {})
        f = c.get("mlflow")
        server = m.get("server_ms")
        ours = server if server is not None else m.get("wall_ms")
        target = TARGETS_MS[name]
        met = "ok" if ours is not None and ours < target else "MISSED"
        ratio = f"{f['wall_ms'] / m['wall_ms']:.1f}x" if f and m.get("wall_ms") else "-"
        notes = [label]
        if name == "runs":
            notes.append(f"{c.get('rows')} rows (expected {c.get('expected_rows')})"
                         + (f", mlflow {c.get('mlflow_rows')} rows" if f else ""))
        if name == "chart":
            notes.append(f"matih {m.get('buckets')} buckets, max {m.get('max')}"
                         + (f"; mlflow {f.get('buckets')} points, max {f.get('max')}" if f else ""))
        if m.get("page_weight"):
            notes.append(f"page {m['page_weight'] / 1024:.0f} KB ({'ok' if m['page_weight'] < PAGE_LIMIT else 'OVER'}"
                         f" 200 KB)")
        print(f"{name:<9} {_ms(server):>13} {_ms(m.get('wall_ms')):>13} {f'<{target} ms':>8} "
              f"{_ms(f['wall_ms'] if f else None):>14} {ratio:>7}  {met}; " + "; ".join(notes))
    if result.get("mlflow_page_weight"):
        print(f"MLflow's UI loads {result['mlflow_page_weight'] / 1024:.0f} KB (index.html and its first scripts "
              "and stylesheets) before its first API call")
    pop = result.get("populate", {})
    print(f"populate: matih-lite {pop.get('matih_runs_s', 0):.1f} s for the runs (bulk, through the store's "
          f"database), {pop.get('matih_points_s', 0):.1f} s for the long metric (Tracking.log_points)"
          + (f"; mlflow {pop['mlflow_s']:.1f} s by SQL" if "mlflow_s" in pop else ""))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


if __name__ == "__main__":
    sys.exit(main())
