"""The registry client: one :class:`RegistryClient`, embedded or over HTTP, as the tracking client picks.

* **embedded**: a :class:`~matih_lite.registry.Registry` over a host opened on the current
  folder's config, acting as ``principal`` (the local admin unless told otherwise);
* **HTTP**: the ml-service's ``/api/v1/models`` and ``/api/v1/approvals`` at ``MATIH_URL``
  (bearer ``MATIH_TOKEN``); the server decides who the caller is from the token.

Both return :mod:`matih_lite.contracts.registry` records (and :class:`~matih_lite.registry.Transition`)
and raise the same :mod:`matih_lite.errors` classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec

from matih_lite.contracts.records import Page
from matih_lite.contracts.registry import Approval, AuditEntry, ModelVersion, RegisteredModel
from matih_lite.identity import Principal
from matih_lite.registry.service import Transition
from matih_lite.remote import HostOrService, resolve_service

if TYPE_CHECKING:
    from matih_lite.host import Host



def _seg(value: Any) -> str:
    return quote(str(value), safe="")


def _record(data: Mapping[str, Any], kind: type) -> Any:
    fields = getattr(kind, "__struct_fields__", ())
    values = {k: v for k, v in data.items() if k in fields}
    if "tenant" in fields:
        values.setdefault("tenant", "")
    return msgspec.convert(values, kind)


class _Embedded:
    """The registry of this process's host, called as ``principal``."""

    name = "embedded"

    def __init__(self, host: Host, principal: Principal) -> None:
        from matih_lite.registry.service import Registry

        self.registry = Registry(host)
        self.principal = principal

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.registry, method)(self.principal, *args, **kwargs)


