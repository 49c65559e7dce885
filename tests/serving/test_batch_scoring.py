"""Batch inference: Parquet or CSV in, Parquet out, chunk by chunk, from the CLI with a real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matih_lite.cli import main
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.serving.batch import prediction_columns, score_batch


def double_x(batch):
    return batch.column("x").to_numpy() * 2


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "in.parquet"
    n = 5_500
    pq.write_table(pa.table({"id": np.arange(n), "x": np.arange(n) / 10, "city": ["a", "b"] * (n // 2)}), path)
    return path


def test_parquet_in_parquet_out_in_chunks(data, tmp_path):
    seen = []
    result = score_batch(double_x, data, tmp_path / "out" / "scored.parquet", chunk_rows=1000,
                         progress=lambda done, total: seen.append((done, total)))
    assert (result.rows, result.chunks, result.columns) == (5_500, 6, ["prediction"])
    table = pq.read_table(tmp_path / "out" / "scored.parquet")
    assert table.column_names == ["id", "x", "city", "prediction"]
    assert table.column("id").to_pylist() == list(range(5_500))
    np.testing.assert_allclose(table.column("prediction").to_numpy(), np.arange(5_500) / 5)
    assert seen[0] == (1000, 5_500) and seen[-1] == (5_500, 5_500)
    assert pq.ParquetFile(tmp_path / "out" / "scored.parquet").num_row_groups == 6


def test_csv_in(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("x,name\n1.5,a\n2.5,b\n")
    result = score_batch(double_x, src, tmp_path / "o.parquet")
    assert result.rows == 2
    assert pq.read_table(tmp_path / "o.parquet").to_pydict() == {"x": [1.5, 2.5], "name": ["a", "b"],
                                                                 "prediction": [3.0, 5.0]}


def test_named_outputs_become_prediction_and_probability_columns():
    columns = prediction_columns({"label": np.array(["no", "yes"]), "probabilities": np.array([[.9, .1], [.3, .7]])},
                                 2)
    assert list(columns) == ["prediction", "probability_0", "probability_1"]
    assert columns["prediction"].to_pylist() == ["no", "yes"]
    assert columns["probability_1"].to_pylist() == [.1, .7]
    assert list(prediction_columns(np.array([[1.0], [2.0]]), 2)) == ["prediction"]


def test_empty_input_writes_an_empty_file_with_the_columns(tmp_path):
    src = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"x": pa.array([], pa.float64())}), src)
    result = score_batch(double_x, src, tmp_path / "o.parquet")
    assert result.rows == 0
    assert pq.read_table(tmp_path / "o.parquet").column_names == ["x", "prediction"]


def test_taken_column_name_and_wrong_row_count_leave_no_output(data, tmp_path):
    with pytest.raises(InvalidInput, match="already has a column 'x'"):
        score_batch(double_x, data, tmp_path / "o.parquet", prediction_column="x")
    with pytest.raises(InvalidInput, match="returned 3 rows"):
        score_batch(lambda b: np.zeros(3), data, tmp_path / "o.parquet")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["in.parquet"]


def test_missing_or_unknown_input(tmp_path):
    with pytest.raises(NotFound):
        score_batch(double_x, tmp_path / "nope.parquet", tmp_path / "o.parquet")
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(InvalidInput, match="format"):
        score_batch(double_x, tmp_path / "data.xlsx", tmp_path / "o.parquet")


# ---- the CLI, with a model from the registry ------------------------------------------------------

@pytest.fixture
def registered(hermetic):
    """A logistic regression on (x0, x1) registered as churn v1 and deployed as 'churn-live'."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from matih_lite.host import Host
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.registry import Registry
    from matih_lite.serving import flavor as flavor_of
    from matih_lite.serving.deployments import Deployments
    from matih_lite.tracking import Tracking

    rng = np.random.default_rng(0)
    x = pd.DataFrame({"x0": rng.normal(size=400), "x1": rng.normal(size=400)})
    model = LogisticRegression().fit(x, (x.x0 + x.x1 > 0).map({True: "yes", False: "no"}))
    host = Host.open()
    try:
        tracking = Tracking(host)
        exp = tracking.get_or_create_experiment("default", "batch")
        run = tracking.create_run("default", exp.experiment_id)
        with tempfile.TemporaryDirectory() as tmp:
            flavor_of(host, "sklearn").save(model, tmp, input_example=x.head(3))
            for f in sorted(Path(tmp).rglob("*")):
                if f.is_file():
                    tracking.log_artifact("default", run.run_id, f"model/{f.relative_to(tmp).as_posix()}",
                                          f.read_bytes())
        Registry(host).register_version(LOCAL_ADMIN, "churn", run_id=run.run_id, path="model", flavor="sklearn")
        Registry(host).promote(LOCAL_ADMIN, "churn", 1, "Staging")
        Deployments(host).create(LOCAL_ADMIN, "churn-live", "churn", version=1)
    finally:
        host.close()
    return model, x


@pytest.fixture
def cli(capsys):
    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        return exit_info.value.code or 0, out, err

    return run


