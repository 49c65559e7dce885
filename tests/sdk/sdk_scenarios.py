"""The SDK's behaviour, written once and run over both transports.

``test_sdk_embedded.py`` and ``test_sdk_http.py`` subclass :class:`SdkScenarios` and provide
the ``transport`` fixture; every scenario must pass the same way on both.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

import matih_lite as ml
from matih_lite.errors import Conflict, InvalidInput, NotFound
from matih_lite.tracking.client import Client


def unique(prefix: str = "exp") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class SdkScenarios:
    """Subclasses provide ``transport``: a fixture that points the SDK at its store, returning its name."""

    @pytest.fixture
    def transport(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def client(self, transport) -> Client:
        client = ml.get_client()
        assert client.transport == transport
        return client

    # ---- runs ---------------------------------------------------------------------------------------
    def test_with_block_finishes_the_run(self, client):
        exp = unique()
        with ml.start_run(experiment=exp, run_name="baseline", tags={"team": "growth"}) as run:
            assert ml.active_run() is run
            assert run.name == "baseline" and len(run.run_id) == 32
            assert run.status == "RUNNING"
        assert ml.active_run() is None
        assert run.status == "FINISHED"
        stored = client.get_run(run.run_id)
        assert stored.status == "FINISHED" and stored.end_time is not None
        assert stored.tags["team"] == "growth"
        assert client.get_experiment_by_name(exp).experiment_id == run.experiment_id == stored.experiment_id

    def test_exception_in_block_marks_run_failed_and_is_reraised(self, client):
        with pytest.raises(ZeroDivisionError):
            with ml.start_run(experiment=unique()) as run:
                ml.log_metric("before", 1.0)
                1 / 0  # noqa: B018
        stored = client.get_run(run.run_id)
        assert stored.status == "FAILED"
        assert stored.metrics["before"].value == 1.0  # metrics logged before the failure are kept
        assert ml.active_run() is None

    def test_keyboard_interrupt_marks_run_killed(self, client):
        with pytest.raises(KeyboardInterrupt):
            with ml.start_run(experiment=unique()) as run:
                raise KeyboardInterrupt
        assert client.get_run(run.run_id).status == "KILLED"

    def test_nested_runs_record_their_parent(self, client):
        with ml.start_run(experiment=unique()) as parent:
            with ml.start_run(run_name="child", nested=True) as child:
                assert ml.active_run() is child
                with ml.start_run(nested=True) as grandchild:
                    pass
                assert ml.active_run() is child
            assert ml.active_run() is parent
        assert child.parent_run_id == parent.run_id
        assert client.get_run(child.run_id).parent_run_id == parent.run_id
        assert client.get_run(child.run_id).tags["mlflow.parentRunId"] == parent.run_id
        assert client.get_run(grandchild.run_id).parent_run_id == child.run_id
        assert child.experiment_id == parent.experiment_id  # children stay in the parent's experiment
        assert {client.get_run(r.run_id).status for r in (parent, child, grandchild)} == {"FINISHED"}

    def test_a_second_run_needs_nested(self, client):
        with ml.start_run(experiment=unique()) as run:
            with pytest.raises(InvalidInput, match="nested=True"):
                ml.start_run()
            assert ml.active_run() is run

    def test_ending_a_parent_ends_children_left_open(self, client):
        parent = ml.start_run(experiment=unique())
        child = ml.start_run(nested=True)
        ml.end_run()  # ends the child (top of the stack)
        assert ml.active_run() is parent
        child2 = ml.start_run(nested=True)
        with parent:
            pass
        assert client.get_run(child.run_id).status == "FINISHED"
        assert client.get_run(child2.run_id).status == "FINISHED"
        assert ml.active_run() is None

    def test_end_run_sets_status_and_is_a_no_op_without_a_run(self, client):
        ml.end_run()  # nothing active: nothing happens
        run = ml.start_run(experiment=unique())
        ml.end_run("KILLED")
        assert client.get_run(run.run_id).status == "KILLED"

    def test_logging_without_a_run_starts_one_in_the_chosen_experiment(self, client):
        name = unique()
        exp = ml.set_experiment(name)
        ml.log_param("alpha", 0.5)
        run = ml.active_run()
        assert run is not None and run.experiment_id == exp.experiment_id
        ml.end_run()
        assert client.get_run(run.run_id).params == {"alpha": "0.5"}

    def test_resume_a_run_by_id(self, client):
        with ml.start_run(experiment=unique()) as first:
            ml.log_metric("loss", 1.0, step=0)
        with ml.start_run(run_id=first.run_id) as again:
            assert again.status == "RUNNING"
            ml.log_metric("loss", 0.5, step=1)
        history = client.metric_history(first.run_id, "loss").items
        assert [m.value for m in history] == [1.0, 0.5]
        assert client.get_run(first.run_id).status == "FINISHED"

    # ---- metrics ------------------------------------------------------------------------------------
    def test_twenty_thousand_buffered_metrics_all_arrive_in_order(self, client):
        with ml.start_run(experiment=unique()) as run:
            for i in range(20_000):
                ml.log_metric("loss", i * 0.5, step=i)
        history = client.metric_history(run.run_id, "loss").items
        assert len(history) == 20_000
        assert [m.step for m in history] == list(range(20_000))
        assert [m.value for m in history] == [i * 0.5 for i in range(20_000)]
        assert client.get_run(run.run_id).status == "FINISHED"

    def test_flush_stores_pending_metrics_now(self, client):
        with ml.start_run(experiment=unique()) as run:
            ml.log_metrics({"auc": 0.9, "loss": 0.1}, step=3)
            ml.flush()
            stored = client.get_run(run.run_id)
            assert stored.metrics["auc"].value == 0.9 and stored.metrics["auc"].step == 3
            assert stored.metrics["loss"].timestamp == stored.metrics["auc"].timestamp
            assert run.data.metrics == {"auc": 0.9, "loss": 0.1}

    def test_nan_and_infinity_survive_the_trip(self, client):
        with ml.start_run(experiment=unique()) as run:
            ml.log_metric("x", math.nan, step=0)
            ml.log_metric("x", math.inf, step=1)
            ml.log_metric("x", -math.inf, step=2)
        values = [m.value for m in client.metric_history(run.run_id, "x").items]
        assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]

    def test_a_bad_metric_is_refused_at_the_call(self, client):
        with ml.start_run(experiment=unique()):
            with pytest.raises(InvalidInput, match="must be a number"):
                ml.log_metric("loss", "high")
            with pytest.raises(InvalidInput):
                ml.log_metric("../escape", 1.0)

    def test_metrics_lost_to_a_deleted_run_are_reported_by_flush(self, client):
        run = ml.start_run(experiment=unique())
        client.delete_run(run.run_id)
        ml.log_metric("loss", 1.0)
        with pytest.raises(Conflict, match="could not be stored"):
            ml.flush()
        ml.flush()  # reported once
        ml.end_run()
        assert ml.active_run() is None

    def test_metric_keys_with_slashes(self, client):
        with ml.start_run(experiment=unique()) as run:
            ml.log_metric("train/loss", 0.25, step=1)
        assert [m.value for m in client.metric_history(run.run_id, "train/loss").items] == [0.25]

    # ---- params and tags ----------------------------------------------------------------------------
    def test_param_conflict_raises_at_the_call(self, client):
        with ml.start_run(experiment=unique()) as run:
            ml.log_param("lr", 0.1)
            ml.log_param("lr", 0.1)  # the same value again is fine
            with pytest.raises(Conflict, match="lr"):
                ml.log_param("lr", 0.2)
            ml.log_params({"depth": 6, "model": "xgb"})
            ml.set_tag("stage", "dev")
            ml.set_tags({"stage": "prod", "owner": "ana"})  # tags may change
        stored = client.get_run(run.run_id)
        assert stored.params == {"lr": "0.1", "depth": "6", "model": "xgb"}
        assert stored.tags["stage"] == "prod" and stored.tags["owner"] == "ana"

    def test_seed_everything_is_recorded_on_the_active_and_later_runs(self, client):
        import random

        assert ml.seed_everything(123) == 123
        first = random.random()
        ml.seed_everything(123)
        assert random.random() == first
        with ml.start_run(experiment=unique()) as later:  # seeded before the run started
            pass
        with ml.start_run(experiment=unique(), capture=False) as during:
            ml.seed_everything(7)
        assert client.get_run(later.run_id).tags["matih.seed"] == "123"
        assert "numpy" in client.get_run(later.run_id).tags["matih.seeded"]
        assert client.get_run(during.run_id).tags["matih.seed"] == "7"

    # ---- artifacts ----------------------------------------------------------------------------------
    def test_artifacts_round_trip(self, client, tmp_path):
        src = tmp_path / "src"
        (src / "sub").mkdir(parents=True)
        (src / "a.txt").write_text("alpha")
        (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 10)
        model = tmp_path / "model.pkl"
        model.write_bytes(os.urandom(300_000))
        with ml.start_run(experiment=unique()) as run:
            ml.log_artifact(model, "models")
            ml.log_artifacts(src, "data")
            ml.log_text("hello ✓", "notes/readme.md")
        assert client.read_artifact(run.run_id, "models/model.pkl") == model.read_bytes()
        assert client.read_artifact(run.run_id, "notes/readme.md").decode() == "hello ✓"
        paths = [a.path for a in client.list_artifacts(run.run_id, "data", recursive=True)]
        assert paths == ["data/a.txt", "data/sub/b.bin"]
        out = client.download_artifact(run.run_id, "data", tmp_path / "out")
        assert (out / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
        assert (out / "a.txt").read_text() == "alpha"
        single = client.download_artifact(run.run_id, "models/model.pkl", tmp_path / "one")
        assert single.read_bytes() == model.read_bytes()
        with pytest.raises(NotFound):
            client.read_artifact(run.run_id, "nope.txt")

    def test_log_dict_writes_json_or_yaml(self, client):
        import numpy as np

        config = {"lr": 0.1, "layers": [64, 32], "name": "mlp", "score": np.float64(0.5), "w": np.arange(3)}
        with ml.start_run(experiment=unique()) as run:
            ml.log_dict(config, "config.json")
            ml.log_dict(config, "config.yaml")
        expected = {"lr": 0.1, "layers": [64, 32], "name": "mlp", "score": 0.5, "w": [0, 1, 2]}
        assert json.loads(client.read_artifact(run.run_id, "config.json")) == expected
        import yaml

        assert yaml.safe_load(client.read_artifact(run.run_id, "config.yaml")) == expected

    def test_log_figure_stores_the_image(self, client):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3, 2))
        fig.subplots().plot([0, 1, 2], [2, 0, 1])
        with ml.start_run(experiment=unique()) as run:
            ml.log_figure(fig, "plots/curve.png")
            ml.log_figure(fig, "plots/curve.svg")
            with pytest.raises(InvalidInput, match="matplotlib"):
                ml.log_figure({"not": "a figure"}, "x.png")
        png = client.read_artifact(run.run_id, "plots/curve.png")
        again = io.BytesIO()
        fig.savefig(again, format="png", bbox_inches="tight")
        assert png.startswith(b"\x89PNG") and png == again.getvalue()
        assert b"<svg" in client.read_artifact(run.run_id, "plots/curve.svg")

    # ---- the client ---------------------------------------------------------------------------------
    def test_client_experiments_lifecycle(self, client):
        name = unique()
        exp = client.create_experiment(name, description="d", tags={"team": "growth"})
        with pytest.raises(Conflict):
            client.create_experiment(name)
        assert client.get_experiment(exp.experiment_id).tags == {"team": "growth"}
        client.delete_experiment(exp.experiment_id)
        assert name not in [e.name for e in client.search_experiments().items]
        assert name in [e.name for e in client.search_experiments(lifecycle="deleted").items]
        assert client.restore_experiment(exp.experiment_id).lifecycle_stage == "active"
        with pytest.raises(NotFound):
            client.get_experiment_by_name(unique("missing"))

    def test_search_and_compare_runs(self, client):
        name = unique()
        ids = []
        for lr, auc, loss in [(0.1, 0.80, 0.50), (0.2, 0.90, 0.40), (0.3, 0.85, 0.30)]:
            with ml.start_run(experiment=name, capture=False) as run:
                ml.log_params({"lr": lr, "model": "xgb"})
                ml.log_metrics({"auc": auc, "loss": loss})
            ids.append(run.run_id)
        page = client.search_runs(experiment_names=[name], filter="metrics.auc > 0.82", order_by="metrics.auc DESC")
        assert [r.run_id for r in page.items] == [ids[1], ids[2]]
        with pytest.raises(InvalidInput, match="position"):
            client.search_runs(experiment_names=[name], filter="metrics.auc >> 1")
        result = client.compare_runs(ids)
        assert result["metrics"]["auc"]["best"] == ids[1]
        assert result["metrics"]["loss"]["best"] == ids[2] and result["metrics"]["loss"]["goal"] == "min"
        assert result["params"]["lr"]["differs"] and not result["params"]["model"]["differs"]
        assert result["metrics"]["auc"]["values"] == [0.80, 0.90, 0.85]

    def test_unknown_run_is_not_found(self, client):
        with pytest.raises(NotFound):
            client.get_run("0" * 32)
        with pytest.raises(NotFound):
            ml.start_run(run_id="f" * 32)

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
    def test_a_forked_worker_logs_to_the_inherited_run(self, client):
        with ml.start_run(experiment=unique()) as run:
            ml.log_metric("loss", 1.0, step=0)
            pid = os.fork()
            if pid == 0:  # the child: its own connection, then flush before leaving
                code = 1
                try:
                    ml.log_metric("loss", 0.5, step=1)
                    ml.flush()
                    code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        assert [m.value for m in client.metric_history(run.run_id, "loss").items] == [1.0, 0.5]

    # ---- leaving the interpreter --------------------------------------------------------------------
    def _script(self, tmp_path, body: str) -> subprocess.CompletedProcess:
        script = tmp_path / "train.py"
        script.write_text(textwrap.dedent(body))
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ), cwd=os.getcwd())

    def test_a_script_that_exits_without_end_run_loses_nothing(self, client, tmp_path):
        name = unique()
        proc = self._script(tmp_path, f"""
            import matih_lite as ml
            run = ml.start_run(experiment={name!r})
            print(run.run_id)
            for i in range(3000):
                ml.log_metric("loss", 1.0 / (i + 1), step=i)
            # no end_run, no flush: the atexit handler stores the points and ends the run
        """)
        assert proc.returncode == 0, proc.stderr
        run_id = proc.stdout.split()[0]
        assert len(client.metric_history(run_id, "loss").items) == 3000
        assert client.get_run(run_id).status == "FINISHED"

    def test_a_script_that_crashes_mid_buffer_stores_every_point_it_logged(self, client, tmp_path):
        proc = self._script(tmp_path, f"""
            import matih_lite as ml
            run = ml.start_run(experiment={unique()!r})
            print(run.run_id, flush=True)
            for i in range(5000):
                ml.log_metric("loss", 1.0 / (i + 1), step=i)
                if i == 4321:
                    raise RuntimeError("diverged at step 4321")  # points still in memory: stored at exit
        """)
        assert proc.returncode == 1 and "diverged at step 4321" in proc.stderr
        run_id = proc.stdout.split()[0]
        history = client.metric_history(run_id, "loss").items
        assert [m.step for m in history] == list(range(4322))
        assert client.get_run(run_id).status == "FAILED"

    def test_a_script_that_dies_on_an_exception_marks_its_run_failed(self, client, tmp_path):
        proc = self._script(tmp_path, f"""
            import matih_lite as ml
            run = ml.start_run(experiment={unique()!r})
            print(run.run_id, flush=True)
            ml.log_metric("loss", 0.5)
            raise RuntimeError("diverged")
        """)
        assert proc.returncode == 1 and "diverged" in proc.stderr
        run_id = proc.stdout.split()[0]
        stored = client.get_run(run_id)
        assert stored.status == "FAILED" and stored.metrics["loss"].value == 0.5
