"""The feature store for the SDK and the CLI: embedded on this folder's platform, or through ``MATIH_URL``.

Every method answers the same whichever transport carries it (the REST API's shapes for listings,
Arrow/pandas for tables, :class:`~matih_lite.features.retrieval.OnlineFeatures` for lookups). Over
HTTP, ``plan`` and ``apply`` upload this folder's definition files; the service checks them against
the sources it sees.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.remote import HostOrService

if TYPE_CHECKING:
    from matih_lite.host import Host



def _json(value: Any) -> Any:
    return msgspec.to_builtins(value)


class FeatureClient(HostOrService):
    """``plan``, ``apply``, ``overview``, ``show``, ``historical``, ``online``, ``materialize``, ``push``,
    ``monitor``."""

    def __init__(self, url: str | None = None, *, token: str | None = None, config: str | None = None,
                 profile: str | None = None, host: Host | None = None, principal: Any = None) -> None:
        super().__init__(url, token=token, config=config, profile=profile, host=host, principal=principal)
        self._config_path = config
        self._profile = profile

    def _features(self) -> Any:
        from matih_lite.features.service import Features

        return Features.of(self.host)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.http.call(method, path, **kwargs)

    def _local_files(self) -> dict[str, str]:
        from matih_lite.config import load_config
        from matih_lite.features.definitions import read_repo

        config = load_config(self._config_path)
        entry = config.profile(self._profile).get("features") or {}
        written = str(entry.get("repo") or "features")
        root = Path(written) if Path(written).is_absolute() else config.base_dir / written
        return read_repo(root, label=written.rstrip("/"))

    # ---- definitions ----------------------------------------------------------------------------------
    def plan(self) -> dict[str, Any]:
        """``{"base_version", "digest", "changes": [...]}``: what apply would change."""
        if self.http is not None:
            return self._call("POST", "/api/v1/features/plan", json={"files": self._local_files()})
        from matih_lite.features.views import plan_view

        return plan_view(self._features().plan(self.principal))

    def apply(self, expected_version: int | None = None) -> dict[str, Any]:
        """``{"version", "digest", "applied", "changes"}``."""
        if self.http is not None:
            return self._call("POST", "/api/v1/features/apply",
                              json={"files": self._local_files(), "expected_version": expected_version})
        from matih_lite.features.views import apply_view

        return apply_view(self._features().apply(self.principal, expected_version=expected_version))

    def overview(self) -> dict[str, Any]:
        if self.http is not None:
            return self._call("GET", "/api/v1/features")
        from matih_lite.features.views import overview

        return overview(self._features(), self.principal.tenant)

    def show(self, name: str, *, monitor: bool = True) -> dict[str, Any]:
        if self.http is not None:
            return self._call("GET", f"/api/v1/features/objects/{name}", params={"monitor": str(monitor).lower()})
        from matih_lite.features.views import show

        return show(self._features(), self.principal, name, monitor=monitor)

    def audit(self, name: str | None = None) -> list[dict[str, Any]]:
        if self.http is not None:
            return self._call("GET", "/api/v1/features/audit", params={"name": name} if name else {})["entries"]
        return [_json(e) for e in self._features().audit(self.principal.tenant, name)]

    def monitor(self, view: str | None = None) -> list[dict[str, Any]]:
        if self.http is not None:
            if view:
                return [self._call("GET", f"/api/v1/features/views/{view}/monitoring")]
            return self._call("POST", "/api/v1/features/monitoring")["views"]
        from matih_lite.features.monitoring import check_all, monitor_view

        if view:
            return [monitor_view(self._features(), self.principal, view)]
        return check_all(self._features(), self.principal)

    # ---- retrieval ---------------------------------------------------------------------------------------
    def historical(self, entity_rows: Any = None, features: Sequence[str] | None = None,
                   feature_service: str | None = None, *, timestamp_column: str = "event_timestamp",
                   start: Any = None, end: Any = None, full_feature_names: bool = False) -> Any:
        """See :func:`matih_lite.features.get_historical_features`."""
        if self.http is None:
            return self._features().historical(self.principal, entity_rows, features, feature_service,
                                               timestamp_column=timestamp_column, start=start, end=end,
                                               full_feature_names=full_feature_names)
        import pyarrow as pa
        import pyarrow.parquet as pq

        from matih_lite.features import retrieval

        kind = retrieval.input_kind(entity_rows) if entity_rows is not None else "arrow"
        params = _params(features, feature_service, timestamp_column, full_feature_names, start, end)
        body = b""
        if entity_rows is not None:
            sink = io.BytesIO()
            pq.write_table(retrieval.to_arrow(entity_rows), sink)
            body = sink.getvalue()
        resp = self.http.send("POST", "/api/v1/features/historical", params=params, content=body,
                                       headers={"Content-Type": "application/vnd.apache.parquet",
                                                "Accept": "application/vnd.apache.parquet"})
        table = pq.read_table(pa.BufferReader(resp.content))
        if kind == "pandas":
            from matih_lite.features.service import _to_pandas

            return _to_pandas(table, entity_rows)
        return table

    def historical_to_file(self, output: str | Path, *, entity_path: str | Path | None = None,
                           features: Sequence[str] | None = None, feature_service: str | None = None,
                           timestamp_column: str = "event_timestamp", start: Any = None, end: Any = None,
                           full_feature_names: bool = False, progress: Callable[[int], None] | None = None) -> int:
        """Join an entity file (or a range) into ``output`` (.parquet or .csv); returns the rows."""
        if self.http is None:
            return self._features().historical_to_file(
                self.principal, output, entity_path=entity_path, features=features, service=feature_service,
                timestamp_column=timestamp_column, start=start, end=end, full_feature_names=full_feature_names,
                progress=progress)
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        from matih_lite.features.service import _file_format, write_batches

        fmt = _file_format(Path(output), "output")
        body = b""
        if entity_path is not None:
            path = Path(entity_path)
            table = pq.read_table(path) if _file_format(path, "entity rows") == "parquet" else pcsv.read_csv(path)
            sink = io.BytesIO()
            pq.write_table(table, sink)
            body = sink.getvalue()
        params = _params(features, feature_service, timestamp_column, full_feature_names, start, end)
        resp = self.http.send("POST", "/api/v1/features/historical", params=params, content=body,
                                       headers={"Content-Type": "application/vnd.apache.parquet",
                                                "Accept": "application/vnd.apache.parquet"})
        result = pq.read_table(pa.BufferReader(resp.content))
        return write_batches(pa.RecordBatchReader.from_batches(result.schema, result.to_batches()), Path(output),
                             fmt, progress)

    def online(self, entity_rows: Any, features: Sequence[str] | None = None, feature_service: str | None = None,
               *, full_feature_names: bool = False) -> Any:
        """See :func:`matih_lite.features.get_online_features`."""
        if self.http is None:
            return self._features().online(self.principal, entity_rows, features, feature_service,
                                           full_feature_names=full_feature_names)
        from matih_lite.features.retrieval import OnlineFeatures, columnar

        cols, _ = columnar(entity_rows)
        body: dict[str, Any] = {"entities": cols, "full_feature_names": full_feature_names}
        if feature_service is not None:
            body["feature_service"] = feature_service
        else:
            body["features"] = list(features or [])
        doc = self._call("POST", "/api/v1/features/online", json=body)
        return OnlineFeatures.from_feast(doc, list(cols))

    # ---- writes --------------------------------------------------------------------------------------------
    def materialize(self, start: Any, end: Any, views: Sequence[str] | None = None,
                    progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
        if self.http is None:
            return self._features().materialize(self.principal, start, end, views, progress)
        out = self._call("POST", "/api/v1/features/materialize",
                         json={"start_ts": _iso(start), "end_ts": _iso(end), "feature_views": list(views or [])})
        return out["feature_views"]

    def materialize_incremental(self, end: Any, views: Sequence[str] | None = None,
                                progress: Callable[[str, int], None] | None = None) -> dict[str, dict[str, Any]]:
        if self.http is None:
            return self._features().materialize_incremental(self.principal, end, views, progress)
        out = self._call("POST", "/api/v1/features/materialize-incremental",
                         json={"end_ts": _iso(end), "feature_views": list(views or [])})
        return out["feature_views"]

    def push(self, push_source: str, rows: Any, to: str = "online") -> int:
        if self.http is None:
            return self._features().push(self.principal, push_source, rows, to)  # type: ignore[arg-type]
        from matih_lite.features.retrieval import to_arrow

        table = to_arrow(rows)
        df = {name: [_jsonable(v) for v in table.column(name).to_pylist()] for name in table.column_names}
        return self._call("POST", "/api/v1/features/push", json={"push_source_name": push_source, "df": df,
                                                                "to": to})["rows"]


def _iso(value: Any) -> Any:
    from datetime import datetime

    return value.isoformat() if isinstance(value, datetime) else value


def _jsonable(value: Any) -> Any:
    from datetime import date, datetime

    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _params(features: Sequence[str] | None, service: str | None, timestamp_column: str, full: bool,
            start: Any, end: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"timestamp_column": timestamp_column, "full_feature_names": str(full).lower()}
    if service is not None:
        params["feature_service"] = service
    if features:
        params["features"] = ",".join(features)
    if start is not None:
        params["start"] = _iso(start)
    if end is not None:
        params["end"] = _iso(end)
    return params
