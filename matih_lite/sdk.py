"""The Python SDK: log runs from training code, embedded or to a server.

::

    import matih_lite as ml

    ml.seed_everything(42)
    with ml.start_run(experiment="churn", run_name="xgb-baseline") as run:
        ml.log_params({"max_depth": 6, "eta": 0.1})
        for epoch in range(100):
            ml.log_metric("loss", loss, step=epoch)     # buffered: returns at once
        ml.log_dict(config, "config.yaml")
        ml.log_figure(fig, "plots/roc.png")
    # leaving the block stores the remaining metrics, then marks the run FINISHED
    # (FAILED if the block raised, KILLED on Ctrl-C; the exception is re-raised)

Where runs go: to the ml-service at ``MATIH_URL`` (bearer token ``MATIH_TOKEN``) when it is
set, otherwise straight into the stores of the current folder's matih.toml (or ``./.matih``).
Both paths go through :class:`~matih_lite.tracking.client.Client` and behave the same.

Active runs form one stack per process, shared by its threads (a worker thread logs to the
run the main thread started). ``start_run(nested=True)`` pushes a child of the active run;
``end_run()`` pops the top one. Logging with no active run starts one, as MLflow does, and
runs still active when the interpreter exits are ended then (FAILED if it is exiting on an
uncaught exception), after their metrics are stored.

A forked worker (multiprocessing) logs to the run it inherited through its own connection;
it leaves with ``os._exit``, which skips exit handlers, so it should call ``ml.flush()`` last.

Metrics are buffered (see :class:`~matih_lite.tracking.client.MetricBuffer`): ``log_metric``
appends to memory and a background thread stores batches of up to 1000 points about every
second. ``end_run``, ``flush()`` and interpreter exit store everything first. Params and tags
are stored at the call, so a param logged twice with different values raises Conflict there.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matih_lite.contracts.artifacts import ArtifactInfo
from matih_lite.contracts.records import Experiment, Metric, Run
from matih_lite.errors import InvalidInput, MatihError, StoreError
from matih_lite.tracking.client import Client, MetricBuffer
from matih_lite.tracking.service import to_metric

__all__ = [
    "ActiveRun", "Client", "RunData", "active_run", "autolog", "end_run", "flush", "get_client", "log_artifact",
    "log_artifacts", "log_dict", "log_figure", "log_metric", "log_metrics", "log_param", "log_params", "log_text",
    "seed_everything", "set_experiment", "set_tag", "set_tags", "start_run",
]

log = logging.getLogger("matih_lite.sdk")

DEFAULT_EXPERIMENT = "Default"
NOTE_TAG = "mlflow.note.content"
SEED_TAG = "matih.seed"
SEEDED_TAG = "matih.seeded"


# ---- sessions: a client and its metric buffer ----------------------------------------------------
class _Session:
    """One client (embedded on a folder, or a URL) with the buffer that batches its metrics."""

    def __init__(self, key: tuple, client: Client) -> None:
        self.key = key
        self.client = client
        self.buffer = MetricBuffer(client.log_points)
        self.pid = os.getpid()


@dataclass
class _Fluent:
    """The SDK's process-wide state."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    stack: list[ActiveRun] = field(default_factory=list)
    sessions: dict[tuple, _Session] = field(default_factory=dict)
    experiment_name: str | None = None
    experiment_id: str | None = None
    seeds: dict[str, str] = field(default_factory=dict)
    unfinished: list[tuple[ActiveRun, str]] = field(default_factory=list)
    """Runs whose end waits for their metrics (the store was unreachable at end_run)."""
    at_exit_registered: bool = False


_state = _Fluent()


def _session_key() -> tuple:
    url = os.environ.get("MATIH_URL")
    if url:
        return ("http", url.rstrip("/"), os.environ.get("MATIH_TOKEN"))
    env = tuple(os.environ.get(k) for k in ("MATIH_CONFIG", "MATIH_PROFILE", "MATIH_HOME"))
    return ("embedded", *env, os.getcwd())


def _session() -> _Session:
    """The session for the current environment (``MATIH_URL``, or the working folder's config)."""
    key = _session_key()
    with _state.lock:
        session = _state.sessions.get(key)
        if session is None:
            session = _Session(key, Client())
            _retire_idle_sessions()
            _state.sessions[key] = session
            if not _state.at_exit_registered:
                atexit.register(_at_exit)
                _state.at_exit_registered = True
        return session


