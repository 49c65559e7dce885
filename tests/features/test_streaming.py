"""Entity rows larger than the memory DuckDB may use stream through the join, file to file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent('''
    import json, resource, sys
    from pathlib import Path
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq
    from matih_lite.features.service import Features
    from matih_lite.host import Host
    from matih_lite.identity import LOCAL_ADMIN

    work = Path(sys.argv[1])
    n_entities, n_rows, n_entity_rows = 20_000, 500_000, int(sys.argv[2])
    rng = np.random.default_rng(0)
    day = 86_400_000_000
    stamp = pa.timestamp("us", "UTC")
    pq.write_table(pa.table({"customer_id": rng.integers(0, n_entities, n_rows),
                             "event_timestamp": pa.array(rng.integers(0, 90 * day, n_rows), stamp),
                             **{f"f{i}": rng.normal(size=n_rows) for i in range(5)}}),
                   work / "features" / "stats.parquet")
    writer = pq.ParquetWriter(work / "entities.parquet", pa.schema([("customer_id", pa.int64()),
                                                                     ("event_timestamp", stamp), ("row", pa.int64())]))
    for start in range(0, n_entity_rows, 1_000_000):
        n = min(1_000_000, n_entity_rows - start)
        writer.write_table(pa.table({"customer_id": rng.integers(0, n_entities, n),
                                     "event_timestamp": pa.array(rng.integers(0, 95 * day, n), stamp),
                                     "row": np.arange(start, start + n)}))
    writer.close()
    host = Host.open()
    features = Features.of(host)
    features.apply(LOCAL_ADMIN)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = features.historical_to_file(LOCAL_ADMIN, work / "out.parquet", entity_path=work / "entities.parquet",
                                       features=[f"stats:f{i}" for i in range(5)])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = pq.ParquetFile(work / "out.parquet")
    head = out.read_row_group(0).slice(0, 2000)
    check = features.historical(LOCAL_ADMIN, head.select(["customer_id", "event_timestamp", "row"]),
                                [f"stats:f{i}" for i in range(5)])
    print(json.dumps({"rows": rows, "out_rows": out.metadata.num_rows, "before_kb": before, "peak_kb": peak,
                      "uncompressed_out_bytes": sum(out.metadata.row_group(i).total_byte_size
                                                    for i in range(out.metadata.num_row_groups)),
                      "head_matches": check.column("f0").to_pylist() == head.column("f0").to_pylist(),
                      "in_order": head.column("row").to_pylist() == list(range(2000))}))
    host.close()
''')

DEFS = """
[entities.customer]
join_keys = ["customer_id"]

[sources.stats]
path = "stats.parquet"

[feature_views.stats]
entities = ["customer"]
source = "stats"
ttl = "30d"
schema = { f0 = "float64", f1 = "float64", f2 = "float64", f3 = "float64", f4 = "float64" }
"""


def test_an_entity_file_larger_than_the_memory_limit_streams(hermetic):
    (hermetic / "features").mkdir()
    (hermetic / "features" / "stats.toml").write_text(DEFS)
    (hermetic / "matih.toml").write_text('[profiles.lite]\nfeatures = { backend = "duckdb", repo = "features", '
                                         'memory_limit = "200MB", threads = 2 }\n')
    (hermetic / "script.py").write_text(SCRIPT)
    done = subprocess.run([sys.executable, "script.py", str(hermetic), "9000000"], cwd=hermetic, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["rows"] == got["out_rows"] == 9_000_000
    assert got["head_matches"] and got["in_order"]
    grown = (got["peak_kb"] - got["before_kb"]) * 1024
    # The joined rows (~600 MB uncompressed) never sit in this process at once: DuckDB keeps to its limit and
    # hands over record batches, each written to the file before the next is read.
    assert got["uncompressed_out_bytes"] > 500_000_000
    assert grown < got["uncompressed_out_bytes"] * 0.6, got
