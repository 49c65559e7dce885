"""The feature store over REST: ``/api/v1/features/...`` and Feast's feature-server API. Thin: parse, call, return.

Every rule lives in :class:`~matih_lite.features.service.Features`; every call is scoped to the caller's
tenant. Our own routes:

- ``GET /api/v1/features``: what is applied (version, entities, sources, views, services).
- ``GET /api/v1/features/objects/{name}`` (``?monitor=false``): one object; a view with its monitoring.
- ``GET /api/v1/features/views/{name}/monitoring``, ``POST /api/v1/features/monitoring``: freshness, nulls,
  range, drift and quality score of a view, or of every view (alerts sent once per view, feature, window).
- ``GET /api/v1/features/audit`` (``?name=``), ``GET /api/v1/features/versions``.
- ``POST /api/v1/features/plan`` and ``/apply`` ``{"files": {"customer.toml": "..."}}`` (none: the service's
  own repo folder; ``apply`` also takes ``expected_version``).
- ``POST /api/v1/features/historical``: JSON ``{"entities": {col: [...]}, "features": [...] | "feature_service"}``
  answered ``{"columns", "data"}``; or a parquet body (``Content-Type: application/vnd.apache.parquet``,
  references in the query string) answered in parquet.
- ``POST /api/v1/features/online``, ``/materialize``, ``/materialize-incremental``, ``/push``.

Feast's feature server (what ``feast serve`` answers, so its clients work unchanged):
``POST /get-online-features``, ``POST /push``, ``POST /materialize``, ``POST /materialize-incremental``.
Errors are RFC 9457 problem details with a 4xx status, never Feast's 500s.
"""

from __future__ import annotations

import io
from datetime import UTC
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter, RawBody

from matih_lite.errors import InvalidInput
from matih_lite.host import Host
from matih_lite.service.auth import Principal, principal

if TYPE_CHECKING:
    from matih_lite.features.service import Features

# The features domain loads with the first feature request, not with the service (``up`` stays quick).
FeaturesDep = NamedDependency[Any]
PrincipalDep = NamedDependency[Principal]
PARQUET = "application/vnd.apache.parquet"
MAX_ENTITY_BODY = 1024 * 1024 * 1024

_json = msgspec.json.Encoder()


def provide_features(host: NamedDependency[Host]) -> Any:
    from matih_lite.features.service import Features

    return Features.of(host)


DEPENDENCIES = {"features": Provide(provide_features, sync_to_thread=False),
                "principal": Provide(principal, sync_to_thread=False)}


# ---- DTOs ----------------------------------------------------------------------------------------------
class FilesIn(msgspec.Struct, forbid_unknown_fields=True):
    files: dict[str, str] | None = None
    """``{relative file name: TOML text}``; none: the service's own repo folder."""


class ApplyIn(FilesIn, forbid_unknown_fields=True):
    expected_version: int | None = None
    """Refuse (409) unless this version is the applied one (0: none yet)."""


class OnlineIn(msgspec.Struct):
    """Feast's ``GetOnlineFeaturesRequest`` (unknown members are ignored, as Feast's pydantic model does)."""

    entities: dict[str, list[Any]]
    features: list[str] = []
    feature_service: str | None = None
    full_feature_names: bool = False


class HistoricalIn(msgspec.Struct, forbid_unknown_fields=True):
    entities: dict[str, list[Any]] | None = None
    features: list[str] | None = None
    feature_service: str | None = None
    timestamp_column: str = "event_timestamp"
    full_feature_names: bool = False
    start: str | None = None
    end: str | None = None


class MaterializeIn(msgspec.Struct):
    """Feast's ``MaterializeRequest``."""

    start_ts: str | None = None
    end_ts: str | None = None
    feature_views: list[str] | None = None
    disable_event_timestamp: bool = False


class MaterializeIncrementalIn(msgspec.Struct):
    """Feast's ``MaterializeIncrementalRequest``."""

    end_ts: str
    feature_views: list[str] | None = None


class PushIn(msgspec.Struct):
    """Feast's ``PushFeaturesRequest``."""

    push_source_name: str
    df: dict[str, list[Any]]
    to: str = "online"


def _decode(body: bytes, kind: type) -> Any:
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"the request body is not JSON: {exc}") from None


def _online(features: Features, who: Principal, body: bytes) -> bytes:
    data = _decode(body, OnlineIn)
    answer = features.online(who, data.entities, data.features or None, data.feature_service,
                             full_feature_names=data.full_feature_names)
    return _json.encode(answer.to_feast())


