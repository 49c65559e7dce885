#!/usr/bin/env python
"""Drift benchmark: matih-lite against Evidently on the same data, tests and thresholds, in one run.

Not a test: it prints tables (times, peak memory, ratios, per-column verdicts) and never fails on
the numbers; it exits 1 only if a side crashes. Evidently is not a dependency of matih-lite; the
figures were taken with **evidently 0.7.23** (``pip install evidently==0.7.23`` into the venv; it
adds statsmodels, plotly and nltk, and changes no installed version).

    python scripts/bench/drift.py                       # 100k and 1M rows + the window check (~6-10 min)
    python scripts/bench/drift.py --sizes 100000        # the small case only (~1 min)
    python scripts/bench/drift.py --no-evidently --json /tmp/drift.json

Data (seeded): a reference and a current frame of N rows each, 20 numeric and 5 categorical
columns (normal, lognormal, exponential, uniform, Poisson, Student-t, gamma, beta, bimodal,
integer-valued; 2 % nulls in two columns; 3 to 50 categories, a Zipf one, a category new in the
current data). Drift is injected into known columns, some far past the threshold and some just
either side of it (a 0.12 and a 0.09 standard-deviation shift), so agreement near the threshold
is tested too.

Sides, each run in its own subprocess so its peak memory is its own (``ru_maxrss``), timed from
the two pandas DataFrames in memory to per-column verdicts (imports and data generation are not
timed):

=================  ==========================================================================
``evidently``      ``Report([DataDriftPreset(num_method="wasserstein", cat_method="jensenshannon",
                   num_threshold=0.1, cat_threshold=0.1)]).run(current, reference)`` and
                   ``snapshot.dict()``: Evidently's own defaults at this size (reference > 1,000
                   rows: normed Wasserstein >= 0.1 numeric, Jensen-Shannon >= 0.1 categorical),
                   named explicitly
``matih build``    the baseline profile built from the reference (``build_profile``: 1,000
                   quantile bins per numeric column, category counts), the current data
                   aggregated on its edges, ``wasserstein`` / ``jensen_shannon`` at 0.1
``matih stored``   the same with the baseline already stored: read and parsed from its JSON file
                   (timed), then the current data aggregated and tested
=================  ==========================================================================

Verdicts are compared column by column and must all agree (``verdicts`` column: agreeing of
total). The statistics are printed side by side: matih-lite's normed Wasserstein comes from the
fine histograms (``method=binned``, with a stated error bound) at 1M rows, exactly from the kept
values only below 10,000 rows.

The window case (``--window-rows``, 100,000 by default): a platform in a temporary folder, a
model version with a baseline of 100,000 reference rows, a deployment, and 100,000 one-row
requests logged through the inference log (:class:`InferenceLog`, DuckDB events slot) inside one
hour; then ``Monitoring.check(deployment, "1h")`` end to end: read the window from the log, load
the baseline from the artifacts slot, aggregate, test, and act (alert to the log notifier, health
tag on the version). ``cold`` is the first check in a fresh process with the modules imported
(the host, DuckDB file and caches opened by it); ``warm`` the median of 5 more, each with a new
``Monitoring`` (so the baseline is read again), as in the running service. Target: under 1 s.

Ratios read "times faster": Evidently's seconds / matih-lite's. Targets from issue 6: on 1M rows,
>= 10x counting the baseline's construction, >= 50x with the baseline stored.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
NUMERIC = [f"n{i:02d}" for i in range(20)]
CATEGORICAL = [f"c{i}" for i in range(5)]
THRESHOLD = 0.1
DRIFTED = {"n00", "n01", "n02", "n03", "n04", "n07", "n10", "c0", "c1"}
"""Columns given drift past the threshold (n10 just past it; n11 just short, n05/n06 slightly)."""


# ---- data ------------------------------------------------------------------------------------------------
def make_frames(n: int, seed: int = 7) -> tuple[Any, Any]:
    """(reference, current) pandas DataFrames of ``n`` rows each, drift injected into :data:`DRIFTED`."""
    import pandas as pd

    rng = np.random.default_rng(seed)

    def numeric(drift: bool) -> dict[str, np.ndarray]:
        d = drift
        cols = {
            "n00": rng.normal(0.5 if d else 0.0, 1.0, n),                       # shift 0.5 sd
            "n01": rng.normal(10.0, 3.0 if d else 2.0, n),                      # scale x1.5
            "n02": rng.lognormal(0.3 if d else 0.0, 0.75, n),                   # heavy tail moves
            "n03": rng.exponential(1.25 if d else 1.0, n),                      # scale x1.25
            "n04": rng.uniform(0.05 if d else 0.0, 1.05 if d else 1.0, n),      # shift 0.17 sd
            "n05": rng.normal(0.05 if d else 0.0, 1.0, n),                      # 0.05 sd: no drift
            "n06": rng.normal(0.08 if d else 0.0, 1.0, n),                      # 0.08 sd: no drift
            "n07": rng.poisson(23 if d else 20, n).astype(np.float64),          # integer valued
            "n08": np.where(rng.random(n) < 0.3, rng.normal(-2, 0.5, n), rng.normal(2, 1, n)),
            "n09": rng.standard_t(5, n),
            "n10": rng.normal(0.12 if d else 0.0, 1.0, n),                      # 0.12 sd: just past
            "n11": rng.normal(0.09 if d else 0.0, 1.0, n),                      # 0.09 sd: just short
            "n12": rng.gamma(2.0, 2.0, n),
            "n13": rng.beta(2.0, 5.0, n),
            "n14": rng.integers(0, 100, n).astype(np.float64),
            "n15": rng.poisson(3, n).astype(np.float64),                        # ~15 distinct values
            "n16": rng.lognormal(5.0, 1.5, n),
            "n17": rng.normal(1000.0, 0.01, n),                                 # big mean, tiny spread
            "n18": rng.normal(0.0, 1.0, n),
            "n19": rng.normal(0.0, 1.0, n),
        }
        for name in ("n18", "n19"):
            cols[name][rng.random(n) < 0.02] = np.nan                         # 2 % nulls
        return cols

    def categorical(drift: bool) -> dict[str, np.ndarray]:
        five = np.array(list("ABCDE"), dtype=object)
        twenty = np.array([f"k{i:02d}" for i in range(20)], dtype=object)
        fifty = np.array([f"z{i:02d}" for i in range(50)], dtype=object)
        zipf = 1.0 / np.arange(1, 51)
        eight = np.array([f"e{i}" for i in range(8)], dtype=object)
        c1 = rng.choice(twenty, n)
        if drift:
            c1[rng.random(n) < 0.15] = "k_new"                                 # a category never seen
        return {
            "c0": rng.choice(five, n, p=[0.1, 0.1, 0.2, 0.3, 0.3] if drift else [0.3, 0.3, 0.2, 0.1, 0.1]),
            "c1": c1,
            "c2": rng.choice(np.array(["x", "y", "z"], dtype=object), n, p=[0.5, 0.3, 0.2]),
            "c3": rng.choice(fifty, n, p=zipf / zipf.sum()),
            "c4": rng.choice(eight, n, p=[0.15, 0.15, 0.15, 0.15, 0.1, 0.1, 0.1, 0.1] if drift else
                             [0.125] * 8),
        }

    reference = pd.DataFrame({**numeric(False), **categorical(False)})
    current = pd.DataFrame({**numeric(True), **categorical(True)})
    return reference, current


# ---- measurements (each in its own process) --------------------------------------------------------------
def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_evidently(n: int, _: Path) -> dict[str, Any]:
    from evidently import DataDefinition, Dataset, Report
    from evidently import __version__ as version
    from evidently.presets import DataDriftPreset

    reference, current = make_frames(n)
    data_mb = rss_mb()
    started = time.perf_counter()
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    ref = Dataset.from_pandas(reference, data_definition=definition)
    cur = Dataset.from_pandas(current, data_definition=definition)
    preset = DataDriftPreset(num_method="wasserstein", cat_method="jensenshannon", num_threshold=THRESHOLD,
                             cat_threshold=THRESHOLD)
    snapshot = Report([preset]).run(cur, ref)
    metrics = snapshot.dict()["metrics"]
    seconds = time.perf_counter() - started
    columns = {}
    for m in metrics:
        name = m["metric_name"]
        if name.startswith("ValueDrift("):
            column = name[len("ValueDrift(column="):].split(",", 1)[0]
            value = float(m["value"])
            columns[column] = {"statistic": value, "drifted": value >= THRESHOLD,
                               "test": "wasserstein" if column in NUMERIC else "jensen_shannon"}
    return {"seconds": seconds, "peak_mb": peak_mb(), "data_mb": data_mb, "columns": columns,
            "version": version}


def _matih_settings() -> Any:
    from matih_lite.monitoring.settings import DriftSettings, FeatureSettings

    features = {c: FeatureSettings(test="wasserstein", threshold=THRESHOLD) for c in NUMERIC}
    features.update({c: FeatureSettings(test="jensen_shannon", threshold=THRESHOLD) for c in CATEGORICAL})
    return DriftSettings(features=features, min_rows=1)


def _matih_compare(profile: Any, current: Any) -> dict[str, Any]:
    from matih_lite.monitoring import stats
    from matih_lite.monitoring.profile import aggregate_features
    from matih_lite.monitoring.service import compare_window

    features = aggregate_features(profile.features, lambda name: current[name], len(current))
    result = compare_window(stats.WindowAggregate(0, 1, len(current), features), profile, _matih_settings())
    return {r["feature"]: {"statistic": r["statistic"], "drifted": r["drifted"], "test": r["test"],
                           "method": r["method"], "bound": r["bound"]} for r in result["features"]}


def run_matih_build(n: int, folder: Path) -> dict[str, Any]:
    import matih_lite.monitoring.service  # noqa: F401  (imports are not timed, on either side)
    from matih_lite.monitoring.profile import build_profile

    reference, current = make_frames(n)
    data_mb = rss_mb()
    started = time.perf_counter()
    profile = build_profile(reference, model="bench", version=1)
    built = time.perf_counter() - started
    columns = _matih_compare(profile, current)
    seconds = time.perf_counter() - started
    (folder / f"baseline-{n}.json").write_bytes(profile.to_json())  # for the stored side; not timed
    return {"seconds": seconds, "baseline_seconds": built, "peak_mb": peak_mb(), "data_mb": data_mb,
            "columns": columns, "baseline_kb": (folder / f"baseline-{n}.json").stat().st_size / 1024}


def run_matih_stored(n: int, folder: Path) -> dict[str, Any]:
    import matih_lite.monitoring.service  # noqa: F401  (imports are not timed, on either side)
    from matih_lite.monitoring.profile import Profile

    _, current = make_frames(n)
    data_mb = rss_mb()
    started = time.perf_counter()
    profile = Profile.from_json((folder / f"baseline-{n}.json").read_bytes())
    columns = _matih_compare(profile, current)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_mb": peak_mb(), "data_mb": data_mb, "columns": columns}


def run_window(n: int, folder: Path) -> dict[str, Any]:
    """The 1-hour window of ``n`` logged requests, checked end to end from the inference log."""
    os.chdir(folder)
    (folder / "matih.toml").write_text("[canary]\ntick_seconds = 0\n")
    logging.getLogger("matih_lite").setLevel(logging.ERROR)
    from matih_lite.host import Host
    from matih_lite.identity import LOCAL_ADMIN as principal
    from matih_lite.monitoring import Monitoring
    from matih_lite.registry import Registry
    from matih_lite.serving.deployments import Deployments
    from matih_lite.serving.inference_log import InferenceLog
    from matih_lite.testing.sources import placeholder_source

    hour = 3_600_000
    t0 = 1_800_000_000_000 // hour * hour
    reference, current = make_frames(n)
    reference["prediction"] = (reference["n00"] > 0).astype(int)
    host = Host.open()
    Registry(host).register_version(principal, "bench", placeholder_source(host, principal), flavor="sklearn")
    Registry(host).promote(principal, "bench", 1, "Staging")  # where a version may take live traffic
    Monitoring(host).build_baseline(principal, "bench", 1, reference, prediction="prediction")
    Deployments(host).deploy(principal, "bench", "bench", version=1)
    setup = time.perf_counter()
    columns = {c: current[c].to_numpy() for c in NUMERIC + CATEGORICAL}
    predictions = (current["n00"].to_numpy() > 0).astype(int)
    with InferenceLog(host.backend("events"), flush_interval_ms=60_000, max_batch=20_000,
                      max_pending=n + 1) as log:
        for i in range(n):
            row = {c: (None if isinstance(v[i], float) and v[i] != v[i] else v[i]) for c, v in columns.items()}
            log.record("bench", f"r{i}", "v1", 1, row, int(predictions[i]), 1.0, timestamp=t0 + i * hour // n)
        log.flush()
    logged = time.perf_counter() - setup
    host.close()

    host = Host.open()
    started = time.perf_counter()
    report = Monitoring(host).check(principal, "bench", "1h", end=t0 + hour)
    cold = time.perf_counter() - started
    warm = []
    for _ in range(5):
        started = time.perf_counter()
        again = Monitoring(host).check(principal, "bench", "1h", end=t0 + hour)
        warm.append(time.perf_counter() - started)
    host.close()
    (v,) = report["versions"]
    return {"rows": report["rows"], "cold": cold, "warm": statistics.median(warm), "warm_all": warm,
            "logging_seconds": logged, "status": report["status"], "peak_mb": peak_mb(),
            "drifted": v["data_drift"]["drifted_features"], "actions": [a["action"] for a in again["actions"]],
            "tests": sorted({f["test"] for f in v["features"]})}


WORKERS = {"evidently": run_evidently, "matih build": run_matih_build, "matih stored": run_matih_stored,
           "window": run_window}


def measure(side: str, n: int, folder: Path, timeout: int) -> dict[str, Any]:
    """Run one side in a fresh interpreter; returns its JSON result (or the error)."""
    out = folder / f"{side.replace(' ', '_')}-{n}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--rows", str(n), "--folder", str(folder),
           "--out", str(out)]
    env = {**os.environ, "HOME": str(folder / "home"), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
           "EVIDENTLY_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(REPO)}
    env.pop("MATIH_URL", None)
    env.pop("MATIH_CONFIG", None)
    (folder / "home").mkdir(exist_ok=True)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0 or not out.exists():
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(out.read_text())


# ---- the report ---------------------------------------------------------------------------------------------
def fmt_s(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def print_tables(results: dict[str, Any]) -> bool:
    ok = True
    print()
    print(f"{'case':<18} {'side':<14} {'seconds':>10} {'peak MB':>9} {'over data':>10} {'vs evidently':>13} "
          f"{'verdicts':>9}  target")
    print(f"{'-' * 18} {'-' * 14} {'-' * 10} {'-' * 9} {'-' * 10} {'-' * 13} {'-' * 9}  {'-' * 22}")
    for n, sides in results["sizes"].items():
        ev = sides.get("evidently")
        for side, r in sides.items():
            if "error" in r:
                print(f"{int(n):>10,} rows   {side:<14} {'ERROR':>10}  {r['error']}")
                ok = False
                continue
            ratio, agree, target = "-", "-", ""
            if ev and "error" not in ev and side != "evidently":
                ratio = f"{ev['seconds'] / r['seconds']:.1f}x"
                same = sum(ev["columns"][c]["drifted"] == r["columns"][c]["drifted"] for c in ev["columns"])
                agree = f"{same}/{len(ev['columns'])}"
                if int(n) >= 1_000_000:
                    goal = 10 if side == "matih build" else 50
                    target = f">={goal}x {'ok' if ev['seconds'] / r['seconds'] >= goal else 'MISSED'}"
                if same != len(ev["columns"]):
                    target += " VERDICTS DIFFER"
            print(f"{int(n):>10,} rows   {side:<14} {fmt_s(r['seconds']):>10} {r['peak_mb']:>9.0f} "
                  f"{r['peak_mb'] - r['data_mb']:>10.0f} {ratio:>13} {agree:>9}  {target}")
        build = sides.get("matih build", {})
        if "baseline_seconds" in build:
            print(f"{'':<18} {'':<14} (baseline construction {fmt_s(build['baseline_seconds'])}, stored as "
                  f"{build['baseline_kb']:.0f} KB of JSON)")
    window = results.get("window")
    if window:
        print()
        if "error" in window:
            print(f"window check: ERROR {window['error']}")
            ok = False
        else:
            print(f"window check, 1 h of {window['rows']:,} logged requests from the inference log, end to end: "
                  f"cold {fmt_s(window['cold'])}, warm {fmt_s(window['warm'])} (median of 5: "
                  f"{', '.join(fmt_s(x) for x in window['warm_all'])}); target < 1 s "
                  f"{'ok' if window['warm'] < 1 else 'MISSED'}")
            print(f"  status {window['status']}, drifting: {', '.join(window['drifted'])}; tests "
                  f"{', '.join(window['tests'])}; actions {', '.join(window['actions'])}; logging the requests "
                  f"took {window['logging_seconds']:.1f} s (not timed)")
    for n, sides in results["sizes"].items():
        ev, mb = sides.get("evidently"), sides.get("matih stored") or sides.get("matih build")
        if not ev or not mb or "error" in ev or "error" in mb:
            continue
        print()
        print(f"per column, {int(n):,} rows ({'*' } = drift injected)")
        print(f"{'column':<8} {'test':<15} {'evidently':>11} {'matih-lite':>11} {'bound':>9} {'method':<8} verdicts")
        for c in NUMERIC + CATEGORICAL:
            e, m = ev["columns"][c], mb["columns"][c]
            mark = "*" if c in DRIFTED else " "
            verdict = ("drift" if e["drifted"] else "-") + " / " + ("drift" if m["drifted"] else "-")
            if e["drifted"] != m["drifted"]:
                verdict += "  DIFFER"
            bound = f"{m['bound']:.1e}" if m.get("bound") is not None else "-"
            print(f"{c + mark:<8} {m['test']:<15} {e['statistic']:>11.5f} {m['statistic']:>11.5f} {bound:>9} "
                  f"{(m.get('method') or '-'):<8} {verdict}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="rows per frame, comma separated")
    parser.add_argument("--window-rows", type=int, default=100_000, help="requests in the window case (0: skip)")
    parser.add_argument("--no-evidently", action="store_true", help="matih-lite alone")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per side")
    parser.add_argument("--json", help="write every result here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = WORKERS[args.worker](args.rows, Path(args.folder))
        Path(args.out).write_text(json.dumps(result, default=float))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results: dict[str, Any] = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                                           "cpus": os.cpu_count(), "numpy": np.__version__},
                               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="matih-drift-bench-") as tmp:
        folder = Path(tmp)
        for n in sizes:
            sides = {}
            for side in (["evidently"] if not args.no_evidently else []) + ["matih build", "matih stored"]:
                print(f"{n:>10,} rows: {side} ...", file=sys.stderr, flush=True)
                sides[side] = measure(side, n, folder, args.timeout)
            results["sizes"][str(n)] = sides
        if args.window_rows:
            print(f"window check over {args.window_rows:,} logged requests ...", file=sys.stderr, flush=True)
            window_folder = folder / "window"
            window_folder.mkdir()
            results["window"] = measure("window", args.window_rows, window_folder, args.timeout)
    evidently = next((s["evidently"].get("version") for s in results["sizes"].values()
                      if "evidently" in s and "version" in s["evidently"]), None)
    print(f"\nmachine: {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}"
          + (f", evidently {evidently}" if evidently else "") + f"; {results['started']}")
    ok = print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
