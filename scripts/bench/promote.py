#!/usr/bin/env python
"""``matih-lite promote`` benchmark: a lite folder of R runs with M metric points and A MB of artifacts
promoted to PostgreSQL (127.0.0.1:5432, a fresh schema) and an S3 (SeaweedFS on loopback), timed.

Not a test: it prints what it measured and never fails on a number.

    python scripts/bench/promote.py                                   # 10,000 runs, 1,000,000 points, 2 GB
    python scripts/bench/promote.py --runs 1000 --points 100000 --artifact-mb 200

Reports the time to fill the lite folder (not part of the target), the copy per slot, the
verification alone, and the whole promote. Targets: the whole under 120 s, verification under 20 s.
PostgreSQL comes from ``MATIH_TEST_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000_000, help="metric points in all")
    parser.add_argument("--artifact-mb", type=int, default=2048, help="MB of artifacts in all (0: no S3)")
    parser.add_argument("--files", type=int, default=200, help="artifact files the MB are spread over")
    args = parser.parse_args()

    import psycopg
    from psycopg import sql

    from matih_lite.contracts import Metric
    from matih_lite.host import Host, load_config
    from matih_lite.promote import files, queries, tables
    from matih_lite.promote.promotion import _tenants, promote
    from matih_lite.testing.seaweedfs import SeaweedFS

    dsn = os.environ.get("MATIH_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"matih_bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = SeaweedFS(work / "seaweedfs").start() if args.artifact_mb else None
        try:
            artifacts = "{ backend = \"local\", root = \"cluster-artifacts\" }"
            if server is not None:
                server.create_bucket("ml-artifacts")
                artifacts = server.artifacts_toml("ml-artifacts")
            (work / "matih.toml").write_text(
                f'[profiles.lite]\nmetadata = {{ backend = "sqlite" }}\n[profiles.cluster]\n'
                f'metadata = {{ backend = "postgres", dsn = "{dsn}", schema = "{schema}" }}\nartifacts = {artifacts}\n')
            cfg = load_config(str(work / "matih.toml"))
            lite, cluster = Host(cfg, "lite"), Host(cfg, "cluster")
            t0 = time.perf_counter()
            store = lite.metadata
            exp = store.create_experiment("default", "bench")
            per_run = max(1, args.points // args.runs)
            now = 1_760_000_000_000
            for i in range(args.runs):
                run_id = f"{i:032x}"
                store.create_run("default", exp.experiment_id, run_id=run_id, name=f"r{i}", start_time=now + i)
                store.log_batch("default", run_id, params={"lr": str(i % 7), "depth": str(i % 5)},
                                metrics=[Metric("loss", 1.0 / (s + 1) + i * 1e-6, now + s, s) for s in range(per_run)])
            blob = os.urandom(1 << 20)
            mb_per_file = max(1, args.artifact_mb // max(1, args.files)) if args.artifact_mb else 0
            for f in range(args.files if args.artifact_mb else 0):
                lite.artifacts.put(f"default/{exp.experiment_id}/{f:032x}/artifacts/model.bin",
                                   blob[f % 997:] * mb_per_file + f.to_bytes(4, "big"))
            filled = time.perf_counter() - t0
            print(f"filled lite: {args.runs} runs, {per_run * args.runs} points, "
                  f"{mb_per_file * (args.files if args.artifact_mb else 0)} MB in {filled:.1f} s")

            timings: dict[str, float] = {}
            real_copy_tables, real_copy_files = tables.copy_tables, files.copy_files
            real_verify_tables, real_verify_files = tables.verify_tables, files.verify_files
            real_queries = queries.compare_queries

            def timed(name, fn):
                def wrapper(*a, **k):
                    start = time.perf_counter()
                    try:
                        return fn(*a, **k)
                    finally:
                        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
                return wrapper

            tables.copy_tables = timed("copy metadata", real_copy_tables)
            files.copy_files = timed("copy artifacts", real_copy_files)
            tables.verify_tables = timed("verify tables", real_verify_tables)
            files.verify_files = timed("verify artifacts", real_verify_files)
            queries.compare_queries = timed("verify queries", real_queries)
            start = time.perf_counter()
            outcome = promote(lite, cluster, only=["metadata", "artifacts"] if server else ["metadata"])
            whole = time.perf_counter() - start
            verify = sum(v for k, v in timings.items() if k.startswith("verify"))
            print(f"promote ok={outcome.ok} in {whole:.1f} s (target < 120 s); verification {verify:.1f} s "
                  "(target < 20 s)")
            for name, seconds in timings.items():
                print(f"  {name:18s} {seconds:7.1f} s")
            for done in outcome.copied:
                print(f"  {done.slot}: {done.items} copied, {done.bytes} bytes")
            del _tenants
            lite.close()
            cluster.close()
        finally:
            if server is not None:
                server.stop()
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