def _retire_idle_sessions() -> None:
    """Stop the buffers of sessions no active run uses (the folder or MATIH_URL changed)."""
    busy = {id(r._session) for r in _state.stack} | {id(r._session) for r, _ in _state.unfinished}
    for key, session in list(_state.sessions.items()):
        if id(session) in busy:
            continue
        try:
            session.buffer.close()
        except MatihError as exc:
            log.warning("could not store metrics of an earlier session: %s", exc.message)
            continue
        del _state.sessions[key]


_forks = [0]
"""How many forks this process is down from the one that imported the SDK (a child's runs get their own session)."""


def _forget_sessions_after_fork() -> None:
    _state.lock = threading.RLock()
    _state.sessions = {}
    _forks[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_sessions_after_fork)


def get_client() -> Client:
    """The :class:`Client` the fluent functions use now (``MATIH_URL``, or this folder's store)."""
    return _session().client


# ---- runs ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunData:
    """A run's params, latest metric values and tags, as MLflow's ``run.data``."""

    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


class ActiveRun:
    """A run started by :func:`start_run`; a context manager that ends it.

    ``run_id``, ``experiment_id``, ``name`` and ``parent_run_id`` never change; ``info`` is the
    run record as of its start (its status and end time updated when it ends); ``data``
    stores pending metrics and reads the run's params, metrics and tags back.
    """

    def __init__(self, session: _Session, run: Run, parent: ActiveRun | None = None) -> None:
        self._session = session
        self._fork = _forks[0] if session.pid == os.getpid() else -1
        self._info = run
        self.parent = parent

    @property
    def session(self) -> _Session:
        """The session its points go through (a forked child's own, not the parent's connections)."""
        if self._fork != _forks[0]:  # a counter, not os.getpid(): this runs once per logged point
            self._session = _session()
            self._fork = _forks[0]
        return self._session

    @property
    def run_id(self) -> str:
        return self._info.run_id

    @property
    def experiment_id(self) -> str:
        return self._info.experiment_id

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def parent_run_id(self) -> str | None:
        return self._info.parent_run_id

    @property
    def status(self) -> str:
        return self._info.status

    @property
    def info(self) -> Run:
        return self._info

    @property
    def client(self) -> Client:
        return self.session.client

    @property
    def data(self) -> RunData:
        """Params, latest metrics and tags as stored now (pending metrics are stored first)."""
        self.session.buffer.flush()
        run = self.session.client.get_run(self.run_id)
        return RunData(dict(run.params), {k: m.value for k, m in run.metrics.items()}, dict(run.tags))

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        _end(self, status, strict=exc_type is None)
        return False  # an exception from the block goes on

    def __repr__(self) -> str:
        return f"<ActiveRun {self.name!r} run_id={self.run_id} status={self.status}>"


def start_run(experiment: str | None = None, run_name: str | None = None, nested: bool = False,
              tags: Mapping[str, Any] | None = None, *, experiment_id: str | None = None,
              run_id: str | None = None, description: str | None = None, capture: bool = True) -> ActiveRun:
    """Start a run (or resume one by ``run_id``) and make it the active run.

    ``experiment`` is a name, created if missing; without it the run goes to the experiment
    of :func:`set_experiment`, the parent's (nested runs), or ``Default``. ``nested=True``
    starts a child of the active run; without it, starting a run while one is active raises
    InvalidInput. ``capture`` records Python, OS, CPUs, GPUs, git state, seeds (tags
    ``matih.*``) and the installed packages (stored once per distinct environment; the run's
    ``matih.environment`` tag names it: ``ml.get_client().read_environment(sha)``).

    Use it as a context manager: ``with ml.start_run(experiment="churn") as run: ...``.
    """
    with _state.lock:
        parent = _state.stack[-1] if _state.stack else None
        if parent is not None and not nested:
            raise InvalidInput(f"run {parent.run_id} ({parent.name}) is already active: end it with "
                               "ml.end_run(), or pass nested=True to start a child run")
        session = parent.session if parent is not None else _session()
        client = session.client
        if run_id is not None:
            run = _resume(client, run_id, tags)
        else:
            exp = _experiment_for(client, experiment, experiment_id, parent)
            run_tags: dict[str, Any] = {}
            artifacts: dict[str, bytes] = {}
            if capture:
                from matih_lite.tracking.capture import capture_environment

                found = capture_environment(seeds=_state.seeds, artifacts=parent is None)
                run_tags.update(found.tags)
                artifacts = found.artifacts
                if found.environment is not None:
                    try:
                        run_tags[ENVIRONMENT_TAG] = client.store_environment(found.environment)
                    except MatihError as exc:  # capture never fails a run
                        run_tags["matih.capture_error"] = f"environment: {exc.message}"[:8000]
            else:
                run_tags.update(_state.seeds)
            if description:
                run_tags[NOTE_TAG] = description
            run_tags.update(tags or {})
            run = client.create_run(exp, name=run_name, parent_run_id=parent.run_id if parent else None,
                                    tags=run_tags)
            _store_capture(client, run.run_id, artifacts)
        active = ActiveRun(session, run, parent if nested else None)
        _state.stack.append(active)
        return active


