"""The platform uses features: a job's training data from a feature service, a version that remembers it, a
deployment that looks the features up by entity key, and lineage from the source to the deployment."""

from __future__ import annotations

import hashlib
import io
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from litestar.testing import TestClient

from matih_lite.errors import InvalidInput
from matih_lite.features.job_inputs import prepare_feature_inputs
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.lineage import Lineage
from matih_lite.registry import Registry
from matih_lite.testing.features import DAY, T0
from matih_lite.tracking import Tracking
from matih_lite.training.spec import parse_spec


@pytest.fixture
def cli(capsys, monkeypatch):
    from matih_lite.cli import main

    monkeypatch.setenv("COLUMNS", "250")

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        return exit_info.value.code or 0, out, err

    return run


SPEC = {"entrypoint": "train:main", "experiment": "churn",
        "inputs": {"features": {"service": "churn_v1", "entities": "labels.parquet"}}}


def _labels(folder, ids=(1, 2, 1, 3), times=None):
    times = times or [T0, T0, T0 - 3 * DAY, T0]
    path = folder / "labels.parquet"
    pq.write_table(pa.table({"customer_id": pa.array(list(ids), pa.int64()),
                             "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
                             "churned": pa.array([0, 1, 0, 1][:len(ids)], pa.int64())}), path)
    return path


def _job_run(host, spec_dict, folder):
    """A run as the job supervisor makes it, and the spec it hands the compute backend."""
    tracking = Tracking(host)
    run = tracking.create_run("default", tracking.get_or_create_experiment("default", "churn").experiment_id)
    spec = parse_spec({**spec_dict, "base_dir": str(folder)}).to_dict()
    return run.run_id, prepare_feature_inputs(host, LOCAL_ADMIN, run.run_id, spec)


def test_a_job_spec_takes_a_feature_service_or_features_as_an_input():
    spec = parse_spec(SPEC)
    assert spec.inputs["features"].service == "churn_v1" and spec.inputs["features"].entities == "labels.parquet"
    again = parse_spec(spec.to_dict())  # stored as JSON, read back the same
    assert again.inputs == spec.inputs
    listed = parse_spec({**SPEC, "inputs": {"train": {"features": ["customer_stats:trips"], "entities": "l.csv"}}})
    assert listed.inputs["train"].features == ["customer_stats:trips"]
    for bad, message in [({"service": "churn_v1"}, "missing required field `entities`"),
                         ({"entities": "l.csv"}, "exactly one of service"),
                         ({"entities": "l.csv", "service": "s", "colour": 1}, "inputs.features.colour: unknown key"),
                         ({"entities": "l.csv", "features": ["trips"]}, "references like")]:
        with pytest.raises(InvalidInput, match=message):
            parse_spec({**SPEC, "inputs": {"features": bad}})


def test_a_feature_input_becomes_the_joined_frame_in_the_run_with_its_digest_and_service(applied, hermetic):
    host = applied.host
    _labels(hermetic)
    run_id, spec = _job_run(host, SPEC, hermetic)
    assert spec["inputs"]["features"] == f"runs:/{run_id}/inputs/features.parquet"
    tracking = Tracking(host)
    data = tracking.open_artifact("default", run_id, "inputs/features.parquet").read()
    frame = pq.read_table(io.BytesIO(data)).to_pydict()
    # the point-in-time join, every entity column carried through, one row per label row, in order
    assert frame["customer_id"] == [1, 2, 1, 3] and frame["churned"] == [0, 1, 0, 1]
    assert frame["conv_rate"] == [0.2, 0.4, None, None] and frame["trips"] == [2, 4, None, None]
    expected = applied.historical({"customer_id": [1, 2, 1, 3], "event_timestamp": [T0, T0, T0 - 3 * DAY, T0]},
                                  service="churn_v1")
    assert frame["conv_rate"] == expected["conv_rate"]

    run = tracking.get_run("default", run_id)
    assert run.tags["matih.feature_service"] == "churn_v1"
    digest = hashlib.sha256(data).hexdigest()
    ref = json.loads(run.tags["matih.dataset.features"])
    assert ref["digest"] == digest and ref["feature_service"] == "churn_v1" and ref["rows"] == 4
    from matih_lite.tracking.logged_models import LoggedModels

    dataset, service = LoggedModels(host).run_io("default", run_id).datasets
    assert (dataset.dataset.name, dataset.dataset.digest, dataset.context) == ("features", digest, "training")
    assert json.loads(dataset.dataset.source)["feature_service"] == "churn_v1"
    assert (service.dataset.name, service.dataset.source_type, service.context) == \
        ("churn_v1", "feature_service", "training")
    assert service.dataset.digest == applied.features.version("default").digest
    assert json.loads(service.dataset.source)["features"] == ["customer_stats:conv_rate", "customer_stats:trips"]
    assert [c["name"] for c in json.loads(dataset.dataset.schema)["mlflow_colspec"]] == \
        ["customer_id", "event_timestamp", "churned", "conv_rate", "trips"]

    up = Lineage(host).upstream("default", f"run:{run_id}", depth=5)
    keys = {n.key for n in up.nodes}
    source = f"dataset:{(applied.repo / 'customer_stats.parquet').resolve()}"
    assert {"feature_service:churn_v1", "feature_view:customer_stats", source} <= keys
    edges = {(e.source, e.target) for e in up.edges}
    assert {(source, "feature_view:customer_stats"), ("feature_view:customer_stats", "feature_service:churn_v1"),
            ("feature_service:churn_v1", f"run:{run_id}")} <= edges


