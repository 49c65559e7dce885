"""What runs inside Ray: a job's driver (Ray Tune or a Ray Train trainer) and its workers.

A compute backend runs :func:`run_job` with the :class:`~matih_lite.contracts.jobs.JobRequest`
somewhere in its cluster. The driver logs the job into tracking:

* **tuning** (:func:`run_tune`): a :class:`ray.tune.Tuner` with the spec's search algorithm
  (random, grid, Optuna TPE) and scheduler (FIFO, ASHA, HyperBand, PBT). A Tune callback in
  the driver makes each trial a nested child run of the job's run when it starts, logs its
  params, streams every reported iteration into it, and ends it; trial processes never open
  the metadata store for that. At the end the best trial is marked on the parent run (tags
  ``matih.best_run_id`` and ``matih.best_trial_id``, its metrics copied there) and its model,
  if it logged one, is copied into its own run as ``model/``.
* **training** (:func:`run_train`): a Ray Train ``TorchTrainer`` (gloo on CPUs), ``XGBoostTrainer``
  or ``DataParallelTrainer`` with ``num_workers`` workers and ``max_failures`` restarts. A
  Train callback (in the controller) streams rank 0's reports into the job's run.

Checkpoints are written by rank 0 into the job's run in the artifacts slot
(``checkpoints/<trial or "train">/<step>/``); Ray only keeps a pointer to them, so a restarted
worker (Train) or a retried or exploiting trial (Tune: failures, PBT) reads them back from the
artifacts slot, whatever backend fills it. The step counter is saved with each checkpoint, and
steps already logged before a failure are not logged twice: the run keeps one continuous
history.

Ray is imported here only inside functions, so the module is cheap to import.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import pickle
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from matih_lite import training
from matih_lite.contracts.records import Metric

log = logging.getLogger("matih_lite.training")

POINTER_FILE = "matih_checkpoint.json"
STEP_KEY = "matih_step"
BEST_RUN_TAG = "matih.best_run_id"
BEST_TRIAL_TAG = "matih.best_trial_id"
TRIAL_TAG = "matih.trial_id"
JOB_TAG = "matih.job_id"
MODEL_PATH_TAG = "matih.model_path"
_TUNE_BOOKKEEPING = frozenset({
    "timestamp", "time_this_iter_s", "time_total_s", "pid", "time_since_restore", "iterations_since_restore",
    "training_iteration", "done", STEP_KEY, "checkpoint_dir_name", "date", "hostname", "node_ip", "trial_id",
    "experiment_tag", "should_checkpoint", "config", "episodes_total", "timesteps_total", "timesteps_since_restore",
})


# ---- reaching tracking from a Ray process ---------------------------------------------------------
_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def tracking_client(target: Mapping[str, str], tenant: str) -> Any:
    """A :class:`~matih_lite.tracking.client.Client` for a job's tracking target, one per process."""
    key = (tuple(sorted(target.items())), tenant, os.getpid())
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            from matih_lite.tracking.client import Client

            if target.get("url"):
                client = Client(target["url"], token=target.get("token") or None)
            else:
                from matih_lite.config import load_config
                from matih_lite.host import Host

                env = dict(os.environ)
                env["MATIH_HOME"] = target["home"]
                env.pop("MATIH_CONFIG", None)
                cfg = load_config(target.get("config") or None, env=env, cwd=Path(target.get("cwd") or "."))
                client = Client(host=Host(cfg, target.get("profile") or None), tenant=tenant)
            _clients[key] = client
        return client


# ---- the job's log ---------------------------------------------------------------------------------
class _Tee(io.TextIOBase):
    """Writes to the original stream and appends to the job's log file."""

    def __init__(self, original: Any, path: str) -> None:
        self._original = original
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed with the tee

    def write(self, text: str) -> int:
        try:
            self._original.write(text)
        except Exception:  # the original may be closed in a Ray worker; the log file matters more
            pass
        if not self._file.closed:  # a handler may still hold this tee after the job's capture ended
            self._file.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in (self._original, self._file):
            try:
                stream.flush()
            except Exception:
                pass

    def fileno(self) -> int:
        return self._original.fileno()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        self._file.close()


class _CapturedOutput:
    """stdout, stderr and the matih_lite loggers of this process appended to the job's log file.

    Without a log file (a Ray Jobs API job, whose output Ray keeps) the loggers still write to stderr.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._saved: tuple[Any, Any] | None = None
        self._handler: logging.Handler | None = None

    def __enter__(self) -> _CapturedOutput:
        if self.path:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._saved = (sys.stdout, sys.stderr)
            sys.stdout = _Tee(sys.stdout, self.path)  # type: ignore[assignment]
            sys.stderr = _Tee(sys.stderr, self.path)  # type: ignore[assignment]
        root = logging.getLogger("matih_lite")
        if self.path or not any(isinstance(h, _JobLogHandler) for h in root.handlers):
            self._handler = _JobLogHandler(sys.stderr)
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                                         "%H:%M:%S"))
            root.addHandler(self._handler)
            root.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handler is not None:
            logging.getLogger("matih_lite").removeHandler(self._handler)
            self._handler = None
        if self._saved is not None:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
                stream.close()
            sys.stdout, sys.stderr = self._saved
            self._saved = None


class _JobLogHandler(logging.StreamHandler):
    """The handler a job's process writes the matih_lite loggers with (one per capture)."""