ENVIRONMENT_TAG = "matih.environment"
"""Tag naming the sha256 of the run's package list; read it with ``get_client().read_environment(sha)``."""


def _experiment_for(client: Client, name: str | None, experiment_id: str | None, parent: ActiveRun | None) -> str:
    if experiment_id is not None:
        return client.get_experiment(experiment_id).experiment_id
    if name is not None:
        return client.get_or_create_experiment(name).experiment_id
    if parent is not None:
        return parent.experiment_id
    if _state.experiment_name is not None:
        return client.get_or_create_experiment(_state.experiment_name).experiment_id
    if _state.experiment_id is not None:
        return client.get_experiment(_state.experiment_id).experiment_id
    return client.get_or_create_experiment(DEFAULT_EXPERIMENT).experiment_id


def _resume(client: Client, run_id: str, tags: Mapping[str, Any] | None) -> Run:
    run = client.get_run(run_id)
    if run.status != "RUNNING":
        run = client.update_run(run_id, status="RUNNING")
    if tags:
        client.set_tags(run_id, tags)
        run = client.get_run(run_id)
    return run


def _store_capture(client: Client, run_id: str, artifacts: Mapping[str, bytes]) -> None:
    for path, data in artifacts.items():
        try:
            client.log_artifact_bytes(run_id, path, data)
        except MatihError as exc:  # capture never fails a run
            try:
                client.set_tag(run_id, "matih.capture_error", f"{path}: {exc.message}"[:8000])
            except MatihError:
                log.warning("could not store %s for run %s: %s", path, run_id, exc.message)


def active_run() -> ActiveRun | None:
    """The run logging functions write to now, or None."""
    stack = _state.stack
    return stack[-1] if stack else None


def end_run(status: str = "FINISHED") -> None:
    """Store the active run's pending metrics, then end it with ``status`` (FINISHED, FAILED, KILLED).

    Does nothing when no run is active. If its metrics cannot be stored the error is raised
    and the run is ended later, once they are (at the latest when the interpreter exits).
    """
    run = active_run()
    if run is not None:
        _end(run, status, strict=True)


def _end(run: ActiveRun, status: str, *, strict: bool) -> None:
    with _state.lock:
        if run not in _state.stack:
            return  # ended already (ml.end_run() inside the with block)
        index = _state.stack.index(run)
        ending = _state.stack[index:][::-1]  # children left open end first, with the same status
        del _state.stack[index:]
    flush_error: MatihError | None = None
    try:
        run.session.buffer.flush()
    except MatihError as exc:
        flush_error = exc
        if not strict:
            log.warning("metrics of run %s were not all stored: %s", run.run_id, exc.message)
    end_error: MatihError | None = None
    for r in ending:
        if isinstance(flush_error, StoreError):
            with _state.lock:
                _state.unfinished.append((r, status))  # its metrics still wait in memory
            continue
        try:
            r._info = r.session.client.end_run(r.run_id, status)
        except MatihError as exc:
            end_error = end_error or exc
            log.warning("could not end run %s: %s", r.run_id, exc.message)
    if strict and (flush_error or end_error):
        raise flush_error or end_error  # type: ignore[misc]


def _active_or_start() -> ActiveRun:
    stack = _state.stack
    if stack:
        return stack[-1]
    with _state.lock:
        return _state.stack[-1] if _state.stack else start_run()


def set_experiment(name: str | None = None, *, experiment_id: str | None = None) -> Experiment:
    """Make runs started from now on (without an ``experiment``) go to this experiment, created if missing."""
    if (name is None) == (experiment_id is None):
        raise InvalidInput("set_experiment takes a name or an experiment_id")
    client = get_client()
    exp = client.get_or_create_experiment(name) if name is not None else client.get_experiment(str(experiment_id))
    with _state.lock:
        _state.experiment_name, _state.experiment_id = name, exp.experiment_id
    return exp


# ---- params, metrics, tags ------------------------------------------------------------------------
def log_param(key: str, value: Any) -> None:
    """Store a param now. Params are write-once: another value for the key raises Conflict here."""
    run = _active_or_start()
    run.client.log_param(run.run_id, key, value)