class RegistryClient(HostOrService):
    """Registered models, versions, promotions, approvals, aliases and audit logs, embedded or over HTTP.

    ``RegistryClient()`` talks to ``MATIH_URL`` (with ``MATIH_TOKEN``) when it is set, or to the
    ``matih-lite up`` that serves this folder, and otherwise opens the current folder's matih.toml in this
    process, acting as ``principal`` (default: the
    local admin; only the embedded client can act as someone else)::

        with RegistryClient() as models:
            mv = models.register_version("churn", run_id=run.run_id, path="model", flavor="sklearn")
            models.promote("churn", mv.version, "Staging")
    """

    def __init__(self, url: str | None = None, *, token: str | None = None, config: str | None = None,
                 profile: str | None = None, host: Host | None = None, principal: Principal | None = None,
                 timeout: float = 30.0) -> None:
        if principal is not None and host is None and resolve_service(url, token, config)[0]:
            from matih_lite.errors import InvalidInput

            raise InvalidInput("through the service (MATIH_URL, or the matih-lite up serving this folder) the "
                               "caller is the token's; acting as another user (--as) works only embedded")
        super().__init__(url, token=token, config=config, profile=profile, host=host, principal=principal,
                         timeout=timeout)
        self._http = self.http
        self._embedded = _Embedded(self.host, self.principal) if self.http is None else None

    def _get(self, path: str, **params: Any) -> Any:
        assert self._http is not None
        return self._http.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def _send(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self._http is not None
        return self._http.call_with_status(method, path, json=body)

    # ---- models -----------------------------------------------------------------------------------
    def create_model(self, name: str, *, description: str = "",
                     tags: Mapping[str, Any] | None = None) -> RegisteredModel:
        tags = {k: str(v) for k, v in (tags or {}).items()}
        if self._embedded:
            return self._embedded.call("create_model", name, description=description, tags=tags)
        return _record(self._send("POST", "/api/v1/models/", {"name": name, "description": description,
                                                              "tags": tags})[1], RegisteredModel)

    def get_model(self, name: str) -> RegisteredModel:
        if self._embedded:
            return self._embedded.call("get_model", name)
        return _record(self._get(f"/api/v1/models/{_seg(name)}"), RegisteredModel)

    def list_models(self, *, name_like: str | None = None, max_results: int = 1000,
                    page_token: str | None = None) -> Page[RegisteredModel]:
        if self._embedded:
            return self._embedded.call("list_models", name_like=name_like, max_results=max_results,
                                       page_token=page_token)
        body = self._get("/api/v1/models/", name_like=name_like, max_results=max_results, page_token=page_token)
        return Page([_record(m, RegisteredModel) for m in body["models"]], body.get("next_page_token"))

    def update_model(self, name: str, *, description: str | None = None, tags: Mapping[str, Any] | None = None,
                     new_name: str | None = None, owner: str | None = None) -> RegisteredModel:
        tags = None if tags is None else {k: str(v) for k, v in tags.items()}
        if self._embedded:
            return self._embedded.call("update_model", name, description=description, tags=tags, new_name=new_name,
                                       owner=owner)
        body = {k: v for k, v in (("description", description), ("tags", tags), ("new_name", new_name),
                                  ("owner", owner)) if v is not None}
        return _record(self._send("PATCH", f"/api/v1/models/{_seg(name)}", body)[1], RegisteredModel)

    def delete_model(self, name: str) -> None:
        if self._embedded:
            return self._embedded.call("delete_model", name)
        self._send("DELETE", f"/api/v1/models/{_seg(name)}")

    def policy(self, name: str) -> dict[str, Any]:
        """The governance policy for the model: thresholds, approvers and where each came from."""
        if self._embedded:
            p = self._embedded.registry.policy(name)
            return {"name": p.model, "staging_requires": [str(t) for t in p.staging_requires],
                    "production_approvers": list(p.production_approvers), "needs_approval": p.needs_approval,
                    "sources": dict(p.sources)}
        return self._get(f"/api/v1/models/{_seg(name)}/policy")

    # ---- versions ---------------------------------------------------------------------------------
    def register_version(self, name: str, source: str | None = None, *, run_id: str | None = None,
                         path: str | None = None, flavor: str | None = None, signature: Any = None,
                         input_example: Any = None, output_example: Any = None,
                         training_data: Sequence[Any] | None = None, description: str = "",
                         tags: Mapping[str, Any] | None = None) -> ModelVersion:
        """The next version of ``name`` from ``source`` (or ``run_id`` + ``path``); see
        :meth:`Registry.register_version <matih_lite.registry.Registry.register_version>`."""
        tags = {k: str(v) for k, v in (tags or {}).items()}
        if self._embedded:
            return self._embedded.call("register_version", name, source, run_id=run_id, path=path, flavor=flavor,
                                       signature=signature, input_example=input_example,
                                       output_example=output_example, training_data=training_data,
                                       description=description, tags=tags)
        if signature is None and input_example is not None:
            from matih_lite.registry.signature import infer_signature

            signature = infer_signature(input_example, output_example)  # pandas and numpy stay on this side
        body = {"source": source, "run_id": run_id, "path": path, "flavor": flavor, "signature": signature,
                "training_data": None if training_data is None else list(training_data),
                "description": description, "tags": tags}
        return _record(self._send("POST", f"/api/v1/models/{_seg(name)}/versions",
                                  {k: v for k, v in body.items() if v is not None})[1], ModelVersion)

    def get_version(self, name: str, version: int | str) -> ModelVersion:
        if self._embedded:
            return self._embedded.call("get_version", name, version)
        return _record(self._get(f"/api/v1/models/{_seg(name)}/versions/{_seg(version)}"), ModelVersion)

    def list_versions(self, name: str, *, stages: Sequence[str] | None = None, max_results: int = 1000,
                      page_token: str | None = None) -> Page[ModelVersion]:
        if self._embedded:
            return self._embedded.call("list_versions", name, stages=stages, max_results=max_results,
                                       page_token=page_token)
        body = self._get(f"/api/v1/models/{_seg(name)}/versions", stage=list(stages) if stages else None,
                         max_results=max_results, page_token=page_token)
        return Page([_record(v, ModelVersion) for v in body["versions"]], body.get("next_page_token"))

    def update_version(self, name: str, version: int | str, *, description: str | None = None,
                       tags: Mapping[str, Any] | None = None) -> ModelVersion:
        tags = None if tags is None else {k: str(v) for k, v in tags.items()}
        if self._embedded:
            return self._embedded.call("update_version", name, version, description=description, tags=tags)
        body = {k: v for k, v in (("description", description), ("tags", tags)) if v is not None}
        return _record(self._send("PATCH", f"/api/v1/models/{_seg(name)}/versions/{_seg(version)}", body)[1],
                       ModelVersion)

    # ---- governance ---------------------------------------------------------------------------------
    def promote(self, name: str, version: int | str, to: str, *, reason: str = "",
                archive_existing: bool = False) -> Transition | Approval:
        """The :class:`Transition`, or the pending :class:`Approval` when Production needs one."""
        if self._embedded:
            return self._embedded.call("promote", name, version, to, reason=reason, archive_existing=archive_existing)
        status, body = self._send("POST", f"/api/v1/models/{_seg(name)}/versions/{_seg(version)}/promote",
                                  {"to": to, "reason": reason, "archive_existing": archive_existing})
        return _record(body, Approval) if status == 202 else _record(body, Transition)

    def approve(self, approval_id: str, *, comment: str = "") -> Approval:
        if self._embedded:
            return self._embedded.call("approve", approval_id, comment=comment)
        return _record(self._send("POST", f"/api/v1/approvals/{_seg(approval_id)}/approve",
                                  {"comment": comment})[1], Approval)

    def reject(self, approval_id: str, *, comment: str) -> Approval:
        if self._embedded:
            return self._embedded.call("reject", approval_id, comment=comment)
        return _record(self._send("POST", f"/api/v1/approvals/{_seg(approval_id)}/reject",
                                  {"comment": comment})[1], Approval)

    def get_approval(self, approval_id: str) -> Approval:
        if self._embedded:
            return self._embedded.call("get_approval", approval_id)
        return _record(self._get(f"/api/v1/approvals/{_seg(approval_id)}"), Approval)

    def list_approvals(self, *, name: str | None = None, status: str | None = None, max_results: int = 1000,
                       page_token: str | None = None) -> Page[Approval]:
        if self._embedded:
            return self._embedded.call("list_approvals", name=name, status=status, max_results=max_results,
                                       page_token=page_token)
        body = self._get("/api/v1/approvals/", model=name, status=status, max_results=max_results,
                         page_token=page_token)
        return Page([_record(a, Approval) for a in body["approvals"]], body.get("next_page_token"))

    def rollback(self, name: str, *, reason: str = "") -> Transition:
        if self._embedded:
            return self._embedded.call("rollback", name, reason=reason)
        return _record(self._send("POST", f"/api/v1/models/{_seg(name)}/rollback", {"reason": reason})[1], Transition)

    # ---- aliases and audit ----------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: int | str) -> ModelVersion:
        if self._embedded:
            return self._embedded.call("set_alias", name, alias, version)
        try:
            number = int(version)
        except (TypeError, ValueError):
            number = version  # type: ignore[assignment]  # the service says what is wrong with it
        return _record(self._send("PUT", f"/api/v1/models/{_seg(name)}/aliases/{_seg(alias)}",
                                  {"version": number})[1], ModelVersion)

    def get_alias(self, name: str, alias: str) -> ModelVersion:
        if self._embedded:
            return self._embedded.call("get_version_by_alias", name, alias)
        return _record(self._get(f"/api/v1/models/{_seg(name)}/aliases/{_seg(alias)}"), ModelVersion)

    def delete_alias(self, name: str, alias: str) -> None:
        if self._embedded:
            return self._embedded.call("delete_alias", name, alias)
        self._send("DELETE", f"/api/v1/models/{_seg(name)}/aliases/{_seg(alias)}")

    def audit_log(self, name: str, *, max_results: int = 1000, page_token: str | None = None) -> Page[AuditEntry]:
        if self._embedded:
            return self._embedded.call("audit_log", name, max_results=max_results, page_token=page_token)
        body = self._get(f"/api/v1/models/{_seg(name)}/audit", max_results=max_results, page_token=page_token)
        return Page([_record(e, AuditEntry) for e in body["entries"]], body.get("next_page_token"))