def test_cli_scores_with_a_registered_version(registered, cli, hermetic):
    model, x = registered
    data = x.assign(customer=[f"c{i}" for i in range(len(x))])
    data.to_csv(hermetic / "customers.csv", index=False)
    code, out, err = cli("predict", "batch", "--model", "churn", "--version", "1", "--input", "customers.csv",
                         "--output", "scored.parquet", "--chunk-rows", "150", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["rows"] == 400 and result["chunks"] == 3
    assert result["columns"] == ["prediction", "probability_no", "probability_yes"]
    scored = pq.read_table(hermetic / "scored.parquet").to_pandas()
    assert scored.customer.tolist() == data.customer.tolist()
    assert scored.prediction.tolist() == model.predict(x).tolist()
    np.testing.assert_allclose(scored.probability_yes, model.predict_proba(x)[:, 1])


def test_cli_scores_with_a_deployment_and_shows_progress(registered, cli, hermetic):
    model, x = registered
    x.to_parquet(hermetic / "in.parquet")
    code, out, err = cli("predict", "batch", "--deployment", "churn-live", "-i", "in.parquet", "-o", "s.parquet")
    assert code == 0, err
    assert "scored 400 rows with churn v1 (sklearn) (deployment churn-live)" in " ".join(out.split())
    assert "400/400" in err
    assert pq.read_table(hermetic / "s.parquet").column("prediction").to_pylist() == model.predict(x).tolist()


def test_cli_scores_through_a_remote_service_with_matih_url(registered, cli, hermetic, monkeypatch):
    """With MATIH_URL the registry's artifacts are the service's: each chunk goes through the deployment."""
    from matih_lite.host import Host
    from matih_lite.testing.service import serve

    model, x = registered
    x.to_parquet(hermetic / "in.parquet")
    host = Host.open()
    try:
        with serve(host) as url:
            monkeypatch.setenv("MATIH_URL", url)
            code, out, err = cli("predict", "batch", "--deployment", "churn-live", "-i", "in.parquet", "-o",
                                 "remote.parquet", "--chunk-rows", "150", "--json")
            assert code == 0, err
            assert json.loads(out)["rows"] == 400
            code, _, err = cli("predict", "batch", "--model", "churn", "--version", "1", "-i", "in.parquet",
                               "-o", "x.parquet")
            assert code == 2 and "--deployment" in err
    finally:
        host.close()
    remote = pq.read_table(hermetic / "remote.parquet").to_pandas()
    assert remote.prediction.tolist() == model.predict(x).tolist()
    assert remote.x0.tolist() == x.x0.tolist()


def test_cli_errors_are_one_line(registered, cli, hermetic):
    code, _, err = cli("predict", "batch", "--deployment", "nope", "-i", "in.parquet", "-o", "s.parquet")
    assert code == 1 and "nope" in err and "Traceback" not in err
    code, _, err = cli("predict", "batch", "--model", "churn", "-i", "in.parquet", "-o", "s.parquet")
    assert code == 2 and "--version" in err
    pq.write_table(pa.table({"x0": [1.0]}), hermetic / "narrow.parquet")
    code, _, err = cli("predict", "batch", "--model", "churn", "--version", "1", "-i", "narrow.parquet",
                       "-o", "s.parquet")
    assert code == 2 and "no column 'x1'" in err


# ---- memory stays flat ---------------------------------------------------------------------------

_PEAK = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from matih_lite.serving.batch import score_batch
    def predict(batch):
        return np.column_stack([c.to_numpy() for c in batch.columns]).sum(axis=1)
    result = score_batch(predict, sys.argv[1], sys.argv[2], chunk_rows=50_000, memory_limit="256MB", threads=2)
    print(result.rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")


def _peak_mb(src: Path, out: Path) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", _PEAK, str(src), str(out)], capture_output=True, text=True,
                          timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stderr
    rows, peak = done.stdout.strip().splitlines()[-1].split()
    return int(rows), int(peak)


@pytest.mark.slow
def test_memory_stays_flat_as_the_input_grows(tmp_path):
    import duckdb

    columns = ", ".join(f"random() AS x{j}" for j in range(20))
    for name, n in (("small", 200_000), ("large", 2_000_000)):
        duckdb.sql(f"COPY (SELECT {columns} FROM range({n})) TO '{tmp_path / name}.parquet' "
                   "(FORMAT parquet, ROW_GROUP_SIZE 100000)")
    small_rows, small_peak = _peak_mb(tmp_path / "small.parquet", tmp_path / "small-out.parquet")
    large_rows, large_peak = _peak_mb(tmp_path / "large.parquet", tmp_path / "large-out.parquet")
    assert (small_rows, large_rows) == (200_000, 2_000_000)
    # 2M rows x 20 doubles is 320 MB in memory; scored in chunks, the peak must barely move.
    assert large_peak - small_peak < 120, f"peak RSS {small_peak} MB -> {large_peak} MB"
    assert pq.ParquetFile(tmp_path / "large-out.parquet").metadata.num_rows == 2_000_000