# ---- entrypoints -----------------------------------------------------------------------------------
def load_entrypoint(entrypoint: str, base_dir: str | None) -> Any:
    """The function ``module:function`` names (importing from ``base_dir`` first), or a script runner."""
    if base_dir and base_dir not in sys.path:
        sys.path.insert(0, base_dir)
    if entrypoint.endswith(".py"):
        script = Path(entrypoint)
        if not script.is_absolute() and base_dir:
            script = Path(base_dir) / script
        if not script.is_file():
            raise FileNotFoundError(f"entrypoint script {script} does not exist")

        def run_script() -> None:
            import runpy

            runpy.run_path(str(script), run_name="__main__")

        return run_script
    import importlib

    module_name, _, fn_name = entrypoint.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, fn_name)
    except AttributeError:
        raise AttributeError(f"entrypoint {entrypoint!r}: module {module_name} has no function {fn_name!r}") from None


# ---- models in MLflow's layout -----------------------------------------------------------------------
def model_files(model: Any, flavor: str | None) -> tuple[str, dict[str, bytes]]:
    """(flavor, {relative path: bytes}) for a model saved as MLflow lays it out."""
    import platform

    kind = type(model).__module__.split(".", 1)[0]
    flavor = flavor or {"xgboost": "xgboost", "sklearn": "sklearn", "torch": "pytorch"}.get(kind)
    if flavor is None:
        flavor = "sklearn" if hasattr(model, "fit") and hasattr(model, "predict") else None
    if flavor == "xgboost" and hasattr(model, "save_raw"):
        import xgboost

        mlmodel = ("artifact_path: model\nflavors:\n  xgboost:\n    data: model.json\n    model_format: json\n"
                   f"    xgb_version: {xgboost.__version__}\n")
        return "xgboost", {"model.json": bytes(model.save_raw("json")), "MLmodel": mlmodel.encode()}
    if flavor in ("sklearn", "xgboost"):
        import sklearn

        mlmodel = (
            "artifact_path: model\nflavors:\n  python_function:\n    env:\n      virtualenv: python_env.yaml\n"
            "    loader_module: mlflow.sklearn\n    model_path: model.pkl\n    predict_fn: predict\n"
            f"    python_version: {platform.python_version()}\n  sklearn:\n    code: null\n"
            "    pickled_model: model.pkl\n    serialization_format: pickle\n"
            f"    sklearn_version: {sklearn.__version__}\n")
        return "sklearn", {"model.pkl": pickle.dumps(model), "MLmodel": mlmodel.encode()}
    if flavor == "pytorch":
        import torch

        buffer = io.BytesIO()
        torch.save(model, buffer)
        mlmodel = ("artifact_path: model\nflavors:\n  pytorch:\n    model_data: data\n"
                   f"    pytorch_version: {torch.__version__}\n  python_function:\n    data: data\n"
                   "    loader_module: mlflow.pytorch\n"
                   f"    python_version: {platform.python_version()}\n")
        return "pytorch", {"data/model.pth": buffer.getvalue(), "MLmodel": mlmodel.encode()}
    raise TypeError(f"cannot tell how to save a {type(model).__name__}; pass flavor='sklearn', 'xgboost' or 'pytorch'")


