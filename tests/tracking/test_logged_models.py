"""Logged models in the tracking domain: rules, the move of old JSON state, and replicas that lose nothing."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from matih_lite.config import load_config
from matih_lite.contracts.logged_models import LoggedModelMetric, ModelOutput
from matih_lite.errors import Conflict, InvalidInput, NotFound
from matih_lite.host import Host
from matih_lite.testing.logged_models import replicas_lose_nothing
from matih_lite.tracking import LoggedModels, Tracking

T = "default"


def open_host(folder) -> Host:
    return Host(load_config(cwd=folder, env={"MATIH_HOME": str(folder / ".matih")}))


@pytest.fixture
def host(tmp_path):
    h = open_host(tmp_path)
    yield h
    h.close()


def test_create_checks_the_experiment_the_name_and_the_run(host):
    models = LoggedModels(host)
    tracking = Tracking(host)
    exp = tracking.create_experiment(T, "clf")
    run = tracking.create_run(T, exp.experiment_id)
    made = models.create(T, exp.experiment_id, name="model", source_run_id=run.run_id, creator="ann",
                         tags={"a": "1"}, params={"C": "1"})
    assert made.model_id.startswith("m-") and len(made.model_id) == 34
    assert made.artifact_uri == f"mlflow-artifacts:/{exp.experiment_id}/models/{made.model_id}/artifacts"
    assert models.files_root(made) == f"{T}/{exp.experiment_id}/models/{made.model_id}/artifacts"
    assert models.of_run(T, run.run_id, "model").model_id == made.model_id
    assert models.of_run(T, run.run_id, "other") is None
    assert models.create(T, exp.experiment_id).name  # a random name when none is given
    with pytest.raises(InvalidInput, match="Invalid model name"):
        models.create(T, exp.experiment_id, name="a/b")
    with pytest.raises(NotFound):
        models.create(T, exp.experiment_id, source_run_id="nope")
    tracking.delete_experiment(T, exp.experiment_id)
    with pytest.raises(InvalidInput, match="'active' state"):
        models.create(T, exp.experiment_id)


def test_statuses_ids_and_write_once_params(host):
    models = LoggedModels(host)
    exp = Tracking(host).create_experiment(T, "e")
    made = models.create(T, exp.experiment_id, params={"lr": "0.1"})
    assert models.finalize(T, made.model_id, "LOGGED_MODEL_READY").status == "LOGGED_MODEL_READY"
    with pytest.raises(InvalidInput, match="use one of LOGGED_MODEL_PENDING"):
        models.finalize(T, made.model_id, "DONE")
    for bad in ("nope", "m-123", None, 7):
        with pytest.raises(NotFound):
            models.get(T, bad)
    with pytest.raises(Conflict, match="write-once"):
        models.log_params(T, made.model_id, {"lr": "0.2"})
    with pytest.raises(InvalidInput):
        models.set_tags(T, made.model_id, {"bad key!": "x"})
    models.delete(T, made.model_id)
    with pytest.raises(NotFound):
        models.get(T, made.model_id)
    assert models.get(T, made.model_id, allow_deleted=True).lifecycle_stage == "deleted"


# ---- folders from before: JSON documents in the artifacts slot ---------------------------------------
def _legacy_model(experiment_id: str, run_id: str, model_id: str, **extra) -> dict:
    """A logged model exactly as the MLflow routes wrote it before the metadata slot kept them."""
    doc = {"model_id": model_id, "experiment_id": experiment_id, "name": "model", "creation_timestamp_ms": 1000,
           "last_updated_timestamp_ms": 2000,
           "artifact_uri": f"mlflow-artifacts:/{experiment_id}/models/{model_id}/artifacts",
           "status": "LOGGED_MODEL_READY", "model_type": None, "source_run_id": run_id, "creator": "ann",
           "lifecycle_stage": "active", "tags": {"mlflow.source.name": "train.py"}, "params": {"C": "1.0"},
           "metrics": [{"key": "auc", "value": 0.91, "timestamp": 1500, "step": 0, "run_id": run_id,
                        "model_id": model_id, "dataset_name": "valid", "dataset_digest": "abc"}]}
    doc.update(extra)
    return doc


def _put(host, path: str, doc) -> None:
    host.artifacts.put(path, (doc if isinstance(doc, str) else json.dumps(doc, sort_keys=True)).encode())


def test_an_old_folder_has_its_json_state_moved_into_the_metadata_slot_on_first_use(tmp_path, caplog):
    host = open_host(tmp_path)
    tracking = Tracking(host)
    exp = tracking.create_experiment(T, "old")
    run = tracking.create_run(T, exp.experiment_id)
    ready, deleted, orphan = (f"m-{uuid.uuid4().hex}" for _ in range(3))
    _put(host, f"{T}/_mlflow/models/{ready}.json", _legacy_model(exp.experiment_id, run.run_id, ready))
    _put(host, f"{T}/_mlflow/models/{deleted}.json",
         _legacy_model(exp.experiment_id, run.run_id, deleted, lifecycle_stage="deleted"))
    _put(host, f"{T}/_mlflow/models/{orphan}.json", _legacy_model("424242", run.run_id, orphan))  # experiment gone
    _put(host, f"{T}/_mlflow/models/m-{'0' * 32}.json", "{not json")
    _put(host, f"{T}/_mlflow/runs/{run.run_id}/io.json", {
        "dataset_inputs": [{"tags": [{"key": "mlflow.data.context", "value": "train"}],
                            "dataset": {"name": "iris", "digest": "d1", "source_type": "code", "source": "{}"}}],
        "model_inputs": [{"model_id": ready}], "model_outputs": [{"model_id": ready, "step": 3}]})
    host.close()

    host = open_host(tmp_path)  # a new process, as after an upgrade
    try:
        models = LoggedModels(host)
        with caplog.at_level(logging.WARNING, logger="matih_lite.tracking.logged_models"):
            got = models.get(T, ready)
        assert (got.name, got.status, got.creator, got.creation_time, got.last_update_time) == (
            "model", "LOGGED_MODEL_READY", "ann", 1000, 2000)
        assert got.tags == {"mlflow.source.name": "train.py"} and got.params == {"C": "1.0"}
        assert got.metrics == [LoggedModelMetric("auc", 0.91, 1500, 0, run.run_id, "valid", "abc")]
        assert models.get(T, deleted, allow_deleted=True).lifecycle_stage == "deleted"
        io = models.run_io(T, run.run_id)
        assert [(d.dataset.name, d.context) for d in io.datasets] == [("iris", "train")]
        assert io.model_inputs == [ready] and io.model_outputs == [ModelOutput(ready, 3)]
        # Moved documents are gone; the two that could not be moved stay, each named in the log.
        left = sorted(f.path for f in host.artifacts.list(f"{T}/_mlflow", recursive=True) if not f.is_dir)
        assert left == [f"{T}/_mlflow/models/m-{'0' * 32}.json", f"{T}/_mlflow/models/{orphan}.json"]
        assert sum("left where it is" in r.getMessage() for r in caplog.records) == 2
        with pytest.raises(NotFound):
            models.get(T, orphan)
    finally:
        host.close()


def test_moving_twice_or_after_a_crash_changes_nothing(tmp_path):
    host = open_host(tmp_path)
    try:
        tracking = Tracking(host)
        exp = tracking.create_experiment(T, "old")
        run = tracking.create_run(T, exp.experiment_id)
        model_id = f"m-{uuid.uuid4().hex}"
        doc = _legacy_model(exp.experiment_id, run.run_id, model_id)
        _put(host, f"{T}/_mlflow/models/{model_id}.json", doc)
        LoggedModels(host).get(T, model_id)  # moved
        # A file left behind by a process killed between storing the record and deleting the file:
        # the next process finds the record there and just deletes the file.
        from matih_lite.tracking import logged_models

        logged_models._moved.clear()
        _put(host, f"{T}/_mlflow/models/{model_id}.json", dict(doc, name="changed later"))
        assert LoggedModels(host).get(T, model_id).name == "model"
        assert host.artifacts.list(f"{T}/_mlflow", recursive=True) == []
    finally:
        host.close()


def test_a_folder_without_old_state_looks_once_per_process(host, monkeypatch):
    exp = Tracking(host).create_experiment(T, "e")
    models = LoggedModels(host)
    listings = []
    original = type(host.artifacts).list

    def counting(self, prefix="", recursive=False):
        listings.append(prefix)
        return original(self, prefix, recursive)

    monkeypatch.setattr(type(host.artifacts), "list", counting)
    for _ in range(5):
        models.search(T, [exp.experiment_id])
        LoggedModels(host).search(T, [exp.experiment_id])
    assert listings == [f"{T}/_mlflow"]


# ---- replicas ----------------------------------------------------------------------------------------
def test_two_hosts_on_one_database_changing_one_logged_model_lose_nothing(tmp_path):
    hosts = [open_host(tmp_path), open_host(tmp_path)]  # two replicas of the service on one SQLite file
    try:
        replicas_lose_nothing(hosts)
    finally:
        for h in hosts:
            h.close()
