"""Jobs: status and why a job waits, its log (tailed live while it runs), and for tunes the trials table.

Read and cancelled through :class:`matih_lite.training.jobs.Jobs`, loaded on the first jobs page
(not at start-up). A tune's trials are the child runs of the job's run; the best one by the
spec's ``tune.metric`` and ``tune.mode`` is marked.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, QueryParameter

from matih_lite.contracts.jobs import ACTIVE_JOB_STATUSES, JOB_STATUSES
from matih_lite.contracts.search import Comparison, RunFilter
from matih_lite.errors import NotFound
from matih_lite.service.ui.pages import Pages
from matih_lite.service.ui.render import page, seg, who
from matih_lite.service.ui.session import checked_form, redirect

LOG_TAIL_CHARS = 64 * 1024
MAX_TRIALS = 2000


def jobs_of(request: Request) -> Any:
    from matih_lite.training.jobs import Jobs

    return Jobs(request.app.state["host"])


def trials_of(request: Request, job: Any) -> dict[str, Any] | None:
    """A tune's trials (its run's children): params of the search space, the metric, the best marked."""
    tune = (job.spec or {}).get("tune")
    if job.kind != "tune" or not tune or not job.run_id:
        return None
    from matih_lite.tracking import Tracking

    tracking = Tracking(request.app.state["host"])
    try:
        parent = tracking.get_run(job.tenant, job.run_id)
    except NotFound:
        return None
    children = tracking.search_runs(job.tenant, [parent.experiment_id], filter=RunFilter(
        (Comparison("tag", "mlflow.parentRunId", "=", job.run_id),)), max_results=MAX_TRIALS).items
    metric, mode = tune.get("metric", ""), tune.get("mode", "min")
    space = list((tune.get("space") or {}).keys()) or sorted({k for c in children for k in c.params})[:10]
    rows = []
    best_i, best_v = None, None
    for i, c in enumerate(sorted(children, key=lambda r: (r.start_time, r.run_id))):
        m = c.metrics.get(metric)
        value = m.value if m is not None and not math.isnan(m.value) else None
        rows.append({"run": c, "params": [c.params.get(k) for k in space], "value": value,
                     "step": m.step if m is not None else None})
        if value is not None and (best_v is None or (value < best_v if mode == "min" else value > best_v)):
            best_i, best_v = i, value
    return {"metric": metric, "mode": mode, "space": space, "rows": rows, "best": best_i}


class JobPages(Pages):
    path = "/ui"

    @get("/jobs", sync_to_thread=True)
    def jobs(self, request: Request,
             status: Annotated[list[str] | None, QueryParameter(name="status")] = None) -> Response:
        principal = who(request)
        wanted = [s for s in (status or []) if s in JOB_STATUSES] or None
        found = jobs_of(request).list(principal, statuses=wanted, max_results=500).items
        return page(request, "jobs.html", title="Jobs", section="jobs", jobs=found, statuses=JOB_STATUSES,
                    wanted=wanted or [])

    @get("/jobs/{job_id:str}", sync_to_thread=True)
    def job(self, request: Request, job_id: FromPath[str]) -> Response:
        principal = who(request)
        jobs = jobs_of(request)
        job = jobs.get(principal, job_id)
        text = jobs.logs(principal, job.job_id, 0)
        offset = len(text)
        shown = text[-LOG_TAIL_CHARS:]
        return page(request, "job.html", title=f"Job {job.name}", section="jobs", job=job,
                    progress=jobs.progress(principal, job), log=shown, log_cut=len(text) > len(shown),
                    log_offset=offset, active=job.status in ACTIVE_JOB_STATUSES, trials=trials_of(request, job),
                    spec=json.dumps(job.spec, indent=2, default=str))

    @post("/jobs/{job_id:str}/cancel", status_code=303)
    async def cancel(self, request: Request, job_id: FromPath[str]) -> Response:
        import anyio

        await checked_form(request)
        principal = who(request)
        job = await anyio.to_thread.run_sync(lambda: jobs_of(request).cancel(principal, job_id))
        return redirect(request, f"/ui/jobs/{seg(job.job_id)}", f"job {job.name}: {job.status.lower()}"
                        + (f" ({job.message})" if job.message else ""))


class JobApi(Pages):
    path = "/ui/api"

    @get("/jobs/{job_id:str}/log", sync_to_thread=True)
    def log(self, request: Request, job_id: FromPath[str],
            offset: Annotated[int, QueryParameter(ge=0)] = 0) -> Response:
        principal = who(request)
        jobs = jobs_of(request)
        job = jobs.get(principal, job_id)
        text = jobs.logs(principal, job.job_id, offset)
        body = {"text": text, "offset": offset + len(text), "status": job.status,
                "active": job.status in ACTIVE_JOB_STATUSES, "message": job.message}
        return Response(json.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"})


CONTROLLERS = [JobPages, JobApi]
