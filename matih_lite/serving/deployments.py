"""Deployments: the traffic manager, written once for any serving backend.

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

Two layers: :class:`Deployments` holds the rules and writes records (synchronous, any thread);
:class:`TrafficManager` serves requests (async): it keeps the deployments it serves in memory,
loads their versions into the serving slot, micro-batches model calls, records per-variant
error rates and latencies for the canary, runs shadows, and logs every inference. The hot path
does no synchronous disk I/O and no pandas: a record changed elsewhere reaches the cache
through the store's change feed, polled off the event loop.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import logging
import math
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from matih_lite.alerts import send_alert
from matih_lite.contracts.clock import now_ms
from matih_lite.contracts.deployments import CanaryState, Deployment, DeploymentChange, Route
from matih_lite.contracts.records import Page
from matih_lite.errors import ConfigError, Conflict, Forbidden, GovernanceRefused, InvalidInput, MatihError, NotFound
from matih_lite.events import PlatformEvent
from matih_lite.hookspecs import hookimpl
from matih_lite.identity import LOCAL_ADMIN, Principal

log = logging.getLogger("matih_lite.serving")

BUCKETS = 10_000
"""Sticky routing resolution: weights are honoured to 0.01 %."""
MAX_NAME = 128
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SPLIT_ITEM = re.compile(r"^\s*(\d+)\s*=\s*(\d+(?:\.\d+)?)\s*%?\s*$")
_RETRIES = 5


# ---- names, splits, routing ------------------------------------------------------------------------
def check_deployment_name(name: Any) -> str:
    """A deployment name: it is also the OIP model name and a URL segment, so letters, digits, ``. _ -``."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("deployment name must be a non-empty string")
    if len(name) > MAX_NAME or not _NAME.match(name):
        raise InvalidInput(f"invalid deployment name {name!r}: use letters, digits, '.', '_' and '-' (at most "
                           f"{MAX_NAME}, starting with a letter or digit)")
    return name


def variant_name(version: int) -> str:
    return f"v{version}"


def parse_split(split: Any) -> list[Route]:
    """``"3=90,4=10"`` (or ``{3: 90, 4: 10}``) as routes; weights are percents that add up to 100.

    Raises InvalidInput naming the part at fault.
    """
    if isinstance(split, Mapping):
        items = [(k, v) for k, v in split.items()]
    elif isinstance(split, str):
        items = []
        for part in split.split(","):
            match = _SPLIT_ITEM.match(part)
            if not match:
                raise InvalidInput(f"split: {part.strip()!r} is not VERSION=PERCENT; write e.g. 3=90,4=10")
            items.append((match.group(1), match.group(2)))
    else:
        raise InvalidInput("split must be VERSION=PERCENT pairs, e.g. '3=90,4=10'")
    routes: list[Route] = []
    for version, weight in items:
        number = _version(version, "split")
        try:
            percent = float(weight)
        except (TypeError, ValueError):
            raise InvalidInput(f"split: weight of version {number} must be a number, got {weight!r}") from None
        if not math.isfinite(percent) or percent < 0 or percent > 100:
            raise InvalidInput(f"split: weight of version {number} must be between 0 and 100, got {weight!r}")
        if any(r.version == number for r in routes):
            raise InvalidInput(f"split: version {number} is listed twice")
        routes.append(Route(variant_name(number), number, percent))
    check_routes(routes, "split")
    return routes


def check_routes(routes: Sequence[Route], what: str = "routes") -> None:
    if not routes:
        raise InvalidInput(f"{what}: give at least one VERSION=PERCENT")
    total = sum(r.weight for r in routes)
    if abs(total - 100.0) > 1e-6:
        raise InvalidInput(f"{what}: weights add up to {total:g}, not 100")


