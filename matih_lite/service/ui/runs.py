"""Experiments, runs, a run's page and artifacts, comparison, and metric series for the charts.

Every page reads through :class:`~matih_lite.tracking.Tracking` with the caller's tenant, as the
REST controllers in :mod:`matih_lite.service.tracking` do.
"""

from __future__ import annotations

import csv
import io
import json
import math
import mimetypes
import re
from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from matih_lite.contracts import Run
from matih_lite.contracts.records import decode_page_token, encode_page_token
from matih_lite.contracts.search import Comparison, RunFilter
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.service.ui.pages import Pages, server_timing
from matih_lite.service.ui.render import duration, number, page, when, who
from matih_lite.tracking import Tracking
from matih_lite.tracking.series import metric_series

PAGE_SIZES = (25, 50, 100, 250)
DEFAULT_COLUMNS = 6
"""Metrics and params each shown by default when the caller picks no columns."""
MAX_COMPARE = 100
PREVIEW_BYTES = 256 * 1024
PREVIEW_ROWS = 50
PARQUET_PREVIEW_LIMIT = 256 * 1024 * 1024
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".svg": "image/svg+xml", ".bmp": "image/bmp"}
TEXT_SUFFIXES = (".txt", ".log", ".md", ".py", ".diff", ".patch", ".cfg", ".ini", ".toml", ".sh", ".sql", ".r",
                 ".ipynb", ".tsv", ".html", ".xml", ".yaml", ".yml", ".json", ".csv", ".env", ".properties")
ENVIRONMENT_TAG = "matih.environment"
PARENT_TAG = "mlflow.parentRunId"


def tracking_of(request: Request) -> Tracking:
    return Tracking(request.app.state["host"])


def experiment_of(tracking: Tracking, tenant: str, experiment_id: str) -> Any:
    """An experiment by id; ``0`` is MLflow's Default experiment (the id the mlflow client prints for it)."""
    if experiment_id == "0":
        try:
            return tracking.get_experiment_by_name(tenant, "Default")
        except NotFound:
            pass
    return tracking.get_experiment(tenant, experiment_id)


