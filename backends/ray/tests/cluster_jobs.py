"""Entrypoints the cluster tests run as jobs: this folder is the jobs' code, uploaded as their working dir."""

from __future__ import annotations

import os
import time
from pathlib import Path

from matih_lite import training


def quadratic(config):
    """A cheap objective: the loss falls towards (x - 3)^2 over ``iterations`` reports."""
    x = float(config["x"])
    for i in range(int(config.get("iterations", 3))):
        time.sleep(float(config.get("delay", 0.0)))
        training.report({"loss": (x - 3.0) ** 2 + 1.0 / (i + 1), "x_seen": x})


def torch_ddp(config):
    """Data-parallel PyTorch on tiny data: each worker trains on its shard, gradients all-reduced over gloo."""
    import torch

    ctx = training.context()
    torch.manual_seed(0)
    X = torch.randn(64, 4)
    y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    shard = slice(ctx.world_rank, None, ctx.world_size)
    model = training.prepare_model(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=float(config.get("lr", 0.1)))
    for _ in range(int(config.get("epochs", 3))):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X[shard]).squeeze(-1), y[shard])
        loss.backward()
        opt.step()
        training.report({"loss": float(loss), "world_size": float(ctx.world_size),
                         "node": float(os.environ.get("MATIH_TEST_NODE", "-1"))})
    inner = model.module if hasattr(model, "module") else model
    training.log_model(inner)


def counted_steps(config):
    """Counts to ``steps`` on every worker, checkpointing each step; records each start and its pid by rank."""
    ctx = training.context()
    state = training.get_checkpoint() or {"step": 0, "total": 0.0}
    folder = Path(config["pids"])
    folder.mkdir(parents=True, exist_ok=True)
    import ray

    node = ray.get_runtime_context().get_node_id()
    (folder / f"rank{ctx.world_rank}-{os.getpid()}-{node}").write_text(str(state["step"]))
    for step in range(state["step"], int(config["steps"])):
        time.sleep(float(config.get("delay", 0.5)))
        state = {"step": step + 1, "total": state["total"] + step}
        training.report({"loss": 1.0 / (step + 1), "total": state["total"]}, checkpoint=state)


def sleepy(config):
    """Reports once, then holds its CPU for ``seconds``."""
    training.report({"started": 1.0})
    time.sleep(float(config.get("seconds", 600)))
