#!/usr/bin/env python
"""Cluster compute benchmark: a tuning job through matih-lite's ``ray`` backend against ``ray job submit``.

Not a test: it prints what it measured and the ratios. Both sides run the same Ray Tune search of the
same trivial objective (``(x - 3)^2``, one report per iteration) on the same real two-node Ray cluster
(head + ``ray start --address``, in a loopback-only network namespace, as the tests run it), in one run,
alternating side by side:

  ray job submit   the Ray CLI submits a plain Ray Tune script (``--working-dir``), nothing else; the
                   script notes the wall-clock time of the first trial result in its log
  matih ray        ``Jobs.submit`` of the same search as a matih-lite tuning job on the ``ray`` backend:
                   queue, tracking run, a job-scoped token, code upload, the job's driver on the cluster,
                   each trial a child run whose metrics come back over the service's HTTP API

Measured per repetition: from the submit call to the first trial result (for matih-lite: the first
metric point of a trial run in its tracking store, which is what a user sees), and the whole job.
Then matih-lite's own work per trial (the ``matih.overhead_ms_per_trial`` the job records: creating
each trial's run, its params, every iteration's metrics, ending it, all over HTTP).

    python scripts/bench/compute.py                 # 3 repetitions, 8 trials each; then 20 trials once
    python scripts/bench/compute.py --reps 1 --trials 4
    python scripts/bench/compute.py --json /tmp/compute.json

Needs root (``ip netns``), Ray 2.60 with ``ray[default]`` and ``matih-ray`` installed.
Targets (issue 17): first trial within 2x of ``ray job submit`` alone; per-trial overhead under 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PEER_SCRIPT = '''
"""Plain Ray Tune, as a user submits it with `ray job submit`: the same search as the matih-lite job."""
import sys, time
import ray
from ray import tune

TRIALS, ITERATIONS = int(sys.argv[1]), int(sys.argv[2])


def objective(config):
    for i in range(ITERATIONS):
        tune.report({"loss": (config["x"] - 3.0) ** 2 + 1.0 / (i + 1)})


class FirstResult(tune.Callback):
    seen = False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self.seen:
            self.seen = True
            print(f"BENCH-FIRST-RESULT {time.time():.6f}", flush=True)


ray.init()
tune.Tuner(tune.with_resources(objective, {"cpu": 0.5}), param_space={"x": tune.uniform(0.0, 6.0)},
           tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=TRIALS, reuse_actors=True),
           run_config=tune.RunConfig(storage_path="/tmp/bench-peer-storage", verbose=0,
                                     callbacks=[FirstResult()])).fit()
print(f"BENCH-DONE {time.time():.6f}", flush=True)
'''

MATIH_OBJECTIVE = '''
from matih_lite import training


def objective(config):
    for i in range(int(config["iterations"])):
        training.report({"loss": (float(config["x"]) - 3.0) ** 2 + 1.0 / (i + 1)})
'''


def serve(host, port: int):
    import uvicorn

    from matih_lite.service import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(host), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread


def peer_once(cluster, code: Path, trials: int, iterations: int) -> dict[str, float]:
    """``ray job submit`` of the plain script; seconds to its first trial result and to its end."""
    from matih_ray.jobs_api import JobsApi

    submission = f"bench-peer-{uuid.uuid4().hex[:8]}"
    started = time.time()
    # Tune's automatic result files are off on both sides (matih-lite's runner turns them off: its metrics
    # go to tracking), so both run the same Tune loop.
    env = json.dumps({"env_vars": {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}})
    done = cluster.run(["ray", "job", "submit", "--address", cluster.dashboard_url, "--working-dir", str(code),
                        "--runtime-env-json", env, "--submission-id", submission, "--no-wait", "--", "python",
                        "peer_tune.py", str(trials), str(iterations)], timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"ray job submit failed: {done.stdout}{done.stderr}")
    api = JobsApi(cluster.dashboard_url)
    try:
        while True:
            info = api.info(submission)
            if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(0.1)
        logs = api.logs(submission)
    finally:
        api.close()
    if info["status"] != "SUCCEEDED":
        raise RuntimeError(f"the peer job {info['status']}: {logs[-2000:]}")
    first = float(next(line.split()[1] for line in logs.splitlines() if line.startswith("BENCH-FIRST-RESULT")))
    end = float(next(line.split()[1] for line in logs.splitlines() if line.startswith("BENCH-DONE")))
    return {"first_result_s": first - started, "job_s": end - started}


def matih_once(host, principal, code: Path, trials: int, iterations: int) -> dict[str, float]:
    """A matih-lite tuning job on the ray backend; seconds to its first trial metric in tracking, and to its end."""
    from matih_lite.tracking.service import Tracking
    from matih_lite.training.jobs import Jobs

    jobs, tracking = Jobs(host), Tracking(host)
    spec = {"entrypoint": "bench_objective:objective", "base_dir": str(code), "experiment": "bench",
            "params": {"iterations": iterations}, "resources": {"cpus": 0.5},
            "tune": {"metric": "loss", "mode": "min", "num_samples": trials, "space": {"x": {"uniform": [0.0, 6.0]}}}}
    started = time.time()
    job = jobs.submit(principal, spec)
    first = None
    while True:
        current = jobs.get(principal, job.job_id)
        if first is None and current.run_id:
            parent = tracking.get_run(current.tenant, current.run_id)
            trials_now = tracking.search_runs(current.tenant, [parent.experiment_id],
                                              filter=f"tags.`mlflow.parentRunId` = '{parent.run_id}'",
                                              max_results=1000).items
            points = [m.timestamp for t in trials_now for m in t.metrics.values()]
            if points:
                first = min(points) / 1000.0
        if current.status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        time.sleep(0.05)
    if current.status != "SUCCEEDED":
        raise RuntimeError(f"the matih-lite job {current.status}: {current.message}")
    overhead = tracking.get_run(current.tenant, current.run_id).metrics["matih.overhead_ms_per_trial"].value
    return {"first_result_s": (first or time.time()) - started, "job_s": current.ended_at / 1000.0 - started,
            "overhead_ms_per_trial": overhead}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each side, alternating")
    parser.add_argument("--trials", type=int, default=8, help="trials per tuning job")
    parser.add_argument("--iterations", type=int, default=3, help="reports per trial")
    parser.add_argument("--overhead-trials", type=int, default=20, help="trials of the overhead run (0: skip)")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="matih-bench-compute-"))
    os.environ.update({"HOME": str(work / "home"), "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"})
    (work / "home").mkdir()
    peer_code, matih_code = work / "peer", work / "matih"
    peer_code.mkdir()
    matih_code.mkdir()
    (peer_code / "peer_tune.py").write_text(PEER_SCRIPT)
    (matih_code / "bench_objective.py").write_text(MATIH_OBJECTIVE)

    from matih_lite.auth.service import Accounts
    from matih_lite.host import Host
    from matih_lite.identity import Principal
    from matih_lite.testing.processes import free_port
    from matih_lite.testing.raycluster import RayCluster
    from matih_lite.training.jobs import JobSupervisor

    results: dict[str, list[dict[str, float]]] = {"ray job submit": [], "matih ray": []}
    t0 = time.monotonic()
    cluster = RayCluster(work / "logs").start()
    cluster_start = time.monotonic() - t0
    try:
        with cluster.namespace.entered():
            port = free_port()
            (work / "matih.toml").write_text(
                '[auth]\nenabled = true\n\n[profiles.lite]\ncompute = { backend = "ray", '
                f'address = "{cluster.dashboard_url}", service_url = "http://127.0.0.1:{port}" }}\n')
            host = Host.open(str(work / "matih.toml"))
            Accounts(host).create_user("default", "bench", ["editor"])
            principal = Principal("default", "bench", ("editor",))
            server, thread = serve(host, port)
            try:
                # One of each first, not counted: the cluster's first job pays for its worker processes.
                peer_once(cluster, peer_code, 2, 1)
                matih_once(host, principal, matih_code, 2, 1)
                for rep in range(args.reps):
                    for side in ("ray job submit", "matih ray"):
                        if side == "ray job submit":
                            got = peer_once(cluster, peer_code, args.trials, args.iterations)
                        else:
                            got = matih_once(host, principal, matih_code, args.trials, args.iterations)
                        results[side].append(got)
                        print(f"rep {rep + 1} {side:<15} first trial result {got['first_result_s']:6.2f} s   "
                              f"job {got['job_s']:6.2f} s", flush=True)
                overhead = None
                if args.overhead_trials:
                    overhead = matih_once(host, principal, matih_code, args.overhead_trials, args.iterations)
            finally:
                JobSupervisor.of(host, start=False).stop()
                server.should_exit = True
                thread.join(15)
                host.close()
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in results[side])

    peer_first, ours_first = median("ray job submit", "first_result_s"), median("matih ray", "first_result_s")
    print()
    print(f"Ray cluster (2 nodes) started in {cluster_start:.1f} s; {args.reps} repetitions, {args.trials} trials x "
          f"{args.iterations} reports; medians:")
    print(f"{'side':<16}{'first trial result':>20}{'whole job':>12}")
    for side in results:
        print(f"{side:<16}{median(side, 'first_result_s'):>18.2f} s{median(side, 'job_s'):>10.2f} s")
    ratio = ours_first / peer_first
    print(f"first trial result, matih ray / ray job submit: {ratio:.2f}x  (target <= 2x: "
          f"{'ok' if ratio <= 2 else 'MISSED'})")
    if overhead is not None:
        print(f"matih-lite per-trial overhead on the ray backend ({args.overhead_trials} trials, over HTTP): "
              f"{overhead['overhead_ms_per_trial']:.1f} ms  (target < 50 ms: "
              f"{'ok' if overhead['overhead_ms_per_trial'] < 50 else 'MISSED'})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_average": os.getloadavg()},
            "cluster_start_s": cluster_start, "reps": args.reps, "trials": args.trials, "iterations": args.iterations,
            "results": results, "ratio_first_result": ratio, "overhead": overhead}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
