"""The metadata-slot contract: every MetadataStore backend passes these."""

from __future__ import annotations

import math
import time
import uuid

import pytest

from matih_lite.contracts import MetadataStore, Metric
from matih_lite.contracts.search import Comparison, OrderBy, RunFilter
from matih_lite.errors import Conflict, InvalidInput, NotFound

T = "tenant-a"
OTHER = "tenant-b"


def now() -> int:
    return int(time.time() * 1000)


class TrackingStoreContract:
    """Override the ``store`` fixture to return a fresh, empty backend."""

    @pytest.fixture
    def store(self) -> MetadataStore:
        raise NotImplementedError("override the 'store' fixture to build your backend")

    # helpers --------------------------------------------------------------------------------
    def new_run(self, store, experiment_id, *, tenant=T, name="run", start_time=None, **kw):
        return store.create_run(tenant, experiment_id, run_id=uuid.uuid4().hex, name=name,
                                start_time=start_time if start_time is not None else now(), **kw)

    # experiments ----------------------------------------------------------------------------
    def test_satisfies_protocol_and_is_healthy(self, store):
        assert isinstance(store, MetadataStore)
        assert store.health().ok

    def test_create_and_get_experiment(self, store):
        exp = store.create_experiment(T, "churn", description="d", tags={"team": "growth"})
        assert exp.name == "churn" and exp.description == "d" and exp.tags == {"team": "growth"}
        assert store.get_experiment(T, exp.experiment_id) == exp
        assert store.get_experiment_by_name(T, "churn") == exp

    def test_experiment_names_unique_per_tenant(self, store):
        store.create_experiment(T, "churn")
        with pytest.raises(Conflict):
            store.create_experiment(T, "churn")
        other = store.create_experiment(OTHER, "churn")
        assert other.tenant == OTHER

    def test_other_tenant_sees_nothing(self, store):
        exp = store.create_experiment(T, "secret")
        run = self.new_run(store, exp.experiment_id)
        with pytest.raises(NotFound):
            store.get_experiment(OTHER, exp.experiment_id)
        with pytest.raises(NotFound):
            store.get_experiment_by_name(OTHER, "secret")
        with pytest.raises(NotFound):
            store.get_run(OTHER, run.run_id)
        with pytest.raises(NotFound):
            store.log_batch(OTHER, run.run_id, metrics=[Metric("m", 1.0, now())])
        assert store.search_runs(OTHER, [exp.experiment_id]).items == []
        assert store.search_experiments(OTHER).items == []

    def test_unknown_ids_are_not_found(self, store):
        for bad in ("999999", "not-a-number", "-1"):
            with pytest.raises(NotFound):
                store.get_experiment(T, bad)
        with pytest.raises(NotFound):
            store.get_run(T, "nope")

    def test_update_delete_restore_experiment(self, store):
        exp = store.create_experiment(T, "a")
        store.create_experiment(T, "taken")
        assert store.update_experiment(T, exp.experiment_id, name="b").name == "b"
        with pytest.raises(Conflict):
            store.update_experiment(T, exp.experiment_id, name="taken")
        run = self.new_run(store, exp.experiment_id)
        store.update_experiment(T, exp.experiment_id, lifecycle_stage="deleted")
        assert [e.name for e in store.search_experiments(T).items] == ["taken"]
        assert {e.name for e in store.search_experiments(T, lifecycle="all").items} == {"b", "taken"}
        assert store.get_run(T, run.run_id).lifecycle_stage == "deleted"
        with pytest.raises(Conflict):
            self.new_run(store, exp.experiment_id)
        store.update_experiment(T, exp.experiment_id, lifecycle_stage="active")
        assert store.get_run(T, run.run_id).lifecycle_stage == "active"

    def test_experiment_tags_upsert(self, store):
        exp = store.create_experiment(T, "t", tags={"a": "1"})
        store.set_experiment_tags(T, exp.experiment_id, {"a": "2", "b": "3"})
        assert store.get_experiment(T, exp.experiment_id).tags == {"a": "2", "b": "3"}

    def test_search_experiments_pages(self, store):
        for i in range(7):
            store.create_experiment(T, f"e{i}", creation_time=1000 + i) if _accepts_time(store) else \
                store.create_experiment(T, f"e{i}")
        seen, token = [], None
        while True:
            page = store.search_experiments(T, max_results=3, page_token=token)
            seen += [e.name for e in page.items]
            token = page.next_token
            if not token:
                break
        assert sorted(seen) == [f"e{i}" for i in range(7)]
        assert len(set(seen)) == 7
        with pytest.raises(InvalidInput):
            store.search_experiments(T, page_token="garbage!")

    # runs ------------------------------------------------------------------------------------
    def test_create_get_update_run(self, store):
        exp = store.create_experiment(T, "runs")
        run = self.new_run(store, exp.experiment_id, name="first", tags={"k": "v"}, user_id="ann",
                           artifact_uri="x:/1")
        got = store.get_run(T, run.run_id)
        assert (got.name, got.status, got.tags, got.user_id, got.artifact_uri) == ("first", "RUNNING", {"k": "v"},
                                                                                   "ann", "x:/1")
        done = store.update_run(T, run.run_id, status="FINISHED", end_time=got.start_time + 5)
        assert done.status == "FINISHED" and done.end_time == got.start_time + 5
        assert store.update_run(T, run.run_id, name="renamed").name == "renamed"
        with pytest.raises(NotFound):
            store.update_run(T, "missing", status="FAILED")

    def test_nested_run_needs_existing_parent(self, store):
        exp = store.create_experiment(T, "nest")
        parent = self.new_run(store, exp.experiment_id)
        child = self.new_run(store, exp.experiment_id, parent_run_id=parent.run_id)
        assert store.get_run(T, child.run_id).parent_run_id == parent.run_id
        with pytest.raises(NotFound):
            self.new_run(store, exp.experiment_id, parent_run_id="nope")

    def test_params_are_write_once(self, store):
        exp = store.create_experiment(T, "p")
        run = self.new_run(store, exp.experiment_id)
        store.log_batch(T, run.run_id, params={"lr": "0.1"})
        store.log_batch(T, run.run_id, params={"lr": "0.1", "depth": "3"})  # same value again is fine
        with pytest.raises(Conflict):
            store.log_batch(T, run.run_id, params={"lr": "0.2"})
        assert store.get_run(T, run.run_id).params == {"lr": "0.1", "depth": "3"}

    def test_failed_batch_writes_nothing(self, store):
        exp = store.create_experiment(T, "atomic")
        run = self.new_run(store, exp.experiment_id)
        store.log_batch(T, run.run_id, params={"a": "1"})
        with pytest.raises(Conflict):
            store.log_batch(T, run.run_id, params={"a": "2"}, metrics=[Metric("m", 1.0, now())], tags={"t": "x"})
        got = store.get_run(T, run.run_id)
        assert got.metrics == {} and got.tags == {}
        assert store.get_metric_history(T, run.run_id, "m").items == []

    def test_metrics_history_and_latest(self, store):
        exp = store.create_experiment(T, "m")
        run = self.new_run(store, exp.experiment_id)
        points = [Metric("loss", 1.0 / (s + 1), 1000 + s, s) for s in range(50)]
        store.log_batch(T, run.run_id, metrics=points[25:])
        store.log_batch(T, run.run_id, metrics=points[:25])  # older steps arrive late
        history = store.get_metric_history(T, run.run_id, "loss").items
        assert history == points
        assert store.get_run(T, run.run_id).metrics["loss"] == points[-1]

    def test_metric_history_pages(self, store):
        exp = store.create_experiment(T, "mp")
        run = self.new_run(store, exp.experiment_id)
        store.log_batch(T, run.run_id, metrics=[Metric("x", float(s), s, s) for s in range(10)])
        page = store.get_metric_history(T, run.run_id, "x", max_results=4)
        assert [m.step for m in page.items] == [0, 1, 2, 3] and page.next_token
        rest = store.get_metric_history(T, run.run_id, "x", page_token=page.next_token)
        assert [m.step for m in rest.items] == list(range(4, 10))

    def test_nan_and_infinity_round_trip(self, store):
        exp = store.create_experiment(T, "nan")
        run = self.new_run(store, exp.experiment_id)
        store.log_batch(T, run.run_id, metrics=[Metric("a", math.nan, 1, 0), Metric("b", math.inf, 1, 0),
                                                Metric("c", -math.inf, 1, 0)])
        got = store.get_run(T, run.run_id).metrics
        assert math.isnan(got["a"].value) and got["b"].value == math.inf and got["c"].value == -math.inf
        assert math.isnan(store.get_metric_history(T, run.run_id, "a").items[0].value)

    def test_ended_and_deleted_runs_refuse_writes(self, store):
        exp = store.create_experiment(T, "ended")
        run = self.new_run(store, exp.experiment_id)
        store.update_run(T, run.run_id, status="FINISHED", end_time=now())
        with pytest.raises(Conflict):
            store.log_batch(T, run.run_id, metrics=[Metric("m", 1.0, now())])
        store.log_batch(T, run.run_id, tags={"note": "tags may still be set"})
        store.update_run(T, run.run_id, lifecycle_stage="deleted")
        with pytest.raises(Conflict):
            store.log_batch(T, run.run_id, tags={"x": "y"})

    def test_tags_upsert_and_delete(self, store):
        exp = store.create_experiment(T, "tags")
        run = self.new_run(store, exp.experiment_id)
        store.log_batch(T, run.run_id, tags={"a": "1"})
        store.log_batch(T, run.run_id, tags={"a": "2"})
        assert store.get_run(T, run.run_id).tags == {"a": "2"}
        store.delete_tag(T, run.run_id, "a")
        assert store.get_run(T, run.run_id).tags == {}
        with pytest.raises(NotFound):
            store.delete_tag(T, run.run_id, "a")

    # search ----------------------------------------------------------------------------------
    @pytest.fixture
    def populated(self, store):
        exp = store.create_experiment(T, "search")
        runs = []
        for i in range(12):
            run = self.new_run(store, exp.experiment_id, name=f"r{i}", start_time=1000 + i)
            store.log_batch(T, run.run_id, metrics=[Metric("auc", 0.5 + i * 0.04, 1, 0)],
                            params={"model": "xgboost" if i % 2 else "sklearn", "i": str(i)},
                            tags={"team": "growth" if i < 6 else "core"})
            if i % 3 == 0:
                store.update_run(T, run.run_id, status="FINISHED", end_time=2000 + i)
            runs.append(run)
        return exp, runs

    def test_search_filter_on_every_kind(self, store, populated):
        exp, runs = populated
        f = RunFilter((Comparison("metric", "auc", ">", 0.7), Comparison("param", "model", "=", "xgboost"),
                       Comparison("tag", "team", "=", "core")))
        got = store.search_runs(T, [exp.experiment_id], filter=f).items
        assert {r.name for r in got} == {"r7", "r9", "r11"}
        finished = store.search_runs(T, [exp.experiment_id], filter=RunFilter(
            (Comparison("attribute", "status", "=", "FINISHED"),))).items
        assert {r.name for r in finished} == {"r0", "r3", "r6", "r9"}
        like = store.search_runs(T, [exp.experiment_id], filter=RunFilter(
            (Comparison("attribute", "run_name", "LIKE", "r1%"),))).items
        assert {r.name for r in like} == {"r1", "r10", "r11"}
        assert store.search_runs(T, [exp.experiment_id], filter=RunFilter(
            (Comparison("param", "model", "LIKE", "XG%"),))).items == []
        assert len(store.search_runs(T, [exp.experiment_id], filter=RunFilter(
            (Comparison("param", "model", "ILIKE", "XG%"),))).items) == 6
        inside = store.search_runs(T, [exp.experiment_id], filter=RunFilter(
            (Comparison("param", "i", "IN", ("1", "2", "99")),))).items
        assert {r.name for r in inside} == {"r1", "r2"}
        missing = store.search_runs(T, [exp.experiment_id], filter=RunFilter(
            (Comparison("tag", "absent", "IS NULL"),))).items
        assert len(missing) == 12

    def test_search_order_and_pages(self, store, populated):
        exp, runs = populated
        order = (OrderBy("metric", "auc", ascending=False),)
        seen, token = [], None
        while True:
            page = store.search_runs(T, [exp.experiment_id], order_by=order, max_results=5, page_token=token)
            seen += [r.name for r in page.items]
            token = page.next_token
            if not token:
                break
        assert seen == [f"r{i}" for i in reversed(range(12))]
        default = store.search_runs(T, [exp.experiment_id]).items
        assert [r.name for r in default] == [f"r{i}" for i in reversed(range(12))]  # newest first
        by_name = store.search_runs(T, [exp.experiment_id], order_by=(OrderBy("attribute", "run_name"),)).items
        assert [r.name for r in by_name] == sorted(f"r{i}" for i in range(12))

    def test_search_column_selection(self, store, populated):
        exp, _ = populated
        got = store.search_runs(T, [exp.experiment_id], columns=["metrics.auc", "params.model"]).items
        assert all(set(r.metrics) == {"auc"} and set(r.params) == {"model"} and r.tags == {} for r in got)
        none = store.search_runs(T, [exp.experiment_id], columns=[]).items
        assert all(r.metrics == {} and r.params == {} for r in none)

    def test_search_skips_deleted_unless_asked(self, store, populated):
        exp, runs = populated
        store.update_run(T, runs[0].run_id, lifecycle_stage="deleted")
        assert len(store.search_runs(T, [exp.experiment_id]).items) == 11
        assert len(store.search_runs(T, [exp.experiment_id], lifecycle="deleted").items) == 1
        assert len(store.search_runs(T, [exp.experiment_id], lifecycle="all").items) == 12

    def test_filter_values_are_data_not_sql(self, store, populated):
        exp, _ = populated
        evil = "x' OR '1'='1"
        got = store.search_runs(T, [exp.experiment_id], filter=RunFilter(
            (Comparison("param", "model", "=", evil), Comparison("tag", evil, "IS NOT NULL")))).items
        assert got == []
        assert len(store.search_runs(T, [exp.experiment_id]).items) == 12


def _accepts_time(store) -> bool:
    import inspect

    return "creation_time" in inspect.signature(store.create_experiment).parameters


from matih_lite.testing.auth import AuthStoreContract  # noqa: E402
from matih_lite.testing.deployments import DeploymentStoreContract  # noqa: E402
from matih_lite.testing.jobs import JobStoreContract  # noqa: E402
from matih_lite.testing.leases import LeaseStoreContract  # noqa: E402
from matih_lite.testing.lineage import LineageStoreContract  # noqa: E402
from matih_lite.testing.logged_models import LoggedModelStoreContract  # noqa: E402
from matih_lite.testing.registry import RegistryStoreContract  # noqa: E402
from matih_lite.testing.tenancy import TenantIsolationContract  # noqa: E402
from matih_lite.testing.traces import TraceStoreContract  # noqa: E402


class MetadataStoreContract(TrackingStoreContract, LoggedModelStoreContract, RegistryStoreContract,
                            AuthStoreContract, LineageStoreContract, DeploymentStoreContract, JobStoreContract,
                            TraceStoreContract, LeaseStoreContract, TenantIsolationContract):
    """The whole metadata-slot contract: every metadata backend subclasses this one."""
