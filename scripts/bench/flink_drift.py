#!/usr/bin/env python
"""Drift on Flink against the in-process check: the same logged requests, the same windows, timed.

Not a test: it prints a table and never fails on a number (the agreement itself is tested by
``backends/flink/tests/test_flink_drift.py``). Needs matih-flink and matih-kafka with their test extras.

    python scripts/bench/flink_drift.py                    # 200,000 requests over 3 hours (~5 minutes)
    python scripts/bench/flink_drift.py --records 500000 --hours 6
    python scripts/bench/flink_drift.py --live             # and a live 1-minute window's close (~3 minutes more)

A tansu broker (memory storage) on a free loopback port; model ``churn`` v1 with a baseline of 20,000
rows (3 features), deployed; N one-row requests logged through the inference log into Kafka, spread over
the first hours of yesterday (UTC), a fifth labelled. Then:

- ``in-process``: ``Monitoring.check`` of each hour and of the day (aligned, no actions), one after the
  other, as the in-process runner does them: read from Kafka, aggregate, compare.
- ``flink``: the ml-service with ``drift = { backend = "flink" }`` (parallelism 1): ``start`` is from the
  service up to the job's first completed checkpoint (the mini-cluster, the Python workers); ``process``
  from there to every window's report recorded by the ml-service (reading the backlog, closing the windows,
  results back through Kafka). Records/s is N over ``process``. The job's clock follows the checkpointed
  offsets until the job has read the backlog (see ``FlinkDriftRunner._tick``), so ``process`` includes up
  to about one checkpoint interval (2 s here) of waiting; ``last result out`` is the same span up to the
  job's last result (its ``emitted_at``), without reading it back. ``job CPU`` is the CPU time the job's
  processes (the JVM and its Python workers, one process group) spent over ``process``, on all cores:
  records per CPU-second is the job's throughput per core.

``--live``: a second platform with ``[drift] windows = ["1m"]``; once the job runs and has read everything,
100 requests every 0.1 s stamped with the wall clock, across two minute boundaries; for each of those two
windows, the seconds from the watermark passing its end (end + ``allowed_lateness``) to the job's result
(``emitted_at``). The clock topic is ticked every second, and the records reach the job's Python in
1-second event-time slices, so about 1-2 s is the floor.

The load average is printed: the figures of a shared machine are taken under others' load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "backends" / "flink" / "tests"))  # the tests' helpers: host, model, traffic


def group_cpu_seconds(pgid: int) -> float:
    """User and system CPU seconds of every process in the job's process group (the JVM, its Python workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...; utime, stime at 11, 12
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--hours", type=int, default=3)
    parser.add_argument("--live", action="store_true", help="also time closing a live 1-minute window")
    parser.add_argument("--live-only", action="store_true", help="only the live 1-minute windows")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if args.live_only:
        from matih_lite.testing.flink import flink_environment

        flink_environment()
        load = os.getloadavg()[0]
        rows = live(args)
        print(f"load average before {load:.1f} on {os.cpu_count()} CPUs, after {os.getloadavg()[0]:.1f}")
        for name, seconds, _ in rows:
            print(f"{name:<22} {seconds:>7.2f} s")
        return 0
    from flink_helpers import DAY, HOUR, P, log_requests, make_host, monitored, past_day, traffic

    from matih_lite.monitoring import Monitoring
    from matih_lite.testing.flink import FlinkService, flink_environment, wait_until
    from matih_lite.testing.tansu import Tansu

    flink_environment()
    rows = []
    with tempfile.TemporaryDirectory(prefix="flink-bench-") as tmp:
        folder = Path(tmp)
        os.environ["HOME"] = str(folder)
        with Tansu(folder / "tansu") as kafka:
            host = make_host(folder, kafka)
            try:
                monitored(host)
                t0 = past_day()
                started = time.perf_counter()
                log_requests(host, traffic(args.records, age_shift=8.0), start=t0, end=t0 + args.hours * HOUR,
                             labelled=args.records // 5)
                rows.append(("log into Kafka", time.perf_counter() - started, args.records))
                local = Monitoring(host)
                started = time.perf_counter()
                for h in range(1, args.hours + 1):
                    local.check(P, "churn", "1h", end=t0 + h * HOUR, aligned=True, act=False)
                local.check(P, "churn", "1d", end=t0 + DAY, aligned=True, act=False)
                rows.append(("in-process checks", time.perf_counter() - started, args.records))
                load_before = os.getloadavg()
                up = time.perf_counter()
                with FlinkService(host):
                    runner = host.backend("drift")
                    wait_until(lambda: runner.job is not None and runner.job.alive() and runner.job.last_checkpoint(),
                               timeout=900, interval=0.2, what="the first checkpoint")
                    running, running_ms = time.perf_counter(), time.time() * 1000
                    cpu_before = group_cpu_seconds(runner.job.pid)
                    monitoring = Monitoring(host)
                    wait_until(lambda: len(monitoring.history(P, "churn", window="1h")) >= args.hours
                               and monitoring.history(P, "churn", window="1d"), timeout=1800, interval=0.2,
                               what="every window recorded")
                    done = time.perf_counter()
                    cpu = group_cpu_seconds(runner.job.pid) - cpu_before
                    emitted = max(r["emitted_at"] for r in runner.kafka.tail(runner.topics["results"], 100))
                rows.append(("flink start", running - up, None))
                rows.append(("flink process", done - running, args.records))
                rows.append(("  last result out", (emitted - running_ms) / 1000, args.records))
                rows.append(("  job CPU (all cores)", cpu, args.records))
            finally:
                host.close()
    if args.live:
        rows += live(args)
    print(f"{args.records:,} requests over {args.hours} h; load average before the Flink run "
          f"{load_before[0]:.1f} on {os.cpu_count()} CPUs, after {os.getloadavg()[0]:.1f}")
    print(f"{'step':<20} {'seconds':>9} {'records/s':>11}")
    for name, seconds, n in rows:
        print(f"{name:<20} {seconds:>9.2f} {n / seconds if n else float('nan'):>11,.0f}")
    return 0


def live(args: argparse.Namespace) -> list[tuple[str, float, int | None]]:
    """Requests logged as they happen (100 every 0.1 s) into 1-minute windows: how long after the watermark
    passed a window's end (its end + ``allowed_lateness``, 10 s) the job published its result."""
    from flink_helpers import make_host, monitored, traffic

    from matih_lite.serving.inference_log import InferenceLog
    from matih_lite.testing.flink import FlinkService, wait_until
    from matih_lite.testing.tansu import Tansu

    minute = 60_000
    with tempfile.TemporaryDirectory(prefix="flink-bench-live-") as tmp:
        folder = Path(tmp)
        with Tansu(folder / "tansu") as kafka:
            host = make_host(folder, kafka, extra='[drift]\nwindows = ["1m"]\nmin_rows = 10\n')
            try:
                monitored(host)
                with FlinkService(host):
                    runner = host.backend("drift")
                    wait_until(lambda: runner.job is not None and runner.job.alive() and runner.job.last_checkpoint()
                               and runner._caught_up, timeout=900, interval=0.2, what="the job running")
                    data = traffic(200_000, age_shift=8.0)
                    first_end = (int(time.time() * 1000) // minute + 1) * minute
                    sent = 0
                    with InferenceLog(host.backend("events"), flush_interval_ms=100) as log:
                        while time.time() * 1000 < first_end + minute + 1000:  # two window ends crossed
                            now = int(time.time() * 1000)
                            for _ in range(100):
                                i = sent % len(data["age"])
                                log.record("churn", f"live-{sent}", "v1", 1, {k: data[k][i] for k in
                                           ("age", "income", "plan")}, data["pred"][i:i + 1], 1.0, timestamp=now)
                                sent += 1
                            time.sleep(0.1)
                        log.flush()
                    ends = {first_end, first_end + minute}

                    def published():
                        got = {r["end"]: r for r in runner.kafka.tail(runner.topics["results"], 100)
                               if r.get("window") == "1m" and r.get("end") in ends}
                        return got if set(got) == ends else None

                    found = wait_until(published, timeout=120, interval=0.2, what="the live windows' results")
                    lateness = 10_000
                    delays = [(found[e]["emitted_at"] - (e + lateness)) / 1000 for e in sorted(ends)]
            finally:
                host.close()
    print(f"live: {sent:,} requests; results {', '.join(f'{d:.2f} s' for d in delays)} after the watermark "
          "passed the window's end")
    return [(f"live window {i + 1} close", d, None) for i, d in enumerate(delays)]


if __name__ == "__main__":
    sys.exit(main())
