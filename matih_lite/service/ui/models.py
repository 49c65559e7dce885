"""The registry: models, versions with stages and aliases, model cards, approvals, audit, and the writes.

Every write goes through :class:`~matih_lite.registry.Registry` (the same governance as
``/api/v1/models``): a refusal is shown on the page in words, with each unmet rule and the
value that missed it. The buttons a principal sees are the ones the registry would allow:
editors promote, the model's approvers (never the requester) approve and reject, and rollback
takes an approver when the model's policy asks for one.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery

from matih_lite.contracts.registry import STAGES, Approval
from matih_lite.errors import Conflict, Forbidden, GovernanceRefused, InvalidInput, MatihError, NotFound
from matih_lite.registry import Registry
from matih_lite.service.ui.pages import Pages
from matih_lite.service.ui.render import can_edit, page, seg, who
from matih_lite.service.ui.session import checked_form, redirect

AUDIT_SHOWN = 200


def registry_of(request: Request) -> Registry:
    return Registry(request.app.state["host"])


def refusal_words(exc: MatihError) -> dict[str, Any]:
    """A refused write for the page: the message and, for governance, one line per unmet rule."""
    unmet = (exc.detail or {}).get("unmet") or []
    rules = []
    for u in unmet:
        actual = u.get("actual")
        if actual in (None, "missing"):
            shown = "not logged"
        else:
            shown = f"{actual:.4g}" if isinstance(actual, float) else str(actual)
        rules.append({"rule": u.get("rule", ""), "actual": shown})
    return {"message": exc.message, "unmet": rules, "title": exc.title}


def may_decide(registry: Registry, principal: Any, approval: Approval, owner: str) -> dict[str, bool]:
    """Which buttons an approval gets for ``principal``: approve (an approver, not the requester) and reject
    (an approver, or the requester withdrawing it)."""
    if approval.status != "pending" or not can_edit(principal):
        return {"approve": False, "reject": False}
    policy = registry.policy(approval.name)
    approver = policy.may_approve(principal, owner)
    mine = principal.user == approval.requested_by
    return {"approve": approver and not mine, "reject": approver or mine}


def decorated_approvals(registry: Registry, principal: Any, approvals: list[Approval]) -> list[dict[str, Any]]:
    owners: dict[str, str] = {}
    out = []
    for a in approvals:
        if a.name not in owners:
            try:
                owners[a.name] = registry.get_model(principal, a.name).owner
            except NotFound:
                owners[a.name] = ""
        out.append({"approval": a, **may_decide(registry, principal, a, owners[a.name])})
    return out


class RegistryPages(Pages):
    """Models, a model with its versions, approvals and audit, a version's card."""

    path = "/ui"

    @get("/models", sync_to_thread=True)
    def models(self, request: Request, name: FromQuery[str] = "") -> Response:
        registry = registry_of(request)
        principal = who(request)
        found = registry.list_models(principal, name_like=f"%{name}%" if name else None, max_results=1000)
        pending = registry.list_approvals(principal, status="pending", max_results=200).items
        production = {}
        for m in found.items:
            prod = registry.list_versions(principal, m.name, stages=["Production"], max_results=5).items
            production[m.name] = [v.version for v in prod]
        return page(request, "models.html", title="Models", section="models", models=found.items, name=name,
                    production=production, approvals=decorated_approvals(registry, principal, pending))

    @get("/approvals", sync_to_thread=True)
    def approvals(self, request: Request, status: FromQuery[str] = "pending") -> Response:
        registry = registry_of(request)
        principal = who(request)
        wanted = None if status == "all" else status
        items = registry.list_approvals(principal, status=wanted, max_results=500).items
        return page(request, "approvals.html", title="Approvals", section="models", shown=status,
                    approvals=decorated_approvals(registry, principal, items))

    @get("/models/{name:str}", sync_to_thread=True)
    def model(self, request: Request, name: FromPath[str]) -> Response:
        return self._model_page(request, name)

    def _model_page(self, request: Request, name: str, *, refused: dict[str, Any] | None = None,
                    status: int = 200) -> Response:
        registry = registry_of(request)
        principal = who(request)
        model = registry.get_model(principal, name)
        versions = registry.list_versions(principal, name, max_results=1000).items
        policy = registry.policy(name)
        approvals = registry.list_approvals(principal, name=name, max_results=200).items
        audit = registry.audit_log(principal, name, max_results=50_000).items
        editor = can_edit(principal)
        may_roll_back = editor and (not policy.needs_approval or policy.may_approve(principal, model.owner))
        return page(request, "model.html", status_code=status, title=model.name, section="models", model=model,
                    versions=versions, policy=policy, approvals=decorated_approvals(registry, principal, approvals),
                    audit=list(reversed(audit[-AUDIT_SHOWN:])), audit_total=len(audit), stages=STAGES,
                    may_roll_back=may_roll_back, refused=refused,
                    approvers=policy.describe_approvers(model.owner))

    @get("/models/{name:str}/versions/{version:int}", sync_to_thread=True)
    def version(self, request: Request, name: FromPath[str], version: FromPath[int]) -> Response:
        from matih_lite.registry.cards import ModelCards, render_html

        registry = registry_of(request)
        principal = who(request)
        mv = registry.get_version(principal, name, version)
        card = ModelCards(request.app.state["host"]).card(principal, name, version)
        body = render_html(card).partition("<body>")[2].rpartition("</body>")[0]
        return page(request, "version.html", title=f"{name} v{version}", section="models", version=mv,
                    card_html=body, stages=STAGES)

    # ---- writes -----------------------------------------------------------------------------------
    @post("/models/{name:str}/versions/{version:int}/promote", status_code=303)
    async def promote(self, request: Request, name: FromPath[str], version: FromPath[int]) -> Response:
        form = await checked_form(request)
        registry = registry_of(request)
        principal = who(request)

        def act() -> Any:
            return registry.promote(principal, name, version, form.get("to", ""), reason=form.get("reason", ""),
                                    archive_existing=form.get("archive_existing") == "on")

        return await self._write(request, name, act, lambda r: (
            f"version {version} is waiting for approval to enter {r.to_stage} (request {r.approval_id})"
            if isinstance(r, Approval) else f"version {version} moved from {r.from_stage} to {r.to_stage}"
            + (f"; archived {', '.join(map(str, r.archived))}" if r.archived else "")))

    @post("/models/{name:str}/rollback", status_code=303)
    async def rollback(self, request: Request, name: FromPath[str]) -> Response:
        form = await checked_form(request)
        registry = registry_of(request)
        principal = who(request)
        return await self._write(request, name, lambda: registry.rollback(principal, name,
                                                                          reason=form.get("reason", "")),
                                 lambda t: f"rolled back: version {t.version} is in Production again"
                                 + (f"; archived {', '.join(map(str, t.archived))}" if t.archived else ""))

    @post("/approvals/{approval_id:str}/approve", status_code=303)
    async def approve(self, request: Request, approval_id: FromPath[str]) -> Response:
        form = await checked_form(request)
        registry = registry_of(request)
        principal = who(request)
        approval = await _run(lambda: registry.get_approval(principal, approval_id))
        return await self._write(request, approval.name,
                                 lambda: registry.approve(principal, approval_id, comment=form.get("comment", "")),
                                 lambda a: f"approved: version {a.version} of {a.name} is in {a.to_stage}",
                                 back=form.get("back"))

    @post("/approvals/{approval_id:str}/reject", status_code=303)
    async def reject(self, request: Request, approval_id: FromPath[str]) -> Response:
        form = await checked_form(request)
        registry = registry_of(request)
        principal = who(request)
        approval = await _run(lambda: registry.get_approval(principal, approval_id))
        return await self._write(request, approval.name,
                                 lambda: registry.reject(principal, approval_id, comment=form.get("comment", "")),
                                 lambda a: f"rejected the request for version {a.version} of {a.name}",
                                 back=form.get("back"))

    async def _write(self, request: Request, name: str, act: Any, done: Any, back: str | None = None) -> Response:
        """Run a registry write: on success back to the page with a flash; a refusal re-renders the model
        page with the reason (422 governance, 409 conflict, 403 not allowed, 400 bad input)."""
        try:
            result = await _run(act)
        except (GovernanceRefused, Conflict, Forbidden, InvalidInput) as exc:
            words, status = refusal_words(exc), exc.status
            return await _run(lambda: self._model_page(request, name, refused=words, status=status))
        target = back if back and back.startswith("/ui/") else f"/ui/models/{seg(name)}"
        return redirect(request, target, done(result))


async def _run(fn: Any) -> Any:
    import anyio

    return await anyio.to_thread.run_sync(fn)


CONTROLLERS = [RegistryPages]
