"""Lineage: the graph and its walks, OpenLineage export, ml.log_input, REST, CLI, and edges the platform records."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
from litestar.testing import TestClient

import matih_lite as ml
from matih_lite import sdk
from matih_lite.config import load_config
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.events import PlatformEvent
from matih_lite.host import Host, get_plugin_manager
from matih_lite.lineage import Lineage, dataset_refs
from matih_lite.lineage.recorder import RECORDER
from matih_lite.lineage.service import openlineage_dataset
from matih_lite.tracking import Tracking

T = "default"
DATA = "dataset:s3://bucket/train.parquet@v3"


@pytest.fixture
def host(hermetic):
    h = Host(load_config(cwd=hermetic))
    yield h
    h.close()


@pytest.fixture
def lineage(host):
    return Lineage(host)


@pytest.fixture
def run(host):
    tracking = Tracking(host)
    exp = tracking.create_experiment(T, "churn")
    return tracking.create_run(T, exp.experiment_id, name="baseline")


@pytest.fixture(autouse=True)
def clean_sdk():
    yield
    while sdk.active_run() is not None:
        try:
            sdk.end_run()
        except Exception:
            with sdk._state.lock:
                sdk._state.stack.pop()
    with sdk._state.lock:
        for session in list(sdk._state.sessions.values()):
            try:
                session.buffer.close()
                session.client.close()
            except Exception:
                pass
        sdk._state.sessions.clear()
        sdk._state.experiment_name = sdk._state.experiment_id = None


def keys(graph) -> list[str]:
    return [n.key for n in graph.nodes]


# ---- the graph --------------------------------------------------------------------------------------
def test_training_chain_upstream_and_downstream(lineage, run):
    lineage.record_run_input(T, run.run_id, "s3://bucket/train.parquet", "v3", "sha256:ab12")
    lineage.record_run_input(T, run.run_id, "s3://bucket/labels.csv")
    lineage.record_version(T, run.run_id, "churn", 1)
    lineage.record_deployment(T, "churn", 1, "churn-prod")

    up = lineage.upstream(T, "deployment:churn-prod")
    assert keys(up) == ["deployment:churn-prod", "model:churn/1", f"run:{run.run_id}",
                        "dataset:s3://bucket/labels.csv", DATA]
    assert up.distances[DATA] == 3 and not up.truncated
    assert {(e.source, e.target, e.kind) for e in up.edges} == {
        ("model:churn/1", "deployment:churn-prod", "deployed_as"), (f"run:{run.run_id}", "model:churn/1", "produced"),
        (DATA, f"run:{run.run_id}", "consumed_by"), ("dataset:s3://bucket/labels.csv", f"run:{run.run_id}",
                                                     "consumed_by")}
    down = lineage.downstream(T, DATA)
    assert keys(down) == [DATA, f"run:{run.run_id}", "model:churn/1", "deployment:churn-prod"]
    data = lineage.get_node(T, DATA)
    assert data.properties == {"uri": "s3://bucket/train.parquet", "version": "v3", "digest": "sha256:ab12",
                               "namespace": "s3://bucket", "name": "train.parquet"}
    run_node = lineage.get_node(T, f"run:{run.run_id}")
    assert run_node.name == "baseline" and run_node.properties["experiment"] == "churn"


def test_depth_limits_the_walk_and_says_so(lineage, run):
    lineage.record_run_input(T, run.run_id, "s3://bucket/train.parquet", "v3")
    lineage.record_version(T, run.run_id, "churn", 1)
    one = lineage.upstream(T, "model:churn/1", depth=1)
    assert keys(one) == ["model:churn/1", f"run:{run.run_id}"] and one.truncated
    zero = lineage.downstream(T, DATA, depth=0)
    assert keys(zero) == [DATA] and zero.edges == [] and zero.truncated
    full = lineage.upstream(T, "model:churn/1", depth=2)
    assert not full.truncated and len(full.nodes) == 3
    with pytest.raises(InvalidInput):
        lineage.upstream(T, "model:churn/1", depth=-1)
    with pytest.raises(InvalidInput):
        lineage.upstream(T, "model:churn/1", depth=101)


def test_cycles_and_diamonds_are_walked_once(lineage):
    for k in ("table:a", "table:b", "table:c", "table:d"):
        lineage.record_node(T, k)
    for s, t in (("table:a", "table:b"), ("table:a", "table:c"), ("table:b", "table:d"), ("table:c", "table:d"),
                 ("table:d", "table:a")):
        lineage.record_edge(T, s, t, "derived")
    g = lineage.downstream(T, "table:a", depth=50)
    assert sorted(keys(g)) == ["table:a", "table:b", "table:c", "table:d"]
    assert g.distances == {"table:a": 0, "table:b": 1, "table:c": 1, "table:d": 2}
    assert len(g.edges) == 5


def test_edges_are_idempotent(lineage, run):
    first = lineage.record_run_input(T, run.run_id, "s3://bucket/train.parquet", "v3")
    time.sleep(0.002)
    again = lineage.record_run_input(T, run.run_id, "s3://bucket/train.parquet", "v3", "sha256:ff")
    assert again.created_at == first.created_at and again.properties["digest"] == "sha256:ff"
    assert len(lineage.upstream(T, f"run:{run.run_id}").edges) == 1


def test_keys_are_checked(lineage, run):
    for bad in ("", "nokind", "widget:x", "run:", "x" * 3000):
        with pytest.raises(InvalidInput):
            lineage.record_node(T, bad)
    with pytest.raises(InvalidInput, match="names a run"):
        lineage.record_node(T, "run:abc", kind="dataset")
    with pytest.raises(NotFound):
        lineage.get_node(T, "table:never")
    with pytest.raises(NotFound):
        lineage.record_run_input(T, "no-such-run", "s3://bucket/x")
    lineage.record_node(T, "table:t")
    with pytest.raises(InvalidInput):
        lineage.record_edge(T, "table:t", "table:t", "derived")
    with pytest.raises(InvalidInput):
        lineage.record_edge(T, "table:t", f"run:{run.run_id}", "Bad Kind!")


def test_openlineage_dataset_names_follow_the_naming_conventions():
    assert openlineage_dataset("s3://bucket/a/b.parquet") == ("s3://bucket", "a/b.parquet")
    assert openlineage_dataset("postgres://db.host:5432/shop.public.orders") == ("postgres://db.host:5432",
                                                                                 "shop.public.orders")
    assert openlineage_dataset("file:///data/train.csv") == ("file", "/data/train.csv")
    assert openlineage_dataset("data/train.csv") == ("file", "data/train.csv")


# ---- OpenLineage export -------------------------------------------------------------------------------
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def check_facets(facets: dict) -> None:
    for name, facet in facets.items():
        assert facet["_producer"].startswith("https://") and facet["_schemaURL"].startswith("https://"), name


def test_openlineage_events_have_the_spec_shape(lineage, run):
    lineage.record_run_input(T, run.run_id, "s3://bucket/train.parquet", "v3", "sha256:ab12")
    lineage.record_version(T, run.run_id, "churn", 1)
    lineage.record_deployment(T, "churn", 1, "churn-prod")
    events = lineage.export_openlineage(T)
    assert len(events) == 2
    train, deploy = events
    json.dumps(events)  # plain JSON
    for event in events:
        assert set(event) == {"eventType", "eventTime", "run", "job", "inputs", "outputs", "producer", "schemaURL"}
        assert event["eventType"] == "COMPLETE" and ISO.match(event["eventTime"])
        assert event["schemaURL"].startswith("https://openlineage.io/spec/") and event["schemaURL"].endswith(
            "RunEvent")
        uuid.UUID(event["run"]["runId"])
        assert event["job"]["namespace"] == "matih-lite/default" and event["job"]["name"]
        check_facets(event["run"]["facets"])
        for ds in event["inputs"] + event["outputs"]:
            assert set(ds) == {"namespace", "name", "facets"}
            check_facets(ds["facets"])
    assert train["run"]["runId"] == str(uuid.UUID(run.run_id)) and train["job"]["name"] == "churn"
    [data] = train["inputs"]
    assert (data["namespace"], data["name"]) == ("s3://bucket", "train.parquet")
    assert data["facets"]["version"]["datasetVersion"] == "v3"
    assert data["facets"]["matih_digest"]["digest"] == "sha256:ab12"
    assert [o["name"] for o in train["outputs"]] == ["model:churn/1"]
    assert deploy["job"]["name"] == "deployment:churn-prod"
    assert [i["name"] for i in deploy["inputs"]] == ["model:churn/1"] and deploy["outputs"] == []
    # around one node: only the runs and deployments connected to it
    other = Tracking(lineage.host).create_run(T, run.experiment_id, name="other")
    lineage.record_run_input(T, other.run_id, "s3://bucket/elsewhere.csv")
    assert len(lineage.export_openlineage(T)) == 3
    assert [e["job"]["name"] for e in lineage.export_openlineage(T, "model:churn/1")] == ["churn",
                                                                                         "deployment:churn-prod"]


# ---- ml.log_input ------------------------------------------------------------------------------------
def test_log_input_records_edge_and_tags_embedded(hermetic):
    with ml.start_run(experiment="churn", capture=False) as active:
        first = ml.log_input("s3://bucket/train.parquet", version="v3", digest="sha256:ab12",
                             properties={"start_date": "2024-01-01", "end_date": "2024-06-30", "rows": 1000})
        second = ml.log_input("s3://bucket/test.parquet", version="v1", name="holdout")
        again = ml.log_input("s3://bucket/train.parquet", version="v3", digest="sha256:cd34")
        newer = ml.log_input("s3://bucket/train.parquet", version="v4")
    assert (first["name"], second["name"], again["name"], newer["name"]) == ("train.parquet", "holdout",
                                                                           "train.parquet", "train.parquet-2")
    tags = active.data.tags
    assert json.loads(tags["matih.dataset.train.parquet"]) == {"uri": "s3://bucket/train.parquet", "version": "v3",
                                                               "digest": "sha256:cd34"}
    assert json.loads(tags["matih.dataset.holdout"])["uri"] == "s3://bucket/test.parquet"
    refs = {r["name"]: r for r in dataset_refs(tags)}
    assert refs["train.parquet-2"] == {"name": "train.parquet-2", "uri": "s3://bucket/train.parquet",
                                       "version": "v4"}
    host = Host(load_config(cwd=hermetic))
    try:
        lineage = Lineage(host)
        up = lineage.upstream(T, f"run:{active.run_id}")
        assert sorted(keys(up)[1:]) == ["dataset:s3://bucket/test.parquet@v1", DATA,
                                        "dataset:s3://bucket/train.parquet@v4"]
        props = lineage.get_node(T, DATA).properties
        assert props["start_date"] == "2024-01-01" and props["rows"] == 1000 and props["digest"] == "sha256:cd34"
    finally:
        host.close()


def test_registry_reads_log_input_as_training_data(hermetic):
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.registry import Registry

    with ml.start_run(experiment="churn", capture=False) as active:
        ml.log_input("s3://bucket/train.parquet", version="v3", digest="sha256:ab12")
        ml.log_text("weights", "model/model.bin")
    ml.flush()
    host = Host(load_config(cwd=hermetic))
    try:
        mv = Registry(host).register_version(LOCAL_ADMIN, "churn", f"runs:/{active.run_id}/model")
        assert mv.training_data == [{"name": "train.parquet", "uri": "s3://bucket/train.parquet", "version": "v3",
                                     "digest": "sha256:ab12"}]
    finally:
        host.close()


def open_service(folder):
    """The ml-service of ``folder`` on a free port, started; stop it with ``.stop()``."""
    from matih_lite.testing.service import ServiceThread

    return ServiceThread(Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))).start()


def test_log_input_over_http(tmp_path, monkeypatch):
    service = open_service(tmp_path / "svc")
    url = service.url
    try:
        monkeypatch.setenv("MATIH_URL", url)
        with ml.start_run(experiment="churn", capture=False) as active:
            out = ml.log_input("s3://bucket/train.parquet", version="v3", digest="sha256:ab12")
        assert out["name"] == "train.parquet" and out["node"]["key"] == DATA
        assert json.loads(active.data.tags["matih.dataset.train.parquet"])["digest"] == "sha256:ab12"
        from matih_lite.lineage.client import LineageClient

        with LineageClient() as client:
            assert client.transport == "http"
            up = client.upstream(f"run:{active.run_id}")
            assert [n["key"] for n in up["nodes"]] == [f"run:{active.run_id}", DATA]
            [event] = client.export()
            assert event["inputs"][0]["facets"]["version"]["datasetVersion"] == "v3"
    finally:
        service.stop()


# ---- REST -----------------------------------------------------------------------------------------------
def test_rest_lineage(hermetic):
    from matih_lite.service import create_app

    with TestClient(create_app(Host(load_config(cwd=hermetic)))) as client:
        run = client.post("/api/v1/runs", json={"experiment_name": "churn", "name": "r"}).json()
        rid = run["run_id"]
        r = client.post(f"/api/v1/lineage/runs/{rid}/inputs", json={"uri": "s3://bucket/train.parquet",
                                                                   "version": "v3"})
        assert r.status_code == 200 and r.json()["name"] == "train.parquet"
        assert "matih.dataset.train.parquet" in client.get(f"/api/v1/runs/{rid}").json()["tags"]
        assert client.post("/api/v1/lineage/nodes", json={"key": "table:warehouse.orders",
                                                          "properties": {"rows": 10}}).status_code == 200
        e = client.post("/api/v1/lineage/edges", json={"source": "table:warehouse.orders", "target": DATA,
                                                       "kind": "exported_to"})
        assert e.status_code == 200 and e.json()["kind"] == "exported_to"
        node = client.get("/api/v1/lineage/node", params={"key": DATA}).json()
        assert node["kind"] == "dataset" and node["properties"]["version"] == "v3"
        up = client.get("/api/v1/lineage/upstream", params={"key": f"run:{rid}", "depth": 5}).json()
        assert [(n["key"], n["distance"]) for n in up["nodes"]] == [(f"run:{rid}", 0), (DATA, 1),
                                                                    ("table:warehouse.orders", 2)]
        down = client.get("/api/v1/lineage/downstream", params={"key": "table:warehouse.orders", "depth": 1}).json()
        assert down["truncated"] and len(down["nodes"]) == 2
        events = client.get("/api/v1/lineage/openlineage").json()["events"]
        assert len(events) == 1 and events[0]["run"]["runId"] == str(uuid.UUID(rid))
        listed = client.get("/api/v1/lineage/nodes", params={"kind": "table"}).json()["nodes"]
        assert [n["key"] for n in listed] == ["table:warehouse.orders"]
        # mistakes are 4xx problems, never 500
        assert client.get("/api/v1/lineage/node", params={"key": "run:nope"}).status_code == 404
        assert client.get("/api/v1/lineage/node", params={"key": "widget:x"}).status_code == 400
        assert client.get("/api/v1/lineage/upstream", params={"key": DATA, "depth": 1000}).status_code == 400
        assert client.post("/api/v1/lineage/runs/nope/inputs", json={"uri": "s3://x"}).status_code == 404
        assert client.post(f"/api/v1/lineage/runs/{rid}/inputs", json={"uri": ""}).status_code == 400
        assert client.post("/api/v1/lineage/edges", json={"source": "table:a", "target": DATA,
                                                          "kind": "x"}).status_code == 404


# ---- CLI ----------------------------------------------------------------------------------------------
@pytest.fixture
def cli(capsys, monkeypatch):
    from matih_lite.cli import main

    monkeypatch.setenv("COLUMNS", "220")

    def invoke(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        return exit_info.value.code or 0, out, err

    return invoke


def test_cli_show_and_export(cli, hermetic):
    with ml.start_run(experiment="churn", capture=False) as active:
        ml.log_input("s3://bucket/train.parquet", version="v3", digest="sha256:ab12")
    ml.flush()
    code, out, _ = cli("lineage", "show", f"run:{active.run_id}")
    assert code == 0 and DATA in out and "consumed_by" in out and "upstream" in out and "downstream" in out
    code, out, _ = cli("lineage", "show", DATA, "--downstream", "--json")
    graph = json.loads(out)
    assert code == 0 and [n["key"] for n in graph["nodes"]] == [DATA, f"run:{active.run_id}"]
    code, out, _ = cli("lineage", "export")
    assert code == 0 and json.loads(out)[0]["inputs"][0]["name"] == "train.parquet"
    target = hermetic / "ol.ndjson"
    code, _, err = cli("lineage", "export", "--lines", "-o", str(target))
    assert code == 0 and "1 OpenLineage events" in err
    assert json.loads(target.read_text().splitlines()[0])["eventType"] == "COMPLETE"
    code, _, err = cli("lineage", "show", "run:nope")
    assert code == 1 and "no lineage recorded" in err
    code, _, err = cli("lineage", "show", "bogus")
    assert code == 2 and "must start with one of" in err


# ---- edges the platform records from its events --------------------------------------------------------
def test_version_and_deployment_events_record_edges(host, run):
    Lineage(host)  # embedded: building the domain attaches the recorder to this host
    assert host.pm.get_plugin(RECORDER) is not None
    host.emit(PlatformEvent("model.version.created", "churn/1", T,
                            {"model": "churn", "version": "1", "run_id": run.run_id}))
    host.emit(PlatformEvent("deployment.created", "churn-prod", T,
                            {"deployment": "churn-prod", "model": "churn", "version": "1"}))
    host.emit(PlatformEvent("run.finished", run.run_id, T))  # not lineage: ignored
    up = Lineage(host).upstream(T, "deployment:churn-prod")
    assert keys(up) == ["deployment:churn-prod", "model:churn/1", f"run:{run.run_id}"]
    Lineage(host)
    assert sum(1 for p in host.pm.get_plugins() if getattr(p, "host", None) is host) == 1  # attached once


def test_recorders_belong_to_their_own_host(tmp_path):
    a = Host(load_config(cwd=tmp_path / "a", env={"MATIH_HOME": str(tmp_path / "a")}))
    b = Host(load_config(cwd=tmp_path / "b", env={"MATIH_HOME": str(tmp_path / "b")}))
    try:
        Lineage(a), Lineage(b)
        a.emit(PlatformEvent("model.version.created", "churn/1", T, {"model": "churn", "version": "1"}))
        assert Lineage(a).get_node(T, "model:churn/1")
        with pytest.raises(NotFound):
            Lineage(b).get_node(T, "model:churn/1")
    finally:
        a.close()
        b.close()


def test_service_startup_attaches_the_recorder(hermetic):
    from matih_lite.service import create_app

    host = Host(load_config(cwd=hermetic))
    assert host.pm.get_plugin(RECORDER) is None
    with TestClient(create_app(host)):
        assert host.pm.get_plugin(RECORDER) is not None
        host.emit(PlatformEvent("model.version.registered", "churn/2", T, {}))  # model and version from subject
        assert Lineage(host).get_node(T, "model:churn/2").properties == {"model": "churn", "version": "2"}


def test_blocking_the_builtin_plugin_turns_recording_off(hermetic):
    pset = get_plugin_manager()
    pset.pm.unregister(name="matih_lite.lineage.plugin")
    pset.pm.set_blocked("matih_lite.lineage.plugin")
    host = Host(load_config(cwd=hermetic), plugins=pset)
    try:
        Lineage(host)
        assert host.pm.get_plugin(RECORDER) is None
        host.emit(PlatformEvent("model.version.created", "churn/1", T, {"model": "churn", "version": "1"}))
        with pytest.raises(NotFound):
            Lineage(host).get_node(T, "model:churn/1")
    finally:
        host.close()


# ---- with the registry ------------------------------------------------------------------------------------
def trained_run(folder):
    with ml.start_run(experiment="churn", capture=False) as active:
        ml.log_input("s3://bucket/train.parquet", version="v3", digest="sha256:ab12")
        ml.log_text("weights", "model/model.bin")
    ml.flush()
    return active


def test_registering_a_version_records_run_to_version(hermetic):
    from matih_lite.service import create_app

    (hermetic / "matih.toml").write_text('[models."*"]\nproduction_approvers = []\n')
    active = trained_run(hermetic)
    with TestClient(create_app(Host(load_config(cwd=hermetic)))) as client:
        r = client.post("/api/v1/models/churn/versions", json={"source": f"runs:/{active.run_id}/model"})
        assert r.status_code in (200, 201), r.text
        up = client.get("/api/v1/lineage/upstream", params={"key": "model:churn/1"}).json()
        assert [(n["key"], n["distance"]) for n in up["nodes"]] == [("model:churn/1", 0), (f"run:{active.run_id}", 1),
                                                                    (DATA, 2)]
        assert {(e["source"], e["kind"]) for e in up["edges"]} == {(f"run:{active.run_id}", "produced"),
                                                                   (DATA, "consumed_by")}
        node = client.get("/api/v1/lineage/node", params={"key": "model:churn/1"}).json()
        assert node["properties"]["source"] == f"runs:/{active.run_id}/model"
        client.post("/api/v1/models/churn/versions/1/promote", json={"to": "Staging"})
        node = client.get("/api/v1/lineage/node", params={"key": "model:churn/1"}).json()
        assert node["properties"]["stage"] == "Staging"  # transitions keep the node's stage current
        down = client.get("/api/v1/lineage/downstream", params={"key": DATA}).json()
        assert [n["key"] for n in down["nodes"]][-1] == "model:churn/1"


def test_registering_embedded_records_run_to_version(hermetic):
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.registry import Registry

    active = trained_run(hermetic)
    host = Host(load_config(cwd=hermetic))
    try:
        Lineage(host)  # what an embedded session does before registering (ml.log_input, cards, the CLI)
        Registry(host).register_version(LOCAL_ADMIN, "churn", f"runs:/{active.run_id}/model")
        assert keys(Lineage(host).upstream(T, "model:churn/1")) == ["model:churn/1", f"run:{active.run_id}", DATA]
    finally:
        host.close()


def test_versions_registered_without_a_recorder_are_found_from_the_registry(hermetic):
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.registry import Registry

    active = trained_run(hermetic)
    host = Host(load_config(cwd=hermetic))  # a fresh embedded host: nothing attached a recorder
    try:
        Registry(host).register_version(LOCAL_ADMIN, "churn", f"runs:/{active.run_id}/model")
        assert host.pm.get_plugin(RECORDER) is None
        up = Lineage(host).upstream(T, "model:churn/1")
        assert keys(up) == ["model:churn/1", f"run:{active.run_id}", DATA]
        assert up.nodes[0].properties["stage"] == "Development"
        with pytest.raises(NotFound):
            Lineage(host).get_node(T, "model:churn/2")
    finally:
        host.close()
