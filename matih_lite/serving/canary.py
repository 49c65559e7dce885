"""Canary rollouts: the policy, the measurements a step is judged on, and the verdicts.

The candidate starts at ``initial_percent`` and steps up by ``step_percent`` every
``interval_seconds`` while, over the window since the last step, its error rate is within
``max_error_rate_delta`` of the primary's and its p99 latency within ``max_p99_ratio`` of the
primary's (once it has ``min_requests``). At 100 % it is promoted (and moved to Production through
the registry's governance, acting for the user who made the deployment); past a threshold it is
rolled back to 0 %, ``deployment.canary.rolled_back`` is emitted and sent to the notifiers, and the
history says why. :func:`Canaries.judge` decides (pure); :func:`Canaries.apply_verdict` writes.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np

from matih_lite.contracts.deployments import CanaryState, Deployment, Route
from matih_lite.errors import ConfigError, Conflict, Forbidden, GovernanceRefused, InvalidInput, MatihError, NotFound
from matih_lite.identity import LOCAL_ADMIN, Principal
from matih_lite.serving.routing import canary_routes, difference, variant_name

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.serving")


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


class CanarySection(CanaryPolicy, forbid_unknown_fields=True):
    """``[canary]`` in matih.toml: the policy of every deployment, the scheduler's tick, per-deployment tables."""

    tick_seconds: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    """How often the service steps canaries (0: never on its own; step by hand)."""
    deployments: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """``[canary.deployments.NAME]``: one deployment's policy keys over the defaults."""


def canary_section(config: Any) -> CanarySection:
    """``[canary]`` validated (types; the policies' ranges are :func:`check_canary`'s). Raises ConfigError."""
    from matih_lite.config import convert_settings

    return convert_settings(config.section("canary"), CanarySection, "canary")


def check_canary(host: Host, section: CanarySection) -> list[tuple[str, str]]:
    """The ranges of the default policy and of every ``[canary.deployments.NAME]`` table."""
    problems: list[tuple[str, str]] = []
    for name in ["", *section.deployments]:
        try:
            canary_policy(host.config, name)
        except ConfigError as exc:
            problems.append((exc.key or "canary", exc.reason))
    return problems


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


class LogFeed:
    """The per-variant samples of one deployment as every replica logged them, read from the shared inference
    log a little at a time (:func:`~matih_lite.serving.inference_log.variant_outcomes`).

    Each :meth:`update` reads the records since the newest one seen less ``lateness_ms`` (another replica's
    batch may land late with older timestamps) and adds those not seen yet, in time order, to one
    :class:`VariantStats` per version: what a canary is judged on whichever replica judges it.
    """

    def __init__(self, start_ms: int, lateness_ms: int = 5_000) -> None:
        self.stats: dict[int, VariantStats] = {}
        self.lateness_ms = lateness_ms
        self._cutoff = int(start_ms)
        self._seen: dict[tuple[bool, int], int] = {}

    def update(self, events: Any, log_name: str) -> int:
        """Read what was logged since the last update; returns the requests added. Raises StoreError."""
        from matih_lite.serving.inference_log import variant_outcomes

        o = variant_outcomes(events, log_name, self._cutoff)
        added = 0
        seen = self._seen
        for i in np.argsort(o.timestamp, kind="stable"):
            key = (bool(o.failed[i]), int(o.offset[i]))
            if key in seen:
                continue
            at = int(o.timestamp[i])
            seen[key] = at
            version = int(o.version[i])
            st = self.stats.get(version)
            if st is None:
                st = self.stats[version] = VariantStats()
            st.add(at, float(o.latency_ms[i]), bool(o.failed[i]))
            added += 1
        if len(o.timestamp):
            self._cutoff = max(self._cutoff, int(o.timestamp.max()) - self.lateness_ms)
            self._seen = {k: at for k, at in seen.items() if at >= self._cutoff}
        return added


def outcome_stats(outcomes: Any) -> dict[int, WindowStats]:
    """Per-version requests, errors and latency percentiles of an :class:`~matih_lite.serving.inference_log.
    Outcomes` window."""
    out = {}
    for version in sorted({int(v) for v in outcomes.version}):
        pick = outcomes.version == version
        lat = outcomes.latency_ms[pick]
        p50, p99 = np.percentile(lat, [50, 99]) if lat.size else (0.0, 0.0)
        out[version] = WindowStats(int(lat.size), int(np.count_nonzero(outcomes.failed[pick])), float(p50),
                                   float(p99))
    return out


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


