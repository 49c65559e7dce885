"""The drift client for the CLI and scripts: this folder's store embedded, or the ml-service at ``MATIH_URL``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from matih_lite.identity import Principal
from matih_lite.monitoring.service import Monitoring
from matih_lite.remote import HostOrService

if TYPE_CHECKING:
    from matih_lite.host import Host



class DriftClient(HostOrService):
    """Drift over this folder's store or the ml-service at ``MATIH_URL``, like the card client.

    Embedded, it acts as ``principal`` (the local admin unless told otherwise); over HTTP the
    token names the caller. While ``matih-lite up`` runs it owns the events file: set
    ``MATIH_URL`` to check through it.
    """

    def __init__(self, url: str | None = None, *, token: str | None = None, config: str | None = None,
                 profile: str | None = None, host: Host | None = None, principal: Principal | None = None) -> None:
        super().__init__(url, token=token, config=config, profile=profile, host=host, principal=principal)
        if self.http is None:
            self.monitoring = Monitoring(self.host)

    @staticmethod
    def _seg(text: Any) -> str:
        from urllib.parse import quote

        return quote(str(text), safe="")

    def check(self, deployment: str, window: str = "1h", *, end: int | None = None, act: bool = True) -> dict[str, Any]:
        if self.http is None:
            return self.monitoring.check(self.principal, deployment, window, end=end, act=act)
        body = {"window": window, "act": act, **({"end": end} if end is not None else {})}
        return self.http.call("POST", f"/api/v1/drift/deployments/{self._seg(deployment)}/check", json=body)

    def report_html(self, deployment: str, window: str = "1h", *, end: int | None = None) -> str:
        if self.http is None:
            return self.monitoring.report_html(self.principal, deployment, window, end=end)
        params: dict[str, Any] = {"window": window}
        if end is not None:
            params["end"] = end
        return self.http.send("GET", f"/api/v1/drift/deployments/{self._seg(deployment)}/report",
                              params=params).text

    def history(self, deployment: str, window: str | None = None, max_results: int = 50) -> list[dict[str, Any]]:
        if self.http is None:
            return self.monitoring.history(self.principal, deployment, window=window, max_results=max_results)
        params: dict[str, Any] = {"max_results": max_results}
        if window:
            params["window"] = window
        body = self.http.call("GET", f"/api/v1/drift/deployments/{self._seg(deployment)}/reports", params=params)
        return body["reports"]

    def build_baseline(self, name: str, version: int, data: Any, **options: Any) -> dict[str, Any]:
        """Build a version's baseline; over HTTP the data travels as columns (JSON)."""
        if self.http is None:
            return self.monitoring.build_baseline(self.principal, name, version, data, **options).summary()
        from matih_lite.monitoring.profile import columns_of

        columns = {k: _json_column(v) for k, v in columns_of(data).items()}
        body = {"columns": columns, **{k: v for k, v in options.items() if v is not None}}
        return self.http.call("POST", f"/api/v1/drift/baselines/{self._seg(name)}/versions/{int(version)}",
                                   json=body)

    def jobs(self) -> dict[str, Any]:
        """The drift runner's jobs (``{"backend", "jobs"}``). Embedded, the runner of this process, which runs
        none (the jobs run inside ``matih-lite up``): set ``MATIH_URL`` to see them."""
        if self.http is None:
            return {**drift_jobs(self.host), "embedded": True}
        return self.http.call("GET", "/api/v1/drift/jobs")

    def tests(self) -> list[dict[str, Any]]:
        if self.http is None:
            return describe_tests(self.monitoring.tests())
        return self.http.call("GET", "/api/v1/drift/tests")["tests"]


def drift_jobs(host: Host) -> dict[str, Any]:
    """The drift slot's backend and the jobs it supervises (``jobs()`` of a runner that has them, else none)."""
    spec = host.active("drift")
    runner = host.backend("drift") if spec is not None else None
    lister = getattr(runner, "jobs", None)
    return {"backend": spec.name if spec is not None else None, "jobs": list(lister()) if lister is not None else []}


def describe_tests(tests: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, "threshold": getattr(t, "threshold", None), "kind": getattr(t, "kind", None),
             "applies_to": list(getattr(t, "applies_to", ())), "description": getattr(t, "description", "")}
            for name, t in sorted(tests.items())]


def _json_column(values: Any) -> list[Any]:
    if hasattr(values, "to_pylist"):
        return values.to_pylist()
    arr = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
    if arr.dtype.kind == "f":
        return [None if not np.isfinite(x) else float(x) for x in arr.tolist()]
    return [x.item() if hasattr(x, "item") else x for x in arr.tolist()]
