"""The traces part of the metadata contract: MLflow 3's traces, their tags, metadata and assessments."""

from __future__ import annotations

import threading
import uuid

import pytest

from matih_lite.contracts.traces import Assessment, TraceClause, TraceInfo, TraceOrder
from matih_lite.errors import Conflict, InvalidInput, NotFound

T = "tenant-a"
OTHER = "tenant-b"


def new_trace_id() -> str:
    """A trace id as MLflow 3's client makes them."""
    return f"tr-{uuid.uuid4().hex}"


def new_assessment_id() -> str:
    """An assessment id as the tracking domain makes them."""
    return f"a-{uuid.uuid4().hex}"


class TraceStoreContract:
    """Override the ``store`` fixture to return a fresh, empty backend."""

    @pytest.fixture
    def experiment(self, store) -> str:
        return store.create_experiment(T, f"traces-{uuid.uuid4().hex[:6]}").experiment_id

    def new_trace(self, store, experiment_id, *, tenant=T, request_time=1_000, **kw) -> TraceInfo:
        """Store a trace with a fresh id (``kw`` are :class:`TraceInfo` fields)."""
        trace_id = kw.pop("trace_id", None) or new_trace_id()
        return store.start_trace(TraceInfo(trace_id=trace_id, tenant=tenant, experiment_id=experiment_id,
                                           request_time=request_time, **kw))

    def feedback(self, trace_id, *, name="quality", body='{"value": true}', **kw) -> Assessment:
        return Assessment(assessment_id=kw.pop("assessment_id", None) or new_assessment_id(), trace_id=trace_id,
                          name=name, kind=kw.pop("kind", "feedback"), body=body, **kw)

    def ids(self, page) -> list[str]:
        return [t.trace_id for t in page.items]

    # ---- traces -------------------------------------------------------------------------------------
    def test_start_and_get_a_trace_with_tags_metadata_and_assessments(self, store, experiment):
        tid = new_trace_id()
        made = self.new_trace(store, experiment, trace_id=tid, request_time=1_700_000_000_123, execution_duration=463,
                              state="ERROR", client_request_id="req-1", request_preview='{"a": 1}',
                              response_preview="3", tags={"mlflow.traceName": "add"},
                              metadata={"mlflow.user": "ann", "mlflow.sourceRun": "r1"},
                              assessments=[self.feedback(tid, source_type="HUMAN", source_id="ann", rationale="ok",
                                                         metadata={"k": "v"}, span_id="abc", create_time=5)])
        assert made == store.get_trace(T, tid)
        assert (made.request_time, made.execution_duration, made.state, made.client_request_id) == (
            1_700_000_000_123, 463, "ERROR", "req-1")
        assert (made.request_preview, made.response_preview) == ('{"a": 1}', "3")
        assert made.tags == {"mlflow.traceName": "add"} and made.metadata == {"mlflow.user": "ann",
                                                                               "mlflow.sourceRun": "r1"}
        [a] = made.assessments
        assert (a.name, a.kind, a.body, a.source_type, a.source_id, a.rationale, a.metadata, a.span_id, a.valid,
                a.create_time) == ("quality", "feedback", '{"value": true}', "HUMAN", "ann", "ok", {"k": "v"},
                                   "abc", True, 5)
        assert a.last_update_time == 5 and a.trace_id == tid

    def test_an_in_progress_trace_has_no_duration_yet(self, store, experiment):
        made = self.new_trace(store, experiment, state="IN_PROGRESS")
        assert made.execution_duration is None and made.state == "IN_PROGRESS"

    def test_starting_the_same_trace_again_updates_it_and_merges_tags(self, store, experiment):
        made = self.new_trace(store, experiment, state="IN_PROGRESS", tags={"a": "1", "b": "2"}, metadata={"m": "1"})
        again = self.new_trace(store, experiment, trace_id=made.trace_id, state="OK", execution_duration=10,
                               tags={"b": "3", "c": "4"}, metadata={"n": "2"})
        assert (again.state, again.execution_duration) == ("OK", 10)
        assert again.tags == {"a": "1", "b": "3", "c": "4"} and again.metadata == {"m": "1", "n": "2"}

    def test_start_needs_an_experiment_of_the_tenant_and_an_id_no_one_else_holds(self, store, experiment):
        with pytest.raises(NotFound):
            self.new_trace(store, "999999")
        with pytest.raises(NotFound):
            self.new_trace(store, experiment, tenant=OTHER)
        made = self.new_trace(store, experiment)
        theirs = store.create_experiment(OTHER, f"theirs-{uuid.uuid4().hex[:6]}").experiment_id
        with pytest.raises(Conflict):
            self.new_trace(store, theirs, tenant=OTHER, trace_id=made.trace_id)
        assert store.get_trace(T, made.trace_id).experiment_id == experiment

    def test_unknown_trace_ids_are_not_found(self, store, experiment):
        for call in (lambda: store.get_trace(T, "tr-nope"),
                     lambda: store.set_trace_tags(T, "tr-nope", {"a": "1"}),
                     lambda: store.delete_trace_tag(T, "tr-nope", "a"),
                     lambda: store.create_assessment(T, self.feedback("tr-nope")),
                     lambda: store.get_assessment(T, "tr-nope", "a-1"),
                     lambda: store.update_assessment(T, self.feedback("tr-nope")),
                     lambda: store.delete_assessment(T, "tr-nope", "a-1")):
            with pytest.raises(NotFound):
                call()
        assert store.get_traces(T, ["tr-nope"]) == []
        made = self.new_trace(store, experiment)
        with pytest.raises(NotFound):
            store.get_assessment(T, made.trace_id, "a-nope")
        with pytest.raises(NotFound):
            store.delete_trace_tag(T, made.trace_id, "never-set")

    def test_get_traces_keeps_the_order_asked_and_leaves_out_what_is_missing(self, store, experiment):
        a, b, c = (self.new_trace(store, experiment, request_time=i) for i in (1, 2, 3))
        got = store.get_traces(T, [c.trace_id, "tr-missing", a.trace_id, c.trace_id])
        assert [t.trace_id for t in got] == [c.trace_id, a.trace_id]
        assert store.get_traces(T, []) == [] and store.get_traces(OTHER, [a.trace_id, b.trace_id]) == []

    def test_trace_tags_upsert_and_delete(self, store, experiment):
        made = self.new_trace(store, experiment, tags={"a": "1"})
        store.set_trace_tags(T, made.trace_id, {"a": "2", "b": "3"})
        assert store.get_trace(T, made.trace_id).tags == {"a": "2", "b": "3"}
        store.delete_trace_tag(T, made.trace_id, "a")
        assert store.get_trace(T, made.trace_id).tags == {"b": "3"}
        with pytest.raises(NotFound):
            store.delete_trace_tag(T, made.trace_id, "a")

    # ---- search -------------------------------------------------------------------------------------
    def test_search_newest_first_in_pages(self, store, experiment):
        made = [self.new_trace(store, experiment, request_time=1000 + i) for i in range(7)]
        other = store.create_experiment(T, f"other-{uuid.uuid4().hex[:6]}").experiment_id
        self.new_trace(store, other, request_time=5000)
        seen, token = [], None
        while True:
            page = store.search_traces(T, [experiment], max_results=3, page_token=token)
            seen += self.ids(page)
            token = page.next_token
            if not token:
                break
        assert seen == [t.trace_id for t in reversed(made)]
        assert len(store.search_traces(T, [experiment, other]).items) == 8
        assert store.search_traces(T, ["not-a-number", "424242"]).items == []
        with pytest.raises(InvalidInput):
            store.search_traces(T, [experiment], page_token="garbage!")

    def test_search_filters_on_attributes(self, store, experiment):
        a = self.new_trace(store, experiment, request_time=100, execution_duration=50, state="OK",
                           client_request_id="c-1")
        b = self.new_trace(store, experiment, request_time=200, execution_duration=5, state="ERROR")
        c = self.new_trace(store, experiment, request_time=300, state="IN_PROGRESS")

        def found(*clauses):
            return set(self.ids(store.search_traces(T, [experiment], clauses=clauses)))

        assert found(TraceClause("attribute", "request_time", ">=", 200)) == {b.trace_id, c.trace_id}
        assert found(TraceClause("attribute", "execution_duration", "<", 10)) == {b.trace_id}
        assert found(TraceClause("attribute", "end_time", ">", 190)) == {b.trace_id}  # 205; c has no end yet
        assert found(TraceClause("attribute", "state", "=", "OK")) == {a.trace_id}
        assert found(TraceClause("attribute", "state", "IN", ("OK", "ERROR"))) == {a.trace_id, b.trace_id}
        assert found(TraceClause("attribute", "state", "NOT IN", ("OK", "ERROR"))) == {c.trace_id}
        assert found(TraceClause("attribute", "client_request_id", "=", "c-1")) == {a.trace_id}
        assert found(TraceClause("attribute", "trace_id", "=", b.trace_id)) == {b.trace_id}
        assert found(TraceClause("attribute", "request_time", ">", 100),
                     TraceClause("attribute", "state", "!=", "ERROR")) == {c.trace_id}
        for bad in (TraceClause("attribute", "nope", "=", "x"), TraceClause("attribute", "request_time", "=", "x"),
                    TraceClause("attribute", "request_time", "LIKE", 3), TraceClause("attribute", "state", "~", "x"),
                    TraceClause("attribute", "state", "IN", ()), TraceClause("span", "name", "=", "x")):
            with pytest.raises(InvalidInput):
                store.search_traces(T, [experiment], clauses=[bad])

    def test_search_filters_on_tags_and_metadata_with_values_as_data(self, store, experiment):
        a = self.new_trace(store, experiment, tags={"mlflow.traceName": "Predict"}, metadata={"mlflow.sourceRun": "r1"})
        b = self.new_trace(store, experiment, tags={"mlflow.traceName": "train_step", "team": "x'; DROP TABLE--"})
        c = self.new_trace(store, experiment, metadata={"mlflow.sourceRun": "r2"})

        def found(*clauses):
            return set(self.ids(store.search_traces(T, [experiment], clauses=clauses)))

        assert found(TraceClause("tag", "mlflow.traceName", "=", "Predict")) == {a.trace_id}
        assert found(TraceClause("tag", "mlflow.traceName", "!=", "Predict")) == {b.trace_id}
        assert found(TraceClause("tag", "mlflow.traceName", "LIKE", "train%")) == {b.trace_id}
        assert found(TraceClause("tag", "mlflow.traceName", "LIKE", "predict")) == set()  # LIKE is case-sensitive
        assert found(TraceClause("tag", "mlflow.traceName", "ILIKE", "predict")) == {a.trace_id}
        assert found(TraceClause("tag", "mlflow.traceName", "IN", ("Predict", "train_step"))) == {a.trace_id,
                                                                                                  b.trace_id}
        assert found(TraceClause("tag", "team", "=", "x'; DROP TABLE--")) == {b.trace_id}
        assert found(TraceClause("tag", "mlflow.traceName", "IS NULL")) == {c.trace_id}
        assert found(TraceClause("metadata", "mlflow.sourceRun", "IS NOT NULL")) == {a.trace_id, c.trace_id}
        assert found(TraceClause("metadata", "mlflow.sourceRun", "=", "r2")) == {c.trace_id}
        assert found(TraceClause("metadata", "mlflow.sourceRun", "IN", ("r1", "r2")),
                     TraceClause("tag", "mlflow.traceName", "=", "Predict")) == {a.trace_id}

    def test_search_orders_by_attributes_tags_and_metadata(self, store, experiment):
        a = self.new_trace(store, experiment, request_time=1, execution_duration=30, tags={"n": "b"})
        b = self.new_trace(store, experiment, request_time=2, execution_duration=10, tags={"n": "a"})
        c = self.new_trace(store, experiment, request_time=3, execution_duration=20, metadata={"m": "z"})

        def order(*orders):
            return self.ids(store.search_traces(T, [experiment], order_by=orders))

        assert order() == [c.trace_id, b.trace_id, a.trace_id]
        assert order(TraceOrder("attribute", "request_time")) == [a.trace_id, b.trace_id, c.trace_id]
        assert order(TraceOrder("attribute", "execution_duration", False)) == [a.trace_id, c.trace_id, b.trace_id]
        assert order(TraceOrder("tag", "n")) == [b.trace_id, a.trace_id, c.trace_id]  # absent last
        assert order(TraceOrder("tag", "n", False)) == [a.trace_id, b.trace_id, c.trace_id]
        assert order(TraceOrder("metadata", "m")) == [c.trace_id, b.trace_id, a.trace_id]
        with pytest.raises(InvalidInput):
            order(TraceOrder("attribute", "nope"))

    # ---- delete -------------------------------------------------------------------------------------
    def test_delete_by_ids_in_the_experiment_only(self, store, experiment):
        a, b = (self.new_trace(store, experiment, tags={"t": "1"}) for _ in range(2))
        other = store.create_experiment(T, f"other-{uuid.uuid4().hex[:6]}").experiment_id
        elsewhere = self.new_trace(store, other)
        store.create_assessment(T, self.feedback(a.trace_id))
        gone = store.delete_traces(T, experiment, trace_ids=[a.trace_id, elsewhere.trace_id, "tr-missing"])
        assert gone == [a.trace_id]
        with pytest.raises(NotFound):
            store.get_trace(T, a.trace_id)
        assert set(self.ids(store.search_traces(T, [experiment, other]))) == {elsewhere.trace_id, b.trace_id}
        # the id is free again: a trace of that id can be stored anew, without the old tags or assessments
        fresh = self.new_trace(store, experiment, trace_id=a.trace_id)
        assert fresh.tags == {} and fresh.assessments == []

    def test_delete_the_oldest_before_a_time(self, store, experiment):
        made = [self.new_trace(store, experiment, request_time=t) for t in (10, 20, 30, 40)]
        assert store.delete_traces(T, experiment, max_request_time=30, max_traces=2) == [made[0].trace_id,
                                                                                           made[1].trace_id]
        assert store.delete_traces(T, experiment, max_request_time=35) == [made[2].trace_id]
        assert self.ids(store.search_traces(T, [experiment])) == [made[3].trace_id]
        with pytest.raises(InvalidInput):
            store.delete_traces(T, experiment)
        with pytest.raises(InvalidInput):
            store.delete_traces(T, experiment, trace_ids=[made[3].trace_id], max_request_time=50)
        assert store.delete_traces(T, "not-an-id", trace_ids=[made[3].trace_id]) == []

    # ---- assessments --------------------------------------------------------------------------------
    def test_assessments_create_get_update_delete(self, store, experiment):
        made = self.new_trace(store, experiment)
        first = store.create_assessment(T, self.feedback(made.trace_id, create_time=1000))
        assert first.create_time == first.last_update_time == 1000
        expectation = store.create_assessment(T, self.feedback(made.trace_id, name="expected", kind="expectation",
                                                               body='{"value": "42"}'))
        assert expectation.create_time > 1000
        assert store.get_assessment(T, made.trace_id, first.assessment_id) == first
        changed = store.update_assessment(T, Assessment(
            first.assessment_id, made.trace_id, "renamed", "feedback", body='{"value": 0.5}', rationale="why",
            metadata={"a": "b"}, error='{"error_code": "E"}', create_time=first.create_time))
        assert (changed.name, changed.body, changed.rationale, changed.metadata, changed.error) == (
            "renamed", '{"value": 0.5}', "why", {"a": "b"}, '{"error_code": "E"}')
        assert changed.create_time == 1000 and changed.last_update_time > 1000
        assert [a.assessment_id for a in store.get_trace(T, made.trace_id).assessments] == [
            first.assessment_id, expectation.assessment_id]
        store.delete_assessment(T, made.trace_id, first.assessment_id)
        with pytest.raises(NotFound):
            store.get_assessment(T, made.trace_id, first.assessment_id)
        with pytest.raises(NotFound):
            store.delete_assessment(T, made.trace_id, first.assessment_id)
        with pytest.raises(Conflict):
            store.create_assessment(T, self.feedback(made.trace_id, assessment_id=expectation.assessment_id))

    def test_an_override_invalidates_the_old_one_until_it_is_deleted(self, store, experiment):
        made = self.new_trace(store, experiment)
        old = store.create_assessment(T, self.feedback(made.trace_id))
        new = store.create_assessment(T, self.feedback(made.trace_id, overrides=old.assessment_id))
        assert store.get_assessment(T, made.trace_id, old.assessment_id).valid is False
        assert new.valid and new.overrides == old.assessment_id
        store.delete_assessment(T, made.trace_id, new.assessment_id)
        assert store.get_assessment(T, made.trace_id, old.assessment_id).valid is True
        with pytest.raises(NotFound):
            store.create_assessment(T, self.feedback(made.trace_id, overrides="a-missing"))

    def test_assessments_belong_to_their_trace(self, store, experiment):
        a, b = self.new_trace(store, experiment), self.new_trace(store, experiment)
        on_a = store.create_assessment(T, self.feedback(a.trace_id))
        with pytest.raises(NotFound):
            store.get_assessment(T, b.trace_id, on_a.assessment_id)
        with pytest.raises(NotFound):
            store.delete_assessment(T, b.trace_id, on_a.assessment_id)
        with pytest.raises(NotFound):
            store.create_assessment(T, self.feedback(b.trace_id, overrides=on_a.assessment_id))

    def test_concurrent_writers_of_one_trace_lose_nothing(self, store, experiment):
        """Writers on their own connections (as service replicas are) tag and assess one trace at once."""
        made = self.new_trace(store, experiment)
        writers, rounds = 6, 5
        barrier = threading.Barrier(writers)
        errors: list[BaseException] = []

        def write(i: int) -> None:
            barrier.wait()
            try:
                for j in range(rounds):
                    store.set_trace_tags(T, made.trace_id, {f"w{i}-{j}": str(j)})
                    store.create_assessment(T, self.feedback(made.trace_id, name=f"w{i}-{j}"))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        got = store.get_trace(T, made.trace_id)
        assert set(got.tags) == {f"w{i}-{j}" for i in range(writers) for j in range(rounds)}
        assert len(got.assessments) == writers * rounds