class CanaryVerdict(msgspec.Struct, frozen=True):
    """What a canary step decided: ``wait``, ``step``, ``promote`` or ``rollback``, and why."""

    action: str
    reason: str
    candidate: WindowStats
    primary: WindowStats


def start_canary(d: Deployment, candidate: int, primary: int, now: int, reason: str,
                 policy: CanaryPolicy) -> Deployment:
    """``d`` with a canary of ``candidate`` against ``primary`` starting at the policy's initial share."""
    state = CanaryState(candidate=candidate, primary=primary, percent=policy.initial_percent, started_at=now,
                        stepped_at=now, policy=msgspec.to_builtins(policy), reason=reason)
    return msgspec.structs.replace(d, canary=state, status="active",
                                   routes=canary_routes(candidate, primary, policy.initial_percent))


def cancel_canary(d: Deployment, now: int, reason: str) -> Deployment:
    """``d`` with its running canary (if any) cancelled, saying why."""
    if d.canary is None or d.canary.status != "running":
        return d
    return msgspec.structs.replace(d, canary=msgspec.structs.replace(d.canary, status="cancelled", reason=reason,
                                                                     finished_at=now))


class Canaries:
    """The running canaries of one platform's deployments: judge a window, write what the verdict decided."""

    def __init__(self, deployments: Any) -> None:
        self.deployments = deployments
        """The :class:`~matih_lite.serving.deployments.Deployments` whose records the verdicts change."""

    def judge(self, d: Deployment, candidate: WindowStats, primary: WindowStats, now: int) -> CanaryVerdict:
        """The decision for a running canary given the window since its last step (pure)."""
        assert d.canary is not None
        policy = self.running_policy(d)
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

    def running_policy(self, d: Deployment) -> CanaryPolicy:
        """The policy a canary started with (kept in its state), else the deployment's current one."""
        stored = d.canary.policy if d.canary is not None else None
        if stored:
            known = {k: v for k, v in stored.items() if k in CanaryPolicy.__struct_fields__}
            try:
                return msgspec.convert(known, CanaryPolicy, strict=False)
            except msgspec.ValidationError:
                log.warning("deployment %s: the canary's stored policy is unreadable; using the current one", d.name)
        return self.deployments.policy(d)

    def apply_verdict(self, d: Deployment, verdict: CanaryVerdict, now: int) -> Deployment | None:
        """Write what a verdict decided (compare-and-set against ``d``); None when waiting or beaten to it."""
        if verdict.action == "wait" or d.canary is None or d.canary.status != "running":
            return None
        canary = d.canary
        policy = self.running_policy(d)
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
            new = msgspec.structs.replace(d, routes=canary_routes(canary.candidate, canary.primary, percent),
                                          canary=msgspec.structs.replace(canary, percent=percent, stepped_at=now,
                                                                         steps=canary.steps + 1))
            action = "canary.stepped"
        new = msgspec.structs.replace(new, updated_at=now)
        detail = {**difference(d, new), "measured": measured, "candidate": canary.candidate,
                  "primary": canary.primary}
        try:
            change = self.deployments.change(new, action, "canary", now, verdict.reason, detail)
            saved = self.deployments.store.update_deployment(new, change, revision=d.revision)
        except (Conflict, NotFound):
            return None
        if action == "canary.promoted":
            outcome = self._promote_in_registry(saved, canary.candidate, verdict.reason)
            if outcome:
                self.deployments.note(saved, "canary.registry", "canary", outcome.pop("reason"), outcome)
        self.deployments.announce(d, saved, action, verdict.reason, measured)
        return saved

    def _promote_in_registry(self, d: Deployment, version: int, why: str) -> dict[str, Any] | None:
        """Move a promoted candidate to Production through governance, acting for the deployment's owner."""
        if d.target == "stage":
            return None  # the stage it follows is the registry's word already
        principal = self._acting_for(d)
        try:
            mv = self.deployments.registry.get_version(principal, d.model, version)
            if mv.stage == "Production":
                return None
            result = self.deployments.registry.promote(principal, d.model, version, "Production",
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
            found = self.deployments.store.get_user(d.tenant, user)
            return Principal(d.tenant, user, tuple(found.roles))
        except (NotFound, AttributeError):
            pass
        try:
            from matih_lite.auth import auth_enabled

            secured = auth_enabled(self.deployments.host)
        except MatihError:
            secured = True
        # Without auth the lite service acts as the local admin for everyone.
        return Principal(d.tenant, user, ("admin",) if not secured else ())
