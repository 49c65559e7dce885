"""Entrypoints the training tests run as jobs (imported by Ray workers from this folder)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from matih_lite import training


def quadratic(config):
    """A trivial objective: loss falls towards (x - 3)^2 over ``iterations`` reports."""
    x = float(config["x"])
    for i in range(int(config.get("iterations", 3))):
        training.report({"loss": (x - 3.0) ** 2 + 1.0 / (i + 1), "x_seen": x})


def sleepy(config):
    """Reports once, then sleeps ``seconds`` (a job that holds its quota for a while)."""
    marker = config.get("marker")
    if marker:
        Path(marker).write_text(str(time.time()))
    training.report({"started": 1.0})
    time.sleep(float(config.get("seconds", 1.0)))
    training.report({"started": 1.0, "done": 1.0})


def failing(config):
    training.report({"loss": 1.0})
    raise ValueError("the data has no label column")


def checkpointed_counter(config):
    """Counts to ``steps``, checkpointing every step; writes its pid and each start to files for the kill test."""
    state = training.get_checkpoint() or {"step": 0, "total": 0.0}
    events = Path(config["events"])
    with events.open("a") as out:
        out.write(f"start pid={os.getpid()} step={state['step']} rank={training.context().world_rank}\n")
    Path(config["pid_file"]).write_text(str(os.getpid()))
    for step in range(state["step"], int(config["steps"])):
        time.sleep(float(config.get("delay", 0.3)))
        state = {"step": step + 1, "total": state["total"] + step}
        training.report({"loss": 1.0 / (step + 1), "total": state["total"]}, checkpoint=state)


def pbt_objective(config):
    """A PBT-friendly objective: resumes from checkpoints, score grows with lr near 0.1."""
    state = training.get_checkpoint() or {"score": 0.0}
    for _ in range(training.context().iteration, int(config.get("iterations", 6))):
        time.sleep(float(config.get("delay", 0.0)))  # keeps the population running side by side
        state = {"score": state["score"] + 1.0 - abs(float(config["lr"]) - 0.1)}
        training.report({"score": state["score"]}, checkpoint=state)


def xgb_tune(config):
    """XGBoost on a small synthetic churn problem: one boosting round per report, model logged at the end."""
    import numpy as np
    import xgboost as xgb
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=400, n_features=8, n_informative=5, random_state=0)
    dtrain = xgb.DMatrix(X[:300], label=y[:300])
    dvalid = xgb.DMatrix(X[300:], label=y[300:])
    params = {"objective": "binary:logistic", "eval_metric": ["logloss", "auc"], "eta": config["eta"],
              "max_depth": int(config["max_depth"]), "subsample": config.get("subsample", 1.0), "nthread": 1}

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            training.report({"validation-logloss": evals_log["validation"]["logloss"][-1],
                             "validation-auc": evals_log["validation"]["auc"][-1]})
            return False

    booster = xgb.train(params, dtrain, num_boost_round=int(config.get("rounds", 8)),
                        evals=[(dvalid, "validation")], verbose_eval=False, callbacks=[Report()])
    assert np.isfinite(booster.predict(dvalid)).all()
    training.log_model(booster)


def torch_ddp(config):
    """Data-parallel PyTorch on tiny data: each of the workers trains on its shard, gradients all-reduced."""
    import torch

    ctx = training.context()
    torch.manual_seed(0)
    X = torch.randn(64, 4)
    y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    shard = slice(ctx.world_rank, None, ctx.world_size)
    model = training.prepare_model(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(int(config.get("epochs", 5))):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X[shard]).squeeze(-1), y[shard])
        loss.backward()
        opt.step()
        training.report({"loss": float(loss), "world_size": float(ctx.world_size)})
    inner = model.module if hasattr(model, "module") else model
    training.log_model(inner)


def xgb_distributed(config):
    """XGBoost trained across the job's workers (Ray Train sets up XGBoost's collective)."""
    import xgboost as xgb
    from sklearn.datasets import make_classification

    ctx = training.context()
    X, y = make_classification(n_samples=400, n_features=6, random_state=1)
    rows = slice(ctx.world_rank, None, ctx.world_size)
    dtrain = xgb.DMatrix(X[rows], label=y[rows])

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            training.report({"train-logloss": evals_log["train"]["logloss"][-1]})
            return False

    booster = xgb.train({"objective": "binary:logistic", "eval_metric": "logloss", "nthread": 1}, dtrain,
                        num_boost_round=int(config.get("rounds", 5)), evals=[(dtrain, "train")],
                        verbose_eval=False, callbacks=[Report()])
    training.log_model(booster)


def with_inputs(config):
    """Reads two spec inputs (an artifact of a run, a local file) and reports a loss built from them."""
    numbers = [float(v) for v in training.input_path("numbers").read_text().split()]
    offset = float(training.input_path("offset").read_text())
    for _ in range(int(config.get("iterations", 2))):
        training.report({"loss": (float(config["x"]) - sum(numbers)) ** 2 + offset})