# ---- the session inside a worker ---------------------------------------------------------------------
class WorkerSession:
    """:class:`matih_lite.training.Session` for a Ray Train worker (``mode="train"``) or a Tune trial."""

    def __init__(self, job: Mapping[str, Any], config: dict[str, Any], *, mode: str, trial_id: str | None) -> None:
        self.job = job
        self.config = config
        self.mode = mode
        self.job_id = job["job_id"]
        self.trial_id = trial_id
        self.run_id = job["run_id"]
        if mode == "train":
            import ray.train

            ctx = ray.train.get_context()
            self.world_rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        else:
            self.world_rank, self.world_size = 0, 1
        self._inputs: dict[str, Path] = {}
        self._pointer = self._ray_pointer()
        self.iteration = int(self._pointer["step"]) + 1 if self._pointer else 0
        if self._pointer and self.world_rank == 0:
            log.info("%s resumes from checkpoint %s (step %d)", f"trial {trial_id}" if trial_id else "training",
                     self._pointer["path"], self._pointer["step"])

    @property
    def client(self) -> Any:
        return tracking_client(self.job["tracking"], self.job["tenant"])

    @property
    def area(self) -> str:
        """Where this trial's files go in the job's run (a trial's Train workers share their trial's)."""
        return f"trials/{self.trial_id}" if self.trial_id else ""

    # Ray, by mode --------------------------------------------------------------------------------------
    def _ray(self) -> Any:
        if self.mode == "tune":
            import ray.tune

            return ray.tune
        import ray.train

        return ray.train

    def _ray_pointer(self) -> dict[str, Any] | None:
        found = self._ray().get_checkpoint()
        if found is None:
            return None
        with found.as_directory() as folder:
            pointer = Path(folder) / POINTER_FILE
            return json.loads(pointer.read_text()) if pointer.is_file() else None

    # Session -------------------------------------------------------------------------------------------
    def report(self, metrics: Mapping[str, Any], checkpoint: Any = None) -> None:
        step = self.iteration
        values: dict[str, Any] = {}
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    continue
            values[key] = value
        values[STEP_KEY] = step
        ray_mod = self._ray()
        if checkpoint is not None and self.world_rank == 0:
            pointer = self._save_checkpoint(checkpoint, step)
            with tempfile.TemporaryDirectory(prefix="matih-ckpt-") as folder:
                (Path(folder) / POINTER_FILE).write_text(json.dumps(pointer))
                ray_mod.report(values, checkpoint=ray_mod.Checkpoint.from_directory(folder))
            self._pointer = pointer
        else:
            ray_mod.report(values)
        self.iteration = step + 1

    def _save_checkpoint(self, checkpoint: Any, step: int) -> dict[str, Any]:
        base = "/".join(p for p in (self.area, "checkpoints", f"{step:06d}") if p)
        if self.mode == "train" and not self.trial_id:
            base = f"checkpoints/train/{step:06d}"
        if isinstance(checkpoint, (str, os.PathLike)):
            folder = Path(checkpoint)
            if not folder.is_dir():
                raise NotADirectoryError(f"checkpoint {folder} is not a folder; pass a folder or a dict")
            files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
            for path in files:
                self.client.log_artifact_bytes(self.run_id, f"{base}/{path.relative_to(folder).as_posix()}",
                                               path.read_bytes())
            return {"run_id": self.run_id, "path": base, "step": step, "format": "folder",
                    "files": [p.relative_to(folder).as_posix() for p in files]}
        self.client.log_artifact_bytes(self.run_id, f"{base}/state.pkl", pickle.dumps(checkpoint))
        return {"run_id": self.run_id, "path": base, "step": step, "format": "pickle", "files": ["state.pkl"]}

    def get_checkpoint(self) -> Any:
        pointer = self._ray_pointer() or self._pointer
        if pointer is None:
            return None
        client = self.client
        if pointer["format"] == "pickle":
            return pickle.loads(client.read_artifact(pointer["run_id"], f"{pointer['path']}/state.pkl"))
        target = Path(tempfile.mkdtemp(prefix="matih-restore-"))
        for rel in pointer["files"]:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(client.read_artifact(pointer["run_id"], f"{pointer['path']}/{rel}"))
        return target

    def log_model(self, model: Any, flavor: str | None, path: str) -> str:
        dest = "/".join(p for p in (self.area, path.strip("/")) if p)
        if self.world_rank != 0:
            return dest
        _, files = model_files(model, flavor)
        for rel, data in files.items():
            self.client.log_artifact_bytes(self.run_id, f"{dest}/{rel}", data)
        return dest

    def input_path(self, name: str) -> Path:
        if name in self._inputs:
            return self._inputs[name]
        inputs = self.job["spec"].get("inputs") or {}
        if name not in inputs:
            raise KeyError(f"the spec has no input {name!r}; it has: {', '.join(inputs) or 'none'}")
        uri = inputs[name]
        if uri.startswith("runs:/"):
            run_id, _, rel = uri[len("runs:/"):].partition("/")
            rel = rel.removeprefix("artifacts/")
            folder = Path(tempfile.gettempdir()) / "matih-inputs" / self.job_id / name
            folder.mkdir(parents=True, exist_ok=True)
            local = folder / Path(rel).name
            if not local.exists():
                data = self.client.read_artifact(run_id, rel)
                tmp = local.with_suffix(local.suffix + f".{os.getpid()}.part")
                tmp.write_bytes(data)
                os.replace(tmp, local)
        else:
            local = Path(uri.removeprefix("file://"))
            if not local.is_absolute() and self.job["spec"].get("base_dir"):
                local = Path(self.job["spec"]["base_dir"]) / local
        self._inputs[name] = local
        return local


