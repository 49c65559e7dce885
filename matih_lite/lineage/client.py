"""The lineage client for the SDK and the CLI: embedded on this folder's store, or over HTTP.

Like every domain client (:class:`~matih_lite.remote.HostOrService`): ``MATIH_URL`` (with
``MATIH_TOKEN``), else the ``matih-lite up`` that owns this folder, else the current folder's matih.toml.
Every call returns plain JSON-shaped data (the REST API's shapes), whichever transport carries it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec

from matih_lite.remote import HostOrService

if TYPE_CHECKING:
    from matih_lite.host import Host


DEFAULT_TENANT = "default"


class LineageClient(HostOrService):
    """Record and query lineage: ``log_input``, ``node``, ``upstream``, ``downstream``, ``export``."""

    def __init__(self, url: str | None = None, *, token: str | None = None, config: str | None = None,
                 profile: str | None = None, host: Host | None = None, tenant: str = DEFAULT_TENANT,
                 http: Any = None) -> None:
        super().__init__(url, token=token, config=config, profile=profile, host=host, http=http)
        self.tenant = tenant

    @classmethod
    def of(cls, client: Any) -> LineageClient:
        """The lineage client riding on a tracking :class:`Client`'s connection (same host or URL, same tenant)."""
        transport = client._t  # the tracking client's transport: one connection for both domains
        if transport.name == "embedded":
            return cls(host=transport.host, tenant=transport.tenant)
        return cls(http=transport.service)

    def _lineage(self) -> Any:
        from matih_lite.lineage.service import Lineage

        return Lineage(self.host)

    def _get(self, path: str, **params: Any) -> Any:
        return self.http.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    # ---- recording ------------------------------------------------------------------------------
    def log_input(self, run_id: str, dataset_uri: str, *, version: str | None = None, digest: str | None = None,
                  name: str | None = None, properties: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record ``dataset -> run`` and set the run's ``matih.dataset.<name>`` tag; returns
        ``{"name", "node", "tags"}``."""
        if self.http is not None:
            body = {k: v for k, v in (("uri", dataset_uri), ("version", version), ("digest", digest),
                                      ("name", name), ("properties", properties)) if v is not None}
            return self.http.call("POST", f"/api/v1/lineage/runs/{quote(run_id, safe='')}/inputs", json=body)
        from matih_lite.lineage.service import node_view

        out = self._lineage().log_input(self.tenant, run_id, dataset_uri, version, digest, name,
                                        properties=properties)
        return {"name": out["name"], "node": msgspec.to_builtins(node_view(out["node"])), "tags": out["tags"]}

    def record_node(self, key: str, *, name: str = "", properties: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.http is not None:
            return self.http.call("POST", "/api/v1/lineage/nodes",
                                       json={"key": key, "name": name, "properties": properties or {}})
        from matih_lite.lineage.service import node_view

        return msgspec.to_builtins(node_view(self._lineage().record_node(self.tenant, key, name=name,
                                                                         properties=properties)))

    def record_edge(self, source: str, target: str, kind: str) -> dict[str, Any]:
        if self.http is not None:
            return self.http.call("POST", "/api/v1/lineage/edges",
                                       json={"source": source, "target": target, "kind": kind})
        from matih_lite.lineage.service import edge_view

        return msgspec.to_builtins(edge_view(self._lineage().record_edge(self.tenant, source, target, kind)))

    # ---- queries --------------------------------------------------------------------------------
    def node(self, key: str) -> dict[str, Any]:
        if self.http is not None:
            return self._get("/api/v1/lineage/node", key=key)
        from matih_lite.lineage.service import node_view

        return msgspec.to_builtins(node_view(self._lineage().get_node(self.tenant, key)))

    def upstream(self, key: str, depth: int = 5) -> dict[str, Any]:
        return self._walk(key, "upstream", depth)

    def downstream(self, key: str, depth: int = 5) -> dict[str, Any]:
        return self._walk(key, "downstream", depth)

    def _walk(self, key: str, direction: str, depth: int) -> dict[str, Any]:
        if self.http is not None:
            return self._get(f"/api/v1/lineage/{direction}", key=key, depth=depth)
        from matih_lite.lineage.service import graph_view

        graph = self._lineage().walk(self.tenant, key, direction, depth)  # type: ignore[arg-type]
        return msgspec.to_builtins(graph_view(graph))

    def export(self, key: str | None = None, depth: int = 5) -> list[dict[str, Any]]:
        """OpenLineage ``COMPLETE`` run events (all of the tenant's, or those around ``key``)."""
        if self.http is not None:
            return self._get("/api/v1/lineage/openlineage", key=key, depth=depth)["events"]
        return self._lineage().export_openlineage(self.tenant, key, depth=depth)
