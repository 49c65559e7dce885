"""Entrypoints the S3 tests run as training jobs (imported by the Ray worker from this folder)."""

from __future__ import annotations

from pathlib import Path

from matih_lite import training


def crashes_once_then_resumes(config):
    """Counts to ``steps`` with a checkpoint per step; the first attempt crashes after ``crash_after`` steps."""
    state = training.get_checkpoint() or {"step": 0, "total": 0}
    with Path(config["events"]).open("a") as out:
        out.write(f"step={state['step']}\n")
    marker = Path(config["marker"])
    for step in range(state["step"], int(config["steps"])):
        state = {"step": step + 1, "total": state["total"] + step}
        training.report({"loss": 1.0 / (step + 1), "total": state["total"]}, checkpoint=state)
        if state["step"] == int(config["crash_after"]) and not marker.exists():
            marker.write_text("crashed")
            raise RuntimeError("the worker crashed (on purpose, once)")
