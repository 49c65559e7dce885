#!/usr/bin/env python
"""Tuning benchmark: Ray Tune's per-trial overhead against plain Optuna, and matih-lite's own on top.

Not a test: it prints what it measured and the ratios. Every side runs the same trivial
objective (``(x - 3)^2``, one report per trial) for the same budget of trials.

    python scripts/bench/tuning.py                  # 100 trials per side (a few minutes on 2 cores)
    python scripts/bench/tuning.py --trials 30      # a smoke check
    python scripts/bench/tuning.py --json /tmp/tuning.json

Sides
  optuna             plain Optuna, TPE, in this process (no Ray)
  tune random        Ray Tune, random search (BasicVariantGenerator), trials on 2 CPUs, actors reused
  tune optuna        Ray Tune with OptunaSearch (the same TPE), as above
  matih job          a matih-lite tuning job (random search) through the Jobs service on ray-local:
                     queue, run, driver task, child run per trial, metrics streamed, best marked
  matih logging      matih-lite's own per-trial work alone (the Tune callback's tracking calls:
                     create the child run, log params, log each iteration's metrics, end it), with
                     1 and with 10 iterations per trial, on the embedded SQLite store

Ray is started once (its start-up is reported separately and left out of the per-trial
figures). Everything runs with a temporary HOME and state folder and RAY_AUTH_MODE=disabled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def objective_value(x: float) -> float:
    return (x - 3.0) ** 2


def bench_optuna(trials: int, seed: int) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    start = time.perf_counter()
    study.optimize(lambda t: objective_value(t.suggest_float("x", 0.0, 6.0)), n_trials=trials)
    return time.perf_counter() - start


def _tune_objective(config: dict[str, Any]) -> None:
    from ray import tune

    tune.report({"loss": objective_value(config["x"])})


def bench_tune(trials: int, seed: int, search: str, storage: Path) -> float:
    from ray import tune

    search_alg = None
    if search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed), seed=seed)
    tuner = tune.Tuner(
        tune.with_resources(_tune_objective, {"cpu": 1}), param_space={"x": tune.uniform(0.0, 6.0)},
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=trials, search_alg=search_alg,
                                    max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(storage), name=f"bench-{search}", verbose=0))
    start = time.perf_counter()
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # Tune's experiment banner
        results = tuner.fit()
    elapsed = time.perf_counter() - start
    assert len(results) == trials and not results.errors, results.errors
    return elapsed


def bench_matih_job(trials: int, work: Path) -> dict[str, float]:
    from matih_lite.host import Host
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.training.jobs import Jobs, JobSupervisor

    work.mkdir(parents=True, exist_ok=True)
    (work / "benchfns.py").write_text(
        "from matih_lite import training\n\n"
        "def objective(config):\n"
        "    training.report({'loss': (config['x'] - 3.0) ** 2})\n")
    (work / "matih.toml").write_text("")
    host = Host.open(str(work / "matih.toml"))
    try:
        jobs = Jobs(host)
        spec = {"entrypoint": "benchfns:objective", "base_dir": str(work), "experiment": "bench",
                "tune": {"metric": "loss", "mode": "min", "num_samples": trials, "max_concurrent": 2,
                         "space": {"x": {"uniform": [0.0, 6.0]}}}}
        start = time.perf_counter()
        job = jobs.submit(LOCAL_ADMIN, spec)
        done = jobs.wait(LOCAL_ADMIN, job.job_id, timeout=3600, poll=0.2)
        total = time.perf_counter() - start
        if done.status != "SUCCEEDED":
            raise RuntimeError(f"the matih-lite job failed: {done.message}\n{jobs.logs(LOCAL_ADMIN, job.job_id)}")
        from matih_lite.tracking.service import Tracking

        run = Tracking(host).get_run("default", done.run_id)
        return {"total_s": total, "overhead_ms_per_trial": run.metrics["matih.overhead_ms_per_trial"].value}
    finally:
        JobSupervisor.of(host, start=False).stop()
        host.close()


def bench_matih_logging(trials: int, iterations: int, work: Path) -> float:
    """Milliseconds per trial of the tracking calls the Tune callback makes (embedded SQLite)."""
    from matih_lite.host import Host
    from matih_lite.tracking.client import Client
    from matih_lite.training.runner import TrialLogger

    work.mkdir(parents=True, exist_ok=True)
    (work / "matih.toml").touch()
    host = Host.open(str(work / "matih.toml"))
    client = Client(host=host)
    try:
        exp = client.get_or_create_experiment(f"bench-logging-{iterations}")
        parent = client.create_run(exp.experiment_id, name="job")
        logger = TrialLogger(lambda: client, exp.experiment_id, parent.run_id, "bench", None)
        for i in range(trials):
            trial_id = f"t{i:05d}"
            logger.started(trial_id, {"x": 0.1 * i, "lr": 0.01, "depth": 4})
            for step in range(iterations):
                logger.result(trial_id, {"loss": objective_value(0.1 * i) + step, "auc": 0.5, "matih_step": step,
                                         "training_iteration": step + 1, "time_this_iter_s": 0.01})
            logger.completed(trial_id, iterations)
        return 1000 * logger.overhead_s / trials
    finally:
        client.close()
        host.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100, help="trials per side (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-job", action="store_true", help="leave out the full matih-lite job")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="matih-bench-tuning-"))
    os.environ.update({"HOME": str(tmp / "home"), "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"})
    for var in ("MATIH_URL", "MATIH_CONFIG", "MATIH_HOME", "MATIH_PROFILE"):
        os.environ.pop(var, None)
    (tmp / "home").mkdir()
    os.chdir(tmp)
    figures: dict[str, Any] = {"trials": args.trials, "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import optuna
        import ray

        figures["versions"] = {"ray": ray.__version__, "optuna": optuna.__version__}
        n = args.trials
        print(f"tuning benchmark: {n} trials of a trivial objective per side, {os.cpu_count()} CPUs", flush=True)

        figures["optuna_s"] = bench_optuna(n, args.seed)
        print(f"  optuna (TPE, no Ray)        {figures['optuna_s']:8.2f} s   "
              f"{1000 * figures['optuna_s'] / n:8.1f} ms/trial", flush=True)

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp / "ray"), log_to_driver=False,
                 configure_logging=False)
        figures["ray_init_s"] = time.perf_counter() - start
        start = time.perf_counter()
        bench_tune(4, args.seed, "random", tmp / "storage")  # Tune's first-run imports and actor start
        print(f"  ray.init (once, not counted) {figures['ray_init_s']:7.2f} s, Tune warm-up "
              f"{time.perf_counter() - start:.2f} s", flush=True)
        for search in ("random", "optuna"):
            key = f"tune_{search}_s"
            figures[key] = bench_tune(n, args.seed, search, tmp / "storage")
            print(f"  tune {search:<22} {figures[key]:8.2f} s   {1000 * figures[key] / n:8.1f} ms/trial   "
                  f"x{figures[key] / figures['optuna_s']:.0f} plain Optuna", flush=True)
        overhead = (figures["tune_optuna_s"] - figures["optuna_s"]) / n
        figures["tune_overhead_ms_per_trial"] = 1000 * overhead
        figures["ratio_tune_optuna_vs_optuna"] = figures["tune_optuna_s"] / figures["optuna_s"]

        if not args.skip_job:
            job = bench_matih_job(n, tmp / "job")
            figures["matih_job_s"] = job["total_s"]
            figures["matih_job_callback_ms_per_trial"] = job["overhead_ms_per_trial"]
            extra = (job["total_s"] - figures["tune_random_s"]) / n
            figures["matih_job_extra_ms_per_trial"] = 1000 * extra
            print(f"  matih job (random, ray-local) {job['total_s']:6.2f} s   {1000 * job['total_s'] / n:8.1f} "
                  f"ms/trial   (+{1000 * extra:.0f} ms/trial over bare Tune, driver start included; "
                  f"tracking callback {job['overhead_ms_per_trial']:.1f} ms/trial)", flush=True)
        ray.shutdown()

        for iterations in (1, 10):
            key = f"matih_logging_ms_per_trial_{iterations}it"
            figures[key] = bench_matih_logging(n, iterations, tmp / "logging")
            print(f"  matih logging, {iterations:>2} it/trial   {figures[key]:8.2f} ms/trial "
                  f"(child run, params, {iterations} metric batch(es), end)", flush=True)

        print(f"\nRay Tune (OptunaSearch) / plain Optuna: x{figures['ratio_tune_optuna_vs_optuna']:.0f} "
              f"({figures['tune_overhead_ms_per_trial']:.0f} ms of overhead per trial)")
        worst = max(figures["matih_logging_ms_per_trial_1it"], figures.get("matih_job_callback_ms_per_trial", 0))
        print(f"matih-lite's own overhead per trial: {worst:.1f} ms (target < 50 ms): "
              f"{'ok' if worst < 50 else 'OVER TARGET'}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        os.chdir(REPO)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