def test_a_feature_input_names_what_is_wrong(applied, hermetic):
    host = applied.host
    with pytest.raises(InvalidInput, match=r"inputs.features.entities: .*labels.parquet does not exist"):
        _job_run(host, SPEC, hermetic)
    _labels(hermetic)
    with pytest.raises(InvalidInput, match=r"inputs.features: .*churn_v2.*did you mean 'churn_v1'"):
        _job_run(host, {**SPEC, "inputs": {"features": {"service": "churn_v2", "entities": "labels.parquet"}}},
                 hermetic)
    pq.write_table(pa.table({"customer_id": [1]}), hermetic / "nots.parquet")
    with pytest.raises(InvalidInput, match=r"inputs.features: .*event_timestamp"):
        _job_run(host, {**SPEC, "inputs": {"features": {"service": "churn_v1", "entities": "nots.parquet"}}},
                 hermetic)


@pytest.fixture
def served(applied, hermetic):
    """A model trained on the joined frame of a job run, registered, materialized online, deployed."""
    from sklearn.linear_model import LogisticRegression

    from matih_lite.serving import flavor as flavor_of

    host = applied.host
    _labels(hermetic)
    run_id, _ = _job_run(host, SPEC, hermetic)
    tracking = Tracking(host)
    X = np.array([[0.1, 1], [0.2, 2], [0.3, 3], [0.4, 4], [0.9, 9], [0.8, 8]], dtype=np.float64)
    model = LogisticRegression().fit(X, [0, 0, 0, 1, 1, 1])
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        flavor_of(host, "sklearn").save(model, tmp, input_example={"conv_rate": [0.1], "trips": [1.0]})
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                tracking.log_artifact("default", run_id, f"model/{f.relative_to(tmp).as_posix()}", f.read_bytes())
    registry = Registry(host)
    mv = registry.register_version(LOCAL_ADMIN, "churn", run_id=run_id, path="model", flavor="sklearn")
    registry.promote(LOCAL_ADMIN, "churn", mv.version, "Staging", reason="tests")
    applied.features.materialize(LOCAL_ADMIN, T0 - 10 * DAY, T0)
    return {"host": host, "run_id": run_id, "version": mv, "model": model, "repo": applied.repo, "platform": applied}


def test_a_version_remembers_its_feature_service(served):
    mv = Registry(served["host"]).get_version(LOCAL_ADMIN, "churn", served["version"].version)
    assert mv.tags["matih.feature_service"] == "churn_v1"
    assert [r["name"] for r in mv.training_data] == ["features"]
    assert mv.training_data[0]["feature_service"] == "churn_v1"