class _Lookups:
    """Runs online lookups on the event loop while they take under ``INLINE_S`` (the built-in SQLite store:
    tens of microseconds, less than a thread hop), in a worker thread otherwise (a remote store: Redis through
    Feast). The quickest of the last ``WINDOW`` lookups decides, so a loaded machine preempting a fast lookup
    now and then does not push lookups off the loop, while a store that is never fast is kept off it."""

    INLINE_S = 0.002
    WINDOW = 32

    def __init__(self) -> None:
        from collections import deque

        self.recent: Any = deque(maxlen=self.WINDOW)
        self.quickest = 0.0

    def _timed(self, features: Features, who: Principal, body: bytes) -> bytes:
        import time

        started = time.perf_counter()
        try:
            return _online(features, who, body)
        finally:
            self.recent.append(time.perf_counter() - started)
            if len(self.recent) == self.WINDOW:
                self.quickest = min(self.recent)

    async def __call__(self, features: Features, who: Principal, body: bytes) -> bytes:
        if self.quickest < self.INLINE_S:
            return self._timed(features, who, body)
        from anyio import to_thread

        return await to_thread.run_sync(self._timed, features, who, body)


async def online_call(host: Any, who: Principal, body: bytes) -> bytes:
    """The answer to an online lookup's body, for the service's fast path (:mod:`matih_lite.service.fastpath`
    answers ``/get-online-features`` and ``/api/v1/features/online`` before Litestar routes them: at thousands
    of lookups a second the framework's per-request work costs more than the lookup)."""
    from matih_lite.features.service import Features

    features = Features.of(host)
    return await _lookups(features)(features, who, body)


async def _online_response(request: Request) -> Response:
    """The Litestar routes of the lookups (the OpenAPI document's; the fast path takes the requests first)."""
    return Response(await online_call(request.app.state["host"], principal(request), await request.body()),
                    media_type="application/json")


def _lookups(features: Features) -> _Lookups:
    found = getattr(features, "_http_lookups", None)
    if found is None:
        found = features._http_lookups = _Lookups()  # type: ignore[attr-defined]
    return found


def _materialize(features: Features, who: Principal, data: MaterializeIn) -> dict[str, int]:
    if data.disable_event_timestamp:
        from datetime import datetime

        start: Any = datetime(1970, 1, 1, tzinfo=UTC)
        end: Any = datetime.now(UTC)
    else:
        if not data.start_ts or not data.end_ts:
            raise InvalidInput("start_ts and end_ts are required when disable_event_timestamp is false")
        start, end = data.start_ts, data.end_ts
    return features.materialize(who, start, end, data.feature_views or None)


