"""The proxied artifacts (``/api/2.0/mlflow-artifacts/``): the files of runs, logged models and traces, up and down.

A path is ``{experiment_id}/{run_id}/artifacts/{path}``,
``{experiment_id}/models/{model_id}/artifacts/{path}`` or
``{experiment_id}/traces/{trace_id}/artifacts/{path}``, as the ``artifact_uri`` of runs and logged
models and the ``mlflow.artifactLocation`` tag of traces name them; each lands in the tenant's part
of the artifacts slot.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from matih_lite.contracts.artifacts import clean_path
from matih_lite.contracts.logged_models import LoggedModel
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.service.mlflow.api import ARTIFACTS_API, EXCEPTION_HANDLERS, MlflowApiError, drop_none, paths
from matih_lite.service.mlflow.scope import Scope, scope
from matih_lite.service.paths import artifact_path, receive_upload
from matih_lite.service.tracking import DEPENDENCIES, PrincipalDep, TrackingDep

MULTIPART_UNSUPPORTED = "Multipart upload is not supported for the current artifact repository"
PRESIGNED_DOWNLOAD_UNSUPPORTED = "Presigned download is not supported for the current artifact repository"


class Target(msgspec.Struct):
    """Where a proxied path lands: a run's artifacts, a logged model's, or a trace's (its spans)."""

    slot_root: str
    rel: str
    run_id: str | None = None
    model: LoggedModel | None = None