def test_a_deployment_enriches_requests_by_entity_key_and_logs_the_lookup_time(served, monkeypatch):
    from matih_lite.service import create_app
    from matih_lite.serving.traffic import attach_traffic

    host = served["host"]
    now = (T0 + DAY).timestamp()
    monkeypatch.setattr("matih_lite.features.service.now_us", lambda: int(now * 1_000_000))
    with TestClient(create_app(host)) as client:
        made = client.post("/api/v1/deployments", json={"name": "churn-api", "model": "churn", "version": 1})
        assert made.status_code == 201, made.text
        url = "/api/v1/deployments/churn-api/predict"
        resp = client.post(url, json={"dataframe_records": [{"customer_id": 1}, {"customer_id": 2}]})
        assert resp.status_code == 200, resp.text
        expected = served["model"].predict(np.array([[0.2, 2.0], [0.4, 4.0]])).tolist()
        assert resp.json()["predictions"] == expected
        assert float(resp.headers["x-feature-lookup-ms"]) >= 0
        # a value the request sends wins over the online one; other shapes work too
        sent = client.post(url, json={"dataframe_split": {"columns": ["customer_id", "conv_rate"],
                                                          "data": [[1, 0.9]]}})
        assert sent.json()["predictions"] == served["model"].predict(np.array([[0.9, 2.0]])).tolist()
        # every feature sent: no lookup
        full = client.post(url, json={"dataframe_records": [{"conv_rate": 0.9, "trips": 9}]})
        assert full.status_code == 200 and "x-feature-lookup-ms" not in full.headers
        # bad input: a row without the key, an entity the online store does not hold
        nokey = client.post(url, json={"dataframe_records": [{"id": 1}]})
        assert nokey.status_code == 400 and "'customer_id'" in nokey.json()["detail"]
        unknown = client.post(url, json={"dataframe_records": [{"customer_id": 99}]})
        assert unknown.status_code == 400, unknown.text
        assert "customer_id=99" in unknown.json()["detail"] and "NOT_FOUND" in unknown.json()["detail"]
        log = attach_traffic(host).inference_log
        log.flush()
        window = log.window("churn-api", 0, int(time.time() * 1000) + 60_000)
        lookups = window.table.column("feature_lookup_ms").to_pylist()
        assert len(lookups) == 4  # two rows, one row, one row without a lookup
        assert all(v is not None and v >= 0 for v in lookups[:3]) and lookups[3] is None
        assert window.features()["conv_rate"].tolist()[:2] == [0.2, 0.4]  # the enriched values are logged
        # the service removed from the definitions: the deployment cannot serve, the caller is not at fault
        toml = served["repo"] / "customer.toml"
        toml.write_text(toml.read_text().split("[feature_services.churn_v1]")[0])
        served["platform"].apply()
        gone = client.post(url, json={"dataframe_records": [{"customer_id": 1}]})
        assert gone.status_code == 503 and "churn_v1" in gone.json()["detail"]


def test_lineage_runs_from_the_source_to_the_deployment_and_the_card_and_cli_show_it(served, applied, cli):
    from matih_lite.registry.cards import ModelCards
    from matih_lite.serving.deployments import Deployments

    host = served["host"]
    lineage = Lineage(host)  # its recorder hears the deployment being made, as the service's does
    Deployments(host).create(LOCAL_ADMIN, "churn-api", "churn", version=1)
    source = f"dataset:{(applied.repo / 'customer_stats.parquet').resolve()}"
    up = lineage.upstream("default", "deployment:churn-api", depth=6)
    by_key = {n.key: n for n in up.nodes}
    run = f"run:{served['run_id']}"
    chain = [source, "feature_view:customer_stats", "feature_service:churn_v1", run, "model:churn/1",
             "deployment:churn-api"]
    assert all(k in by_key for k in chain), sorted(by_key)
    edges = {(e.source, e.target) for e in up.edges}
    assert all(pair in edges for pair in zip(chain, chain[1:]))
    assert by_key["feature_service:churn_v1"].kind == "feature_service"

    cards = ModelCards(host)
    card = cards.card(LOCAL_ADMIN, "churn", 1)
    assert card["model"]["tags"]["matih.feature_service"] == "churn_v1"
    upstream = {n["key"] for n in card["lineage"]["upstream"]["nodes"]}
    assert {run, "feature_service:churn_v1", "feature_view:customer_stats"} <= upstream
    assert source in {n["key"] for n in cards.card(LOCAL_ADMIN, "churn", 1, lineage_depth=5)["lineage"]["upstream"][
        "nodes"]}
    assert any(r.get("feature_service") == "churn_v1" for r in card["training_data"])
    assert "feature_service:churn_v1" in cards.render(LOCAL_ADMIN, "churn", 1, "md")

    code, out, _ = cli("lineage", "show", "deployment:churn-api", "--upstream", "--depth", "6")
    assert code == 0, out
    assert "feature_service:churn_v1" in out and "feature_view:customer_stats" in out
    assert "customer_stats.parquet" in out


def test_apply_records_the_services_lineage(applied):
    graph = Lineage(applied.host).upstream("default", "feature_service:churn_v1", depth=3)
    assert {n.key for n in graph.nodes} == {"feature_service:churn_v1", "feature_view:customer_stats",
                                          f"dataset:{(applied.repo / 'customer_stats.parquet').resolve()}"}