class FeaturesController(Controller):
    path = "/api/v1/features"
    tags = ["features"]
    dependencies = DEPENDENCIES

    @get("/", sync_to_thread=True, summary="The applied feature definitions: entities, sources, views, services")
    def overview(self, features: FeaturesDep, principal: PrincipalDep) -> dict[str, Any]:
        from matih_lite.features.views import overview

        return overview(features, principal.tenant)

    @get("/objects/{name:str}", sync_to_thread=True,
         summary="One feature view, on-demand view, service, entity or source (a view with its monitoring)")
    def show(self, name: FromPath[str], features: FeaturesDep, principal: PrincipalDep,
             monitor: FromQuery[bool] = True) -> dict[str, Any]:
        from matih_lite.features.views import show

        return show(features, principal, name, monitor=monitor)

    @get("/views/{name:str}/monitoring", sync_to_thread=True,
         summary="A feature view's freshness, null rates, ranges, drift and quality score (alerts sent once)")
    def monitoring(self, name: FromPath[str], features: FeaturesDep, principal: PrincipalDep) -> dict[str, Any]:
        from matih_lite.features.monitoring import monitor_view

        return monitor_view(features, principal, name)

    @post("/monitoring", sync_to_thread=True, status_code=200, summary="Monitor every feature view now")
    def monitor_all(self, features: FeaturesDep, principal: PrincipalDep) -> dict[str, Any]:
        from matih_lite.features.monitoring import check_all

        return {"views": check_all(features, principal)}

    @get("/audit", sync_to_thread=True, summary="Changes to the feature definitions, newest first")
    def audit(self, features: FeaturesDep, principal: PrincipalDep, name: FromQuery[str | None] = None,
              max_results: Annotated[int, QueryParameter(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
        return {"entries": msgspec.to_builtins(features.audit(principal.tenant, name, max_results))}

    @get("/versions", sync_to_thread=True, summary="Every applied version of the feature definitions, newest first")
    def versions(self, features: FeaturesDep, principal: PrincipalDep) -> dict[str, Any]:
        return {"versions": msgspec.to_builtins(features.metadata.list_feature_definition_versions(principal.tenant))}

    @post("/plan", sync_to_thread=True, status_code=200, summary="What applying these definitions would change")
    def plan(self, data: JSONBody[FilesIn], features: FeaturesDep, principal: PrincipalDep) -> dict[str, Any]:
        from matih_lite.features.views import plan_view

        return plan_view(features.plan(principal, data.files))

    @post("/apply", sync_to_thread=True, status_code=200,
          summary="Record the definitions as the next version (all or nothing)")
    def apply(self, data: JSONBody[ApplyIn], features: FeaturesDep, principal: PrincipalDep) -> dict[str, Any]:
        from matih_lite.features.views import apply_view

        return apply_view(features.apply(principal, data.files, expected_version=data.expected_version))

    @post("/historical", sync_to_thread=True, status_code=200, request_max_body_size=MAX_ENTITY_BODY,
          summary="Point-in-time correct features for entity rows (JSON, or parquet in and out)")
    def historical(self, request: Request, body: RawBody, features: FeaturesDep, principal: PrincipalDep) -> Response:
        media = (request.headers.get("content-type") or "").split(";")[0].strip()
        if media == PARQUET:
            return self._historical_parquet(request, body, features, principal)
        data = _decode(body, HistoricalIn)
        table = features.historical(principal, data.entities, data.features, data.feature_service,
                                    timestamp_column=data.timestamp_column, start=data.start, end=data.end,
                                    full_feature_names=data.full_feature_names)
        doc = {"columns": table.column_names, "data": table.to_pydict()}
        return Response(_json.encode(doc), media_type="application/json")

    @staticmethod
    def _historical_parquet(request: Request, body: bytes, features: Features, who: Principal) -> Response:
        import pyarrow as pa
        import pyarrow.parquet as pq

        q = request.query_params
        refs = [r for r in (q.get("features") or "").split(",") if r.strip()] or None
        entities = None
        if body:
            try:
                entities = pq.read_table(pa.BufferReader(body))
            except (pa.ArrowInvalid, OSError) as exc:
                raise InvalidInput(f"the request body is not a parquet file: {exc}") from None
        table = features.historical(who, entities, refs, q.get("feature_service"),
                                    timestamp_column=q.get("timestamp_column") or "event_timestamp",
                                    start=q.get("start"), end=q.get("end"),
                                    full_feature_names=(q.get("full_feature_names") or "").lower() == "true")
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return Response(sink.getvalue(), media_type=PARQUET)

    @post("/online", status_code=200,
          summary="Online values of entities: the same body and answer as Feast's /get-online-features")
    async def online(self, request: Request) -> Response:
        return await _online_response(request)

    @post("/materialize", sync_to_thread=True, status_code=200,
          summary="Copy each entity's latest values in [start_ts, end_ts] into the online store")
    def materialize(self, data: JSONBody[MaterializeIn], features: FeaturesDep,
                    principal: PrincipalDep) -> dict[str, Any]:
        rows = _materialize(features, principal, data)
        return {"feature_views": rows, "rows": sum(rows.values())}

    @post("/materialize-incremental", sync_to_thread=True, status_code=200,
          summary="Materialize each view from where it last ended up to end_ts")
    def materialize_incremental(self, data: JSONBody[MaterializeIncrementalIn], features: FeaturesDep,
                                principal: PrincipalDep) -> dict[str, Any]:
        out = features.materialize_incremental(principal, data.end_ts, data.feature_views or None)
        return {"feature_views": out, "rows": sum(v["rows"] for v in out.values())}

    @post("/push", sync_to_thread=True, status_code=200, summary="Write fresh rows through a push source")
    def push(self, data: JSONBody[PushIn], features: FeaturesDep, principal: PrincipalDep) -> dict[str, Any]:
        rows = features.push(principal, data.push_source_name, data.df, data.to)  # type: ignore[arg-type]
        return {"rows": rows, "push_source_name": data.push_source_name, "to": data.to}


class FeastServerController(Controller):
    """Feast 0.67's feature server, answered as ``feast serve`` does."""

    path = "/"
    tags = ["features (Feast feature server)"]
    dependencies = DEPENDENCIES

    @post("/get-online-features", status_code=200,
          summary="Feast: online features of entities ({features | feature_service, entities})")
    async def get_online_features(self, request: Request) -> Response:
        return await _online_response(request)

    @post("/push", sync_to_thread=True, status_code=200, summary="Feast: push rows through a push source")
    def push(self, data: JSONBody[PushIn], features: FeaturesDep, principal: PrincipalDep) -> Response:
        features.push(principal, data.push_source_name, data.df, data.to)  # type: ignore[arg-type]
        return Response(b"", status_code=200, media_type="text/plain")

    @post("/materialize", sync_to_thread=True, status_code=200, summary="Feast: materialize [start_ts, end_ts]")
    def materialize(self, data: JSONBody[MaterializeIn], features: FeaturesDep, principal: PrincipalDep) -> Response:
        _materialize(features, principal, data)
        return Response(b"null", media_type="application/json")

    @post("/materialize-incremental", sync_to_thread=True, status_code=200,
          summary="Feast: materialize each view from where it last ended")
    def materialize_incremental(self, data: JSONBody[MaterializeIncrementalIn], features: FeaturesDep,
                                principal: PrincipalDep) -> Response:
        features.materialize_incremental(principal, data.end_ts, data.feature_views or None)
        return Response(b"null", media_type="application/json")


CONTROLLERS = [FeaturesController, FeastServerController]
