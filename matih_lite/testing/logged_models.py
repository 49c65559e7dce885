"""The logged-models part of the metadata contract: MLflow 3's logged models and run inputs/outputs."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from matih_lite.contracts.logged_models import (
    Dataset,
    DatasetInput,
    LoggedModel,
    LoggedModelMetric,
    ModelOutput,
)
from matih_lite.contracts.search import parse_filter
from matih_lite.errors import Conflict, InvalidInput, NotFound

T = "tenant-a"
OTHER = "tenant-b"


def _now() -> int:
    return int(time.time() * 1000)


def new_model_id() -> str:
    """A logged model id as the tracking domain makes them."""
    return f"m-{uuid.uuid4().hex}"


class LoggedModelStoreContract:
    """Override the ``store`` fixture to return a fresh, empty backend."""

    @pytest.fixture
    def experiment(self, store) -> str:
        return store.create_experiment(T, f"models-{uuid.uuid4().hex[:6]}").experiment_id

    def new_model(self, store, experiment_id, *, tenant=T, name="model", **kw) -> LoggedModel:
        """Store a logged model with a fresh id (``kw`` are :class:`LoggedModel` fields)."""
        model_id = kw.pop("model_id", None) or new_model_id()
        return store.create_logged_model(LoggedModel(model_id=model_id, tenant=tenant, experiment_id=experiment_id,
                                                     name=name, artifact_uri=f"x:/{model_id}", **kw))

    def test_create_and_get_logged_model(self, store, experiment):
        made = self.new_model(store, experiment, name="clf", model_type="sklearn", creator="ann",
                              tags={"team": "growth"}, params={"C": "1.0"},
                              metrics=[LoggedModelMetric("auc", 0.9, 1000, 3, run_id="r1", dataset_name="valid",
                                                         dataset_digest="abc")])
        assert made.status == "LOGGED_MODEL_PENDING" and made.lifecycle_stage == "active"
        assert made.creation_time > 0 and made.last_update_time >= made.creation_time
        got = store.get_logged_model(T, made.model_id)
        assert got == made
        assert (got.name, got.model_type, got.creator, got.tags, got.params) == ("clf", "sklearn", "ann",
                                                                                 {"team": "growth"}, {"C": "1.0"})
        assert got.metrics == [LoggedModelMetric("auc", 0.9, 1000, 3, "r1", "valid", "abc")]

    def test_given_times_are_kept(self, store, experiment):
        made = self.new_model(store, experiment, creation_time=1234, last_update_time=5678)
        assert (made.creation_time, made.last_update_time) == (1234, 5678)

    def test_create_needs_an_experiment_of_the_tenant_and_a_free_id(self, store, experiment):
        with pytest.raises(NotFound):
            self.new_model(store, "999999")
        with pytest.raises(NotFound):
            self.new_model(store, experiment, tenant=OTHER)
        made = self.new_model(store, experiment)
        with pytest.raises(Conflict):
            self.new_model(store, experiment, model_id=made.model_id)

    def test_unknown_ids_are_not_found(self, store, experiment):
        for call in (lambda: store.get_logged_model(T, "m-nope"),
                     lambda: store.update_logged_model(T, "m-nope", status="LOGGED_MODEL_READY"),
                     lambda: store.set_logged_model_tags(T, "m-nope", {"a": "1"}),
                     lambda: store.delete_logged_model_tag(T, "m-nope", "a"),
                     lambda: store.log_logged_model_params(T, "m-nope", {"a": "1"}),
                     lambda: store.log_logged_model_metrics(T, "m-nope", [LoggedModelMetric("m", 1.0, 1)]),
                     lambda: store.log_run_io(T, "no-run", model_inputs=["m-x"]),
                     lambda: store.get_run_io(T, "no-run")):
            with pytest.raises(NotFound):
                call()

    def test_finalize_and_every_change_stamps_the_update_time(self, store, experiment):
        made = self.new_model(store, experiment, creation_time=1000, last_update_time=1000)
        ready = store.update_logged_model(T, made.model_id, status="LOGGED_MODEL_READY", status_message="ok")
        assert (ready.status, ready.status_message) == ("LOGGED_MODEL_READY", "ok")
        assert ready.last_update_time > 1000 and ready.creation_time == 1000
        for change in (lambda mid: store.set_logged_model_tags(T, mid, {"a": "1"}),
                       lambda mid: store.delete_logged_model_tag(T, mid, "t"),
                       lambda mid: store.log_logged_model_params(T, mid, {"p": "1"}),
                       lambda mid: store.log_logged_model_metrics(T, mid, [LoggedModelMetric("m", 1.0, 1)])):
            old = self.new_model(store, experiment, creation_time=1000, last_update_time=1000, tags={"t": "x"})
            change(old.model_id)
            assert store.get_logged_model(T, old.model_id).last_update_time > 1000

    def test_tags_upsert_and_delete(self, store, experiment):
        made = self.new_model(store, experiment, tags={"a": "1"})
        store.set_logged_model_tags(T, made.model_id, {"a": "2", "b": "3"})
        assert store.get_logged_model(T, made.model_id).tags == {"a": "2", "b": "3"}
        store.delete_logged_model_tag(T, made.model_id, "a")
        assert store.get_logged_model(T, made.model_id).tags == {"b": "3"}
        with pytest.raises(NotFound):
            store.delete_logged_model_tag(T, made.model_id, "a")

    def test_params_are_write_once_all_or_nothing(self, store, experiment):
        made = self.new_model(store, experiment, params={"lr": "0.1"})
        store.log_logged_model_params(T, made.model_id, {"lr": "0.1", "depth": "3"})  # the same value again is fine
        with pytest.raises(Conflict):
            store.log_logged_model_params(T, made.model_id, {"lr": "0.2", "fresh": "x"})
        assert store.get_logged_model(T, made.model_id).params == {"lr": "0.1", "depth": "3"}

    def test_metric_points_are_kept_once_in_order_nan_and_infinity_exactly(self, store, experiment):
        made = self.new_model(store, experiment)
        points = [LoggedModelMetric("loss", 0.5, 10, 1, "r1"), LoggedModelMetric("loss", math.nan, 11, 2, "r1"),
                  LoggedModelMetric("auc", math.inf, 12, 0), LoggedModelMetric("auc", -math.inf, 13, 0, "r2")]
        store.log_logged_model_metrics(T, made.model_id, points)
        store.log_logged_model_metrics(T, made.model_id, [points[0], points[2],  # again: kept once
                                                          LoggedModelMetric("loss", 0.5, 10, 1, "r9")])  # another run
        got = store.get_logged_model(T, made.model_id).metrics
        assert [(m.key, m.timestamp, m.step, m.run_id) for m in got] == [
            ("loss", 10, 1, "r1"), ("loss", 11, 2, "r1"), ("auc", 12, 0, None), ("auc", 13, 0, "r2"),
            ("loss", 10, 1, "r9")]
        assert math.isnan(got[1].value) and got[2].value == math.inf and got[3].value == -math.inf

    def test_deleted_models_are_hidden_and_refuse_changes(self, store, experiment):
        made = self.new_model(store, experiment)
        gone = store.update_logged_model(T, made.model_id, lifecycle_stage="deleted")
        assert gone.lifecycle_stage == "deleted"
        with pytest.raises(NotFound):
            store.get_logged_model(T, made.model_id)
        assert store.get_logged_model(T, made.model_id, allow_deleted=True).model_id == made.model_id
        with pytest.raises(NotFound):
            store.set_logged_model_tags(T, made.model_id, {"a": "1"})
        with pytest.raises(NotFound):
            store.update_logged_model(T, made.model_id, status="LOGGED_MODEL_READY")
        assert store.search_logged_models(T, [experiment]).items == []
        assert [m.model_id for m in store.search_logged_models(T, [experiment], lifecycle="deleted").items] == [
            made.model_id]

    def test_search_filters_orders_and_pages(self, store, experiment):
        other_exp = store.create_experiment(T, f"other-{uuid.uuid4().hex[:6]}").experiment_id
        made = [self.new_model(store, experiment, name=f"m{i % 2}", source_run_id=f"run{i % 3}",
                               creation_time=1000 + i, tags={"i": str(i)}) for i in range(7)]
        self.new_model(store, other_exp, creation_time=5000)
        seen, token = [], None
        while True:
            page = store.search_logged_models(T, [experiment], max_results=3, page_token=token)
            seen += page.items
            token = page.next_token
            if not token:
                break
        assert [m.model_id for m in seen] == [m.model_id for m in reversed(made)]  # newest first
        assert seen[0].tags == {"i": "6"}  # hydrated
        assert {m.model_id for m in store.search_logged_models(T, [experiment], name="m1").items} == {
            made[i].model_id for i in (1, 3, 5)}
        assert {m.model_id for m in store.search_logged_models(T, [experiment], source_run_id="run0").items} == {
            made[i].model_id for i in (0, 3, 6)}
        assert len(store.search_logged_models(T, [experiment, other_exp]).items) == 8
        assert store.search_logged_models(T, ["not-a-number", "424242"]).items == []
        with pytest.raises(InvalidInput):
            store.search_logged_models(T, [experiment], page_token="garbage!")
        with pytest.raises(InvalidInput):
            store.search_logged_models(T, [experiment], lifecycle="gone")

    def test_run_inputs_and_outputs_are_kept_once_in_order(self, store, experiment):
        run = store.create_run(T, experiment, run_id=uuid.uuid4().hex, name="r", start_time=_now())
        train = DatasetInput(Dataset("iris", "d1", "code", "{}", schema='{"x": 1}'), {"mlflow.data.context": "train"})
        valid = DatasetInput(Dataset("iris", "d1", "code", "{}"), {"mlflow.data.context": "valid"})
        bare = DatasetInput(Dataset("other", "d2", "local", "/x", profile='{"rows": 3}'))
        store.log_run_io(T, run.run_id, datasets=[train, valid], model_inputs=["m-a"],
                         model_outputs=[ModelOutput("m-b", 0)])
        store.log_run_io(T, run.run_id, datasets=[train, bare], model_inputs=["m-a", "m-c"],
                         model_outputs=[ModelOutput("m-b", 0), ModelOutput("m-b", 5)])
        io = store.get_run_io(T, run.run_id)
        assert io.datasets == [train, valid, bare]
        assert io.model_inputs == ["m-a", "m-c"]
        assert io.model_outputs == [ModelOutput("m-b", 0), ModelOutput("m-b", 5)]
        fresh = store.create_run(T, experiment, run_id=uuid.uuid4().hex, name="empty", start_time=_now())
        empty = store.get_run_io(T, fresh.run_id)
        assert (empty.datasets, empty.model_inputs, empty.model_outputs) == ([], [], [])

    def test_runs_are_found_by_their_dataset_inputs(self, store, experiment):
        runs = [store.create_run(T, experiment, run_id=uuid.uuid4().hex, name=f"r{i}", start_time=_now() + i)
                for i in range(3)]
        store.log_run_io(T, runs[0].run_id, datasets=[DatasetInput(Dataset("iris", "d0", "code", "{}"),
                                                                   {"mlflow.data.context": "train"})])
        store.log_run_io(T, runs[1].run_id, datasets=[DatasetInput(Dataset("wine", "d1", "code", "{}"),
                                                                   {"mlflow.data.context": "eval"}),
                                                      DatasetInput(Dataset("iris", "d0", "code", "{}"))])

        def found(text):
            return {r.run_id for r in store.search_runs(T, [experiment], filter=parse_filter(text)).items}

        assert found("datasets.name = 'iris'") == {runs[0].run_id, runs[1].run_id}
        assert found("datasets.context = 'eval'") == {runs[1].run_id}
        assert found("datasets.digest IN ('d1', 'zz') and datasets.name = 'iris'") == {runs[1].run_id}
        assert found("datasets.name LIKE 'wi%'") == {runs[1].run_id}
        assert found("datasets.name = 'none'") == set()

    def test_concurrent_writers_of_one_model_lose_nothing(self, store, experiment):
        """Writers on their own connections (as service replicas are) change one model at once: all of it stays."""
        made = self.new_model(store, experiment)
        writers, rounds = 6, 5
        barrier = threading.Barrier(writers)
        errors: list[BaseException] = []

        def write(i: int) -> None:
            barrier.wait()
            try:
                for j in range(rounds):
                    store.set_logged_model_tags(T, made.model_id, {f"w{i}-{j}": str(j)})
                    store.log_logged_model_params(T, made.model_id, {f"p{i}-{j}": "x"})
                    store.log_logged_model_metrics(T, made.model_id, [LoggedModelMetric(f"m{i}", float(j), j, j)])
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        got = store.get_logged_model(T, made.model_id)
        assert set(got.tags) == {f"w{i}-{j}" for i in range(writers) for j in range(rounds)}
        assert set(got.params) == {f"p{i}-{j}" for i in range(writers) for j in range(rounds)}
        assert len(got.metrics) == writers * rounds


def replicas_lose_nothing(hosts: Sequence[Any], tenant: str = "default", rounds: int = 8) -> None:
    """Hosts on one database (service replicas) change one logged model at once, from three threads each.

    Every tag, param, metric point and run output any of them wrote is there afterwards. Open the
    hosts on the same metadata backend and database, one :class:`~matih_lite.host.Host` each.
    """
    from matih_lite.tracking import LoggedModels, Tracking

    tracking = Tracking(hosts[0])
    exp = tracking.get_or_create_experiment(tenant, "replicas")
    run = tracking.create_run(tenant, exp.experiment_id)
    made = LoggedModels(hosts[0]).create(tenant, exp.experiment_id, source_run_id=run.run_id)
    writers = [(h, w) for h in range(len(hosts)) for w in range(3)]
    barrier = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def write(h: int, w: int) -> None:
        models = LoggedModels(hosts[h])
        barrier.wait()
        try:
            for j in range(rounds):
                models.set_tags(tenant, made.model_id, {f"h{h}w{w}-{j}": "x"})
                models.log_params(tenant, made.model_id, {f"p-h{h}w{w}-{j}": str(j)})
                models.log_metrics(tenant, made.model_id, [LoggedModelMetric(f"m-h{h}w{w}", float(j), j, j,
                                                                             run.run_id)])
                models.log_run_io(tenant, run.run_id, model_outputs=[ModelOutput(made.model_id, h * 100 + w * 10 + j)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=hw) for hw in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = LoggedModels(hosts[-1]).get(tenant, made.model_id)
    expected = {f"h{h}w{w}-{j}" for h, w in writers for j in range(rounds)}
    assert set(got.tags) == expected
    assert set(got.params) == {f"p-{k}" for k in expected}
    assert len(got.metrics) == len(writers) * rounds
    assert len(LoggedModels(hosts[0]).run_io(tenant, run.run_id).model_outputs) == len(writers) * rounds