def log_params(params: Mapping[str, Any]) -> None:
    """Store several params now (see :func:`log_param`)."""
    run = _active_or_start()
    run.client.log_params(run.run_id, params)


def log_metric(key: str, value: float, step: int | None = None, timestamp: int | None = None) -> None:
    """Queue one metric point (checked now, stored within about a second, in order).

    ``step`` defaults to 0 and ``timestamp`` (milliseconds) to now, as in MLflow.
    """
    stack = _state.stack
    if stack and timestamp is None and key in _checked_keys and (type(value) is float or type(value) is int) \
            and (step is None or (type(step) is int and _MIN_STEP <= step < _MAX_STEP)):
        # The common call, a key seen before with a plain number: nothing left to check.
        run = stack[-1]
        run.session.buffer.add_values(run._info.run_id, key, float(value), int(_clock() * 1000), step or 0)
        return
    point = _point(key, value, step, timestamp)
    run = stack[-1] if stack else _active_or_start()
    run.session.buffer.add(run._info.run_id, point)


_checked_keys: set[str] = set()


def _point(key: str, value: Any, step: Any, timestamp: Any) -> Metric:
    """``to_metric`` with a fast path for the common call: a key seen before, a float or int, an int step."""
    if key in _checked_keys and timestamp is None and (isinstance(value, float) or type(value) is int) \
            and (step is None or type(step) is int) and _MIN_STEP <= (step or 0) < _MAX_STEP:
        return Metric(key, float(value), int(time.time() * 1000), step or 0)
    point = to_metric(key, value, timestamp, step or 0)
    if len(_checked_keys) < 10_000:
        _checked_keys.add(point.key)
    return point


_MIN_STEP, _MAX_STEP = -(2**63), 2**63
_clock = time.time


def log_metrics(metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None) -> None:
    """Queue several metric points sharing one step and timestamp."""
    if timestamp is None:
        from matih_lite.tracking.service import now_ms

        timestamp = now_ms()
    points = [_point(k, v, step, timestamp) for k, v in metrics.items()]
    run = _active_or_start()
    for point in points:
        run.session.buffer.add(run.run_id, point)


def set_tag(key: str, value: Any) -> None:
    """Set (or overwrite) a tag of the active run now."""
    run = _active_or_start()
    run.client.set_tag(run.run_id, key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    run = _active_or_start()
    run.client.set_tags(run.run_id, tags)


def flush() -> None:
    """Store every pending metric point now. Raises if some could not be stored."""
    with _state.lock:
        sessions = list(_state.sessions.values())
        sessions += [r.session for r in _state.stack if r.session not in sessions]
    first: MatihError | None = None
    for session in sessions:
        try:
            session.buffer.flush()
        except MatihError as exc:
            first = first or exc
    _finish_unfinished()
    if first is not None:
        raise first


def _finish_unfinished() -> None:
    with _state.lock:
        waiting, _state.unfinished = _state.unfinished, []
    for run, status in waiting:
        if len(run.session.buffer):
            with _state.lock:
                _state.unfinished.append((run, status))
            continue
        try:
            run._info = run.session.client.end_run(run.run_id, status)
        except MatihError as exc:
            log.warning("could not end run %s: %s", run.run_id, exc.message)


# ---- artifacts --------------------------------------------------------------------------------------
def log_artifact(local_path: str | os.PathLike[str], artifact_path: str | None = None) -> ArtifactInfo:
    """Upload a file as ``<artifact_path>/<file name>`` of the active run."""
    run = _active_or_start()
    return run.client.log_artifact(run.run_id, local_path, artifact_path)


def log_artifacts(local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> list[ArtifactInfo]:
    """Upload everything under a folder, keeping its layout, under ``artifact_path``."""
    run = _active_or_start()
    return run.client.log_artifacts(run.run_id, local_dir, artifact_path)


def log_text(text: str, artifact_file: str) -> ArtifactInfo:
    """Store a string (UTF-8) as ``artifact_file``, e.g. ``ml.log_text(report, "eval/report.md")``."""
    run = _active_or_start()
    return run.client.log_artifact_bytes(run.run_id, artifact_file, str(text).encode("utf-8"))


def log_dict(dictionary: Any, artifact_file: str) -> ArtifactInfo:
    """Store a dict as JSON, or as YAML when ``artifact_file`` ends in .yaml or .yml (needs PyYAML).

    NumPy scalars and arrays are converted to plain numbers and lists.
    """
    suffix = Path(artifact_file).suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InvalidInput(f"log_dict to {artifact_file!r} writes YAML, which needs PyYAML: pip install pyyaml "
                               "(or give a .json name)") from None
        plain = json.loads(_to_json(dictionary))
        data = yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, allow_unicode=True).encode("utf-8")
    else:
        data = _to_json(dictionary).encode("utf-8")
    run = _active_or_start()
    return run.client.log_artifact_bytes(run.run_id, artifact_file, data)


def _to_json(value: Any) -> str:
    def plain(obj: Any) -> Any:
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if hasattr(obj, "item"):
            return obj.item()
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=str)
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        raise InvalidInput(f"log_dict cannot store a {type(obj).__name__} as JSON; convert it first")

    return json.dumps(value, indent=2, default=plain, allow_nan=True)