def bucket_of(deployment: str, key: str) -> int:
    """The sticky bucket (0..9999) of a request key in a deployment: the same key, the same bucket."""
    digest = hashlib.blake2b(f"{deployment}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class TrafficSplit:
    """Routes of one deployment as bucket boundaries: ``choose`` is a bisect, no allocation."""

    __slots__ = ("_bounds", "deployment", "routes")

    def __init__(self, deployment: str, routes: Sequence[Route]) -> None:
        self.deployment = deployment
        self.routes = [r for r in routes if r.weight > 0]
        bounds, total = [], 0.0
        for r in self.routes:
            total += r.weight
            bounds.append(round(total * BUCKETS / 100))
        if bounds:
            bounds[-1] = BUCKETS
        self._bounds = bounds

    def choose(self, key: str | None = None) -> Route:
        """The route for a request: by the key's bucket when there is a key, else at random."""
        if not self.routes:
            raise NotFound(f"deployment {self.deployment!r} routes no traffic")
        if len(self.routes) == 1:
            return self.routes[0]
        b = bucket_of(self.deployment, key) if key is not None else random.randrange(BUCKETS)
        return self.routes[bisect.bisect_right(self._bounds, b)]


def primary_version(d: Deployment) -> int | None:
    """The version the deployment mainly serves: the canary's primary while one runs, else the heaviest route."""
    if d.canary is not None and d.canary.status == "running":
        return d.canary.primary
    live = [r for r in d.routes if r.weight > 0]
    return max(live, key=lambda r: r.weight).version if live else None


# ---- the canary policy --------------------------------------------------------------------------------
SERVICE_KEYS = ("deployments", "tick_seconds")
"""Keys of ``[canary]`` that are not policy: per-deployment tables, and how often the service steps
canaries (``tick_seconds``, default 1; 0 turns the scheduler off, e.g. to step by hand in tests)."""


class CanaryPolicy(msgspec.Struct, forbid_unknown_fields=True):
    """How a canary steps and when it is rolled back (``[canary]`` in matih.toml).

    ::

        [canary]                         # every deployment
        initial_percent = 10
        step_percent = 20
        interval_seconds = 60

        [canary.deployments.churn-api]   # one deployment; its keys replace the defaults'
        max_error_rate_delta = 0.01
    """

    initial_percent: float = 10.0
    """The candidate's share when the canary starts."""
    step_percent: float = 20.0
    """Added at every step that passes."""
    interval_seconds: float = 60.0
    """The least time between steps (each step judges the window since the last one)."""
    max_error_rate_delta: float = 0.02
    """Roll back when the candidate's error rate exceeds the primary's by more than this (0.02 = 2 points)."""
    max_p99_ratio: float = 1.5
    """Roll back when the candidate's p99 latency exceeds this multiple of the primary's."""
    min_requests: int = 50
    """Requests the candidate must have answered in a window before it is judged."""
    p99_floor_ms: float = 5.0
    """The primary's p99 is taken as at least this, so a 0.2 ms model is not judged on noise."""

    def check(self, key: str = "canary") -> CanaryPolicy:
        """Raises ConfigError (with the key path) for a value out of range."""
        for name, low, high in (("initial_percent", 0.0, 100.0), ("step_percent", 0.0, 100.0),
                                ("max_error_rate_delta", 0.0, 1.0)):
            value = getattr(self, name)
            if not (low < value <= high) and not (name == "max_error_rate_delta" and value == 0):
                raise ConfigError(f"must be in ({low:g}, {high:g}], got {value!r}", key=f"{key}.{name}")
        for name in ("interval_seconds", "max_p99_ratio", "p99_floor_ms"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"must be a number >= 0, got {value!r}", key=f"{key}.{name}")
        if self.max_p99_ratio < 1:
            raise ConfigError(f"must be at least 1, got {self.max_p99_ratio!r}", key=f"{key}.max_p99_ratio")
        if self.min_requests < 1:
            raise ConfigError(f"must be at least 1, got {self.min_requests!r}", key=f"{key}.min_requests")
        return self


def canary_policy(config: Any, deployment: str, overrides: Mapping[str, Any] | None = None) -> CanaryPolicy:
    """The policy of a deployment: its own ``overrides`` over ``[canary.deployments.NAME]`` over ``[canary]``.

    Raises ConfigError naming the key at fault (InvalidInput for a bad override).
    """
    section = config.section("canary") if config is not None else {}
    if not isinstance(section, Mapping):
        raise ConfigError("expected a table of canary settings", key="canary")
    per = section.get("deployments") or {}
    if not isinstance(per, Mapping):
        raise ConfigError("expected a table of deployments", key="canary.deployments")
    values = {k: v for k, v in section.items() if k not in SERVICE_KEYS}
    key = "canary"
    own = per.get(deployment)
    if own is not None:
        if not isinstance(own, Mapping):
            raise ConfigError("expected a table", key=f"canary.deployments.{deployment}")
        values.update(own)
        key = f"canary.deployments.{deployment}"
    policy = _convert_policy(values, key, ConfigError)
    if overrides:
        policy = _convert_policy({**msgspec.to_builtins(policy), **overrides}, "policy", InvalidInput)
    return policy


def _convert_policy(values: Mapping[str, Any], key: str, error: type[MatihError]) -> CanaryPolicy:
    try:
        policy = msgspec.convert(dict(values), CanaryPolicy, strict=False)
        return policy.check(key)
    except msgspec.ValidationError as exc:
        text, _, path = str(exc).partition(" - at `$.")
        where = f"{key}.{path.rstrip('`')}" if path else key
        known = ", ".join(CanaryPolicy.__struct_fields__)
        if error is ConfigError:
            raise ConfigError(f"{text} (canary settings: {known})", key=where) from None
        raise InvalidInput(f"{where}: {text} (canary settings: {known})") from None
    except ConfigError as exc:
        if error is ConfigError:
            raise
        raise InvalidInput(f"{exc.key}: {exc.reason}") from None


# ---- measurements ----------------------------------------------------------------------------------------
class WindowStats(msgspec.Struct, frozen=True):
    """What one variant did over a window: requests, errors, latency percentiles (ms)."""

    requests: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class VariantStats:
    """A bounded window of (sequence, timestamp ms, latency ms, failed) per variant; thread-safe."""

    def __init__(self, capacity: int = 20_000) -> None:
        self._samples: deque[tuple[int, int, float, bool]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.seq = 0
        """Samples added so far (the sequence number of the last one)."""
        self.errors = 0

    def add(self, at_ms: int, latency_ms: float, failed: bool) -> None:
        with self._lock:
            self.seq += 1
            self.errors += failed
            self._samples.append((self.seq, at_ms, latency_ms, failed))

    def window(self, start_ms: int = 0, end_ms: int | None = None, *, after_seq: int | None = None) -> WindowStats:
        """The samples in ``[start_ms, end_ms]``, or those added after sample ``after_seq`` when given."""
        with self._lock:
            if after_seq is not None:
                picked = [s for s in self._samples if s[0] > after_seq]
            else:
                picked = [s for s in self._samples if s[1] >= start_ms and (end_ms is None or s[1] <= end_ms)]
        if not picked:
            return WindowStats()
        lat = np.fromiter((s[2] for s in picked), dtype=np.float64, count=len(picked))
        errors = sum(1 for s in picked if s[3])
        p50, p99 = np.percentile(lat, [50, 99])
        return WindowStats(len(picked), errors, float(p50), float(p99))


class ShadowStats:
    """How a shadow version compares with the primary: rows agreeing, its latency against the primary's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.dropped = 0
        self.rows = 0
        self.agreeing_rows = 0
        self.latency = deque(maxlen=10_000)
        self.primary_latency = deque(maxlen=10_000)

    def add(self, rows: int, agreeing: int, latency_ms: float, primary_ms: float) -> None:
        with self._lock:
            self.requests += 1
            self.rows += rows
            self.agreeing_rows += agreeing
            self.latency.append(latency_ms)
            self.primary_latency.append(primary_ms)

    def failed(self) -> None:
        with self._lock:
            self.requests += 1
            self.errors += 1

    def summary(self) -> dict[str, Any]:
        with self._lock:
            lat = np.asarray(self.latency, dtype=np.float64)
            prim = np.asarray(self.primary_latency, dtype=np.float64)
            out = {"requests": self.requests, "errors": self.errors, "dropped": self.dropped, "rows": self.rows,
                   "agreeing_rows": self.agreeing_rows,
                   "agreement_rate": (self.agreeing_rows / self.rows) if self.rows else None}
        for name, arr in (("latency", lat), ("primary_latency", prim)):
            if arr.size:
                p50, p99 = np.percentile(arr, [50, 99])
                out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = float(p50), float(p99)
            else:
                out[f"{name}_p50_ms"] = out[f"{name}_p99_ms"] = None
        return out


def agreeing_rows(primary: Any, shadow: Any) -> tuple[int, int]:
    """(rows, rows where the shadow's primary output equals the primary's; floats within 1e-6 relative)."""
    a, b = _primary_output(primary), _primary_output(shadow)
    rows = int(a.shape[0]) if a.ndim else 1
    if a.shape != b.shape:
        return rows, 0
    if a.ndim == 0:
        a, b = a.reshape(1), b.reshape(1)
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        same = np.isclose(a.astype(np.float64), b.astype(np.float64), rtol=1e-6, atol=1e-9, equal_nan=True)
    else:
        same = a == b
    if same.ndim > 1:
        same = same.reshape(same.shape[0], -1).all(axis=1)
    return rows, int(np.count_nonzero(same))


def _primary_output(outputs: Any) -> np.ndarray:
    if isinstance(outputs, Mapping):
        outputs = next(iter(outputs.values())) if outputs else np.empty(0)
    return np.asarray(outputs)


# ---- notifications -----------------------------------------------------------------------------------------
# ---- the rules --------------------------------------------------------------------------------------------------
class CanaryVerdict(msgspec.Struct, frozen=True):
    """What a canary step decided: ``wait``, ``step``, ``promote`` or ``rollback``, and why."""

    action: str
    reason: str
    candidate: WindowStats
    primary: WindowStats


class Deployments:
    """Deployments of one platform (a :class:`~matih_lite.host.Host`): records, rules and history."""

    def __init__(self, host: Any) -> None:
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
               description: str = "") -> Deployment:
        """A new deployment of ``model``: one of ``version``, ``split``, ``stage``, ``alias``.

        A stage or alias that holds no version yet makes a ``waiting`` deployment that starts
        serving when the registry puts one there. Raises Conflict for a taken name, NotFound for
        a model or version that does not exist, InvalidInput naming the field at fault.
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
        change = self._change(d, "created", principal.user, now, detail={
            "model": model, "target": target, "follows": follows, "routes": _routes(routes), "shadows": shadow_list,
            "use_canary": d.use_canary, "policy": d.policy})
        created = self.store.create_deployment(d, change)
        self._emit(created, "deployment.created", {"version": primary_version(created)})
        return created

    def update(self, principal: Principal, name: str, *, version: int | str | None = None, split: Any = None,
               stage: str | None = None, alias: str | None = None, shadows: Sequence[int | str] | None = None,
               canary: bool | None = None, policy: Mapping[str, Any] | None = None,
               description: str | None = None, reason: str = "") -> Deployment:
        """Change what a deployment serves, its shadows, canary use, policy or description.

        A new single version on a deployment with ``use_canary`` enters through a canary against
        the version served now; a split, a stage or an alias replaces the routes at once (a
        canary running then is cancelled).
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
                new = self._cancel_canary(new, now, f"replaced by a deploy{': ' + reason if reason else ''}")
                if new.use_canary and single is not None and current is not None and single != current:
                    new = msgspec.structs.replace(new, target=target, follows=follows)
                    new = self._start_canary(new, single, current, now, reason or f"deploy of version {single}")
                    action = "canary.started"
                else:
                    new = msgspec.structs.replace(new, target=target, follows=follows, routes=routes,
                                                  status="active" if routes else "waiting")
            keep = [r.version for r in new.routes]
            if shadows is not None:
                new = msgspec.structs.replace(new, shadows=self._shadows(principal, d.model, shadows, new.routes))
            elif any(v in keep for v in new.shadows):
                new = msgspec.structs.replace(new, shadows=[v for v in new.shadows if v not in keep])
            detail = _difference(d, new)
            if not detail:
                return d
            new = msgspec.structs.replace(new, updated_at=now)
            try:
                change = self._change(new, action, principal.user, now, reason, detail)
                saved = self.store.update_deployment(new, change, revision=d.revision)
            except Conflict:
                continue
            self._announce(d, saved, action)
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
        self.store.delete_deployment(principal.tenant, name, self._change(
            d, "deleted", principal.user, now_ms(), _text(reason, "reason"), {"routes": _routes(d.routes)}))
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
            new = self._cancel_canary(d, now, f"{d.follows} moved to version {version}")
            if d.use_canary and current is not None and version != current and not immediate:
                new = self._start_canary(new, version, current, now, reason or f"{d.follows} is version {version}")
                action = "canary.started"
            else:
                new = msgspec.structs.replace(new, routes=[Route(variant_name(version), version, 100.0)],
                                              status="active")
                action = "followed"
            new = msgspec.structs.replace(new, updated_at=now)
            try:
                saved = self.store.update_deployment(
                    new, self._change(new, action, actor, now, reason, _difference(d, new)), revision=d.revision)
            except Conflict:
                d = self.store.get_deployment(d.tenant, d.name)
                continue
            self._announce(d, saved, action)
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

    # ---- canary ---------------------------------------------------------------------------------------------
    def judge(self, d: Deployment, candidate: WindowStats, primary: WindowStats, now: int) -> CanaryVerdict:
        """The decision for a running canary given the window since its last step (pure)."""
        assert d.canary is not None
        policy = self._running_policy(d)
        if candidate.requests >= policy.min_requests:
            delta = candidate.error_rate - primary.error_rate
            if delta > policy.max_error_rate_delta:
                return CanaryVerdict("rollback", (
                    f"error rate {candidate.error_rate:.1%} over {candidate.requests} requests vs the primary's "
                    f"{primary.error_rate:.1%} ({delta * 100:+.1f} points; at most "
                    f"{policy.max_error_rate_delta * 100:g} allowed)"), candidate, primary)
            limit = policy.max_p99_ratio * max(primary.p99_ms, policy.p99_floor_ms)
            if candidate.p99_ms > limit:
                return CanaryVerdict("rollback", (
                    f"p99 latency {candidate.p99_ms:.1f} ms over {candidate.requests} requests vs the primary's "
                    f"{primary.p99_ms:.1f} ms (at most {policy.max_p99_ratio:g}x of max(primary, "
                    f"{policy.p99_floor_ms:g} ms) = {limit:.1f} ms allowed)"), candidate, primary)
        if now - d.canary.stepped_at < policy.interval_seconds * 1000:
            return CanaryVerdict("wait", "interval not over", candidate, primary)
        if candidate.requests < policy.min_requests:
            return CanaryVerdict("wait", f"{candidate.requests} of {policy.min_requests} requests to judge",
                                 candidate, primary)
        percent = min(100.0, d.canary.percent + policy.step_percent)
        why = (f"error rate {candidate.error_rate:.1%} (primary {primary.error_rate:.1%}), p99 "
               f"{candidate.p99_ms:.1f} ms (primary {primary.p99_ms:.1f} ms) over {candidate.requests} requests")
        return CanaryVerdict("promote" if percent >= 100 else "step", why, candidate, primary)

    def _running_policy(self, d: Deployment) -> CanaryPolicy:
        """The policy a canary started with (kept in its state), else the deployment's current one."""
        stored = d.canary.policy if d.canary is not None else None
        if stored:
            known = {k: v for k, v in stored.items() if k in CanaryPolicy.__struct_fields__}
            try:
                return msgspec.convert(known, CanaryPolicy, strict=False)
            except msgspec.ValidationError:
                log.warning("deployment %s: the canary's stored policy is unreadable; using the current one", d.name)
        return self.policy(d)

    def apply_verdict(self, d: Deployment, verdict: CanaryVerdict, now: int) -> Deployment | None:
        """Write what a verdict decided (compare-and-set against ``d``); None when waiting or beaten to it."""
        if verdict.action == "wait" or d.canary is None or d.canary.status != "running":
            return None
        canary = d.canary
        policy = self._running_policy(d)
        measured = {"candidate": msgspec.to_builtins(verdict.candidate),
                    "primary": msgspec.to_builtins(verdict.primary)}
        if verdict.action == "rollback":
            routes = [Route(variant_name(canary.primary), canary.primary, 100.0)] if canary.primary else []
            new = msgspec.structs.replace(d, routes=routes, status="active" if routes else "waiting",
                                          canary=msgspec.structs.replace(canary, status="rolled_back", percent=0.0,
                                                                         reason=verdict.reason, finished_at=now))
            action = "canary.rolled_back"
        elif verdict.action == "promote":
            new = msgspec.structs.replace(d, routes=[Route(variant_name(canary.candidate), canary.candidate, 100.0)],
                                          canary=msgspec.structs.replace(canary, status="promoted", percent=100.0,
                                                                         steps=canary.steps + 1, stepped_at=now,
                                                                         finished_at=now))
            action = "canary.promoted"
        else:
            percent = min(100.0, canary.percent + policy.step_percent)
            new = msgspec.structs.replace(d, routes=_canary_routes(canary.candidate, canary.primary, percent),
                                          canary=msgspec.structs.replace(canary, percent=percent, stepped_at=now,
                                                                         steps=canary.steps + 1))
            action = "canary.stepped"
        new = msgspec.structs.replace(new, updated_at=now)
        detail = {**_difference(d, new), "measured": measured, "candidate": canary.candidate,
                  "primary": canary.primary}
        try:
            saved = self.store.update_deployment(new, self._change(new, action, "canary", now, verdict.reason, detail),
                                                 revision=d.revision)
        except (Conflict, NotFound):
            return None
        if action == "canary.promoted":
            outcome = self._promote_in_registry(saved, canary.candidate, verdict.reason)
            if outcome:
                self._record(saved, "canary.registry", "canary", outcome.pop("reason"), outcome)
        self._announce(d, saved, action, verdict.reason, measured)
        return saved

    def _promote_in_registry(self, d: Deployment, version: int, why: str) -> dict[str, Any] | None:
        """Move a promoted candidate to Production through governance, acting for the deployment's owner."""
        if d.target == "stage":
            return None  # the stage it follows is the registry's word already
        principal = self._acting_for(d)
        try:
            mv = self.registry.get_version(principal, d.model, version)
            if mv.stage == "Production":
                return None
            result = self.registry.promote(principal, d.model, version, "Production",
                                           reason=f"canary of deployment {d.name} passed: {why}")
        except (GovernanceRefused, Conflict, Forbidden, NotFound, InvalidInput) as exc:
            return {"reason": f"the registry did not move version {version} to Production: {exc.message}",
                    "outcome": "refused", "version": version}
        approval = getattr(result, "approval_id", None)
        if getattr(result, "status", None) == "pending":
            return {"reason": f"Production promotion of version {version} awaits approval {approval}",
                    "outcome": "pending", "approval_id": approval, "version": version}
        return {"reason": f"version {version} moved to Production", "outcome": "promoted", "version": version}

    def _acting_for(self, d: Deployment) -> Principal:
        user = d.created_by or LOCAL_ADMIN.user
        try:
            found = self.store.get_user(d.tenant, user)
            return Principal(d.tenant, user, tuple(found.roles))
        except (NotFound, AttributeError):
            pass
        try:
            from matih_lite.auth import auth_enabled

            secured = auth_enabled(self.host)
        except MatihError:
            secured = True
        # Without auth the lite service acts as the local admin for everyone.
        return Principal(d.tenant, user, ("admin",) if not secured else ())

    def _start_canary(self, d: Deployment, candidate: int, primary: int, now: int, reason: str) -> Deployment:
        policy = self.policy(d)
        state = CanaryState(candidate=candidate, primary=primary, percent=policy.initial_percent, started_at=now,
                            stepped_at=now, policy=msgspec.to_builtins(policy), reason=reason)
        return msgspec.structs.replace(d, canary=state, status="active",
                                       routes=_canary_routes(candidate, primary, policy.initial_percent))

    @staticmethod
    def _cancel_canary(d: Deployment, now: int, reason: str) -> Deployment:
        if d.canary is None or d.canary.status != "running":
            return d
        return msgspec.structs.replace(d, canary=msgspec.structs.replace(d.canary, status="cancelled", reason=reason,
                                                                         finished_at=now))

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
            number = _version(version, "version")
            self.registry.get_version(principal, model, number)
            return "versions", None, [Route(variant_name(number), number, 100.0)]
        if split is not None:
            routes = parse_split(split)
            for r in routes:
                self.registry.get_version(principal, model, r.version)
            return "versions", None, routes
        if stage is not None:
            name = normalize_stage(stage)
            if name == "Archived":
                raise InvalidInput("stage: a deployment cannot follow Archived")
            d = Deployment(tenant=principal.tenant, name="", model=model, target="stage", follows=name)
        else:
            d = Deployment(tenant=principal.tenant, name="", model=model, target="alias", follows=check_alias(alias))
        current = self._followed_version(d)
        routes = [Route(variant_name(current), current, 100.0)] if current is not None else []
        return d.target, d.follows, routes

    def _shadows(self, principal: Principal, model: str, shadows: Sequence[Any], routes: Sequence[Route]) -> list[int]:
        if isinstance(shadows, (str, int)):
            shadows = [shadows]
        out: list[int] = []
        for value in shadows:
            number = _version(value, "shadows")
            if any(r.version == number for r in routes):
                raise InvalidInput(f"shadows: version {number} already takes live traffic in this deployment")
            self.registry.get_version(principal, model, number)
            if number not in out:
                out.append(number)
        return out

    @staticmethod
    def _change(d: Deployment, action: str, actor: str, at: int, reason: str = "",
                detail: Mapping[str, Any] | None = None) -> DeploymentChange:
        return DeploymentChange(tenant=d.tenant, deployment=d.name, action=action, actor=actor, timestamp=at,
                                reason=reason, detail=dict(detail or {}))

    def _record(self, d: Deployment, action: str, actor: str, reason: str, detail: Mapping[str, Any]) -> None:
        """A history line without a change of the record (what the registry said about a promotion)."""
        for _ in range(_RETRIES):
            try:
                self.store.update_deployment(d, self._change(d, action, actor, now_ms(), reason, detail),
                                             revision=d.revision)
                return
            except Conflict:
                d = self.store.get_deployment(d.tenant, d.name)
            except NotFound:
                return

    def _announce(self, before: Deployment, after: Deployment, action: str, reason: str = "",
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


def _canary_routes(candidate: int, primary: int | None, percent: float) -> list[Route]:
    # The candidate first: it holds the lowest buckets, so growing it moves keys one way only.
    routes = [Route(variant_name(candidate), candidate, percent)]
    if primary is not None and percent < 100:
        routes.append(Route(variant_name(primary), primary, 100.0 - percent))
    return routes


def _routes(routes: Sequence[Route]) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(r) for r in routes]


def _difference(before: Deployment, after: Deployment) -> dict[str, Any]:
    """``{field: {"before": x, "after": y}}`` for the fields a change touched (the history's detail)."""
    out: dict[str, Any] = {}
    for name in ("target", "follows", "routes", "shadows", "use_canary", "policy", "status", "description", "canary"):
        a, b = msgspec.to_builtins(getattr(before, name)), msgspec.to_builtins(getattr(after, name))
        if a != b:
            out[name] = {"before": a, "after": b}
    return out


def _version(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{what}: version must be a positive integer, got {value!r}")
    try:
        number = int(str(value).strip().lstrip("vV"))
    except (TypeError, ValueError):
        raise InvalidInput(f"{what}: version must be a positive integer, got {value!r}") from None
    if number < 1:
        raise InvalidInput(f"{what}: version must be a positive integer, got {value!r}")
    return number


def _text(value: Any, what: str, limit: int = 4000) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    if len(value) > limit:
        raise InvalidInput(f"{what} is {len(value)} characters; the limit is {limit}")
    return value


# ---- serving: the traffic manager -----------------------------------------------------------------------------
class ModelFailed(MatihError):
    """The model raised while predicting: the service's fault, counted in the variant's error rate."""

    status = 500
    title = "Model error"


class ModelUnavailable(MatihError):
    """A version could not be loaded, or a deployment has no version to serve yet."""

    status = 503
    title = "Model unavailable"


class Prediction(msgspec.Struct):
    """What answered a request, and how."""

    outputs: Any
    request_id: str
    deployment: str
    model: str
    variant: str
    version: int
    latency_ms: float


class ServedVersion:
    """A version loaded into the serving slot, with the batcher that feeds it and what its inputs are."""

    __slots__ = ("batcher", "feature_names", "flavor", "info", "key", "model", "schema", "tenant", "version")

    def __init__(self, key: str, tenant: str, model: str, version: int, info: Any, batcher: Any,
                 flavor: str) -> None:
        from matih_lite.serving.flavors.base import InputSchema

        self.key, self.tenant, self.model, self.version = key, tenant, model, version
        self.info, self.batcher, self.flavor = info, batcher, flavor
        self.schema = getattr(info, "input_schema", None) or InputSchema()
        """What ``predict`` takes: requests are parsed for it."""
        self.feature_names: list[str] | None = list(self.schema.names) if self.schema.kind == "columns" else None


class LiveDeployment:
    """A deployment as this process serves it: the record, its split, and the versions it may answer with."""

    __slots__ = ("deployment", "split", "versions")

    def __init__(self, d: Deployment) -> None:
        self.deployment = d
        self.split = TrafficSplit(d.name, d.routes)
        served = [r.version for r in d.routes] + list(d.shadows)
        if d.canary is not None and d.canary.status == "running":
            served += [v for v in (d.canary.candidate, d.canary.primary) if v is not None]
        self.versions: tuple[int, ...] = tuple(dict.fromkeys(served))


class Target(msgspec.Struct):
    """Where one request goes: the deployment, the route picked and the loaded version behind it."""

    live: Any
    route: Route
    served: Any


@dataclass
class _CanaryMark:
    """Where the current canary window starts in this process's samples (set at each step)."""

    stepped_at: int
    seq: dict[int, int] = field(default_factory=dict)


def inference_log_name(tenant: str, name: str) -> str:
    """The name a deployment's inference log goes under: the deployment name in the default tenant,
    ``TENANT.NAME`` in others (the events streams are not scoped by tenant)."""
    from matih_lite.identity import DEFAULT_TENANT

    return name if tenant == DEFAULT_TENANT else f"{tenant}.{name}"


class TrafficManager:
    """Serves deployments of one host: routing, loading, micro-batching, shadows, canary stepping, logging.

    Attached to its host with :func:`attach_traffic` (the service does it at startup, through the
    built-in :mod:`matih_lite.serving.plugin` plugin), so ``on_event`` reaches it. The
    request path (:meth:`target`, :meth:`infer`) is async and does no synchronous I/O: records
    come from an in-memory cache (a miss is read on a worker thread), models are loaded on worker
    threads, and every prediction goes through the version's :class:`~matih_lite.serving.batcher.MicroBatcher`.

    Settings (matih.toml): ``[server] batch_max_size`` (64 rows per model call),
    ``batch_max_wait_ms`` (0: a batch is whatever queued while the model was busy, so a lone request
    never waits, and concurrent ones still share calls; a positive wait holds each batch back that
    long for company), ``inline_predict_ms`` (1: a model whose calls take less than this on average is
    called on the event loop, a slower one on its batcher's worker thread; 0: always the thread),
    ``shadow_max_pending`` (1000 shadow calls in flight, beyond which copies are
    dropped and counted), ``refresh_seconds`` (1: how often the change feed is read);
    ``[canary] tick_seconds`` (1; 0: the canary scheduler is off and :meth:`step` is called by hand).
    """

    def __init__(self, host: Any, *, follow: bool = True) -> None:
        self.host = host
        self.deployments = Deployments(host)
        self.follow = follow
        server = host.config.section("server") or {}
        canary = host.config.section("canary") or {}
        self.batch_max_size = _setting(server, "batch_max_size", 64, int, "server")
        self.batch_max_wait_ms = _setting(server, "batch_max_wait_ms", 0.0, float, "server")
        self.inline_predict_ms = _setting(server, "inline_predict_ms", 1.0, float, "server")
        self.shadow_max_pending = _setting(server, "shadow_max_pending", 1000, int, "server")
        self.refresh_seconds = _setting(server, "refresh_seconds", 1.0, float, "server")
        self.tick_seconds = _setting(canary, "tick_seconds", 1.0, float, "canary")
        self._live: dict[tuple[str, str], LiveDeployment] = {}
        self._stats: dict[tuple[str, str], dict[int, VariantStats]] = {}
        self._shadow_stats: dict[tuple[str, str], dict[int, ShadowStats]] = {}
        self._marks: dict[tuple[str, str], _CanaryMark] = {}
        self._models: dict[str, ServedVersion] = {}
        self._unused: dict[str, float] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._background_lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task | None = None
        self._cursor: int | None = None
        self._log: Any = None
        self._log_failed = False
        self._closed = False

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background loop (change feed, canary scheduler, reconciling) on the running event loop.

        Without a running loop it starts with the first request instead.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._ensure_runner(loop)

    def _ensure_runner(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._closed or (self._runner is not None and not self._runner.done() and self._loop is loop):
            return
        self._loop = loop
        self._runner = loop.create_task(self._run(), name="matih-traffic-manager")
        if self._log is not None:
            self._log.attach(loop)

    async def stop(self) -> None:
        """Stop the background loop and wait for shadows in flight (briefly)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            try:
                await runner
            except (asyncio.CancelledError, Exception):
                pass
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    def close(self) -> None:
        """Stop everything this manager started: the loop, the batchers, the inference log (idempotent)."""
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None and not runner.done():
            try:
                runner.get_loop().call_soon_threadsafe(runner.cancel)
            except RuntimeError:
                pass
        if self._background_lock.acquire(timeout=10):  # let a query in flight finish (see _background)
            self._background_lock.release()
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for m in models:
            m.batcher.close(timeout=2)
        if self._log is not None:
            self._log.close()
            self._log = None

    # ---- the request path -----------------------------------------------------------------------------------
    async def target(self, tenant: str, name: str, *, key: str | None = None,
                     version: int | None = None) -> Target:
        """Route one request: by ``key`` (sticky) or at random, or to a pinned ``version`` the deployment serves.

        Loads the version on first use. Raises NotFound (no such deployment or version), ModelUnavailable.
        """
        live = self._live.get((tenant, name)) or await self.live(tenant, name)
        d = live.deployment
        if version is not None:
            if version not in live.versions:
                served = ", ".join(str(v) for v in live.versions) or "none yet"
                raise NotFound(f"deployment {name!r} does not serve version {version}; it serves: {served}")
            route = Route(variant_name(version), version, 0.0)
        else:
            if not live.split.routes:
                raise ModelUnavailable(f"deployment {name!r} has no version to serve yet: it follows "
                                       f"{d.target} {d.follows!r} of model {d.model!r}, which holds none",
                                       detail={"deployment": name})
            route = live.split.choose(key)
        served = self._models.get(_key(tenant, d.model, route.version))
        if served is None:
            try:
                served = await asyncio.to_thread(self._load, tenant, d.model, route.version)
            except ModelUnavailable:
                self._variant_stats(tenant, name, route.version).add(now_ms(), 0.0, True)
                raise
        return Target(live, route, served)

    async def live(self, tenant: str, name: str) -> LiveDeployment:
        """The deployment as served (read on a worker thread when not cached). Raises NotFound."""
        loop = asyncio.get_running_loop()
        if self._runner is None or self._loop is not loop:
            self._ensure_runner(loop)
        live = self._live.get((tenant, name))
        return live if live is not None else await asyncio.to_thread(self._fetch, tenant, name)

    async def infer(self, target: Target, inputs: Any, *, request_id: str | None = None) -> Prediction:
        """Predict ``inputs`` (parsed for ``target.served.schema``) with the routed version, micro-batched.

        Records the latency (and a failure) in the variant's stats, logs the request, and hands a
        copy to each shadow off the response path. Raises InvalidInput (the inputs do not fit the
        model: not counted), ModelFailed (the model raised: counted).
        """
        d: Deployment = target.live.deployment
        route, served = target.route, target.served
        request_id = request_id or next_request_id()
        stats = self._variant_stats(d.tenant, d.name, route.version)
        start = time.perf_counter()
        try:
            outputs = await served.batcher.submit(inputs)
        except InvalidInput:
            raise
        except Exception as first:
            try:
                # A failed batch may be a neighbour's fault: try this request alone before blaming it.
                outputs = await asyncio.to_thread(self.host.backend("serving").predict, served.key, inputs)
            except InvalidInput:
                raise
            except Exception as exc:
                latency = (time.perf_counter() - start) * 1000
                stats.add(now_ms(), latency, True)
                raise ModelFailed(
                    f"version {route.version} of model {d.model!r} raised {type(exc).__name__}: {exc}"[:1000],
                    detail={"deployment": d.name, "variant": route.variant, "version": route.version,
                            "request_id": request_id}) from exc
            del first
        latency = (time.perf_counter() - start) * 1000
        at = now_ms()
        stats.add(at, latency, False)
        self._log_request(d, request_id, route.variant, route.version, inputs, outputs, latency, at, False,
                          served.feature_names)
        if d.shadows and route.weight > 0:
            self._start_shadows(d, inputs, outputs, latency, request_id)
        return Prediction(outputs, request_id, d.name, d.model, route.variant, route.version, latency)

    async def predict(self, tenant: str, name: str, inputs: Any, *, key: str | None = None,
                      version: int | None = None, request_id: str | None = None) -> Prediction:
        """:meth:`target` then :meth:`infer`, for inputs that are already arrays (SDK, streaming, tests)."""
        return await self.infer(await self.target(tenant, name, key=key, version=version), inputs,
                                request_id=request_id)

    def record_label(self, tenant: str, name: str, request_id: str, label: Any, *, row: int | None = None,
                     timestamp: int | None = None) -> None:
        """Log the true outcome of an earlier request (joined on ``request_id`` by the drift work)."""
        log_ = self._inference_log()
        if log_ is None:
            raise ModelUnavailable("the inference log is not available (the events slot failed; see the service log)")
        log_.record_label(inference_log_name(tenant, name), request_id, label, timestamp, row=row)

    # ---- what this process measured ------------------------------------------------------------------------
    def stats(self, tenant: str, name: str, *, since_ms: int = 0) -> dict[str, Any]:
        """Per-variant requests, errors, error rate and latency (since ``since_ms``, over the latest samples this
        process keeps: 20,000 per variant), the totals since the process started, and shadows' agreement."""
        variants = {}
        for version, st in sorted(self._stats.get((tenant, name), {}).copy().items()):
            w = st.window(since_ms)
            variants[variant_name(version)] = {"version": version, "requests": w.requests, "errors": w.errors,
                                               "error_rate": w.error_rate, "p50_ms": w.p50_ms, "p99_ms": w.p99_ms,
                                               "total_requests": st.seq, "total_errors": st.errors}
        shadows = {variant_name(v): {"version": v, **s.summary()}
                   for v, s in sorted(self._shadow_stats.get((tenant, name), {}).copy().items())}
        return {"deployment": name, "since": since_ms, "variants": variants, "shadows": shadows}

    def _variant_stats(self, tenant: str, name: str, version: int) -> VariantStats:
        by_version = self._stats.get((tenant, name))
        if by_version is None:
            by_version = self._stats.setdefault((tenant, name), {})
        st = by_version.get(version)
        if st is None:
            st = by_version.setdefault(version, VariantStats())
        return st

    # ---- shadows ---------------------------------------------------------------------------------------------
    def _start_shadows(self, d: Deployment, inputs: Any, outputs: Any, primary_ms: float, request_id: str) -> None:
        loop = asyncio.get_running_loop()
        for version in d.shadows:
            if len(self._tasks) >= self.shadow_max_pending:
                self._shadow_of(d, version).dropped += 1
                continue
            task = loop.create_task(self._shadow(d, version, inputs, outputs, primary_ms, request_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _shadow(self, d: Deployment, version: int, inputs: Any, primary_outputs: Any, primary_ms: float,
                      request_id: str) -> None:
        stats = self._shadow_of(d, version)
        try:
            served = self._models.get(_key(d.tenant, d.model, version))
            if served is None:
                served = await asyncio.to_thread(self._load, d.tenant, d.model, version)
            start = time.perf_counter()
            outputs = await served.batcher.submit(inputs)
            latency = (time.perf_counter() - start) * 1000
            rows, agreeing = agreeing_rows(primary_outputs, outputs)
            stats.add(rows, agreeing, latency, primary_ms)
            self._log_request(d, request_id, variant_name(version), version, inputs, outputs, latency, now_ms(), True,
                              served.feature_names)
        except Exception as exc:  # a shadow never fails anything but itself
            stats.failed()
            log.debug("shadow v%s of deployment %s failed: %s", version, d.name, exc)

    def _shadow_of(self, d: Deployment, version: int) -> ShadowStats:
        by_version = self._shadow_stats.setdefault((d.tenant, d.name), {})
        found = by_version.get(version)
        return found if found is not None else by_version.setdefault(version, ShadowStats())

    # ---- the inference log -----------------------------------------------------------------------------------
    @property
    def inference_log(self) -> Any:
        """The :class:`~matih_lite.serving.inference_log.InferenceLog` requests go to (None when the events
        slot cannot be used)."""
        return self._inference_log()

    def _inference_log(self) -> Any:
        if self._log is None and not self._log_failed and not self._closed:
            with self._lock:
                if self._log is None and not self._log_failed:
                    from matih_lite.serving.inference_log import InferenceLog

                    try:
                        # Flushing once a second: each flush is a DuckDB transaction of 15-20 ms.
                        self._log = InferenceLog(self.host.backend("events"), flush_interval_ms=1000)
                    except MatihError as exc:
                        self._log_failed = True
                        log.warning("inference logging is off: %s", exc.message)
                    else:
                        loop = self._loop
                        if loop is not None and not loop.is_closed():
                            self._log.attach(loop)  # its tables are built between requests, on the loop
        return self._log

    def _log_request(self, d: Deployment, request_id: str, variant: str, version: int, inputs: Any, outputs: Any,
                     latency: float, at: int, shadow: bool, feature_names: Sequence[str] | None) -> None:
        log_ = self._log if self._log is not None else self._inference_log()
        if log_ is None:
            return
        try:
            log_.record(inference_log_name(d.tenant, d.name), request_id, variant, version, inputs, outputs, latency,
                        at, shadow, feature_names=feature_names)
        except Exception:  # logging must never fail a request
            log.exception("inference log refused a request of %s", d.name)

    # ---- records: cache, change feed, following ------------------------------------------------------------
    def _fetch(self, tenant: str, name: str) -> LiveDeployment:
        """Read a deployment not cached yet (worker thread); a follower is brought up to date first."""
        d = self.deployments.store.get_deployment(tenant, name)
        if self.follow and d.target != "versions":
            try:
                d = self.deployments.follow(d, "registry", f"{d.follows} holds another version", False) or d
            except MatihError:
                log.exception("deployment %s could not follow %s %s", name, d.target, d.follows)
        return self._install(d)

    def _install(self, d: Deployment, *, warm: bool = False) -> LiveDeployment:
        live = LiveDeployment(d)
        current = self._live.get((d.tenant, d.name))
        if current is not None and (current.deployment.created_at, current.deployment.revision) > \
                (d.created_at, d.revision):
            return current  # a newer record got here first
        self._live[(d.tenant, d.name)] = live
        loop = self._loop
        if warm and loop is not None and not loop.is_closed() and not self._closed:
            for version in live.versions:
                if _key(d.tenant, d.model, version) not in self._models:
                    try:
                        loop.call_soon_threadsafe(self._warm, d.tenant, d.model, version)
                    except RuntimeError:  # the loop closed meanwhile; the first request loads it
                        break
        return live

    def _warm(self, tenant: str, model: str, version: int) -> None:
        async def load() -> None:
            try:
                await asyncio.to_thread(self._load, tenant, model, version)
            except MatihError as exc:
                log.warning("cannot load version %s of model %s: %s", version, model, exc.message)

        task = asyncio.get_running_loop().create_task(load())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, tenant: str, name: str) -> None:
        self._live.pop((tenant, name), None)
        self._stats.pop((tenant, name), None)
        self._shadow_stats.pop((tenant, name), None)
        self._marks.pop((tenant, name), None)

    def updated(self, d: Deployment) -> None:
        """A deployment changed through this process (REST, CLI, the canary): serve the new record now."""
        if (d.tenant, d.name) in self._live or self._loop is not None:
            self._install(d, warm=True)

    def removed(self, tenant: str, name: str) -> None:
        self._forget(tenant, name)

    def poll_changes(self) -> int:
        """Read the store's change feed and refresh the cached deployments it names; returns changes read."""
        store = self.deployments.store
        if self._cursor is None:
            self._cursor = 0
            while batch := store.deployment_changes(self._cursor, max_results=5000):
                self._cursor = batch[-1].change_id
            return 0
        count = 0
        while batch := store.deployment_changes(self._cursor, max_results=1000):
            count += len(batch)
            self._cursor = batch[-1].change_id
            for key in dict.fromkeys((c.tenant, c.deployment) for c in batch):
                if key not in self._live:
                    continue
                try:
                    self._install(store.get_deployment(*key), warm=True)
                except NotFound:
                    self._forget(*key)
        return count

    def reconcile(self) -> list[Deployment]:
        """Bring the cached followers of a stage or alias to the registry's current version (worker thread)."""
        if not self.follow:
            return []
        changed = []
        for (tenant, _), live in list(self._live.items()):
            d = live.deployment
            if d.target == "versions":
                continue
            try:
                updated = self.deployments.follow(d, "registry", f"{d.follows} holds another version", False)
            except MatihError:
                log.exception("deployment %s could not follow %s %s", d.name, d.target, d.follows)
                continue
            if updated is not None:
                self._install(updated, warm=True)
                changed.append(updated)
        return changed

    @hookimpl
    def on_event(self, event: Any) -> None:
        """Registry events move the deployments that follow a stage or an alias."""
        if not self.follow or self._closed or not str(getattr(event, "type", "")).startswith("model."):
            return
        for d in self.deployments.on_registry_event(event):
            self.updated(d)

    # ---- the canary scheduler ------------------------------------------------------------------------------
    def step(self, now: int | None = None) -> list[Deployment]:
        """Judge every running canary once, at ``now`` (ms since the epoch; default: now); returns what changed.

        Each canary is judged on the samples this process recorded since its last step.
        """
        now = int(now if now is not None else now_ms())
        changed = []
        for d in self.deployments.store.running_canaries():
            canary = d.canary
            assert canary is not None
            key = (d.tenant, d.name)
            seen = {v: st.seq for v, st in self._stats.get(key, {}).copy().items()}
            verdict = self.deployments.judge(d, self._window(d, canary.candidate, now),
                                             self._window(d, canary.primary, now), now)
            if verdict.action == "wait":
                continue
            saved = self.deployments.apply_verdict(d, verdict, now)
            if saved is None:
                continue
            if saved.canary is not None:
                self._marks[key] = _CanaryMark(saved.canary.stepped_at, seen)
            log.info("deployment %s: canary of version %s %s (%s)", d.name, canary.candidate,
                     verdict.action, verdict.reason)
            self.updated(saved)
            changed.append(saved)
        return changed

    def _window(self, d: Deployment, version: int | None, now: int) -> WindowStats:
        """A canary variant's samples since the last step: by this process's mark of that step, else by time."""
        st = self._stats.get((d.tenant, d.name), {}).get(version) if version is not None else None
        if st is None or d.canary is None:
            return WindowStats()
        mark = self._marks.get((d.tenant, d.name))
        if mark is not None and mark.stepped_at == d.canary.stepped_at and version in mark.seq:
            return st.window(after_seq=mark.seq[version])
        return st.window(d.canary.stepped_at, now)

    def _background(self, work: Any) -> Any:
        """Run one piece of background work on a worker thread, never after (or during) close.

        Cancelling the loop does not stop a thread already querying the store; close() waits on
        this lock so that the host never closes a database connection while a query is running.
        """
        with self._background_lock:
            if self._closed:
                return None
            return work()

    async def _run(self) -> None:
        last_step = last_sync = last_sweep = 0.0
        while True:
            try:
                now = time.monotonic()
                await asyncio.to_thread(self._background, self.poll_changes)
                if self.follow and self.tick_seconds > 0 and now - last_step >= self.tick_seconds:
                    last_step = now
                    await asyncio.to_thread(self._background, self.step)
                if self.follow and now - last_sync >= 10:
                    last_sync = now
                    await asyncio.to_thread(self._background, self.reconcile)
                if now - last_sweep >= 5:
                    last_sweep = now
                    self._unload_unused(now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the traffic manager's background loop failed; retrying")
            interval = min(self.refresh_seconds, self.tick_seconds) if self.tick_seconds > 0 else self.refresh_seconds
            await asyncio.sleep(max(interval, 0.05))

    # ---- loaded versions ------------------------------------------------------------------------------------------
    def _load(self, tenant: str, model: str, version: int) -> ServedVersion:
        """Load a version into the serving slot with its batcher (worker thread; once per key)."""
        from matih_lite.serving import load_version
        from matih_lite.serving.batcher import MicroBatcher

        key = _key(tenant, model, version)
        with self._lock:
            lock = self._load_locks.setdefault(key, threading.Lock())
        with lock:
            found = self._models.get(key)
            if found is not None:
                return found
            if self._closed:
                raise ModelUnavailable("the service is stopping")
            principal = Principal(tenant, "serving", ("viewer",))
            try:
                mv = self.deployments.registry.get_version(principal, model, version)
                info = load_version(self.host, tenant, mv, key=key)
            except MatihError as exc:
                raise ModelUnavailable(f"version {version} of model {model!r} cannot be loaded: {exc.message}",
                                       detail={"model": model, "version": version}) from exc
            except Exception as exc:
                log.exception("loading version %s of model %s failed", version, model)
                raise ModelUnavailable(f"version {version} of model {model!r} cannot be loaded: "
                                       f"{type(exc).__name__}: {exc}", detail={"model": model, "version": version}) \
                    from exc
            backend = self.host.backend("serving")

            def predict(rows: Any, _key: str = key) -> Any:
                return backend.predict(_key, rows)

            batcher = MicroBatcher(predict, self.batch_max_size, self.batch_max_wait_ms,
                                   inline_max_ms=self.inline_predict_ms, name=key)
            served = ServedVersion(key, tenant, model, version, info, batcher, getattr(info, "flavor", ""))
            self._inference_log()  # opened here, on a worker thread, rather than by the first request
            self._models[key] = served
            import gc
            gc.collect()
            gc.freeze()  # the framework the flavor imported and the model stay out of the collector's walks
            log.info("loaded version %s of model %s (%s)", version, model, served.flavor)
            return served

    def _unload_unused(self, now: float, grace: float = 30.0) -> None:
        used = {_key(live.deployment.tenant, live.deployment.model, v)
                for live in list(self._live.values()) for v in live.versions}
        for key in list(self._models):
            if key in used:
                self._unused.pop(key, None)
                continue
            since = self._unused.setdefault(key, now)
            if now - since < grace:
                continue  # requests routed just before the change may still be in its batcher
            with self._lock:
                served = self._models.pop(key, None)
            self._unused.pop(key, None)
            if served is not None:
                served.batcher.close(timeout=0)
                try:
                    self.host.backend("serving").unload(key)
                except MatihError:
                    log.exception("unloading %s failed", key)

    def served_version(self, tenant: str, model: str, version: int) -> ServedVersion | None:
        return self._models.get(_key(tenant, model, version))

    def __repr__(self) -> str:
        return f"<TrafficManager of {getattr(self.host, 'profile', '?')} host: {len(self._live)} deployment(s)>"


def _key(tenant: str, model: str, version: int) -> str:
    from matih_lite.serving import serving_key

    return serving_key(tenant, model, version)


def _setting(section: Any, name: str, default: Any, kind: type, where: str) -> Any:
    value = section.get(name, default) if isinstance(section, Mapping) else default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or \
            (kind is int and int(value) != value):
        raise ConfigError(f"must be a {'whole ' if kind is int else ''}number >= 0, got {value!r}",
                          key=f"{where}.{name}")
    return kind(value)


# ---- one manager per host ------------------------------------------------------------------------------------------
PLUGIN = "matih_lite.serving.plugin"
"""The built-in plugin that asks for following and canary stepping; when it is blocked, deployments
are served as they are."""
MANAGER = "matih_lite.serving.traffic"
"""The name a host's traffic manager is registered under in its plugin manager."""


def attach_traffic(host: Any) -> TrafficManager:
    """The host's traffic manager, made and registered on first call (so the host's events reach it)."""
    pm = host.pm
    found = pm.get_plugin(MANAGER)
    if found is not None:
        return found
    manager = TrafficManager(host, follow=pm.get_plugin(PLUGIN) is not None)
    try:
        pm.register(manager, name=MANAGER)
    except ValueError:  # another thread attached one meanwhile
        return pm.get_plugin(MANAGER)
    return manager


_REQUEST_PREFIX = uuid.uuid4().hex[:16]
_request_counter = itertools.count(1)


def next_request_id() -> str:
    """A unique request id without a system call per request (uuid4 reads os.urandom each time,
    and the GIL hand-off around that call was the top entry of the predict path's profile)."""
    return f"{_REQUEST_PREFIX}{next(_request_counter):016x}"


def detach_traffic(host: Any) -> None:
    """Close and unregister the host's traffic manager, if it has one."""
    manager = host.pm.get_plugin(MANAGER)
    if manager is not None:
        host.pm.unregister(name=MANAGER)
        manager.close()
