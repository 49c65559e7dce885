"""Tracking rules written once, whatever backend keeps the records.

Limits follow MLflow's so that code written for MLflow behaves the same here: keys up to 250
characters, param values up to 6,000, tag values up to 8,000, and a batch of at most 1,000
metrics, 100 params and 100 tags.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from matih_lite.contracts import ArtifactInfo, Experiment, Metric, Page, Run
from matih_lite.contracts.artifacts import clean_path
from matih_lite.contracts.clock import check_ms, now_ms
from matih_lite.contracts.records import RUN_STATUSES, TERMINAL_STATUSES
from matih_lite.contracts.search import OrderBy, RunFilter, parse_filter, parse_order_by
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.events import PlatformEvent
from matih_lite.tracking.names import random_run_name

if TYPE_CHECKING:
    from matih_lite.host import Host


MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
MAX_BATCH_TOTAL = 1000
MAX_NAME = 500
MAX_RESULTS = 50_000

RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"
USER_TAG = "mlflow.user"
_KEY = re.compile(r"^[\w\-./ :]+$")


def check_key(key: Any, what: str) -> str:
    """A metric, param or tag key as MLflow allows them, or InvalidInput saying why not."""
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"{what} key must be a non-empty string")
    if len(key) > MAX_KEY:
        raise InvalidInput(f"{what} key {key[:40]!r}... is {len(key)} characters; the limit is {MAX_KEY}")
    if not _KEY.match(key) or key.startswith("/") or ".." in key.split("/"):
        raise InvalidInput(f"invalid {what} key {key!r}: use letters, digits, '_', '-', '.', ' ', ':' and '/' "
                           "(no '..' segments, no leading '/')")
    return key


def check_value(value: Any, limit: int, what: str, key: str) -> str:
    if value is None:
        raise InvalidInput(f"{what} {key!r} has no value")
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        raise InvalidInput(f"{what} {key!r} is {len(text)} characters long; the limit is {limit}")
    return text


def to_metric(key: str, value: Any, timestamp: Any = None, step: Any = 0) -> Metric:
    """A checked metric point: NaN and +-inf are kept; anything not a number is refused."""
    check_key(key, "metric")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"metric {key!r} must be a number, got {value!r}") from None
    try:
        step_i = int(step or 0)
        ts = int(timestamp) if timestamp is not None else now_ms()
    except (TypeError, ValueError):
        raise InvalidInput(f"metric {key!r}: step and timestamp must be integers") from None
    if not (-(2**63) <= step_i < 2**63 and 0 <= ts < 2**63):
        raise InvalidInput(f"metric {key!r}: step or timestamp out of range")
    return Metric(key, float(value), ts, step_i)


class Tracking:
    """Experiments, runs and their artifacts for one platform (a :class:`~matih_lite.host.Host`)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @property
    def store(self) -> Any:
        return self.host.metadata

    @property
    def artifacts(self) -> Any:
        return self.host.artifacts

    # ---- experiments ----------------------------------------------------------------------------
    def create_experiment(self, tenant: str, name: str, *, description: str = "",
                          tags: Mapping[str, str] | None = None, artifact_location: str = "") -> Experiment:
        name = self._name(name, "experiment")
        tags = {check_key(k, "tag"): check_value(v, MAX_TAG_VALUE, "tag", k) for k, v in (tags or {}).items()}
        exp = self.store.create_experiment(tenant, name, description=description or "", tags=tags,
                                           artifact_location=artifact_location)
        self.host.emit(PlatformEvent("experiment.created", exp.experiment_id, tenant, {"name": name}))
        return exp

    def get_or_create_experiment(self, tenant: str, name: str) -> Experiment:
        try:
            return self.store.get_experiment_by_name(tenant, name)
        except NotFound:
            from matih_lite.errors import Conflict

            try:
                return self.create_experiment(tenant, name)
            except Conflict:  # created by someone else meanwhile
                return self.store.get_experiment_by_name(tenant, name)

    def get_experiment(self, tenant: str, experiment_id: str) -> Experiment:
        return self.store.get_experiment(tenant, str(experiment_id))

    def get_experiment_by_name(self, tenant: str, name: str) -> Experiment:
        return self.store.get_experiment_by_name(tenant, name)

    def search_experiments(self, tenant: str, *, lifecycle: str = "active", name_like: str | None = None,
                           max_results: int = 1000, page_token: str | None = None) -> Page[Experiment]:
        if lifecycle not in ("active", "deleted", "all"):
            raise InvalidInput(f"lifecycle must be active, deleted or all, not {lifecycle!r}")
        return self.store.search_experiments(tenant, lifecycle=lifecycle, name_like=name_like,
                                             max_results=self._max(max_results), page_token=page_token)

    def update_experiment(self, tenant: str, experiment_id: str, *, name: str | None = None,
                          description: str | None = None) -> Experiment:
        if name is not None:
            name = self._name(name, "experiment")
        return self.store.update_experiment(tenant, str(experiment_id), name=name, description=description)

    def delete_experiment(self, tenant: str, experiment_id: str) -> Experiment:
        exp = self.store.update_experiment(tenant, str(experiment_id), lifecycle_stage="deleted")
        self.host.emit(PlatformEvent("experiment.deleted", exp.experiment_id, tenant))
        return exp

    def restore_experiment(self, tenant: str, experiment_id: str) -> Experiment:
        return self.store.update_experiment(tenant, str(experiment_id), lifecycle_stage="active")

    def set_experiment_tags(self, tenant: str, experiment_id: str, tags: Mapping[str, str]) -> None:
        tags = {check_key(k, "tag"): check_value(v, MAX_TAG_VALUE, "tag", k) for k, v in tags.items()}
        self.store.set_experiment_tags(tenant, str(experiment_id), tags)

    # ---- runs -----------------------------------------------------------------------------------
    def create_run(self, tenant: str, experiment_id: str, *, name: str | None = None, user_id: str = "",
                   start_time: int | None = None, parent_run_id: str | None = None,
                   tags: Mapping[str, str] | None = None) -> Run:
        check_ms(start_time, "start_time")
        tags = {check_key(k, "tag"): check_value(v, MAX_TAG_VALUE, "tag", k) for k, v in (tags or {}).items()}
        name = name or tags.get(RUN_NAME_TAG) or random_run_name()
        name = self._name(name, "run")
        parent_run_id = parent_run_id or tags.get(PARENT_TAG) or None
        tags[RUN_NAME_TAG] = name
        if user_id:
            tags.setdefault(USER_TAG, user_id)
        if parent_run_id:
            tags[PARENT_TAG] = parent_run_id
        run_id = uuid.uuid4().hex
        experiment_id = str(experiment_id)
        run = self.store.create_run(
            tenant, experiment_id, run_id=run_id, name=name, start_time=start_time or now_ms(), user_id=user_id,
            parent_run_id=parent_run_id, artifact_uri=f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
            tags=tags)
        self.host.emit(PlatformEvent("run.started", run_id, tenant, {"experiment_id": experiment_id, "name": name}))
        return run

    def get_run(self, tenant: str, run_id: str) -> Run:
        return self.store.get_run(tenant, run_id)

    def update_run(self, tenant: str, run_id: str, *, status: str | None = None, end_time: int | None = None,
                   name: str | None = None) -> Run:
        check_ms(end_time, "end_time")
        if status is not None and status not in RUN_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
        if name is not None:
            name = self._name(name, "run")
        if status in TERMINAL_STATUSES and end_time is None:
            end_time = now_ms()
        run = self.store.update_run(tenant, run_id, status=status, end_time=end_time, name=name)
        if name is not None:
            self.store.log_batch(tenant, run_id, tags={RUN_NAME_TAG: name})
        if status in TERMINAL_STATUSES:
            self.host.emit(PlatformEvent(f"run.{status.lower()}", run_id, tenant,
                                         {"experiment_id": run.experiment_id, "name": run.name}))
        return run

    def end_run(self, tenant: str, run_id: str, status: str = "FINISHED") -> Run:
        return self.update_run(tenant, run_id, status=status)

    def delete_run(self, tenant: str, run_id: str) -> Run:
        return self.store.update_run(tenant, run_id, lifecycle_stage="deleted")

    def restore_run(self, tenant: str, run_id: str) -> Run:
        return self.store.update_run(tenant, run_id, lifecycle_stage="active")

    def log_batch(self, tenant: str, run_id: str, *, metrics: Iterable[Metric | Mapping[str, Any]] = (),
                  params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> None:
        """Check and store a batch: all of it or none of it."""
        points = [m if isinstance(m, Metric) else to_metric(m.get("key"), m.get("value"), m.get("timestamp"),
                                                            m.get("step", 0)) for m in metrics]
        params = dict(params or {})
        tags = dict(tags or {})
        if len(points) > MAX_BATCH_METRICS or len(params) > MAX_BATCH_PARAMS or len(tags) > MAX_BATCH_TAGS or \
                len(points) + len(params) + len(tags) > MAX_BATCH_TOTAL:
            raise InvalidInput(f"a batch holds at most {MAX_BATCH_METRICS} metrics, {MAX_BATCH_PARAMS} params, "
                               f"{MAX_BATCH_TAGS} tags and {MAX_BATCH_TOTAL} items in all; got {len(points)}, "
                               f"{len(params)}, {len(tags)}")
        for m in points:
            check_key(m.key, "metric")
        clean_params = {check_key(k, "param"): check_value(v, MAX_PARAM_VALUE, "param", k) for k, v in params.items()}
        clean_tags = {check_key(k, "tag"): check_value(v, MAX_TAG_VALUE, "tag", k) for k, v in tags.items()}
        if not (points or clean_params or clean_tags):
            self.store.get_run(tenant, run_id)  # an empty batch still checks the run exists
            return
        self.store.log_batch(tenant, run_id, metrics=points, params=clean_params, tags=clean_tags)

    def log_points(self, tenant: str, run_id: str, points: Sequence[Metric]) -> None:
        """Metrics only, any number: split into batches of the store's limit."""
        for i in range(0, len(points), MAX_BATCH_METRICS):
            self.store.log_batch(tenant, run_id, metrics=points[i:i + MAX_BATCH_METRICS])

    def delete_tag(self, tenant: str, run_id: str, key: str) -> None:
        self.store.delete_tag(tenant, run_id, key)

    def metric_history(self, tenant: str, run_id: str, key: str, *, max_results: int | None = None,
                       page_token: str | None = None) -> Page[Metric]:
        return self.store.get_metric_history(tenant, run_id, key, max_results=max_results, page_token=page_token)

    def search_runs(self, tenant: str, experiment_ids: Sequence[str], *, filter: str | RunFilter | None = None,
                    order_by: str | Sequence[str] | Sequence[OrderBy] | None = None, lifecycle: str = "active",
                    max_results: int = 1000, page_token: str | None = None,
                    columns: Sequence[str] | None = None) -> Page[Run]:
        """Runs in the experiments matching an MLflow-style filter string (parsed, never pasted into SQL)."""
        parsed = filter if isinstance(filter, RunFilter) else parse_filter(filter)
        if order_by and not isinstance(order_by, str) and all(isinstance(o, OrderBy) for o in order_by):
            orders = tuple(order_by)  # type: ignore[arg-type]
        else:
            orders = parse_order_by(order_by)  # type: ignore[arg-type]
        if lifecycle not in ("active", "deleted", "all"):
            raise InvalidInput(f"lifecycle must be active, deleted or all, not {lifecycle!r}")
        return self.store.search_runs(tenant, [str(e) for e in experiment_ids], filter=parsed, order_by=orders,
                                      lifecycle=lifecycle, max_results=self._max(max_results),
                                      page_token=page_token, columns=columns)

    def compare_runs(self, tenant: str, run_ids: Sequence[str]) -> dict[str, Any]:
        """Params and metrics side by side, which values differ, and the best run for each metric.

        "Best" is the highest value unless the key looks like a loss or an error (``loss``,
        ``error``, ``rmse``, ``mae``, ``mse``, ``latency``...), where lower wins.
        """
        if not run_ids:
            raise InvalidInput("give at least one run id to compare")
        runs = [self.get_run(tenant, r) for r in run_ids]
        param_keys = sorted({k for r in runs for k in r.params})
        metric_keys = sorted({k for r in runs for k in r.metrics})
        params = {}
        for k in param_keys:
            values = [r.params.get(k) for r in runs]
            params[k] = {"values": values, "differs": len(set(values)) > 1}
        metrics = {}
        for k in metric_keys:
            values = [r.metrics[k].value if k in r.metrics else None for r in runs]
            finite = [(v, i) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
            lower = lower_is_better(k)
            best = (min(finite) if lower else max(finite))[1] if finite else None
            metrics[k] = {"values": values, "differs": len({v for v in values if v is None or not math.isnan(v)}) > 1,
                          "best": runs[best].run_id if best is not None else None,
                          "goal": "min" if lower else "max"}
        return {"runs": [{"run_id": r.run_id, "name": r.name, "status": r.status, "experiment_id": r.experiment_id,
                          "start_time": r.start_time, "end_time": r.end_time} for r in runs],
                "params": params, "metrics": metrics}

    # ---- artifacts ------------------------------------------------------------------------------
    def _artifact_root(self, tenant: str, run_id: str) -> tuple[Run, str]:
        run = self.get_run(tenant, run_id)
        return run, f"{tenant}/{run.experiment_id}/{run.run_id}/artifacts"

    def log_artifact(self, tenant: str, run_id: str, path: str, data: bytes | BinaryIO) -> ArtifactInfo:
        run, root = self._artifact_root(tenant, run_id)
        if run.lifecycle_stage != "active":
            from matih_lite.errors import Conflict

            raise Conflict(f"run {run_id!r} is deleted; restore it before writing to it")
        rel = clean_path(path)
        info = self.artifacts.put(f"{root}/{rel}", data)
        return ArtifactInfo(rel, info.size, info.sha256)

    def list_artifacts(self, tenant: str, run_id: str, path: str = "", recursive: bool = False) -> list[ArtifactInfo]:
        _, root = self._artifact_root(tenant, run_id)
        rel = clean_path(path, allow_root=True)
        prefix = f"{root}/{rel}" if rel else root
        cut = len(root) + 1
        return [ArtifactInfo(i.path[cut:], i.size, i.sha256, i.is_dir)
                for i in self.artifacts.list(prefix, recursive=recursive)]

    def open_artifact(self, tenant: str, run_id: str, path: str) -> BinaryIO:
        _, root = self._artifact_root(tenant, run_id)
        return self.artifacts.open(f"{root}/{clean_path(path)}")

    def stat_artifact(self, tenant: str, run_id: str, path: str) -> ArtifactInfo:
        _, root = self._artifact_root(tenant, run_id)
        rel = clean_path(path)
        info = self.artifacts.stat(f"{root}/{rel}")
        return ArtifactInfo(rel, info.size, info.sha256, info.is_dir)

    def delete_artifacts(self, tenant: str, run_id: str, path: str = "") -> int:
        _, root = self._artifact_root(tenant, run_id)
        rel = clean_path(path, allow_root=True)
        return self.artifacts.delete(f"{root}/{rel}" if rel else root)

    # ---- environments ---------------------------------------------------------------------------
    def store_environment(self, tenant: str, text: str) -> str:
        """Keep a package list once per distinct content; returns its sha256 (runs tag it).

        A thousand runs from one virtualenv share one file instead of writing a thousand copies.
        """
        import hashlib

        data = text.encode("utf-8")
        if len(data) > 8 << 20:
            raise InvalidInput("an environment description is limited to 8 MiB")
        sha = hashlib.sha256(data).hexdigest()
        path = f"{tenant}/_environments/{sha}.txt"
        try:
            self.artifacts.stat(path)
        except NotFound:
            self.artifacts.put(path, data)
        return sha

    def read_environment(self, tenant: str, sha: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", sha or ""):
            raise NotFound(f"environment {sha!r} does not exist")
        return self.artifacts.get(f"{tenant}/_environments/{sha}.txt").decode("utf-8")

    # ---- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _name(name: Any, what: str) -> str:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput(f"{what} name must be a non-empty string")
        if len(name) > MAX_NAME:
            raise InvalidInput(f"{what} name is {len(name)} characters; the limit is {MAX_NAME}")
        return name

    @staticmethod
    def _max(n: int) -> int:
        if not isinstance(n, int) or n < 1 or n > MAX_RESULTS:
            raise InvalidInput(f"max_results must be between 1 and {MAX_RESULTS}, got {n!r}")
        return n


_LOWER_IS_BETTER = re.compile(r"(loss|error|err$|rmse|mae|mse|mape|latency|logloss|perplexity|_time|duration)",
                              re.IGNORECASE)


def lower_is_better(metric_key: str) -> bool:
    return bool(_LOWER_IS_BETTER.search(metric_key))
