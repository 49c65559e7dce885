"""The deployments client for the CLI and scripts: this folder's store embedded, or the ml-service.

Through the service when ``MATIH_URL`` is set or a ``matih-lite up`` serves this folder (a change made
embedded reaches a running service within a second, through the store's change feed). ``predict``
sends one request through the deployment's routes: over HTTP it is what any client sees; embedded it
loads the routed version in this process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec

from matih_lite.contracts.deployments import Deployment, DeploymentChange
from matih_lite.errors import InvalidInput
from matih_lite.remote import HostOrService

if TYPE_CHECKING:
    from matih_lite.host import Host



class DeploymentClient(HostOrService):
    """Deployments through the service this folder has (``MATIH_URL``, or its running ``up``), else embedded."""

    def __init__(self, config: str | None = None, profile: str | None = None, *, url: str | None = None,
                 token: str | None = None, host: Host | None = None) -> None:
        super().__init__(url, token=token, config=config, profile=profile, host=host, timeout=60.0)
        if self.http is None:
            from matih_lite.serving.deployments import Deployments

            self.deployments = Deployments(self.host)

    def close(self) -> None:
        if self.host is not None and self._owns:
            from matih_lite.serving.traffic import detach_traffic

            detach_traffic(self.host)
        super().close()

    def deploy(self, name: str, model: str | None, **changes: Any) -> Deployment:
        if self.http is None:
            return self.deployments.deploy(self.principal, name, model, **changes)
        body = {k: v for k, v in changes.items() if v is not None}
        from matih_lite.errors import NotFound

        try:
            self.http.call("GET", f"/api/v1/deployments/{quote(name, safe='')}")
        except NotFound:
            if not model:
                raise InvalidInput(f"deployment {name!r} does not exist; give --model to create it") from None
            body.pop("reason", None)
            return _deployment(self.http.call("POST", "/api/v1/deployments",
                                              json={"name": name, "model": model, **body}))
        return _deployment(self.http.call("PATCH", f"/api/v1/deployments/{quote(name, safe='')}", json=body))

    def list(self, model: str | None) -> list[Deployment]:
        if self.http is None:
            out, token = [], None
            while True:
                page = self.deployments.list(self.principal, model=model, max_results=1000, page_token=token)
                out.extend(page.items)
                token = page.next_token
                if not token:
                    return out
        params = {"model": model} if model else {}
        return [_deployment(d) for d in self.http.call("GET", "/api/v1/deployments", params=params)["deployments"]]

    def get(self, name: str) -> Deployment:
        if self.http is None:
            return self.deployments.get(self.principal, name)
        return _deployment(self.http.call("GET", f"/api/v1/deployments/{quote(name, safe='')}"))

    def history(self, name: str) -> list[DeploymentChange]:
        if self.http is None:
            return self.deployments.history(self.principal, name, max_results=50_000).items
        doc = self.http.call("GET", f"/api/v1/deployments/{quote(name, safe='')}/history",
                             params={"max_results": 50_000})
        return [msgspec.convert({"tenant": "", "deployment": name, **c}, DeploymentChange) for c in doc["changes"]]

    def stats(self, name: str) -> dict[str, Any] | None:
        """What the serving process measured (only a running service has traffic to show)."""
        if self.http is None:
            return None
        return self.http.call("GET", f"/api/v1/deployments/{quote(name, safe='')}/stats")

    def delete(self, name: str, reason: str) -> None:
        if self.http is None:
            self.deployments.delete(self.principal, name, reason=reason)
            return
        self.http.call("DELETE", f"/api/v1/deployments/{quote(name, safe='')}", params={"reason": reason})

    def predict(self, name: str, body: dict[str, Any], key: str | None, version: int | None) -> dict[str, Any]:
        if self.http is not None:
            headers = {"X-Request-Key": key} if key else {}
            if version is not None:
                raise InvalidInput("--version works embedded only; over HTTP pin a version with the Open Inference "
                                   f"Protocol: POST /v2/models/{name}/versions/{version}/infer")
            return self.http.call("POST", f"/api/v1/deployments/{quote(name, safe='')}/predict", json=body,
                                  headers=headers)
        return _predict_embedded(self.host, self.principal, name, body, key, version)


def _deployment(doc: dict[str, Any]) -> Deployment:
    return msgspec.convert({"tenant": "", **doc}, Deployment)


def _predict_embedded(host: Host, principal: Any, name: str, body: dict[str, Any], key: str | None,
                      version: int | None) -> dict[str, Any]:
    import asyncio

    from matih_lite.serving.payload import parse_scoring_request, predictions_json
    from matih_lite.serving.traffic import attach_traffic

    manager = attach_traffic(host)
    tenant = principal.tenant
    body = dict(body)
    key = body.pop("request_key", key)

    async def run() -> Any:
        target = await manager.target(tenant, name, key=key, version=version)
        doc, lookup_ms = body, None
        if target.served.feature_source is not None:
            from matih_lite.serving.enrichment import enrich

            doc, lookup_ms = await enrich(host, principal, target.served, body)
        parsed = parse_scoring_request(doc, target.served.schema)
        return await manager.infer(target, parsed.inputs, feature_lookup_ms=lookup_ms)

    answer = asyncio.run(run())
    return {"predictions": predictions_json(answer.outputs), "deployment": answer.deployment, "model": answer.model,
            "version": answer.version, "variant": answer.variant, "request_id": answer.request_id}