def run_ids_of(values: list[str] | None) -> list[str]:
    """Run ids from ``runs=A,B`` and ``runs=A&runs=B`` (or both), in order, without repeats."""
    out: list[str] = []
    for value in values or []:
        for part in value.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def columns_of(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or []:
        for part in value.split(","):
            part = part.strip()
            if part and part not in out and part.split(".", 1)[0] in ("metrics", "params", "tags"):
                out.append(part)
    return out


def cell(run: Run, column: str) -> Any:
    """The value a runs-table column shows for a run (None when the run has none)."""
    kind, _, key = column.partition(".")
    if kind == "metrics":
        m = run.metrics.get(key)
        return None if m is None else m.value
    if kind == "params":
        return run.params.get(key)
    return run.tags.get(key)


def toggled_order(column: str, current: str) -> str:
    """The ``order`` a column header links to: descending first, then ascending."""
    quoted = f"{column.split('.', 1)[0]}.`{column.split('.', 1)[1]}`" if "." in column else column
    if current in (f"{quoted} DESC", f"{column} DESC"):
        return f"{quoted} ASC"
    return f"{quoted} DESC"


def sort_state(column: str, current: str) -> str | None:
    """``descending`` / ``ascending`` when the table is sorted by ``column``."""
    quoted = f"{column.split('.', 1)[0]}.`{column.split('.', 1)[1]}`" if "." in column else column
    for name in (column, quoted):
        if current == f"{name} DESC":
            return "descending"
        if current in (f"{name} ASC", name):
            return "ascending"
    return None


def filter_error(exc: InvalidInput, text: str) -> dict[str, Any]:
    """An invalid filter as the message and the text around the offending token (highlighted on the page)."""
    detail = exc.detail or {}
    pos = detail.get("position")
    token = detail.get("token") or ""
    if not isinstance(pos, int) or not 0 <= pos <= len(text):
        return {"message": exc.message, "before": text, "token": "", "after": ""}
    end = pos + max(len(token), 1) if pos < len(text) else pos
    return {"message": exc.message, "before": text[:pos], "token": text[pos:end] or " ", "after": text[end:]}


def system_tags(tags: dict[str, str]) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
    """A run's tags split into (user tags, environment, git, other system tags)."""
    user, env, git, system = {}, {}, {}, {}
    for k, v in sorted(tags.items()):
        if k.startswith(("matih.git.", "mlflow.source.git.")):
            git[k] = v
        elif k.startswith(("matih.python", "matih.platform", "matih.os", "matih.cpu", "matih.gpu", "matih.packages",
                           "matih.environment", "matih.seed", "matih.hostname", "matih.memory")):
            env[k] = v
        elif k.startswith(("mlflow.", "matih.")):
            system[k] = v
        else:
            user[k] = v
    return user, env, git, system


def mlmodel_flavors(text: str) -> list[str]:
    """The flavor names of an MLmodel file (the keys right under ``flavors:``), without a YAML parser."""
    names, inside = [], False
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith((" ", "\t")):
            inside = line.split(":", 1)[0].strip() == "flavors"
            continue
        if inside:
            m = re.match(r"^( {2}|\t)([A-Za-z0-9_.-]+):", line)
            if m:
                names.append(m.group(2))
    return names


def artifact_kind(path: str) -> str:
    """How the browser previews a file: image, json, csv, parquet, mlmodel, text, or binary (download only)."""
    name = path.rsplit("/", 1)[-1].lower()
    if name == "mlmodel":
        return "mlmodel"
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if suffix in IMAGE_TYPES:
        return "image"
    if suffix == ".json":
        return "json"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in TEXT_SUFFIXES or name in ("requirements.txt", "conda.yaml", "python_env.yaml", "dockerfile",
                                           "license", "readme"):
        return "text"
    return "binary"


def _read_prefix(handle: Any, limit: int) -> tuple[bytes, bool]:
    with handle:
        data = handle.read(limit + 1)
    return data[:limit], len(data) > limit


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3:  # cut in the middle of a character by the preview's limit
            return data[:exc.start].decode("utf-8", errors="replace")
        return None


def preview(tracking: Tracking, tenant: str, run_id: str, path: str, size: int | None) -> dict[str, Any]:
    """What the artifact page shows for one file."""
    kind = artifact_kind(path)
    out: dict[str, Any] = {"kind": kind, "truncated": False}
    if kind in ("image", "binary"):
        return out
    if kind == "parquet":
        if size is not None and size > PARQUET_PREVIEW_LIMIT:
            out["note"] = f"{size:,} bytes: too large to preview here; download it"
            return out
        import pyarrow as pa
        import pyarrow.parquet as pq

        with tracking.open_artifact(tenant, run_id, path) as handle:
            data = handle.read()
        try:
            pf = pq.ParquetFile(io.BytesIO(data))
            batch = next(pf.iter_batches(batch_size=PREVIEW_ROWS), None)
        except (pa.ArrowException, ValueError, OSError) as exc:  # not a readable Parquet file: say so
            out["note"] = f"cannot read it as Parquet: {exc}"
            return out
        out["columns"] = [f"{f.name} ({f.type})" for f in pf.schema_arrow]
        out["rows"] = [] if batch is None else [[_cell_text(v) for v in row.values()] for row in batch.to_pylist()]
        out["total_rows"] = pf.metadata.num_rows
        return out
    data, truncated = _read_prefix(tracking.open_artifact(tenant, run_id, path), PREVIEW_BYTES)
    out["truncated"] = truncated
    text = _text(data)
    if text is None:
        out["kind"] = "binary"
        out["note"] = "not UTF-8 text; download it"
        return out
    if kind == "csv":
        dialect = "excel-tab" if path.lower().endswith(".tsv") else "excel"
        rows = []
        for i, row in enumerate(csv.reader(io.StringIO(text), dialect=dialect)):
            if i > PREVIEW_ROWS:
                break
            rows.append(row)
        if truncated and rows:
            rows = rows[:-1]  # the last line may be cut by the preview's limit
        out["columns"] = rows[0] if rows else []
        out["rows"] = rows[1:PREVIEW_ROWS + 1]
        return out
    if kind == "json" and not truncated:
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError as exc:
            out["note"] = f"not valid JSON ({exc}); shown as text"
    if kind == "mlmodel":
        out["flavors"] = mlmodel_flavors(text)
    out["text"] = text
    return out


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return text if len(text) <= 200 else text[:199] + "…"


class TrackingPages(Pages):
    """Experiments, runs, the run page, artifacts and comparison."""

    path = "/ui"

    @get("/", sync_to_thread=True)
    def experiments(self, request: Request, name: FromQuery[str] = "") -> Response:
        tracking = tracking_of(request)
        tenant = who(request).tenant
        found = tracking.search_experiments(tenant, name_like=f"%{name}%" if name else None, max_results=1000)
        return page(request, "experiments.html", title="Experiments", section="experiments",
                    experiments=found.items, name=name, more=found.next_token is not None)

    @get("/experiments/{experiment_id:str}", sync_to_thread=True)
    def runs(self, request: Request, experiment_id: FromPath[str], filter: FromQuery[str] = "",
             order: FromQuery[str] = "", cols: Annotated[list[str] | None, QueryParameter(name="cols")] = None,
             page_token: FromQuery[str] = "", size: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
             lifecycle: FromQuery[str] = "active") -> Response:
        tracking = tracking_of(request)
        tenant = who(request).tenant
        exp = experiment_of(tracking, tenant, experiment_id)
        chosen = columns_of(cols)
        error = None
        runs: list[Run] = []
        next_token = None
        try:
            found = tracking.search_runs(tenant, [exp.experiment_id], filter=filter.strip() or None,
                                         order_by=[order] if order.strip() else None, lifecycle=lifecycle,
                                         max_results=size, page_token=page_token or None)
            runs, next_token = found.items, found.next_token
        except InvalidInput as exc:
            if exc.detail.get("position") is not None or "filter" in exc.message.lower():
                error = filter_error(exc, filter)
            else:
                error = {"message": exc.message, "before": "", "token": "", "after": ""}
        offset = decode_page_token(page_token or None) if not error else 0
        metric_keys = sorted({k for r in runs for k in r.metrics})
        param_keys = sorted({k for r in runs for k in r.params})
        tag_keys = sorted({k for r in runs for k in r.tags if not k.startswith(("mlflow.", "matih."))})
        if not chosen:
            chosen = [f"metrics.{k}" for k in metric_keys[:DEFAULT_COLUMNS]] + \
                     [f"params.{k}" for k in param_keys[:DEFAULT_COLUMNS]]
        available = [f"metrics.{k}" for k in metric_keys] + [f"params.{k}" for k in param_keys] + \
                    [f"tags.{k}" for k in tag_keys]
        available += [c for c in chosen if c not in available]
        base = {"filter": filter or None, "order": order or None, "cols": ",".join(columns_of(cols)) or None,
                "size": size if size != 50 else None, "lifecycle": lifecycle if lifecycle != "active" else None}
        prev_token = None
        if offset > 0:
            prev_token = encode_page_token(max(0, offset - size)) if offset - size > 0 else ""
        headers = [{"column": c, "kind": c.split(".", 1)[0][:-1], "key": c.split(".", 1)[1],
                    "order": toggled_order(c, order), "sorted": sort_state(c, order)} for c in chosen]
        kinds = [c.split(".", 1)[0] for c in chosen]
        rows = [{"run": r, "started": when(r.start_time),
                 "took": duration(r.end_time - r.start_time) if r.end_time else "",
                 "cells": [("num", number(v)) if kind == "metrics" else ("", "" if v is None else v)
                           for kind, v in zip(kinds, (cell(r, c) for c in chosen))]} for r in runs]
        return page(request, "runs.html", title=exp.name, section="experiments", experiment=exp, rows=rows,
                    headers=headers, available=available, chosen=chosen, filter=filter, order=order, error=error,
                    size=size, sizes=PAGE_SIZES, offset=offset, next_token=next_token, prev_token=prev_token,
                    base=base, lifecycle=lifecycle, start_sort=sort_state("attributes.start_time", order),
                    name_sort=sort_state("attributes.run_name", order))

    @get("/runs/{run_id:str}", sync_to_thread=True)
    def run(self, request: Request, run_id: FromPath[str]) -> Response:
        tracking = tracking_of(request)
        tenant = who(request).tenant
        run = tracking.get_run(tenant, run_id)
        exp = tracking.get_experiment(tenant, run.experiment_id)
        children = tracking.search_runs(tenant, [run.experiment_id], filter=RunFilter(
            (Comparison("tag", PARENT_TAG, "=", run.run_id),)), max_results=200, columns=[]).items
        parent = None
        if run.parent_run_id:
            try:
                parent = tracking.get_run(tenant, run.parent_run_id)
            except NotFound:
                parent = None
        user_tags, env_tags, git_tags, sys_tags = system_tags(run.tags)
        try:
            artifacts = tracking.list_artifacts(tenant, run_id, "")
        except NotFound:
            artifacts = []
        has_diff = any(a.path == "environment" for a in artifacts)
        metrics = sorted(run.metrics.values(), key=lambda m: m.key)
        return page(request, "run.html", title=run.name, section="experiments", run=run, experiment=exp,
                    children=children, parent=parent, params=sorted(run.params.items()), metrics=metrics,
                    user_tags=user_tags, env_tags=env_tags, git_tags=git_tags, sys_tags=sys_tags,
                    artifacts=artifacts, has_environment=ENVIRONMENT_TAG in run.tags, has_diff=has_diff,
                    charted=[m.key for m in metrics[:6]])

    @get("/runs/{run_id:str}/environment", sync_to_thread=True)
    def environment(self, request: Request, run_id: FromPath[str]) -> Response:
        tracking = tracking_of(request)
        tenant = who(request).tenant
        run = tracking.get_run(tenant, run_id)
        sha = run.tags.get(ENVIRONMENT_TAG)
        if not sha:
            raise NotFound(f"run {run_id!r} recorded no package list (it was started with capture=False)")
        text = tracking.read_environment(tenant, sha)
        return page(request, "environment.html", title=f"{run.name}: packages", section="experiments", run=run,
                    text=text, sha=sha)

    @get("/runs/{run_id:str}/artifacts", sync_to_thread=True)
    def artifacts(self, request: Request, run_id: FromPath[str], path: FromQuery[str] = "") -> Response:
        tracking = tracking_of(request)
        tenant = who(request).tenant
        run = tracking.get_run(tenant, run_id)
        path = path.strip("/")
        info = tracking.stat_artifact(tenant, run_id, path) if path else None
        crumbs = []
        acc = []
        for part in path.split("/") if path else []:
            acc.append(part)
            crumbs.append({"name": part, "path": "/".join(acc)})
        if info is None or info.is_dir:
            files = tracking.list_artifacts(tenant, run_id, path)
            return page(request, "artifacts.html", title=f"{run.name}: artifacts", section="experiments", run=run,
                        path=path, crumbs=crumbs, files=files, file=None, shown=None)
        shown = preview(tracking, tenant, run_id, path, info.size)
        return page(request, "artifacts.html", title=f"{run.name}: {path}", section="experiments", run=run,
                    path=path, crumbs=crumbs, files=None, file=info, shown=shown)

    @get("/runs/{run_id:str}/artifact", sync_to_thread=True)
    def download(self, request: Request, run_id: FromPath[str], path: FromQuery[str]) -> Response:
        tracking = tracking_of(request)
        tenant = who(request).tenant
        rel = path.strip("/")
        info = tracking.stat_artifact(tenant, run_id, rel)
        if info.is_dir:
            raise InvalidInput(f"{rel!r} is a folder; open it in the artifact browser")
        handle = tracking.open_artifact(tenant, run_id, rel)
        name = rel.rsplit("/", 1)[-1]
        suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
        image = IMAGE_TYPES.get(suffix)

        def chunks():
            with handle:
                while chunk := handle.read(1 << 20):
                    yield chunk

        # Only images are shown inline; anything else (HTML above all) is a download, so a file
        # of a run can never run script on this origin. The sandbox CSP covers an SVG opened alone.
        safe = re.sub(r'[^A-Za-z0-9._-]', "_", name) or "artifact"
        headers = {"Content-Length": str(info.size), "X-Content-Type-Options": "nosniff",
                   "Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'",
                   "Content-Disposition": f'{"inline" if image else "attachment"}; filename="{safe}"',
                   "Cache-Control": "private, max-age=60"}
        media = image or (mimetypes.guess_type(name)[0] if suffix in (".txt", ".csv", ".json") else None) or \
            "application/octet-stream"
        return Stream(chunks(), media_type=media, headers=headers)

    @get("/compare", sync_to_thread=True)
    def compare(self, request: Request, runs: Annotated[list[str] | None, QueryParameter(name="runs")] = None,
                diff: FromQuery[bool] = False, metric: FromQuery[str] = "") -> Response:
        tracking = tracking_of(request)
        tenant = who(request).tenant
        ids = run_ids_of(runs)
        if not 2 <= len(ids) <= MAX_COMPARE:
            raise InvalidInput(f"compare takes 2 to {MAX_COMPARE} runs (runs=ID1,ID2,...); got {len(ids)}",
                               detail={"field": "runs"})
        result = tracking.compare_runs(tenant, ids)
        run_rows = [{**r, "params": {k: v["values"][i] for k, v in result["params"].items()
                                     if v["values"][i] is not None},
                     "metrics": {k: v["values"][i] for k, v in result["metrics"].items()
                                 if v["values"][i] is not None}} for i, r in enumerate(result["runs"])]
        params = [{"key": k, **v, "cells": [("differs" if v["differs"] else "same", value)
                                            for value in v["values"]]} for k, v in result["params"].items()]
        metrics = []
        for k, v in result["metrics"].items():
            best = next((i for i, r in enumerate(result["runs"]) if r["run_id"] == v["best"]), None)
            mark = "num differs" if v["differs"] else "num same"
            metrics.append({"key": k, **v, "best_index": best,
                            "cells": [(mark + (" best" if i == best else ""), number(value), i == best)
                                      for i, value in enumerate(v["values"])]})
        metric_keys = [m["key"] for m in metrics]
        chosen_metric = metric if metric in metric_keys else (metric_keys[0] if metric_keys else "")
        differing_params = [p["key"] for p in params if p["differs"]]
        axes = (differing_params or [p["key"] for p in params])[:12]
        value = {r["run_id"]: r["metrics"].get(chosen_metric) for r in run_rows}
        plot = {"runs": [{"run_id": r["run_id"], "name": r["name"], "params": {k: r["params"].get(k) for k in axes},
                          "metrics": {chosen_metric: value[r["run_id"]] if value[r["run_id"]] is not None and
                                      math.isfinite(value[r["run_id"]]) else None}} for r in run_rows],
                "params": axes, "metric": chosen_metric,
                "goals": {m["key"]: m["goal"] for m in metrics if m["key"] == chosen_metric}}
        return page(request, "compare.html", title=f"Compare {len(ids)} runs", section="experiments",
                    runs=run_rows, params=params, metrics=metrics, diff=diff, ids=ids, metric=chosen_metric,
                    metric_keys=metric_keys, plot=plot,
                    experiments=sorted({r["experiment_id"] for r in result["runs"]}))


class SeriesApi(Pages):
    """``/ui/api/series``: metric series for the charts, downsampled on the server."""

    path = "/ui/api"

    @get("/series", sync_to_thread=True)
    def series(self, request: Request, key: FromQuery[str], runs: Annotated[list[str], QueryParameter(name="runs")],
               axis: FromQuery[str] = "step", points: Annotated[int, QueryParameter(ge=1, le=4000)] = 1000,
               lo: FromQuery[int | None] = None, hi: FromQuery[int | None] = None) -> Response:
        tracking = tracking_of(request)
        tenant = who(request).tenant
        ids = run_ids_of(runs)
        if not 1 <= len(ids) <= MAX_COMPARE:
            raise InvalidInput(f"give 1 to {MAX_COMPARE} run ids in runs=", detail={"field": "runs"})
        out = []
        for run_id in ids:
            s = metric_series(tracking, tenant, run_id, key, buckets=points, axis=axis, lo=lo, hi=hi)
            out.append({"run_id": s.run_id, "points": s.points, "downsampled": s.downsampled, "x": s.x,
                        "x_end": s.x_end, "count": s.count, "min": s.min, "max": s.max, "mean": s.mean})
        body = json.dumps({"key": key, "axis": axis, "series": out}, separators=(",", ":"), allow_nan=False)
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store",
                                                                       "Server-Timing": server_timing(request)})


CONTROLLERS = [TrackingPages, SeriesApi]
