"""The tracking client: one :class:`Client`, two transports that behave the same.

* **embedded**: a :class:`~matih_lite.host.Host` opened on the current folder's config and a
  :class:`~matih_lite.tracking.Tracking` service over it (tenant ``default``);
* **HTTP**: the ml-service's ``/api/v1`` at ``MATIH_URL`` (bearer ``MATIH_TOKEN`` when set),
  over one keep-alive ``httpx.Client``. Problem-details errors come back as the same
  :mod:`matih_lite.errors` classes the embedded transport raises.

Both return the records of :mod:`matih_lite.contracts` (``Experiment``, ``Run``, ``Metric``,
``ArtifactInfo``, ``Page``). :class:`MetricBuffer` batches metric points in the background
for the SDK's ``log_metric``; it is separate from the client so the client stays a plain
request/response object.

Nothing heavy is imported here at module level: httpx loads when an HTTP client is built,
the host and its backends when an embedded one is.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol
from urllib.parse import quote

from matih_lite.contracts.artifacts import ArtifactInfo
from matih_lite.contracts.records import Experiment, Metric, Page, Run
from matih_lite.errors import Conflict, InvalidInput, MatihError, NotFound, StoreError
from matih_lite.remote import ServiceHttp, error_from_response, resolve_service  # noqa: F401 - error_from_response's old home
from matih_lite.tracking.service import MAX_BATCH_METRICS, MAX_BATCH_PARAMS, MAX_BATCH_TAGS, check_key, to_metric

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.sdk")

DEFAULT_TENANT = "default"
_CHUNK = 1 << 20


class Transport(Protocol):
    """What a client transport does: the :class:`~matih_lite.tracking.Tracking` calls, minus the tenant."""

    name: str
    location: str

    def create_experiment(self, name: str, description: str, tags: Mapping[str, str]) -> Experiment: ...
    def get_experiment(self, experiment_id: str) -> Experiment: ...
    def get_experiment_by_name(self, name: str) -> Experiment: ...
    def search_experiments(self, lifecycle: str, name_like: str | None, max_results: int,
                           page_token: str | None) -> Page[Experiment]: ...
    def update_experiment(self, experiment_id: str, name: str | None, description: str | None) -> Experiment: ...
    def delete_experiment(self, experiment_id: str) -> Experiment: ...
    def restore_experiment(self, experiment_id: str) -> Experiment: ...
    def set_experiment_tags(self, experiment_id: str, tags: Mapping[str, str]) -> None: ...
    def create_run(self, experiment_id: str, name: str | None, parent_run_id: str | None,
                   tags: Mapping[str, str], start_time: int | None) -> Run: ...
    def get_run(self, run_id: str) -> Run: ...
    def update_run(self, run_id: str, status: str | None, end_time: int | None, name: str | None) -> Run: ...
    def delete_run(self, run_id: str) -> Run: ...
    def restore_run(self, run_id: str) -> Run: ...
    def log_batch(self, run_id: str, metrics: Sequence[Metric], params: Mapping[str, str],
                  tags: Mapping[str, str]) -> None: ...
    def log_points(self, run_id: str, points: Sequence[Metric]) -> None: ...
    def delete_tag(self, run_id: str, key: str) -> None: ...
    def metric_history(self, run_id: str, key: str, max_results: int | None,
                       page_token: str | None) -> Page[Metric]: ...
    def search_runs(self, experiment_ids: Sequence[str], filter: str | None, order_by: Sequence[str],
                    lifecycle: str, max_results: int, page_token: str | None,
                    columns: Sequence[str] | None) -> Page[Run]: ...
    def compare_runs(self, run_ids: Sequence[str]) -> dict[str, Any]: ...
    def put_artifact(self, run_id: str, path: str, data: bytes | BinaryIO, size: int | None) -> ArtifactInfo: ...
    def list_artifacts(self, run_id: str, path: str, recursive: bool) -> list[ArtifactInfo]: ...
    def copy_artifact(self, run_id: str, path: str, out: BinaryIO) -> int: ...
    def store_environment(self, text: str) -> str: ...
    def read_environment(self, sha: str) -> str: ...
    def close(self) -> None: ...


# ---- embedded ----------------------------------------------------------------------------------
class EmbeddedTransport:
    """Straight to the configured stores through the :class:`Tracking` service."""

    name = "embedded"

    def __init__(self, host: Host | None = None, *, config: str | None = None, profile: str | None = None,
                 tenant: str = DEFAULT_TENANT) -> None:
        from matih_lite.tracking.service import Tracking

        self._owns_host = host is None
        if host is None:
            from matih_lite.host import Host

            host = Host.open(config, profile)
        self.host = host
        self.tracking = Tracking(host)
        self.tenant = tenant
        self.location = str(host.config.home)
        try:
            import getpass

            self.user = getpass.getuser()
        except Exception:  # no user name in this environment (some containers)
            self.user = ""

    def create_experiment(self, name, description, tags):
        return self.tracking.create_experiment(self.tenant, name, description=description, tags=tags)

    def get_experiment(self, experiment_id):
        return self.tracking.get_experiment(self.tenant, experiment_id)

    def get_experiment_by_name(self, name):
        return self.tracking.get_experiment_by_name(self.tenant, name)

    def search_experiments(self, lifecycle, name_like, max_results, page_token):
        return self.tracking.search_experiments(self.tenant, lifecycle=lifecycle, name_like=name_like,
                                                max_results=max_results, page_token=page_token)

    def update_experiment(self, experiment_id, name, description):
        return self.tracking.update_experiment(self.tenant, experiment_id, name=name, description=description)

    def delete_experiment(self, experiment_id):
        return self.tracking.delete_experiment(self.tenant, experiment_id)

    def restore_experiment(self, experiment_id):
        return self.tracking.restore_experiment(self.tenant, experiment_id)

    def set_experiment_tags(self, experiment_id, tags):
        self.tracking.set_experiment_tags(self.tenant, experiment_id, tags)

    def create_run(self, experiment_id, name, parent_run_id, tags, start_time):
        return self.tracking.create_run(self.tenant, experiment_id, name=name, parent_run_id=parent_run_id,
                                        tags=tags, start_time=start_time, user_id=self.user)

    def get_run(self, run_id):
        return self.tracking.get_run(self.tenant, run_id)

    def update_run(self, run_id, status, end_time, name):
        return self.tracking.update_run(self.tenant, run_id, status=status, end_time=end_time, name=name)

    def delete_run(self, run_id):
        return self.tracking.delete_run(self.tenant, run_id)

    def restore_run(self, run_id):
        return self.tracking.restore_run(self.tenant, run_id)

    def log_batch(self, run_id, metrics, params, tags):
        self.tracking.log_batch(self.tenant, run_id, metrics=metrics, params=params, tags=tags)

    def log_points(self, run_id, points):
        self.tracking.log_points(self.tenant, run_id, points)

    def delete_tag(self, run_id, key):
        self.tracking.delete_tag(self.tenant, run_id, key)

    def metric_history(self, run_id, key, max_results, page_token):
        return self.tracking.metric_history(self.tenant, run_id, key, max_results=max_results,
                                            page_token=page_token)

    def search_runs(self, experiment_ids, filter, order_by, lifecycle, max_results, page_token, columns):
        return self.tracking.search_runs(self.tenant, experiment_ids, filter=filter, order_by=list(order_by) or None,
                                         lifecycle=lifecycle, max_results=max_results, page_token=page_token,
                                         columns=columns)

    def compare_runs(self, run_ids):
        return self.tracking.compare_runs(self.tenant, run_ids)

    def put_artifact(self, run_id, path, data, size):
        return self.tracking.log_artifact(self.tenant, run_id, path, data)

    def store_environment(self, text):
        return self.tracking.store_environment(self.tenant, text)

    def read_environment(self, sha):
        return self.tracking.read_environment(self.tenant, sha)

    def list_artifacts(self, run_id, path, recursive):
        return self.tracking.list_artifacts(self.tenant, run_id, path, recursive=recursive)

    def copy_artifact(self, run_id, path, out):
        info = self.tracking.stat_artifact(self.tenant, run_id, path)
        if info.is_dir:
            raise InvalidInput(f"{path!r} is a folder; list it with list_artifacts(run_id, {path!r})")
        n = 0
        with self.tracking.open_artifact(self.tenant, run_id, path) as handle:
            while chunk := handle.read(_CHUNK):
                out.write(chunk)
                n += len(chunk)
        return n

    def close(self) -> None:
        if self._owns_host:
            self.host.close()


# ---- HTTP --------------------------------------------------------------------------------------
_SPECIAL_FLOATS = {"nan": math.nan, "infinity": math.inf, "inf": math.inf, "-infinity": -math.inf, "-inf": -math.inf}


def _float(value: Any) -> float:
    """A metric value from JSON, where NaN and the infinities travel as strings."""
    if isinstance(value, str):
        special = _SPECIAL_FLOATS.get(value.lower())
        return special if special is not None else float(value)
    return math.nan if value is None else float(value)


def _json_float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _metric(d: Mapping[str, Any]) -> Metric:
    return Metric(d["key"], _float(d["value"]), int(d["timestamp"]), int(d.get("step") or 0))


def _experiment(d: Mapping[str, Any]) -> Experiment:
    return Experiment(experiment_id=str(d["experiment_id"]), tenant="", name=d["name"],
                      description=d.get("description") or "", artifact_location=d.get("artifact_location") or "",
                      lifecycle_stage=d.get("lifecycle_stage") or "active", creation_time=d.get("creation_time") or 0,
                      last_update_time=d.get("last_update_time") or 0, tags=dict(d.get("tags") or {}))


def _run(d: Mapping[str, Any]) -> Run:
    return Run(run_id=d["run_id"], experiment_id=str(d["experiment_id"]), tenant="", name=d["name"],
               status=d["status"], start_time=d["start_time"], end_time=d.get("end_time"),
               lifecycle_stage=d.get("lifecycle_stage") or "active", parent_run_id=d.get("parent_run_id"),
               artifact_uri=d.get("artifact_uri") or "", user_id=d.get("user_id") or "",
               params=dict(d.get("params") or {}), tags=dict(d.get("tags") or {}),
               metrics={k: _metric(m) for k, m in (d.get("metrics") or {}).items()})


def _artifact(d: Mapping[str, Any]) -> ArtifactInfo:
    return ArtifactInfo(d["path"], d.get("size") or 0, d.get("sha256"), bool(d.get("is_dir")))


def _seg(value: str) -> str:
    return quote(str(value), safe="")


class HttpTransport:
    """The ml-service's ``/api/v1`` over one :class:`~matih_lite.remote.ServiceHttp` (thread-safe)."""

    name = "http"

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.service = ServiceHttp(url, token, timeout=timeout, retries=2)
        self.location = self.service.url
        self.http = self.service.http

    # plumbing -------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.service.call(method, path, **kwargs)

    def _request_text(self, method: str, path: str, **kwargs: Any) -> str:
        return self.service.send(method, path, **kwargs).text

    # experiments ------------------------------------------------------------------------------------
    def create_experiment(self, name, description, tags):
        return _experiment(self._request("POST", "/api/v1/experiments/",
                                         json={"name": name, "description": description, "tags": dict(tags)}))

    def get_experiment(self, experiment_id):
        return _experiment(self._request("GET", f"/api/v1/experiments/{_seg(experiment_id)}"))

    def get_experiment_by_name(self, name):
        return _experiment(self._request("GET", f"/api/v1/experiments/by-name/{_seg(name)}"))

    def search_experiments(self, lifecycle, name_like, max_results, page_token):
        params: dict[str, Any] = {"lifecycle": lifecycle, "max_results": max_results}
        if name_like is not None:
            params["name_like"] = name_like
        if page_token:
            params["page_token"] = page_token
        body = self._request("GET", "/api/v1/experiments/", params=params)
        return Page([_experiment(e) for e in body["experiments"]], body.get("next_page_token"))

    def update_experiment(self, experiment_id, name, description):
        data = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
        return _experiment(self._request("PATCH", f"/api/v1/experiments/{_seg(experiment_id)}", json=data))

    def delete_experiment(self, experiment_id):
        return _experiment(self._request("DELETE", f"/api/v1/experiments/{_seg(experiment_id)}"))

    def restore_experiment(self, experiment_id):
        return _experiment(self._request("POST", f"/api/v1/experiments/{_seg(experiment_id)}/restore"))

    def set_experiment_tags(self, experiment_id, tags):
        self._request("PUT", f"/api/v1/experiments/{_seg(experiment_id)}/tags", json={"tags": dict(tags)})

    # runs -------------------------------------------------------------------------------------------
    def create_run(self, experiment_id, name, parent_run_id, tags, start_time):
        data: dict[str, Any] = {"experiment_id": str(experiment_id), "tags": dict(tags)}
        for key, value in (("name", name), ("parent_run_id", parent_run_id), ("start_time", start_time)):
            if value is not None:
                data[key] = value
        return _run(self._request("POST", "/api/v1/runs/", json=data))

    def get_run(self, run_id):
        return _run(self._request("GET", f"/api/v1/runs/{_seg(run_id)}"))

    def update_run(self, run_id, status, end_time, name):
        data = {k: v for k, v in (("status", status), ("end_time", end_time), ("name", name)) if v is not None}
        return _run(self._request("PATCH", f"/api/v1/runs/{_seg(run_id)}", json=data))

    def delete_run(self, run_id):
        return _run(self._request("DELETE", f"/api/v1/runs/{_seg(run_id)}"))

    def restore_run(self, run_id):
        return _run(self._request("POST", f"/api/v1/runs/{_seg(run_id)}/restore"))

    def log_batch(self, run_id, metrics, params, tags):
        import msgspec

        body = {"metrics": [{"key": m.key, "value": _json_float(m.value), "timestamp": m.timestamp, "step": m.step}
                            for m in metrics],
                "params": dict(params), "tags": dict(tags)}
        self._request("POST", f"/api/v1/runs/{_seg(run_id)}/batch", content=msgspec.json.encode(body),
                      headers={"Content-Type": "application/json"})

    def log_points(self, run_id, points):
        for i in range(0, len(points), MAX_BATCH_METRICS):
            self.log_batch(run_id, points[i:i + MAX_BATCH_METRICS], {}, {})

    def delete_tag(self, run_id, key):
        self._request("DELETE", f"/api/v1/runs/{_seg(run_id)}/tags/{_seg(key)}")

    def metric_history(self, run_id, key, max_results, page_token):
        params: dict[str, Any] = {"key": key}
        if max_results is not None:
            params["max_results"] = max_results
        if page_token:
            params["page_token"] = page_token
        body = self._request("GET", f"/api/v1/runs/{_seg(run_id)}/metrics/history", params=params)
        return Page([_metric(m) for m in body["metrics"]], body.get("next_page_token"))

    def search_runs(self, experiment_ids, filter, order_by, lifecycle, max_results, page_token, columns):
        data: dict[str, Any] = {"experiment_ids": [str(e) for e in experiment_ids], "order_by": list(order_by),
                                "lifecycle": lifecycle, "max_results": max_results}
        if filter:
            data["filter"] = filter
        if page_token:
            data["page_token"] = page_token
        if columns is not None:
            data["columns"] = list(columns)
        body = self._request("POST", "/api/v1/runs/search", json=data)
        return Page([_run(r) for r in body["runs"]], body.get("next_page_token"))

    def compare_runs(self, run_ids):
        result = self._request("GET", "/api/v1/runs/compare", params=[("run_ids", r) for r in run_ids])
        for entry in result["metrics"].values():
            entry["values"] = [None if v is None else _float(v) for v in entry["values"]]
        return result

    # artifacts --------------------------------------------------------------------------------------
    def store_environment(self, text):
        return self._request("PUT", "/api/v1/environments", content=text.encode("utf-8"),
                             headers={"Content-Type": "text/plain; charset=utf-8"})["sha256"]

    def read_environment(self, sha):
        return self._request_text("GET", f"/api/v1/environments/{_seg(sha)}")

    def put_artifact(self, run_id, path, data, size):
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(data, (bytes, bytearray, memoryview)):
            content: Any = bytes(data)
        else:
            content = iter(lambda: data.read(_CHUNK), b"")
            if size is not None:
                headers["Content-Length"] = str(size)
        body = self._request("PUT", f"/api/v1/runs/{_seg(run_id)}/artifacts/{quote(path, safe='/')}",
                             content=content, headers=headers)
        return _artifact(body)

    def list_artifacts(self, run_id, path, recursive):
        params: dict[str, Any] = {"path": path, "recursive": "true" if recursive else "false"}
        body = self._request("GET", f"/api/v1/runs/{_seg(run_id)}/artifacts", params=params)
        return [_artifact(f) for f in body["files"]]

    def copy_artifact(self, run_id, path, out):
        url = f"/api/v1/runs/{_seg(run_id)}/artifacts/{quote(path, safe='/')}"
        n = 0
        with self.service.stream("GET", url, headers={"Accept": "application/octet-stream"}) as resp:
            for chunk in resp.iter_bytes(_CHUNK):
                out.write(chunk)
                n += len(chunk)
        return n

    def close(self) -> None:
        self.service.close()