def resolve_artifact_path(s: Scope, path: str, *, allow_root: bool) -> Target:
    """``{experiment_id}/{run_id}/artifacts/{rel}``, ``.../models/{model_id}/artifacts/{rel}`` or
    ``.../traces/{trace_id}/artifacts/{rel}``, each of the request's tenant (else NotFound)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    shape = ("artifact paths look like EXPERIMENT_ID/RUN_ID/artifacts/PATH, "
             "EXPERIMENT_ID/models/MODEL_ID/artifacts/PATH or EXPERIMENT_ID/traces/TRACE_ID/artifacts/PATH")
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        experiment_id = s.internal(parts[0], create=False)
        model = s.model(parts[2])
        if model.experiment_id != experiment_id:
            raise NotFound(f"logged model {parts[2]!r} does not exist in experiment {parts[0]!r}")
        rel = clean_path("/".join(parts[4:]), allow_root=allow_root)
        return Target(s.models.files_root(model), rel, model=model)
    if len(parts) >= 4 and parts[1] == "traces" and parts[3] == "artifacts":
        experiment_id = s.internal(parts[0], create=False)
        trace = s.traces.get(s.tenant, parts[2])
        if trace.experiment_id != experiment_id:
            raise NotFound(f"trace {parts[2]!r} does not exist in experiment {parts[0]!r}")
        rel = clean_path("/".join(parts[4:]), allow_root=allow_root)
        return Target(s.traces.files_root(trace), rel)
    if len(parts) >= 3 and parts[2] == "artifacts":
        experiment_id = s.internal(parts[0], create=False)
        run = s.run(parts[1])
        if run.experiment_id != experiment_id:
            raise NotFound(f"run {parts[1]!r} does not exist in experiment {parts[0]!r}")
        rel = clean_path("/".join(parts[3:]), allow_root=allow_root)
        return Target("", rel, run_id=run.run_id)
    raise InvalidInput(f"{path!r}: {shape}")


class MlflowArtifacts(Controller):
    """``/api/2.0/mlflow-artifacts/*``."""

    path = "/"
    tags = ["mlflow"]
    dependencies = DEPENDENCIES
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @put(paths("artifacts/{path:path}", ARTIFACTS_API), status_code=200, request_max_body_size=None)
    async def upload(self, path: FromPath[str], request: Request, tracking: TrackingDep,
                     principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        path = artifact_path(request, path)
        target = await anyio.to_thread.run_sync(lambda: resolve_artifact_path(s, path, allow_root=False))
        if target.run_id is not None:
            _, root = await anyio.to_thread.run_sync(lambda: tracking._artifact_root(s.tenant, target.run_id))
        else:
            root = target.slot_root
        spool = await receive_upload(request, tracking, s.tenant, f"{root}/{target.rel}")  # [quotas]: 413, 507
        try:
            if target.run_id is not None:
                run_id = target.run_id
                await anyio.to_thread.run_sync(lambda: tracking.log_artifact(s.tenant, run_id, target.rel, spool))
            else:
                full = f"{target.slot_root}/{target.rel}"
                await anyio.to_thread.run_sync(lambda: tracking.artifacts.put(full, spool))
        finally:
            spool.close()
        return {}

    @get(paths("artifacts/{path:path}", ARTIFACTS_API), media_type="application/octet-stream")
    async def download(self, path: FromPath[str], request: Request, tracking: TrackingDep,
                       principal: PrincipalDep) -> Stream:
        # async with the blocking part in a thread: a sync handler with several paths returning a
        # Stream trips Litestar 2.x (its response is never awaited).
        s = scope(tracking, principal)
        path = artifact_path(request, path)

        def open_file() -> tuple[Any, int]:
            target = resolve_artifact_path(s, path, allow_root=False)
            if target.run_id is not None:
                info = tracking.stat_artifact(s.tenant, target.run_id, target.rel)
                opener = lambda: tracking.open_artifact(s.tenant, target.run_id, target.rel)  # noqa: E731
            else:
                full = f"{target.slot_root}/{target.rel}"
                info = tracking.artifacts.stat(full)
                opener = lambda: tracking.artifacts.open(full)  # noqa: E731
            if info.is_dir:
                raise InvalidInput(f"{target.rel!r} is a folder; list it with GET "
                                   "/api/2.0/mlflow-artifacts/artifacts?path=...")
            return opener(), info.size

        handle, size = await anyio.to_thread.run_sync(open_file)

        def chunks():
            with handle:
                while chunk := handle.read(1 << 20):
                    yield chunk

        return Stream(chunks(), media_type="application/octet-stream", headers={"Content-Length": str(size)})

    @get(paths("artifacts", ARTIFACTS_API), sync_to_thread=True)
    def listing(self, tracking: TrackingDep, principal: PrincipalDep,
                path: FromQuery[str | None] = None) -> dict[str, Any]:
        s = scope(tracking, principal)
        parts = [p for p in (path or "").split("/") if p not in ("", ".")]
        if len(parts) == 2 or (len(parts) == 3 and parts[1] in ("models", "traces")):
            # the folder above a run's (or a model's, or a trace's) artifacts: just "artifacts"
            resolve_artifact_path(s, "/".join([*parts, "artifacts"]), allow_root=True)
            return {"files": [{"path": "artifacts", "is_dir": True}]}
        if len(parts) < 3:
            return {}
        target = resolve_artifact_path(s, path or "", allow_root=True)
        if target.run_id is not None:
            files = tracking.list_artifacts(s.tenant, target.run_id, target.rel)
        else:
            files = tracking.artifacts.list(f"{target.slot_root}/{target.rel}" if target.rel else target.slot_root)
        out = [drop_none({"path": f.path.rsplit("/", 1)[-1], "is_dir": f.is_dir,
                           "file_size": None if f.is_dir else f.size}) for f in files]
        return {"files": out} if out else {}

    @delete(paths("artifacts/{path:path}", ARTIFACTS_API), sync_to_thread=True, status_code=200)
    def remove(self, path: FromPath[str], tracking: TrackingDep, principal: PrincipalDep) -> dict[str, Any]:
        s = scope(tracking, principal)
        target = resolve_artifact_path(s, path, allow_root=True)
        if target.run_id is not None:
            tracking.delete_artifacts(s.tenant, target.run_id, target.rel)
        else:
            tracking.artifacts.delete(f"{target.slot_root}/{target.rel}" if target.rel else target.slot_root)
        return {}

    @post([*paths("mpu/{action:str}/{path:path}", ARTIFACTS_API), *paths("mpu/{action:str}", ARTIFACTS_API)],
          sync_to_thread=False, status_code=200)
    def multipart(self, action: FromPath[str]) -> dict[str, Any]:
        """Multipart uploads are not offered (server-info says so); the client then sends one PUT."""
        raise MlflowApiError("NOT_IMPLEMENTED", MULTIPART_UNSUPPORTED, 501)

    @get(paths("presigned/{path:path}", ARTIFACTS_API), sync_to_thread=False)
    def presigned(self, path: FromPath[str]) -> dict[str, Any]:
        raise MlflowApiError("NOT_IMPLEMENTED", PRESIGNED_DOWNLOAD_UNSUPPORTED, 501)
