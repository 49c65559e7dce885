#!/usr/bin/env python
"""Drift on Flink against the in-process check: the same logged requests, the same windows, timed.

Not a test: it prints a table and never fails on a number (the agreement itself is tested by
``backends/flink/tests/test_flink_drift.py``). Needs matih-flink and matih-kafka with their test extras.

    python scripts/bench/flink_drift.py                    # 200,000 requests over 3 hours (~5 minutes)
    python scripts/bench/flink_drift.py --records 500000 --hours 6

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
  job's last result (its ``emitted_at``), without reading it back.

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--hours", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
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
                    monitoring = Monitoring(host)
                    wait_until(lambda: len(monitoring.history(P, "churn", window="1h")) >= args.hours
                               and monitoring.history(P, "churn", window="1d"), timeout=1800, interval=0.2,
                               what="every window recorded")
                    done = time.perf_counter()
                    emitted = max(r["emitted_at"] for r in runner.kafka.tail(runner.topics["results"], 100))
                rows.append(("flink start", running - up, None))
                rows.append(("flink process", done - running, args.records))
                rows.append(("  last result out", (emitted - running_ms) / 1000, args.records))
            finally:
                host.close()
    print(f"{args.records:,} requests over {args.hours} h; load average before the Flink run "
          f"{load_before[0]:.1f} on {os.cpu_count()} CPUs, after {os.getloadavg()[0]:.1f}")
    print(f"{'step':<20} {'seconds':>9} {'records/s':>11}")
    for name, seconds, n in rows:
        print(f"{name:<20} {seconds:>9.2f} {n / seconds if n else float('nan'):>11,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