# ---- the client --------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _chunks(items: Mapping[str, str], size: int) -> list[dict[str, str]]:
    pairs = list(items.items())
    return [dict(pairs[i:i + size]) for i in range(0, len(pairs), size)] or [{}]


class Client:
    """Experiments, runs, metrics, params, tags and artifacts, embedded or over HTTP.

    ``Client()`` talks to ``MATIH_URL`` (with ``MATIH_TOKEN``) when it is set, or to the ``matih-lite up``
    that serves this folder, and otherwise opens the current folder's matih.toml (or the lite defaults) in
    this process::

        client = Client()
        exp = client.get_or_create_experiment("churn")
        run = client.create_run(exp.experiment_id, name="baseline")
        client.log_batch(run.run_id, params={"lr": 0.1}, metrics=[{"key": "auc", "value": 0.91}])
        client.end_run(run.run_id)

    Every call is synchronous (metrics too; the buffering lives in the SDK's ``log_metric``).
    Errors are :mod:`matih_lite.errors` classes whichever transport is used.
    """

    def __init__(self, url: str | None = None, *, token: str | None = None, config: str | None = None,
                 profile: str | None = None, host: Host | None = None, tenant: str = DEFAULT_TENANT,
                 timeout: float = 30.0) -> None:
        url, token = resolve_service(url, token, config, host)
        if url:
            self._t: Transport = HttpTransport(url, token, timeout=timeout)
        else:
            self._t = EmbeddedTransport(host, config=config, profile=profile, tenant=tenant)

    @property
    def transport(self) -> str:
        """``"embedded"`` or ``"http"``."""
        return self._t.name

    @property
    def location(self) -> str:
        """The service URL, or the embedded state folder."""
        return self._t.location

    def __repr__(self) -> str:
        return f"Client({self.transport}: {self.location})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release connections (the HTTP pool, or the embedded host's stores)."""
        self._t.close()

    # ---- experiments --------------------------------------------------------------------------
    def create_experiment(self, name: str, *, description: str = "",
                          tags: Mapping[str, Any] | None = None) -> Experiment:
        """A new experiment. Raises Conflict if the name is taken (deleted experiments keep theirs)."""
        return self._t.create_experiment(name, description or "", {k: _text(v) for k, v in (tags or {}).items()})

    def get_experiment(self, experiment_id: str) -> Experiment:
        return self._t.get_experiment(str(experiment_id))

    def get_experiment_by_name(self, name: str) -> Experiment:
        return self._t.get_experiment_by_name(name)

    def get_or_create_experiment(self, name: str) -> Experiment:
        """The experiment of that name, created if missing (safe against a concurrent create)."""
        try:
            return self._t.get_experiment_by_name(name)
        except NotFound:
            try:
                return self.create_experiment(name)
            except Conflict:
                return self._t.get_experiment_by_name(name)

    def search_experiments(self, *, lifecycle: str = "active", name_like: str | None = None,
                           max_results: int = 1000, page_token: str | None = None) -> Page[Experiment]:
        """Experiments newest first; ``lifecycle`` is active, deleted or all."""
        return self._t.search_experiments(lifecycle, name_like, max_results, page_token)

    def update_experiment(self, experiment_id: str, *, name: str | None = None,
                          description: str | None = None) -> Experiment:
        return self._t.update_experiment(str(experiment_id), name, description)

    def delete_experiment(self, experiment_id: str) -> Experiment:
        """Mark an experiment and its runs deleted (restorable)."""
        return self._t.delete_experiment(str(experiment_id))

    def restore_experiment(self, experiment_id: str) -> Experiment:
        return self._t.restore_experiment(str(experiment_id))

    def set_experiment_tags(self, experiment_id: str, tags: Mapping[str, Any]) -> None:
        self._t.set_experiment_tags(str(experiment_id), {k: _text(v) for k, v in tags.items()})

    # ---- runs ---------------------------------------------------------------------------------
    def create_run(self, experiment_id: str, *, name: str | None = None, parent_run_id: str | None = None,
                   tags: Mapping[str, Any] | None = None, start_time: int | None = None) -> Run:
        """A new RUNNING run (a random name when none is given)."""
        return self._t.create_run(str(experiment_id), name, parent_run_id,
                                  {k: _text(v) for k, v in (tags or {}).items()}, start_time)

    def get_run(self, run_id: str) -> Run:
        """The run with its params, tags and the latest value of each metric. Raises NotFound."""
        return self._t.get_run(run_id)

    def update_run(self, run_id: str, *, status: str | None = None, end_time: int | None = None,
                   name: str | None = None) -> Run:
        """Set status (RUNNING resumes an ended run), end time or name."""
        return self._t.update_run(run_id, status, end_time, name)

    def end_run(self, run_id: str, status: str = "FINISHED") -> Run:
        """Mark a run FINISHED, FAILED or KILLED, with the end time now."""
        return self._t.update_run(run_id, status, None, None)

    def delete_run(self, run_id: str) -> Run:
        return self._t.delete_run(run_id)

    def restore_run(self, run_id: str) -> Run:
        return self._t.restore_run(run_id)

    def search_runs(self, experiment_ids: str | Sequence[str] = (), *, experiment_names: Sequence[str] = (),
                    filter: str | None = None, order_by: str | Sequence[str] | None = None,
                    lifecycle: str = "active", max_results: int = 1000, page_token: str | None = None,
                    columns: Sequence[str] | None = None) -> Page[Run]:
        """Runs matching an MLflow filter, e.g. ``search_runs(experiment_names=["churn"],
        filter="metrics.auc > 0.8 and params.model = 'xgb'", order_by=["metrics.auc DESC"])``.

        Raises InvalidInput for a filter that does not parse, NotFound for an unknown experiment name.
        """
        ids = [experiment_ids] if isinstance(experiment_ids, str) else [str(e) for e in experiment_ids]
        ids += [self._t.get_experiment_by_name(n).experiment_id for n in experiment_names]
        orders = [order_by] if isinstance(order_by, str) else list(order_by or ())
        return self._t.search_runs(ids, filter or None, orders, lifecycle, max_results, page_token, columns)

    def compare_runs(self, run_ids: Sequence[str]) -> dict[str, Any]:
        """Params and metrics side by side: ``{"runs": [...], "params": {key: {"values", "differs"}},
        "metrics": {key: {"values", "differs", "best", "goal"}}}`` (see ``Tracking.compare_runs``)."""
        return self._t.compare_runs(list(run_ids))

    # ---- params, metrics, tags ----------------------------------------------------------------
    def log_batch(self, run_id: str, *, metrics: Iterable[Metric | Mapping[str, Any]] = (),
                  params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> None:
        """Metrics, params and tags in one all-or-nothing call (at most 1000 metrics, 100 params, 100 tags).

        Raises Conflict when a param already holds another value, or the run has ended.
        """
        points = [m if isinstance(m, Metric) else to_metric(m.get("key"), m.get("value"), m.get("timestamp"),
                                                            m.get("step") or 0) for m in metrics]
        self._t.log_batch(run_id, points, {k: _text(v) for k, v in (params or {}).items()},
                          {k: _text(v) for k, v in (tags or {}).items()})

    def log_points(self, run_id: str, points: Sequence[Metric]) -> None:
        """Any number of checked metric points (see ``to_metric``), stored in batches of at most 1000, in order."""
        for key in {p.key for p in points}:
            check_key(key, "metric")
        self._t.log_points(run_id, points)

    def log_metric(self, run_id: str, key: str, value: float, *, step: int | None = None,
                   timestamp: int | None = None) -> Metric:
        """One point, stored before returning (the SDK's ``ml.log_metric`` buffers instead)."""
        point = to_metric(key, value, timestamp, step or 0)
        self._t.log_batch(run_id, [point], {}, {})
        return point

    def log_param(self, run_id: str, key: str, value: Any) -> None:
        """Params are write-once: logging another value for a key raises Conflict."""
        self._t.log_batch(run_id, [], {key: _text(value)}, {})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        for chunk in _chunks({k: _text(v) for k, v in params.items()}, MAX_BATCH_PARAMS):
            self._t.log_batch(run_id, [], chunk, {})

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        self._t.log_batch(run_id, [], {}, {key: _text(value)})

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        for chunk in _chunks({k: _text(v) for k, v in tags.items()}, MAX_BATCH_TAGS):
            self._t.log_batch(run_id, [], {}, chunk)

    def delete_tag(self, run_id: str, key: str) -> None:
        self._t.delete_tag(run_id, key)

    def metric_history(self, run_id: str, key: str, *, max_results: int | None = None,
                       page_token: str | None = None) -> Page[Metric]:
        """Points of a metric by step then timestamp; without ``max_results``, all of them in one page."""
        return self._t.metric_history(run_id, key, max_results, page_token)

    # ---- artifacts ----------------------------------------------------------------------------
    def store_environment(self, text: str) -> str:
        """Store a package list once per distinct content (cached per client); returns its sha256."""
        import hashlib

        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        stored = self.__dict__.setdefault("_environments", set())
        if sha not in stored:
            self._t.store_environment(text)
            stored.add(sha)
        return sha

    def read_environment(self, sha: str) -> str:
        """The package list a run's ``matih.environment`` tag names."""
        return self._t.read_environment(sha)

    def log_artifact_bytes(self, run_id: str, artifact_file: str, data: bytes | BinaryIO) -> ArtifactInfo:
        """Store bytes (or a readable binary stream) as ``artifact_file`` of the run."""
        return self._t.put_artifact(run_id, artifact_file, data, None)

    def log_artifact(self, run_id: str, local_path: str | os.PathLike[str],
                     artifact_path: str | None = None) -> ArtifactInfo:
        """Upload one file as ``<artifact_path>/<its name>`` (streamed, not read into memory)."""
        src = Path(local_path)
        if src.is_dir():
            raise InvalidInput(f"{src} is a folder; use log_artifacts() to upload a folder")
        try:
            handle = src.open("rb")
        except FileNotFoundError:
            raise NotFound(f"no file {src} to log as an artifact") from None
        dest = f"{artifact_path.strip('/')}/{src.name}" if artifact_path and artifact_path.strip("/") else src.name
        with handle:
            return self._t.put_artifact(run_id, dest, handle, os.fstat(handle.fileno()).st_size)

    def log_artifacts(self, run_id: str, local_dir: str | os.PathLike[str],
                      artifact_path: str | None = None) -> list[ArtifactInfo]:
        """Upload every file under a folder, keeping its layout, under ``artifact_path``."""
        root = Path(local_dir)
        if not root.is_dir():
            raise NotFound(f"no folder {root} to log as artifacts")
        prefix = (artifact_path or "").strip("/")
        out = []
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            rel = path.relative_to(root).parent.as_posix()
            dest = "/".join(x for x in (prefix, "" if rel == "." else rel) if x)
            out.append(self.log_artifact(run_id, path, dest or None))
        return out

    def list_artifacts(self, run_id: str, path: str = "", *, recursive: bool = False) -> list[ArtifactInfo]:
        """Entries under ``path`` (folders marked ``is_dir`` unless ``recursive``)."""
        return self._t.list_artifacts(run_id, path, recursive)

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """One artifact file's bytes (checked against its recorded sha256)."""
        import io

        buf = io.BytesIO()
        self._t.copy_artifact(run_id, path, buf)
        return buf.getvalue()

    def download_artifact(self, run_id: str, path: str = "", dst: str | os.PathLike[str] = ".") -> Path:
        """Copy a file, or a folder with everything under it, into the local folder ``dst``.

        Returns the local path of what was downloaded (``dst`` itself for the whole run).
        """
        dst_dir = Path(dst)
        path = path.strip("/")
        files = self._t.list_artifacts(run_id, path, True)
        if not files and path:  # a file, not a folder
            target = dst_dir / Path(path).name
            self._download_file(run_id, path, target)
            return target
        base = dst_dir / Path(path).name if path else dst_dir
        cut = len(path) + 1 if path else 0
        for info in files:
            self._download_file(run_id, info.path, base / info.path[cut:])
        base.mkdir(parents=True, exist_ok=True)
        return base

    def _download_file(self, run_id: str, path: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        try:
            with open(tmp, "wb") as out:
                self._t.copy_artifact(run_id, path, out)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


# ---- buffered metrics ----------------------------------------------------------------------------
_BUFFERS: weakref.WeakSet[MetricBuffer] = weakref.WeakSet()


class MetricBuffer:
    """Metric points kept in memory and stored in batches by a background thread.

    ``add`` returns at once: it appends to a deque (thread-safe without a lock) and wakes the
    sender only when a full batch waits and the sender is not already awake, so a tight logging
    loop pays no lock and no thread hand-off per point. The daemon thread sends what is pending
    every ``interval`` seconds, or once ``batch_size`` points wait, in batches of at most
    ``batch_size`` through ``send(run_id, points)``. One sender at a time, so a run's points are
    stored in the order they were logged. ``flush()`` returns once everything added before it is
    stored.

    Failures: a :class:`StoreError` (the store or the service unavailable) is retried with
    back-off; if it persists the points stay in memory for the next flush, and ``flush()``
    raises. Any other error (the run was deleted or ended elsewhere) cannot succeed later:
    those points are dropped, logged, and the error is raised by the next ``flush()``.
    When more than ``max_pending`` points wait, ``add`` sends them itself (back-pressure).
    """

    def __init__(self, send: Callable[[str, Sequence[Metric]], None], *, batch_size: int = MAX_BATCH_METRICS,
                 interval: float = 1.0, max_pending: int = 100_000,
                 retry_delays: Sequence[float] = (0.2, 1.0, 3.0)) -> None:
        self._send = send
        self.batch_size = batch_size
        self.interval = interval
        self.max_pending = max_pending
        self.retry_delays = tuple(retry_delays)
        # (run_id, key, value, timestamp, step), appended by any thread, taken from the left only by
        # the sender holding _send_lock. Plain tuples, not Metric objects: the garbage collector stops
        # tracking them, so 100,000 pending points cost it nothing.
        self._pending: deque[tuple[str, str, float, int, int]] = deque()
        self._lock = threading.Lock()  # guards _errors and _thread
        self._send_lock = threading.Lock()  # one sender at a time: points arrive in the order logged
        self._wake = threading.Event()
        self._awake = False  # a wake is already asked for: later points need not ask again
        self._stop = False
        self._thread: threading.Thread | None = None
        self._errors: list[MatihError] = []
        _BUFFERS.add(self)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, run_id: str, point: Metric) -> None:
        """Queue one point; it is stored within about ``interval`` seconds."""
        self.add_values(run_id, point.key, point.value, point.timestamp, point.step)

    def add_values(self, run_id: str, key: str, value: float, timestamp: int, step: int) -> None:
        """:meth:`add` for a point already checked (see ``to_metric``), given as its fields."""
        pending = self._pending
        pending.append((run_id, key, value, timestamp, step))
        if self._thread is None:
            self._start()
        n = len(pending)
        if n >= self.batch_size and not self._awake:
            self._awake = True
            self._wake.set()
        if n >= self.max_pending:
            self.flush()

    def flush(self) -> None:
        """Store everything queued so far. Raises the first error that lost points since the last flush,
        or a StoreError when the store stays unreachable (those points are kept for the next try)."""
        self._drain(retry=True)
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Stop the background thread and store what is left (at exit). Raises like :meth:`flush`."""
        with self._lock:
            self._stop = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self.flush()

    # inside -------------------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop:
                self._thread = threading.Thread(target=self._loop, name="matih-metrics-flusher", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        failures = 0
        while True:
            self._wake.wait(self.interval if not failures else min(30.0, self.interval * 2 ** failures))
            # Cleared before draining: a point added from here on may ask for the next wake, and
            # one whose wake is lost in between is taken by this drain or the next interval's.
            self._wake.clear()
            self._awake = False
            if self._stop:
                return
            try:
                self._drain(retry=False)
                failures = 0
            except MatihError as exc:
                failures += 1
                if failures == 1:
                    log.warning("could not store %d metric points yet (will retry): %s", len(self), exc.message)
            except Exception:  # never let the flusher die; flush() will surface the problem
                failures += 1
                log.exception("metric flusher failed")

    def _take(self) -> list[tuple[str, str, float, int, int]]:
        """Everything pending now, oldest first (only the sender takes, so the count stays true)."""
        pending = self._pending
        pop = pending.popleft
        return [pop() for _ in range(len(pending))]

    def _drain(self, *, retry: bool) -> None:
        """Send everything pending. Points that may yet be stored stay queued, and the error is raised."""
        with self._send_lock:
            while True:
                taken = self._take()
                if not taken:
                    return
                by_run: dict[str, list[Metric]] = {}
                for run_id, key, value, timestamp, step in taken:
                    by_run.setdefault(run_id, []).append(Metric(key, value, timestamp, step))
                runs = list(by_run.items())
                for index, (run_id, points) in enumerate(runs):
                    for start in range(0, len(points), self.batch_size):
                        try:
                            self._send_with_retry(run_id, points[start:start + self.batch_size], retry)
                        except Exception as exc:
                            if isinstance(exc, MatihError) and not isinstance(exc, StoreError):
                                lost = len(points) - start
                                log.error("dropped %d metric points of run %s: %s", lost, run_id, exc.message)
                                exc.message = f"{lost} metric points of run {run_id} could not be stored: " \
                                              f"{exc.message}"
                                exc.args = (exc.message,)
                                with self._lock:
                                    self._errors.append(exc)
                                break
                            # Unavailable, or failing unexpectedly: keep the points for the next try.
                            rest = [(run_id, p.key, p.value, p.timestamp, p.step) for p in points[start:]]
                            rest += [(r, p.key, p.value, p.timestamp, p.step) for r, ps in runs[index + 1:] for p in ps]
                            self._pending.extendleft(reversed(rest))  # older than anything added meanwhile
                            raise

    def _send_with_retry(self, run_id: str, points: Sequence[Metric], retry: bool) -> None:
        delays = self.retry_delays if retry else self.retry_delays[:1]
        for attempt in range(len(delays) + 1):
            try:
                self._send(run_id, points)
                return
            except StoreError:
                if attempt == len(delays):
                    raise
                time.sleep(delays[attempt])

    def _after_fork(self) -> None:
        # The thread and the locks' owners did not come along; the parent stores its own points.
        self._pending = deque()
        self._errors = []
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._awake = False
        self._thread = None


def _reset_buffers_after_fork() -> None:
    for buffer in list(_BUFFERS):
        buffer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_buffers_after_fork)
