"""Deployments: what each one serves and how, and the rules that change it.

A deployment serves a registered model. It names what it serves -- fixed versions (one, or a
weighted split like ``3=90,4=10``), or whatever version the registry keeps in a stage
(``Production``) or behind an alias (``champion``) -- and how:

- **A/B**: each request is routed to one variant by weight. With a request key (a user id) the
  route is sticky: the key's hash picks a bucket out of 10,000 and the same key always meets
  the same variant; without one a random draw does. The candidate of a canary holds the
  lowest buckets, so stepping it up only moves keys from the primary to the candidate.
- **Shadow**: shadow versions get a copy of each request after the response is on its way;
  their outputs are logged as shadow and compared with the primary's (agreement, latency),
  never returned.
- **Following**: a deployment of a stage or an alias is told (``on_event``) when the registry
  moves a version there and follows it -- through a canary when the deployment has
  ``use_canary``; a registry rollback is followed at once. :meth:`Deployments.sync` does the
  same from the registry's current state (the server runs it on start and on a timer, so a
  promotion made by another process is picked up too).
- **Canary**: the candidate starts at ``initial_percent`` and steps up by ``step_percent`` every
  ``interval_seconds`` while, over the window since the last step, its error rate is within
  ``max_error_rate_delta`` of the primary's and its p99 latency within ``max_p99_ratio`` of the
  primary's (once it has ``min_requests``). At 100 % it is promoted (and moved to Production
  through the registry's governance, acting for the user who made the deployment); past a
  threshold it is rolled back to 0 %, ``deployment.canary.rolled_back`` is emitted and sent to
  the notifiers, and the history says why.

This module holds the records and their rules (synchronous, any thread): :class:`Deployments`.
The rest is written once for any serving backend beside it: :mod:`~matih_lite.serving.routing`
(splits and sticky buckets), :mod:`~matih_lite.serving.canary` (policy, measurements, verdicts)
and :mod:`~matih_lite.serving.traffic` (the :class:`~matih_lite.serving.traffic.TrafficManager`
that serves requests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.alerts import send_alert
from matih_lite.contracts.clock import now_ms
from matih_lite.contracts.deployments import Deployment, DeploymentChange, Route
from matih_lite.contracts.records import Page
from matih_lite.errors import Conflict, InvalidInput, MatihError, NotFound, TrafficRefused
from matih_lite.events import PlatformEvent
from matih_lite.identity import Principal
from matih_lite.serving.canary import CanaryPolicy, canary_policy, cancel_canary, start_canary
from matih_lite.serving.routing import (
    check_deployment_name,
    difference,
    parse_split,
    primary_version,
    route_dicts,
    variant_name,
    version_number,
)

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.serving")

_RETRIES = 5


class Deployments:
    """Deployments of one platform (a :class:`~matih_lite.host.Host`): records, rules and history."""

    def __init__(self, host: Host) -> None:
        from matih_lite.registry.service import Registry

        self.host = host
        self.registry = Registry(host)

    @property
    def store(self) -> Any:
        return self.host.metadata

    def policy(self, d: Deployment) -> CanaryPolicy:
        return canary_policy(self.host.config, d.name, d.policy)

    # ---- reading ---------------------------------------------------------------------------------------
    def get(self, principal: Principal, name: str) -> Deployment:
        return self.store.get_deployment(principal.tenant, name)

    def list(self, principal: Principal, *, model: str | None = None, max_results: int = 1000,
             page_token: str | None = None) -> Page[Deployment]:
        if not isinstance(max_results, int) or max_results < 1 or max_results > 50_000:
            raise InvalidInput(f"max_results must be between 1 and 50000, got {max_results!r}")
        return self.store.list_deployments(principal.tenant, model=model, max_results=max_results,
                                           page_token=page_token)

    def history(self, principal: Principal, name: str, *, max_results: int = 1000,
                page_token: str | None = None) -> Page[DeploymentChange]:
        """Every change, oldest first (kept after a delete). Raises NotFound when there never was one."""
        page = self.store.deployment_history(principal.tenant, name, max_results=max_results, page_token=page_token)
        if not page.items and not page_token:
            self.store.get_deployment(principal.tenant, name)
        return page

    # ---- writing ---------------------------------------------------------------------------------------
    def create(self, principal: Principal, name: str, model: str, *, version: int | str | None = None,
               split: Any = None, stage: str | None = None, alias: str | None = None,
               shadows: Sequence[int | str] = (), canary: bool = False, policy: Mapping[str, Any] | None = None,
               description: str = "", admit: Callable[[Deployment], None] | None = None) -> Deployment:
        """A new deployment of ``model``: one of ``version``, ``split``, ``stage``, ``alias``.

        A stage or alias that holds no version yet makes a ``waiting`` deployment that starts
        serving when the registry puts one there. Raises Conflict for a taken name, NotFound for
        a model or version that does not exist, InvalidInput naming the field at fault; ``admit``
        sees the deployment before it is stored and may refuse it by raising (the service loads
        its versions there: TrafficManager.admit).
        """
        name = check_deployment_name(name)
        self.registry.get_model(principal, model)
        target, follows, routes = self._target(principal, model, version, split, stage, alias)
        shadow_list = self._shadows(principal, model, shadows, routes)
        if policy:
            canary_policy(self.host.config, name, policy)
        now = now_ms()
        d = Deployment(tenant=principal.tenant, name=name, model=model, target=target, follows=follows,
                       routes=routes, shadows=shadow_list, use_canary=bool(canary), policy=dict(policy or {}),
                       status="active" if routes else "waiting", description=_text(description, "description"),
                       created_by=principal.user, created_at=now, updated_at=now)
        change = self.change(d, "created", principal.user, now, detail={
            "model": model, "target": target, "follows": follows, "routes": route_dicts(routes), "shadows": shadow_list,
            "use_canary": d.use_canary, "policy": d.policy})
        if admit is not None:
            admit(d)
        created = self.store.create_deployment(d, change)
        self._emit(created, "deployment.created", {"version": primary_version(created)})
        return created

    def update(self, principal: Principal, name: str, *, version: int | str | None = None, split: Any = None,
               stage: str | None = None, alias: str | None = None, shadows: Sequence[int | str] | None = None,
               canary: bool | None = None, policy: Mapping[str, Any] | None = None,
               description: str | None = None, reason: str = "",
               admit: Callable[[Deployment], None] | None = None) -> Deployment:
        """Change what a deployment serves, its shadows, canary use, policy or description.

        A new single version on a deployment with ``use_canary`` enters through a canary against
        the version served now; a split, a stage or an alias replaces the routes at once (a
        canary running then is cancelled). ``admit`` sees the changed deployment before it is
        stored and may refuse the change by raising; the deployment then stays as it was.
        """
        reason = _text(reason, "reason")
        for _ in range(_RETRIES):
            d = self.store.get_deployment(principal.tenant, name)
            new = d
            now = now_ms()
            action = "updated"
            if canary is not None:
                new = msgspec.structs.replace(new, use_canary=bool(canary))
            if policy is not None:
                if policy:
                    canary_policy(self.host.config, name, policy)
                new = msgspec.structs.replace(new, policy=dict(policy))
            if description is not None:
                new = msgspec.structs.replace(new, description=_text(description, "description"))
            if any(x is not None for x in (version, split, stage, alias)):
                target, follows, routes = self._target(principal, d.model, version, split, stage, alias)
                single = routes[0].version if len(routes) == 1 else None
                current = primary_version(d)
                new = cancel_canary(new, now, f"replaced by a deploy{': ' + reason if reason else ''}")
                if new.use_canary and single is not None and current is not None and single != current:
                    new = msgspec.structs.replace(new, target=target, follows=follows)
                    new = start_canary(new, single, current, now, reason or f"deploy of version {single}",
                                       self.policy(new))
                    action = "canary.started"
                else:
                    new = msgspec.structs.replace(new, target=target, follows=follows, routes=routes,
                                                  status="active" if routes else "waiting")
            keep = [r.version for r in new.routes]
            if shadows is not None:
                new = msgspec.structs.replace(new, shadows=self._shadows(principal, d.model, shadows, new.routes))
            elif any(v in keep for v in new.shadows):
                new = msgspec.structs.replace(new, shadows=[v for v in new.shadows if v not in keep])
            detail = difference(d, new)
            if not detail:
                return d
            new = msgspec.structs.replace(new, updated_at=now)
            if admit is not None:
                admit(new)
            try:
                change = self.change(new, action, principal.user, now, reason, detail)
                saved = self.store.update_deployment(new, change, revision=d.revision)
            except Conflict:
                continue
            self.announce(d, saved, action)
            return saved
        raise Conflict(f"deployment {name!r} keeps changing (a canary stepping?); try again")

    def deploy(self, principal: Principal, name: str, model: str | None = None, **changes: Any) -> Deployment:
        """Create the deployment, or update it when it exists (``matih-lite deploy``)."""
        try:
            d = self.store.get_deployment(principal.tenant, name)
        except NotFound:
            if not model:
                raise InvalidInput(f"deployment {name!r} does not exist; give --model to create it") from None
            changes.pop("reason", None)
            if changes.get("shadows") is None:
                changes["shadows"] = ()
            if changes.get("canary") is None:
                changes["canary"] = False
            if changes.get("description") is None:
                changes["description"] = ""
            return self.create(principal, name, model, **changes)
        if model and model != d.model:
            raise InvalidInput(f"deployment {name!r} serves model {d.model!r}, not {model!r}; delete it first or "
                               "pick another name")
        return self.update(principal, name, **changes)

    def delete(self, principal: Principal, name: str, *, reason: str = "") -> None:
        d = self.store.get_deployment(principal.tenant, name)
        self.store.delete_deployment(principal.tenant, name, self.change(
            d, "deleted", principal.user, now_ms(), _text(reason, "reason"), {"routes": route_dicts(d.routes)}))
        self._emit(d, "deployment.deleted", {})

    # ---- following the registry ---------------------------------------------------------------------
    def on_registry_event(self, event: Any) -> list[Deployment]:
        """Follow a registry event (a version moved to a stage, an alias set, a rollback); returns what changed."""
        etype = getattr(event, "type", "")
        data = getattr(event, "data", None) or {}
        model = data.get("name")
        if not isinstance(model, str):
            return []
        tenant = getattr(event, "tenant", None) or "default"
        actor = str(data.get("actor") or "registry")
        if etype == "model.version.transitioned":
            return self.sync(tenant, model, stage=str(data.get("to")), actor=actor,
                             reason=f"version {data.get('version')} entered {data.get('to')}")
        if etype == "model.alias.set":
            return self.sync(tenant, model, alias=str(data.get("alias")), actor=actor,
                             reason=f"alias {data.get('alias')} moved to version {data.get('version')}")
        if etype == "model.rolled_back":
            return self.sync(tenant, model, stage="Production", actor=actor, immediate=True,
                             reason=f"registry rollback to version {data.get('version')}")
        return []

    def sync(self, tenant: str, model: str | None = None, *, stage: str | None = None, alias: str | None = None,
             actor: str = "registry", reason: str = "", immediate: bool = False) -> list[Deployment]:
        """Bring deployments that follow a stage or alias to the registry's current version; returns the changed.

        Only deployments of ``model`` (every model when None), and of ``stage``/``alias`` when given.
        A candidate that a canary rolled back is not tried again (deploy it by hand).
        """
        changed = []
        token = None
        while True:
            page = self.store.list_deployments(tenant, model=model, max_results=1000, page_token=token)
            for d in page.items:
                if d.target == "versions" or (stage and not (d.target == "stage" and d.follows == stage)) or \
                        (alias and not (d.target == "alias" and d.follows == alias)):
                    continue
                try:
                    updated = self.follow(d, actor, reason, immediate)
                except MatihError:
                    log.exception("deployment %s/%s could not follow %s %s", tenant, d.name, d.target, d.follows)
                    continue
                if updated is not None:
                    changed.append(updated)
            token = page.next_token
            if not token:
                return changed

    def follow(self, d: Deployment, actor: str = "registry", reason: str = "",
               immediate: bool = False) -> Deployment | None:
        """Bring one follower to its stage's or alias's current version (through a canary when it uses one,
        unless ``immediate``); returns the updated deployment, or None when nothing changed."""
        for _ in range(_RETRIES):
            version = self._followed_version(d)
            if version is None:
                return None
            try:
                self.check_servable(self.registry.get_version(
                    Principal(d.tenant, d.created_by or "registry", ("viewer",)), d.model, version))
            except TrafficRefused as exc:
                log.warning("deployment %s/%s does not follow %s %s to version %s: %s", d.tenant, d.name,
                            d.target, d.follows, version, exc.message)
                return None
            now = now_ms()
            current = primary_version(d)
            running = d.canary is not None and d.canary.status == "running"
            if version == current and not running:
                return None
            if running and d.canary.candidate == version and not immediate:  # type: ignore[union-attr]
                return None
            if not immediate and d.canary is not None and d.canary.candidate == version and \
                    d.canary.status == "rolled_back" and current == d.canary.primary:
                return None
            new = cancel_canary(d, now, f"{d.follows} moved to version {version}")
            if d.use_canary and current is not None and version != current and not immediate:
                new = start_canary(new, version, current, now, reason or f"{d.follows} is version {version}",
                                   self.policy(new))
                action = "canary.started"
            else:
                new = msgspec.structs.replace(new, routes=[Route(variant_name(version), version, 100.0)],
                                              status="active")
                action = "followed"
            new = msgspec.structs.replace(new, updated_at=now)
            try:
                saved = self.store.update_deployment(
                    new, self.change(new, action, actor, now, reason, difference(d, new)), revision=d.revision)
            except Conflict:
                d = self.store.get_deployment(d.tenant, d.name)
                continue
            self.announce(d, saved, action)
            return saved
        return None

    def _followed_version(self, d: Deployment) -> int | None:
        principal = Principal(d.tenant, d.created_by or "registry", ("viewer",))
        try:
            if d.target == "alias":
                return self.registry.get_version_by_alias(principal, d.model, str(d.follows)).version
            found = self.registry.list_versions(principal, d.model, stages=[str(d.follows)], max_results=1).items
        except NotFound:
            return None
        return found[0].version if found else None
    # ---- internals --------------------------------------------------------------------------------------------
    def _target(self, principal: Principal, model: str, version: Any, split: Any, stage: Any,
                alias: Any) -> tuple[str, str | None, list[Route]]:
        from matih_lite.registry.service import check_alias, normalize_stage

        given = [k for k, v in (("version", version), ("split", split), ("stage", stage), ("alias", alias))
                 if v is not None]
        if len(given) != 1:
            raise InvalidInput("give exactly one of version, split, stage or alias"
                               + (f" (got {', '.join(given)})" if given else ""))
        if version is not None:
            number = version_number(version, "version")
            self.check_servable(self.registry.get_version(principal, model, number))
            return "versions", None, [Route(variant_name(number), number, 100.0)]
        if split is not None:
            routes = parse_split(split)
            for r in routes:
                self.check_servable(self.registry.get_version(principal, model, r.version), "an A/B variant")
            return "versions", None, routes
        if stage is not None:
            name = normalize_stage(stage)
            if name == "Archived":
                raise InvalidInput("stage: a deployment cannot follow Archived")
            allowed = self.serve_stages()
            if name not in allowed:
                raise TrafficRefused(
                    f"a deployment cannot follow {name}: [governance] serve_stages lets only versions in "
                    f"{', '.join(allowed)} take live traffic", detail=self._rule(allowed, stage=name))
            d = Deployment(tenant=principal.tenant, name="", model=model, target="stage", follows=name)
        else:
            d = Deployment(tenant=principal.tenant, name="", model=model, target="alias", follows=check_alias(alias))
        current = self._followed_version(d)
        if current is not None:
            self.check_servable(self.registry.get_version(principal, model, current))
        routes = [Route(variant_name(current), current, 100.0)] if current is not None else []
        return d.target, d.follows, routes

    def serve_stages(self) -> tuple[str, ...]:
        """The stages whose versions may take live traffic (``[governance] serve_stages``)."""
        from matih_lite.registry.policy import governance_settings, serve_stages

        return serve_stages(governance_settings(self.host.config))

    def check_servable(self, version: Any, role: str = "live traffic") -> None:
        """Raises TrafficRefused, naming the rule, when ``version`` (a ModelVersion) may not take live traffic."""
        allowed = self.serve_stages()
        if version.stage in allowed:
            return
        raise TrafficRefused(
            f"version {version.version} of {version.name!r} is in {version.stage}; [governance] serve_stages lets "
            f"only versions in {', '.join(allowed)} take {role} (promote it first: matih-lite models promote "
            f"{version.name} {version.version} --to Staging; or deploy it as a shadow)",
            detail=self._rule(allowed, model=version.name, version=version.version, stage=version.stage))

    @staticmethod
    def _rule(allowed: Sequence[str], *, stage: str, **found: Any) -> dict[str, Any]:
        return {"rule": "governance.serve_stages", "allowed": list(allowed), "stage": stage, **found,
                "unmet": [{"rule": f"stage in ({', '.join(allowed)})", "actual": stage}]}

    def _shadows(self, principal: Principal, model: str, shadows: Sequence[Any], routes: Sequence[Route]) -> list[int]:
        if isinstance(shadows, (str, int)):
            shadows = [shadows]
        out: list[int] = []
        for value in shadows:
            number = version_number(value, "shadows")
            if any(r.version == number for r in routes):
                raise InvalidInput(f"shadows: version {number} already takes live traffic in this deployment")
            self.registry.get_version(principal, model, number)
            if number not in out:
                out.append(number)
        return out

    @staticmethod
    def change(d: Deployment, action: str, actor: str, at: int, reason: str = "",
                detail: Mapping[str, Any] | None = None) -> DeploymentChange:
        return DeploymentChange(tenant=d.tenant, deployment=d.name, action=action, actor=actor, timestamp=at,
                                reason=reason, detail=dict(detail or {}))

    def note(self, d: Deployment, action: str, actor: str, reason: str, detail: Mapping[str, Any]) -> None:
        """A history line without a change of the record (what the registry said about a promotion)."""
        for _ in range(_RETRIES):
            try:
                self.store.update_deployment(d, self.change(d, action, actor, now_ms(), reason, detail),
                                             revision=d.revision)
                return
            except Conflict:
                d = self.store.get_deployment(d.tenant, d.name)
            except NotFound:
                return

    def announce(self, before: Deployment, after: Deployment, action: str, reason: str = "",
                  measured: Mapping[str, Any] | None = None) -> None:
        version = primary_version(after)
        data: dict[str, Any] = {"action": action, "version": version}
        if after.canary is not None and action.startswith("canary."):
            data.update(candidate=after.canary.candidate, primary=after.canary.primary, percent=after.canary.percent,
                        reason=reason or after.canary.reason)
        if measured:
            data["measured"] = dict(measured)
        kind = {"canary.started": "deployment.canary.started", "canary.stepped": "deployment.canary.stepped",
                "canary.promoted": "deployment.canary.promoted",
                "canary.rolled_back": "deployment.canary.rolled_back"}.get(action, "deployment.updated")
        self._emit(after, kind, data)
        if primary_version(before) != version and version is not None:
            self._emit(after, "deployment.version_changed", {"version": version, "previous": primary_version(before)})
        if action == "canary.rolled_back":
            send_alert(self.host, {"type": "deployment.canary.rolled_back", "severity": "warning",
                                   "tenant": after.tenant, "deployment": after.name, "model": after.model,
                                   "candidate": data.get("candidate"), "primary": data.get("primary"),
                                   "reason": data.get("reason"), "measured": data.get("measured"),
                                   "timestamp": now_ms()})

    def _emit(self, d: Deployment, kind: str, data: Mapping[str, Any]) -> None:
        payload = {"deployment": d.name, "model": d.model, **data}
        if payload.get("version") is None:
            payload.pop("version", None)
        self.host.emit(PlatformEvent(kind, d.name, d.tenant, payload))


def _text(value: Any, what: str, limit: int = 4000) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    if len(value) > limit:
        raise InvalidInput(f"{what} is {len(value)} characters; the limit is {limit}")
    return value