def _run_entrypoint(job: Mapping[str, Any], make_session: Callable[[], WorkerSession]) -> None:
    with _CapturedOutput(job.get("log_path")):
        session = make_session()
        training.install(session)
        training.use(session)
        try:
            fn = load_entrypoint(job["spec"]["entrypoint"], job["spec"].get("base_dir"))
            training.call_entrypoint(fn, session.config)
        finally:
            training.use(None)
            training.install(None)


def tune_trial(config: dict[str, Any], job: Mapping[str, Any]) -> None:
    """The Ray Tune function trainable: one trial of the entrypoint."""
    import ray.tune

    trial_id = ray.tune.get_context().get_trial_id()
    _run_entrypoint(job, lambda: WorkerSession(job, {**job["spec"].get("params", {}), **config}, mode="tune",
                                               trial_id=trial_id))


def train_worker(config: dict[str, Any], job: Mapping[str, Any]) -> None:
    """The Ray Train ``train_loop_per_worker``: one worker of the entrypoint (of a trial's, in a tune)."""
    _run_entrypoint(job, lambda: WorkerSession(job, dict(config), mode="train", trial_id=job.get("trial_id")))


def tune_train_trial(config: dict[str, Any], job: Mapping[str, Any]) -> None:
    """A Tune trial that is itself a Ray Train run of ``num_workers`` workers (a data-parallel trial).

    The trial's driver holds no CPU; its trainer's workers hold their own. Rank 0's reports reach
    Tune through Ray's ``TuneReportCallback``, so the trial's run logs them as any trial's.
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    trial_job = {**job, "trial_id": trial_id}
    trainer = _trainer(trial_job, {**job["spec"].get("params", {}), **config}, name=f"job-{job['job_id']}-{trial_id}",
                       storage_path=job["storage_path"], callbacks=[TuneReportCallback()])
    result = trainer.fit()
    if result.error:
        raise result.error


# ---- logging into tracking from the driver -----------------------------------------------------------
def _metric_points(values: Mapping[str, Any], step: int, skip: frozenset[str] = frozenset()) -> list[Metric]:
    now = int(time.time() * 1000)
    points = []
    for key, value in values.items():
        if key in skip or key == STEP_KEY or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        points.append(Metric(key, float(value), now, step))
    return points


def _params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_params(value, f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


class _Sender:
    """One thread sending a trial logger's tracking calls in the order they were made.

    The Tune loop only queues them, so a tracking call that is slow (over HTTP to a busy service) never
    holds a trial back; consecutive metric batches of one run go as one request. The first error is
    kept and raised by :meth:`flush`, so the job still fails when its metrics cannot be stored.
    """

    def __init__(self) -> None:
        import queue

        self._queue: Any = queue.Queue(maxsize=100_000)
        self.error: BaseException | None = None
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name="matih-trial-logger", daemon=True)
        self._thread.start()

    def put(self, item: tuple[Any, ...]) -> None:
        self._queue.put(item)

    def _run(self) -> None:
        import queue

        while True:
            batch = [self._queue.get()]
            while len(batch) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            t0 = time.perf_counter()
            try:
                if self.error is None:
                    _send(batch)
            except BaseException as exc:  # kept for flush(): the job must not end as if its metrics were stored
                self.error = exc
            finally:
                self.busy_s += time.perf_counter() - t0
                for _ in batch:
                    self._queue.task_done()

    def flush(self) -> None:
        self._queue.join()
        if self.error is not None:
            raise self.error


def _send(batch: list[tuple[Any, ...]]) -> None:
    """Run queued calls in order; ``("metrics", fn, run, points)`` items in a row for one run become one call."""
    i = 0
    while i < len(batch):
        item = batch[i]
        if item[0] == "metrics":
            _, log_batch, run_of, points = item
            points = list(points)
            while i + 1 < len(batch) and batch[i + 1][0] == "metrics" and batch[i + 1][2] is run_of:
                points += batch[i + 1][3]
                i += 1
            log_batch(run_of(), metrics=points)
        else:
            item[1]()
        i += 1


class TrialLogger:
    """Tune's trial events as tracking calls: a child run per trial, its params, each iteration's metrics.

    Framework-free so its cost can be measured alone (``scripts/bench/tuning.py``); the Tune
    callback in :func:`tune_callback` forwards to it. ``client()`` returns the tracking client
    (a factory, so Tune can pickle the callback). ``overhead_s`` adds up the time the Tune loop
    spent here. With ``background`` the tracking calls go out on a thread of their own
    (``sending_s`` adds up their time) and :meth:`flush` waits for them.
    """

    def __init__(self, client: Callable[[], Any], experiment_id: str, parent_run_id: str, job_id: str,
                 max_t: int | None, *, background: bool = False) -> None:
        self._connect = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.job_id = job_id
        self.max_t = max_t
        self.background = background
        self.runs: dict[str, str] = {}
        """Each trial's run id, once its run exists (with ``background``: once the sender has made it)."""
        self.trials: set[str] = set()
        self.last_step: dict[str, int] = {}
        self.last_metrics: dict[str, dict[str, float]] = {}
        self.recovered: set[str] = set()
        self.finished: set[str] = set()
        self.failed: set[str] = set()
        self.overhead_s = 0.0
        self.results = 0
        self._sender: _Sender | None = None
        self._run_getters: dict[str, Callable[[], str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_sender"] = None  # a thread does not pickle; Tune pickles its callbacks before any trial starts
        state["_run_getters"] = {}
        return state

    @property
    def client(self) -> Any:
        return self._connect()

    @property
    def sending_s(self) -> float:
        return self._sender.busy_s if self._sender is not None else 0.0

    def _do(self, fn: Callable[[], Any]) -> None:
        if not self.background:
            fn()
            return
        if self._sender is None:
            self._sender = _Sender()
        self._sender.put(("call", fn))

    def _log_metrics(self, trial_id: str, points: list[Metric]) -> None:
        if not self.background:
            self.client.log_batch(self.runs[trial_id], metrics=points)
            return
        if self._sender is None:
            self._sender = _Sender()
        self._sender.put(("metrics", self._send_metrics, self._run_of(trial_id), points))

    def _send_metrics(self, run_id: str, *, metrics: list[Metric]) -> None:
        self.client.log_batch(run_id, metrics=metrics)

    def _run_of(self, trial_id: str) -> Callable[[], str]:
        """The trial's run id, looked up when the sender gets to it (its run is made by an earlier call)."""
        found = self._run_getters.get(trial_id)
        if found is None:
            found = self._run_getters[trial_id] = lambda: self.runs[trial_id]
        return found

    def flush(self) -> None:
        """Wait until every tracking call was made; raises the first one that failed."""
        if self._sender is not None:
            self._sender.flush()

    def started(self, trial_id: str, config: Mapping[str, Any]) -> None:
        t0 = time.perf_counter()
        if trial_id not in self.trials:
            self.trials.add(trial_id)
            params = _params(config)

            def create() -> None:
                run = self.client.create_run(self.experiment_id, name=f"trial-{trial_id}",
                                             parent_run_id=self.parent_run_id,
                                             tags={TRIAL_TAG: trial_id, JOB_TAG: self.job_id})
                self.runs[trial_id] = run.run_id
                if params:
                    self.client.log_batch(run.run_id, params=params)

            self._do(create)
        elif trial_id in self.finished:  # ASHA/HyperBand resumed a paused trial
            self.finished.discard(trial_id)
            self._do(lambda: self.client.update_run(self.runs[trial_id], status="RUNNING"))
        self.overhead_s += time.perf_counter() - t0

    def result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        t0 = time.perf_counter()
        step = int(result.get(STEP_KEY, result.get("training_iteration", 1) - 1))
        last = self.last_step.get(trial_id, -1)
        # After a failure the trial restarts from its checkpoint: steps it reported before the
        # failure stay as logged, so the run shows one history (PBT's jumps are kept as they come).
        if trial_id in self.trials and not (trial_id in self.recovered and step <= last):
            points = _metric_points(result, step, _TUNE_BOOKKEEPING)
            if points:
                self._log_metrics(trial_id, points)
                self.last_metrics[trial_id] = {p.key: p.value for p in points}
            self.last_step[trial_id] = max(step, last)
            self.results += 1
        self.overhead_s += time.perf_counter() - t0

    def recovering(self, trial_id: str) -> None:
        self.recovered.add(trial_id)

    def completed(self, trial_id: str, iterations: int | None, failed: bool = False) -> None:
        t0 = time.perf_counter()
        if trial_id in self.trials and trial_id not in self.finished:
            tags = {"matih.iterations": str(iterations or 0)}
            if self.max_t and iterations is not None and iterations < self.max_t and not failed:
                tags["matih.stopped_early"] = "true"

            def end() -> None:
                self.client.set_tags(self.runs[trial_id], tags)
                self.client.end_run(self.runs[trial_id], "FAILED" if failed else "FINISHED")

            self._do(end)
            self.finished.add(trial_id)
        if failed:
            self.failed.add(trial_id)
        self.overhead_s += time.perf_counter() - t0


def tune_callback(logger: TrialLogger) -> Any:
    """A :class:`ray.tune.Callback` forwarding trial events to ``logger`` (and the job's log)."""
    from ray.tune import Callback

    class TrackingCallback(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            logger.started(trial.trial_id, trial.config)
            log.info("trial %s started: %s", trial.trial_id, json.dumps(trial.config, default=str, sort_keys=True))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            logger.result(trial.trial_id, result)

        def on_trial_recover(self, iteration, trials, trial, **info):
            logger.recovering(trial.trial_id)
            log.warning("trial %s failed; retrying from its last checkpoint", trial.trial_id)

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            logger.completed(trial.trial_id, last.get("training_iteration"))
            log.info("trial %s finished after %s iterations", trial.trial_id, last.get("training_iteration"))

        def on_trial_error(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            logger.completed(trial.trial_id, last.get("training_iteration"), failed=True)
            log.error("trial %s failed", trial.trial_id)

    return TrackingCallback()


class TrainLogger:
    """Ray Train's reports (rank 0's) streamed into the job's run, from the Train controller."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        self.job = dict(job)
        self.last_step = -1
        self.restarts = 0

    def reported(self, metrics: Mapping[str, Any]) -> None:
        step = int(metrics.get(STEP_KEY, self.last_step + 1))
        if step <= self.last_step:
            return  # re-run after a restart: already in the run's history
        points = _metric_points(metrics, step)
        if points:
            tracking_client(self.job["tracking"], self.job["tenant"]).log_batch(self.job["run_id"], metrics=points)
        self.last_step = step

    def failed(self, errors: Mapping[int, Exception]) -> None:
        self.restarts += 1
        tracking_client(self.job["tracking"], self.job["tenant"]).set_tag(self.job["run_id"], "matih.worker_failures",
                                                                          str(self.restarts))
        lines = "".join(f"worker {rank} failed: {type(exc).__name__}: {exc}\n" for rank, exc in errors.items())
        if self.job.get("log_path"):
            with open(self.job["log_path"], "a", encoding="utf-8") as out:
                out.write(lines)
        else:  # a Jobs API job: this process's output reaches the job's log through Ray
            sys.stderr.write(lines)
            sys.stderr.flush()


def train_callback(logger: TrainLogger) -> Any:
    from ray.train import UserCallback

    class TrackingCallback(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics:
                logger.reported(metrics[0])

        def after_exception(self, run_context, worker_exceptions):
            logger.failed(worker_exceptions)

    return TrackingCallback()


# ---- the driver --------------------------------------------------------------------------------------
def run_job(request: Mapping[str, Any], *, storage_path: str, log_path: str | None = None) -> dict[str, Any]:
    """Run a job to the end in this process (a Ray driver); returns a summary. Raises when it fails."""
    job = {**request, "log_path": log_path}
    with _CapturedOutput(log_path):
        log.info("job %s (%s) starting: %s", request["job_id"], request["kind"], request["spec"].get("entrypoint"))
        client = tracking_client(request["tracking"], request["tenant"])
        try:
            if request["kind"] == "tune":
                summary = run_tune(job, client, storage_path)
            else:
                summary = run_train(job, client, storage_path)
        except BaseException as exc:
            log.error("job %s failed: %s: %s", request["job_id"], type(exc).__name__, exc)
            raise
        log.info("job %s finished: %s", request["job_id"], json.dumps(summary, default=str, sort_keys=True))
        return summary


def _resources(spec: Mapping[str, Any]) -> dict[str, float]:
    r = spec.get("resources") or {}
    out = {"CPU": float(r.get("cpus", 1.0)), "GPU": float(r.get("gpus", 0.0))}
    if r.get("memory"):
        out["memory"] = float(r["memory"])
    return out


def _trainer(job: Mapping[str, Any], config: dict[str, Any], *, name: str, storage_path: str,
             callbacks: list[Any]) -> Any:
    """The spec's Ray Train trainer: ``num_workers`` workers of the spec's resources, ``max_failures`` restarts."""
    import ray.train

    spec = job["spec"]
    framework = spec.get("framework", "custom")
    resources = _resources(spec)
    scaling = ray.train.ScalingConfig(num_workers=int(spec.get("resources", {}).get("num_workers", 1)),
                                      use_gpu=resources["GPU"] > 0, resources_per_worker=resources)
    run_config = ray.train.RunConfig(
        name=name, storage_path=storage_path,
        failure_config=ray.train.FailureConfig(max_failures=int(spec.get("max_failures", 0))), callbacks=callbacks)
    loop = functools.partial(train_worker, job=dict(job))
    kwargs = {"train_loop_config": config, "scaling_config": scaling, "run_config": run_config}
    if framework == "pytorch":
        from ray.train.torch import TorchConfig, TorchTrainer

        return TorchTrainer(loop, torch_config=TorchConfig(backend="nccl" if resources["GPU"] > 0 else "gloo"),
                            **kwargs)
    if framework == "xgboost":
        from ray.train.xgboost import XGBoostTrainer

        return XGBoostTrainer(loop, **kwargs)
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    return DataParallelTrainer(loop, **kwargs)


def run_train(job: Mapping[str, Any], client: Any, storage_path: str) -> dict[str, Any]:
    """Ray Train: ``num_workers`` workers, ``max_failures`` restarts, reports streamed into the job's run."""
    spec = job["spec"]
    logger = TrainLogger(job)
    trainer = _trainer(job, dict(spec.get("params", {})), name=f"job-{job['job_id']}", storage_path=storage_path,
                       callbacks=[train_callback(logger)])
    log.info("training with %s (%d workers, max_failures %s)", type(trainer).__name__,
             trainer.scaling_config.num_workers, spec.get("max_failures", 0))
    result = trainer.fit()
    if result.error:
        raise result.error
    # The callback ran in the Train controller: what it counted is in the run's tags and metrics.
    summary: dict[str, Any] = {}
    if _has_model(client, job["run_id"], "model"):
        client.set_tag(job["run_id"], MODEL_PATH_TAG, "model")
        summary["model"] = f"runs:/{job['run_id']}/model"
    return summary


def search_space(tune_spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's ``[tune.space]`` as Ray Tune domains (``randint`` includes its upper bound)."""
    from ray import tune

    space: dict[str, Any] = {}
    grid_search = tune_spec.get("search") == "grid"
    for name, dist in tune_spec["space"].items():
        (kind, args), = dist.items()
        if kind == "uniform":
            space[name] = tune.uniform(*args)
        elif kind == "loguniform":
            space[name] = tune.loguniform(*args)
        elif kind == "randint":
            space[name] = tune.randint(int(args[0]), int(args[1]) + 1)
        elif kind == "grid" or (kind == "choice" and grid_search):
            space[name] = tune.grid_search(list(args))
        else:
            space[name] = tune.choice(list(args))
    return space


def search_algorithm(tune_spec: Mapping[str, Any]) -> Any:
    """None (Tune's random/grid variant generator) or Optuna's TPE sampler."""
    if tune_spec.get("search") != "optuna":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    seed = tune_spec.get("seed")
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed), seed=seed)


def scheduler(tune_spec: Mapping[str, Any]) -> Any:
    """ASHA, HyperBand or PBT over ``training_iteration`` (one per report); None for FIFO."""
    from ray.tune import schedulers

    kind = tune_spec.get("scheduler", "fifo")
    # One more than the spec's max_t: a trial reaching max_t then ends by itself, so the lines
    # after its last report (log_model) still run; Tune stops a trial at the scheduler's max_t.
    max_t = int(tune_spec.get("max_t", 100)) + 1
    if kind == "asha":
        return schedulers.ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                                        grace_period=int(tune_spec.get("grace_period", 1)),
                                        reduction_factor=float(tune_spec.get("reduction_factor", 3.0)))
    if kind == "hyperband":
        return schedulers.HyperBandScheduler(time_attr="training_iteration", max_t=max_t,
                                             reduction_factor=float(tune_spec.get("reduction_factor", 3.0)))
    if kind == "pbt":
        return schedulers.PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=int(tune_spec.get("perturbation_interval", 2)),
            hyperparam_mutations=search_space({**tune_spec, "search": "random"}),
            synch=bool(tune_spec.get("synch", False)))
    return None


def run_tune(job: Mapping[str, Any], client: Any, storage_path: str) -> dict[str, Any]:
    """Ray Tune over the spec's space; each trial a child run; the best one marked on the job's run."""
    # Tune's own CSV, JSON and TensorBoard result files duplicate what goes into tracking, and the
    # TensorBoard one imports tensorboardX, hence torch, into every driver (where its late load has
    # failed with "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so").
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    from ray import tune

    spec = job["spec"]
    t = spec["tune"]
    parent = client.get_run(job["run_id"])
    connect = functools.partial(tracking_client, dict(job["tracking"]), job["tenant"])
    # The tracking calls go out on a thread of their own: over HTTP to a busy service they would otherwise
    # hold the Tune loop (and every trial waiting on it) for each call.
    logger = TrialLogger(connect, parent.experiment_id, parent.run_id, job["job_id"],
                         int(t.get("max_t", 100)) if t.get("scheduler") in ("asha", "hyperband") else None,
                         background=True)
    workers = int((spec.get("resources") or {}).get("num_workers", 1))
    if workers > 1:
        # Each trial is a Ray Train run: its workers hold the CPUs and GPUs; its driver a token of
        # memory only (Tune refuses a trial with no resources, and a CPU would starve the workers).
        trainable = tune.with_resources(tune.with_parameters(tune_train_trial, job={**job, "storage_path": storage_path}),
                                        {"cpu": 0, "memory": 1})
    else:
        trainable = tune.with_resources(tune.with_parameters(tune_trial, job=dict(job)),
                                        {k.lower(): v for k, v in _resources(spec).items() if v})
    num_samples = t.get("num_samples") or (1 if t.get("search") == "grid" else 10)
    tune_config = tune.TuneConfig(
        metric=t["metric"], mode=t["mode"], num_samples=int(num_samples), search_alg=search_algorithm(t),
        scheduler=scheduler(t), max_concurrent_trials=t.get("max_concurrent"),
        reuse_actors=True, time_budget_s=t.get("time_budget_s"))
    run_config = tune.RunConfig(name=f"job-{job['job_id']}", storage_path=storage_path, verbose=0,
                                callbacks=[tune_callback(logger)],
                                # A data-parallel trial restarts its failed workers itself (its trainer's max_failures).
        failure_config=tune.FailureConfig(max_failures=0 if workers > 1 else int(spec.get("max_failures", 0))))
    log.info("tuning: search %s, scheduler %s, %s trials, %s at once", type(tune_config.search_alg).__name__
             if tune_config.search_alg else "random/grid (BasicVariantGenerator)",
             type(tune_config.scheduler).__name__ if tune_config.scheduler else "FIFO", num_samples,
             tune_config.max_concurrent_trials or "as many as fit")
    started = time.perf_counter()
    try:
        results = tune.Tuner(trainable, param_space=search_space(t), tune_config=tune_config,
                             run_config=run_config).fit()
    finally:
        logger.flush()
    elapsed = time.perf_counter() - started
    trials = len(logger.runs)
    summary: dict[str, Any] = {"trials": trials, "results": logger.results, "seconds": round(elapsed, 3),
                               "overhead_ms_per_trial": round(1000 * logger.overhead_s / max(trials, 1), 3),
                               "tracking_ms_per_trial": round(1000 * logger.sending_s / max(trials, 1), 3)}
    best = _best(logger, t["metric"], t["mode"])
    now_ms = int(time.time() * 1000)
    client.log_batch(parent.run_id, metrics=[
        Metric("matih.overhead_ms_per_trial", summary["overhead_ms_per_trial"], now_ms, 0),
        Metric("matih.tracking_ms_per_trial", summary["tracking_ms_per_trial"], now_ms, 0)],
        tags={"matih.trials": str(trials)})
    if logger.failed:
        summary["failed_trials"] = len(logger.failed)
    if best is None:
        errors = [_short_error(r.error) for r in results if r.error][:3]
        if errors:
            raise RuntimeError(f"every trial failed ({len(logger.failed)} of {trials}); first: {errors[0]}")
        raise RuntimeError(f"no trial reported {t['metric']!r}; check that the entrypoint reports it")
    trial_id, value = best
    if not _has_model(client, parent.run_id, f"trials/{trial_id}/model"):
        # A trial a scheduler stopped early (ASHA) never reached the entrypoint's log_model: the best of those
        # that did is the one to keep and register, when there is one.
        kept = _best(logger, t["metric"], t["mode"],
                     among=lambda trial: _has_model(client, parent.run_id, f"trials/{trial}/model"))
        if kept is not None:
            trial_id, value = kept
    best_run = logger.runs[trial_id]
    tags = {BEST_RUN_TAG: best_run, BEST_TRIAL_TAG: trial_id}
    client.set_tag(best_run, "matih.best", "true")
    if _has_model(client, parent.run_id, f"trials/{trial_id}/model"):
        _copy_folder(client, parent.run_id, f"trials/{trial_id}/model", best_run, "model")
        client.set_tag(best_run, MODEL_PATH_TAG, "model")
        tags[MODEL_PATH_TAG] = "model"
        summary["model"] = f"runs:/{best_run}/model"
    best_metrics = logger.last_metrics.get(trial_id, {})
    now = int(time.time() * 1000)
    client.log_batch(parent.run_id, tags=tags,
                     metrics=[Metric(k, v, now, 0) for k, v in best_metrics.items()])
    summary.update(best_run_id=best_run, best_trial_id=trial_id, best_value=value, best_metrics=best_metrics)
    log.info("best trial %s: %s = %s", trial_id, t["metric"], value)
    return summary


def _short_error(error: Any) -> str:
    """A trial's error in one line: the user's exception, not Ray's wrapping of it."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:1000]


def _best(logger: TrialLogger, metric: str, mode: str,
          among: Callable[[str], bool] | None = None) -> tuple[str, float] | None:
    """The finished trial whose last reported ``metric`` is best (as Tune's ``scope="last"``), of those
    ``among`` accepts when given."""
    found = [(m[metric], trial) for trial, m in logger.last_metrics.items()
             if metric in m and not math.isnan(m[metric]) and trial not in logger.failed
             and (among is None or among(trial))]
    if not found:
        return None
    value, trial = (min if mode == "min" else max)(found)
    return trial, value


def _has_model(client: Any, run_id: str, path: str) -> bool:
    try:
        return any(i.path.endswith("MLmodel") for i in client.list_artifacts(run_id, path))
    except Exception:
        return False


def _copy_folder(client: Any, run_id: str, path: str, to_run: str, to_path: str) -> None:
    for info in client.list_artifacts(run_id, path, recursive=True):
        if info.is_dir:
            continue
        rel = info.path[len(path):].lstrip("/")
        client.log_artifact_bytes(to_run, f"{to_path}/{rel}", client.read_artifact(run_id, info.path))
