"""MLflow 3's server-info and version probes, and MLflow's ENDPOINT_NOT_FOUND for every endpoint not served here."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, route
from litestar.params import FromPath

from matih_lite import __version__
from matih_lite.service.mlflow.api import ARTIFACTS_API, EXCEPTION_HANDLERS, MlflowApiError, paths


class MlflowServerInfo(Controller):
    """``/api/3.0/mlflow/server-info``, ``/version`` and the catch-all."""

    path = "/"
    tags = ["mlflow"]
    exception_handlers = EXCEPTION_HANDLERS  # type: ignore[assignment]
    include_in_schema = False

    @get(["/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info"], sync_to_thread=False)
    def server_info(self) -> dict[str, Any]:
        """What the client probes before large uploads and for workspaces: neither is offered."""
        return {"store_type": "matih-lite", "workspaces_enabled": False, "trace_archival_enabled": False,
                "multipart_uploads_enabled": False, "multipart_downloads_enabled": False,
                "presigned_upload_run_id_supported": False, "presigned_upload_model_id_supported": False,
                "features_enabled": {"gateway": False}}

    @get("/version", sync_to_thread=False, media_type="text/plain")
    def version(self) -> str:
        """This service's version, as MLflow's server answers its own: plain text.

        The client reads it before logging spans over OTLP, which it only tries from MLflow 3.4 on;
        below that it uploads each trace's spans as an artifact, which is what this service keeps.
        """
        return __version__

    @route([*paths("{rest:path}"), *paths("{rest:path}", ARTIFACTS_API), "/api/3.0/mlflow/{rest:path}",
            "/ajax-api/3.0/mlflow/{rest:path}"],
           http_method=["GET", "POST", "PUT", "PATCH", "DELETE"], sync_to_thread=False, status_code=404)
    def not_found(self, request: Request, rest: FromPath[str]) -> None:
        """Any other MLflow endpoint: ENDPOINT_NOT_FOUND, which the client knows how to fall back from."""
        raise _endpoint_not_found(request)

    @route(paths("logged-models/{model_id:str}/{rest:path}"), http_method=["GET", "POST", "PUT", "PATCH", "DELETE"],
           sync_to_thread=False, status_code=404)
    def not_found_under_model(self, request: Request, model_id: FromPath[str], rest: FromPath[str]) -> None:
        """The router does not fall back past a path parameter, so the catch-all repeats under one."""
        raise _endpoint_not_found(request)


def _endpoint_not_found(request: Request) -> MlflowApiError:
    return MlflowApiError("ENDPOINT_NOT_FOUND", f"{request.method} {request.url.path} is not served by "
                          "matih-lite's MLflow-compatible API", 404)
