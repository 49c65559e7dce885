"""Training and tuning jobs: the spec, the job service, and the calls an entrypoint makes.

An entrypoint is a function of its config (the spec's ``params`` and, when tuning, the
trial's sampled values). It reports metrics once per iteration and may checkpoint::

    from matih_lite import training

    def train(config):
        state = training.get_checkpoint() or {"round": 0}       # resumed after a failure
        data = training.input_path("train")                      # a spec input, as a local file
        for r in range(state["round"], config["rounds"]):
            loss = ...
            training.report({"loss": loss}, checkpoint={"round": r + 1, "weights": ...})
        training.log_model(model)                                # MLflow layout, registrable

The same code runs as a plain Python call (:class:`LocalSession` records what it reports),
as a Ray Train worker (``matih-lite train``) or as a Ray Tune trial (``matih-lite tune``).
Each report is one iteration: its step in tracking, and its rung for ASHA and HyperBand.
Checkpoints go to the job's run in the artifacts slot, whatever backend fills it; after a
killed worker, ``get_checkpoint()`` returns the last one and reporting continues at its step.

Nothing here imports Ray; :mod:`matih_lite.training.runner` does, inside the job.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from matih_lite.training.jobs import Jobs
    from matih_lite.training.spec import JobSpec, ResourceSpec, TuneSpec

__all__ = [
    "JobSpec", "Jobs", "LocalSession", "ResourceSpec", "TuneSpec", "config", "context", "get_checkpoint",
    "input_path", "load_spec", "log_model", "parse_spec", "prepare_model", "report",
]


class Session(Protocol):
    """What an entrypoint talks to; the runner installs one per worker (or trial)."""

    config: dict[str, Any]
    job_id: str
    trial_id: str | None
    world_rank: int
    world_size: int
    iteration: int

    def report(self, metrics: Mapping[str, Any], checkpoint: Any = None) -> None: ...
    def get_checkpoint(self) -> Any: ...
    def log_model(self, model: Any, flavor: str | None, path: str) -> str: ...
    def input_path(self, name: str) -> Path: ...


class LocalSession:
    """The session outside a job: keeps reports, checkpoints and models in memory (for trying code)."""

    job_id = "local"
    trial_id = None
    world_rank = 0
    world_size = 1

    def __init__(self, config: Mapping[str, Any] | None = None, inputs: Mapping[str, str] | None = None) -> None:
        self.config = dict(config or {})
        self.inputs = dict(inputs or {})
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.checkpoint: Any = None
        self.models: dict[str, Any] = {}

    def report(self, metrics: Mapping[str, Any], checkpoint: Any = None) -> None:
        self.history.append({"step": self.iteration, **metrics})
        if checkpoint is not None:
            self.checkpoint = checkpoint
        self.iteration += 1

    def get_checkpoint(self) -> Any:
        return self.checkpoint

    def log_model(self, model: Any, flavor: str | None, path: str) -> str:
        self.models[path] = model
        return path

    def input_path(self, name: str) -> Path:
        try:
            return Path(self.inputs[name])
        except KeyError:
            raise KeyError(f"no input named {name!r}; this session has: {', '.join(self.inputs) or 'none'}") from None


_state = threading.local()
_process_session: list[Session] = []


def install(session: Session | None) -> None:
    """Make ``session`` the current one for this process (the runner's call; None removes it)."""
    _process_session[:] = [session] if session is not None else []


def _current() -> Session:
    found = getattr(_state, "session", None) or (_process_session[0] if _process_session else None)
    if found is None:
        found = LocalSession()
        _state.session = found
    return found


def use(session: Session | None) -> None:
    """Make ``session`` the current one for this thread (tests and notebooks: a :class:`LocalSession`)."""
    _state.session = session


# ---- the calls an entrypoint makes ---------------------------------------------------------------
def config() -> dict[str, Any]:
    """The config this worker or trial runs with (for scripts, which are not called with it)."""
    return _current().config


def context() -> Session:
    """The current session: ``job_id``, ``trial_id``, ``world_rank``, ``world_size``, ``iteration``."""
    return _current()


def report(metrics: Mapping[str, Any], *, checkpoint: Any = None) -> None:
    """Report one iteration's metrics, and optionally a checkpoint to resume from.

    ``checkpoint`` is a dict (pickled) or a local folder (its files are copied). In a
    data-parallel job every worker must call ``report`` the same number of times; only
    rank 0's metrics and checkpoint are kept.
    """
    _current().report(metrics, checkpoint)


def get_checkpoint() -> Any:
    """The last checkpoint of this trial or job (a dict, or a local folder), None on a fresh start."""
    return _current().get_checkpoint()


def log_model(model: Any, *, flavor: str | None = None, path: str = "model") -> str:
    """Save a trained model in MLflow's layout into the job's run (a tuning trial's run when tuning).

    ``flavor`` is ``sklearn``, ``xgboost`` or ``pytorch`` (default: guessed from the model).
    Rank 0 saves; other ranks return at once. Returns the artifact path.
    """
    return _current().log_model(model, flavor, path)


def input_path(name: str) -> Path:
    """A spec input (``[inputs] NAME = URI``) as a local file, downloaded once per process. A feature-store input
    (``NAME = { service = "churn_v1", entities = "labels.parquet" }``) is the parquet file of the joined frame."""
    return _current().input_path(name)


def prepare_model(model: Any) -> Any:
    """A PyTorch model wrapped for data-parallel training (DDP) when the job has several workers."""
    if _current().world_size > 1:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)
    return model


def call_entrypoint(fn: Any, cfg: dict[str, Any]) -> Any:
    """Call ``fn(config)``, or ``fn()`` when it takes no argument."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(cfg)
    return fn(cfg) if params else fn()


def __getattr__(name: str) -> Any:
    if name in ("JobSpec", "ResourceSpec", "TuneSpec", "load_spec", "parse_spec"):
        from matih_lite.training import spec

        return getattr(spec, name)
    if name == "Jobs":
        from matih_lite.training.jobs import Jobs

        return Jobs
    raise AttributeError(f"module 'matih_lite.training' has no attribute {name!r}")