def log_figure(figure: Any, artifact_file: str, *, dpi: int | None = None) -> ArtifactInfo:
    """Store a matplotlib figure as an image; the format follows the extension (.png, .svg, .pdf, .jpg)."""
    if not hasattr(figure, "savefig"):
        raise InvalidInput(f"log_figure takes a matplotlib Figure, not a {type(figure).__name__} "
                           "(for pyplot, pass plt.gcf())")
    fmt = Path(artifact_file).suffix.lower().lstrip(".")
    if not fmt:
        raise InvalidInput(f"give {artifact_file!r} an image extension such as .png or .svg")
    import io

    buf = io.BytesIO()
    try:
        figure.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    except ValueError as exc:
        raise InvalidInput(f"cannot save the figure as {fmt!r}: {exc}") from None
    run = _active_or_start()
    return run.client.log_artifact_bytes(run.run_id, artifact_file, buf.getvalue())


# ---- reproducibility --------------------------------------------------------------------------------
def seed_everything(seed: int | None = None) -> int:
    """Seed Python's ``random``, NumPy and PyTorch (when installed); return the seed.

    Without ``seed``, one is drawn at random, so the run still records what it used. The seed
    is set on the active run as tags ``matih.seed`` and ``matih.seeded`` (the libraries
    seeded), and on every run started afterwards in this process. ``PYTHONHASHSEED`` is set
    for subprocesses (this interpreter's hash seed cannot change once it runs).
    """
    import importlib.util
    import random

    if seed is None:
        seed = int.from_bytes(os.urandom(4), "big") % (2**31)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    seeded = ["python"]
    if "numpy" in sys.modules or importlib.util.find_spec("numpy") is not None:
        import numpy

        numpy.random.seed(seed % (2**32))
        seeded.append("numpy")
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
        seeded.append("torch")
    with _state.lock:
        _state.seeds = {SEED_TAG: str(seed), SEEDED_TAG: ",".join(seeded)}
        run = active_run()
    if run is not None:
        run.client.set_tags(run.run_id, _state.seeds)
    return seed


def autolog(frameworks: list[str] | None = None, *, disable: bool = False) -> list[str]:
    """Let training code log itself (scikit-learn, XGBoost, PyTorch loops, plugins): see
    :func:`matih_lite.tracking.autolog.autolog`. Returns the frameworks enabled."""
    from matih_lite.tracking.autolog import autolog as enable

    return enable(frameworks, disable=disable)


# ---- interpreter exit ---------------------------------------------------------------------------------
def _exit_status() -> str:
    """FINISHED, or FAILED / KILLED when the interpreter is exiting on an uncaught exception."""
    if hasattr(sys, "ps1") or "IPython" in sys.modules:
        return "FINISHED"  # interactive: an earlier, handled traceback says nothing about the end
    exc = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if exc is None:
        return "FINISHED"
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED"
    if isinstance(exc, SystemExit):
        return "FINISHED" if exc.code in (0, None) else "FAILED"
    return "FAILED"


def _at_exit() -> None:
    """Store every pending metric, then end the runs still active (MLflow ends them FINISHED too)."""
    status = _exit_status()
    with _state.lock:
        active = _state.stack[::-1]
        _state.stack.clear()
        sessions = list(_state.sessions.values())
        sessions += [r.session for r in active if r.session not in sessions]
        sessions += [r.session for r, _ in _state.unfinished if r.session not in sessions]
    for session in sessions:
        try:
            session.buffer.close()
        except MatihError as exc:
            log.error("%d metric points could not be stored before exit: %s", len(session.buffer), exc.message)
        except Exception:
            log.exception("storing metrics at exit failed")
    _finish_unfinished()
    for run in active:
        try:
            run._info = run.session.client.end_run(run.run_id, status)
        except Exception as exc:
            log.error("could not end run %s at exit: %s", run.run_id, exc)
    for session in sessions:
        try:
            session.client.close()
        except Exception:
            pass


from matih_lite.lineage.sdk import log_input  # noqa: F401, E402
