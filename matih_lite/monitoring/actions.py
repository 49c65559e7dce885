"""What a drift check does about what it found: alert, annotate the version's health, retrain, roll back.

Each is configured in ``[drift]`` (``alerts``, ``health``, ``retrain``, ``rollback``) and reported in
the check's ``actions``. Alerts go to every notifier once per (model, feature, window); the health
lands on the model version as the ``matih.health`` tag (its card shows it); retraining submits
``[models.NAME] retrain_spec`` through the compute slot, at most once per ``retrain_cooldown``;
a rollback takes the drifting version out of the deployment's traffic.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.contracts.clock import now_ms
from matih_lite.errors import ConfigError, Conflict, MatihError, NotFound
from matih_lite.events import PlatformEvent
from matih_lite.identity import Principal
from matih_lite.monitoring.settings import MONITOR_USER, UNITS, DriftSettings, model_setting, parse_duration, segment

if TYPE_CHECKING:
    from matih_lite.host import Host


HEALTH_TAG = "matih.health"
HEALTH_DETAIL_TAG = "matih.health.detail"
HEALTH = ("healthy", "warning", "drifting", "degraded", "unknown")
"""A version's health after a check: ``warning`` feature drift, ``drifting`` data or concept drift, ``degraded``
performance drift, ``unknown`` no baseline or too few rows."""
_ALERT_LOCK = threading.Lock()
"""Serializes the read-modify-write of the alert dedupe records within this process."""


class DriftActions:
    """The actions of one :class:`~matih_lite.monitoring.service.Monitoring` (its host, artifacts, registry)."""

    def __init__(self, monitoring: Any) -> None:
        self.monitoring = monitoring
        self.host = monitoring.host
        self.registry = monitoring.registry

    @property
    def artifacts(self) -> Any:
        return self.host.artifacts

    def act(self, principal: Principal, d: Any, report: dict[str, Any],
            settings: DriftSettings) -> list[dict[str, Any]]:
        """Alert, annotate health, trigger retraining, roll back -- as configured. Returns what was done."""
        actions: list[dict[str, Any]] = []
        system = Principal(principal.tenant, MONITOR_USER, ("admin",))
        for v in report["versions"]:
            if v["status"] == "unknown" and not v["features"]:
                continue
            signals = _signals(v)
            if settings.alerts and signals and v["status"] != "unknown":
                actions.append(self._alert(system, d, report, v, signals))
            if settings.health and v["status"] != "unknown":
                actions.append(self._annotate(system, d, report, v))
            if settings.retrain and v["status"] != "unknown" and set(signals) & set(settings.retrain_on):
                actions.append(self._retrain(system, d, report, v, signals, settings))
            perf = v.get("performance") or {}
            if settings.rollback and perf.get("detected"):
                actions.append(self._rollback(principal, d, report, v))
        return [a for a in actions if a]

    def _alert(self, principal: Principal, d: Any, report: dict[str, Any], v: dict[str, Any],
               signals: list[str]) -> dict[str, Any]:
        bucket = -(-report["end"] // parse_duration(report["window"])) * parse_duration(report["window"])
        wanted = [r["feature"] for r in v["features"] if r["drifted"]]
        wanted += [f"__{s}__" for s in signals if s != "feature"]
        fresh = self._not_yet_alerted(principal.tenant, d.model, wanted, report["window"], bucket)
        if not fresh:
            return {"action": "alert", "sent": False, "reason": "already alerted for this window"}
        alert = {
            "type": "drift.detected", "severity": "critical" if v["status"] == "degraded" else "warning",
            "tenant": principal.tenant, "model": d.model, "version": v["version"], "deployment": d.name,
            "window": report["window"], "start": report["start"], "end": report["end"], "status": v["status"],
            "signals": signals, "rows": v["rows"],
            "features": [{k: r.get(k) for k in ("feature", "test", "statistic", "p_value", "threshold")}
                         for r in v["features"] if r["drifted"] and r["feature"] in fresh][:50],
            "data_drift": v["data_drift"], "concept_drift": _brief(v.get("concept_drift")),
            "performance": v.get("performance"), "timestamp": now_ms(),
        }
        from matih_lite.alerts import send_alert

        send_alert(self.host, alert)
        self.host.emit(PlatformEvent("drift.detected", f"{d.model}/{v['version']}", principal.tenant,
                                     {k: alert[k] for k in ("model", "version", "deployment", "window", "start", "end",
                                                            "status", "signals")}))
        return {"action": "alert", "sent": True, "version": v["version"], "keys": sorted(fresh)}

    def _not_yet_alerted(self, tenant: str, model: str, features: Sequence[str], window: str, bucket: int) -> set[str]:
        """The features not alerted yet for (model, window); marks them alerted."""
        path = f"{tenant}/_drift/alerts/{segment(model)}.json"
        with _ALERT_LOCK:
            try:
                seen = json.loads(self.artifacts.get(path))
            except (NotFound, ValueError):
                seen = {}
            cutoff = now_ms() - 30 * UNITS["d"]
            seen = {k: t for k, t in seen.items() if isinstance(t, int) and t >= cutoff}
            fresh = set()
            for feature in features:
                key = f"{feature}|{window}|{bucket}"
                if key not in seen:
                    fresh.add(feature)
                    seen[key] = now_ms()
            if fresh:
                self.artifacts.put(path, json.dumps(seen, sort_keys=True).encode())
        return fresh

    def _annotate(self, principal: Principal, d: Any, report: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
        detail = {"status": v["status"], "deployment": d.name, "window": report["window"], "start": report["start"],
                  "end": report["end"], "rows": v["rows"], "checked_at": report["checked_at"],
                  "drifted_features": (v["data_drift"] or {}).get("drifted_features", [])[:20],
                  "data_drift_share": (v["data_drift"] or {}).get("share"),
                  "concept_drift": bool((v.get("concept_drift") or {}).get("drifted")),
                  "performance": {k: (v.get("performance") or {}).get(k) for k in ("metric", "change", "labelled")}}
        text = json.dumps(detail, sort_keys=True, default=str)
        if len(text) > 7900:
            detail["drifted_features"] = detail["drifted_features"][:3]
            text = json.dumps(detail, sort_keys=True, default=str)[:7900]
        try:
            self.registry.update_version(principal, d.model, v["version"],
                                         tags={HEALTH_TAG: v["status"], HEALTH_DETAIL_TAG: text})
        except MatihError as exc:
            return {"action": "health", "version": v["version"], "done": False, "reason": exc.message}
        return {"action": "health", "version": v["version"], "done": True, "status": v["status"]}

    def _retrain(self, principal: Principal, d: Any, report: dict[str, Any], v: dict[str, Any], signals: list[str],
                 settings: DriftSettings) -> dict[str, Any]:
        base = {"action": "retrain", "version": v["version"], "submitted": False}
        spec_path = model_setting(self.host.config, d.model, "retrain_spec")
        if self.host.active("compute") is None:
            return {**base, "reason": "no compute backend is configured (profiles.<name>.compute); no job submitted"}
        if not spec_path:
            return {**base, "reason": f"[models.{d.model}] retrain_spec is not set; no job submitted"}
        cooldown = parse_duration(settings.retrain_cooldown, "retrain_cooldown")
        bucket = report["end"] // cooldown * cooldown
        if not self._not_yet_alerted(principal.tenant, d.model, ["__retrain__"], f"cooldown{cooldown}", bucket):
            return {**base, "reason": f"a retraining job was submitted within retrain_cooldown = "
                                      f"{settings.retrain_cooldown}"}
        try:
            spec = read_job_spec(self.host.config, spec_path)
            spec = {**spec, "trigger": {"kind": "drift", "model": d.model, "version": v["version"],
                                        "deployment": d.name, "window": report["window"], "signals": signals,
                                        "start": report["start"], "end": report["end"]}}
            job_id = self.host.backend("compute").submit(spec)
        except MatihError as exc:
            return {**base, "reason": exc.message}
        except Exception as exc:  # a backend's own failure: recorded, never fatal to the check
            return {**base, "reason": f"{type(exc).__name__}: {exc}"}
        self.host.emit(PlatformEvent("drift.retrain.submitted", f"{d.model}/{v['version']}", principal.tenant,
                                     {"model": d.model, "version": v["version"], "job_id": job_id, "signals": signals}))
        return {**base, "submitted": True, "job_id": job_id}

    def _rollback(self, principal: Principal, d: Any, report: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
        from matih_lite.serving.deployments import Deployments

        perf = v["performance"]
        reason = (f"performance drift: {perf['metric']} {perf['metrics'].get(perf['metric']):.4g} vs baseline "
                  f"{perf['baseline'].get(perf['metric']):.4g} ({perf['change']:+.1%}) over {perf['labelled']} "
                  f"labelled rows in the {report['window']} window ending {_iso(report['end'])}")
        system = Principal(principal.tenant, MONITOR_USER, ("admin",))
        base = {"action": "rollback", "deployment": d.name, "version": v["version"], "done": False}
        try:
            rolled = rollback_deployment(self.host, Deployments(self.host), system, d.name, v["version"], reason)
        except MatihError as exc:
            return {**base, "reason": exc.message}
        self.host.emit(PlatformEvent("drift.rollback", d.name, principal.tenant,
                                     {"deployment": d.name, "model": d.model, "version": v["version"],
                                      "reason": reason, **rolled}))
        return {**base, "done": True, "reason": reason, **rolled}


# ---- deployment rollback ----------------------------------------------------------------------------------
def rollback_deployment(host: Host, deployments: Any, principal: Principal, name: str, version: int,
                        reason: str) -> dict[str, Any]:
    """Take ``version`` out of a deployment's traffic, through the traffic manager's own operations.

    ``Deployments.rollback(principal, name, reason=...)`` when the traffic manager has one;
    otherwise: a deployment that follows Production is rolled back in the registry (and follows
    it); one with fixed versions goes back to the routes it had before ``version`` entered
    them (from its history), or drops ``version`` from a split. Raises Conflict when there is
    nothing to go back to.
    """
    own = getattr(deployments, "rollback", None)
    if callable(own):
        result = own(principal, name, reason=reason)
        return {"method": "deployments.rollback", "routes": _plain_routes(getattr(result, "routes", []))}
    d = deployments.get(principal, name)
    if d.target == "stage" and d.follows == "Production":
        from matih_lite.registry import Registry

        transition = Registry(host).rollback(principal, d.model, reason=reason)
        deployments.sync(principal.tenant, d.model, stage="Production")
        return {"method": "registry rollback", "to_version": transition.version}
    if d.target != "versions":
        raise Conflict(f"deployment {name!r} follows {d.target} {d.follows!r}; move the {d.target} to roll it back")
    live = [r for r in d.routes if r.weight > 0]
    if len(live) > 1 and any(r.version == version for r in live):
        rest = [r for r in live if r.version != version]
        total = sum(r.weight for r in rest)
        split = _split_percent({r.version: r.weight * 100.0 / total for r in rest})
        updated = deployments.update(principal, name, split=split, reason=reason)
        return {"method": "dropped from the split", "routes": _plain_routes(updated.routes)}
    previous = _routes_before(deployments, principal, name, version)
    if previous is None:
        raise Conflict(f"deployment {name!r} never served another version before {version}; nothing to roll back to")
    if len(previous) == 1:
        updated = deployments.update(principal, name, version=previous[0]["version"], reason=reason)
    else:
        updated = deployments.update(principal, name, split=_split_percent(
            {r["version"]: r["weight"] for r in previous}), reason=reason)
    return {"method": "previous routes", "routes": _plain_routes(updated.routes)}


def _split_percent(weights: Mapping[int, float]) -> dict[int, float]:
    """Weights rounded to 0.01 % that still add up to exactly 100."""
    items = sorted(weights.items())
    out = {v: round(w, 2) for v, w in items}
    out[items[-1][0]] = round(100.0 - sum(out[v] for v, _ in items[:-1]), 2)
    return out


def _routes_before(deployments: Any, principal: Principal, name: str, version: int) -> list[dict[str, Any]] | None:
    """The live routes the deployment had just before ``version`` entered them (its history, newest first)."""
    token = None
    changes = []
    while True:
        page = deployments.history(principal, name, max_results=1000, page_token=token)
        changes.extend(page.items)
        token = page.next_token
        if not token:
            break
    for change in reversed(changes):
        routes = (change.detail or {}).get("routes")
        if not isinstance(routes, Mapping):
            continue
        before = [r for r in routes.get("before") or [] if r.get("weight", 0) > 0]
        after = [r for r in routes.get("after") or [] if r.get("weight", 0) > 0]
        if any(r.get("version") == version for r in after) and before and \
                not any(r.get("version") == version for r in before):
            return before
    return None


def _plain_routes(routes: Any) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(r) if not isinstance(r, Mapping) else dict(r) for r in routes or []]


# ---- helpers ---------------------------------------------------------------------------------------
def _signals(v: dict[str, Any]) -> list[str]:
    out = []
    if any(r["drifted"] for r in v["features"]):
        out.append("feature")
    if (v.get("data_drift") or {}).get("detected"):
        out.append("data")
    if (v.get("concept_drift") or {}).get("drifted"):
        out.append("concept")
    if (v.get("performance") or {}).get("detected"):
        out.append("performance")
    return out


def _brief(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not result:
        return None
    return {k: result.get(k) for k in ("test", "statistic", "p_value", "threshold", "drifted")}


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def read_job_spec(config: Any, path: str) -> dict[str, Any]:
    """A training job spec (JSON or TOML) named by ``[models.NAME] retrain_spec``, relative to matih.toml."""
    import tomllib
    from pathlib import Path

    p = Path(path).expanduser()
    if not p.is_absolute():
        p = Path(config.base_dir) / p
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the retraining job spec {p}: {exc.strerror or exc}",
                          key="models.retrain_spec") from None
    try:
        spec = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"the retraining job spec {p} is not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: "
                          f"{exc}", key="models.retrain_spec") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"the retraining job spec {p} must be an object", key="models.retrain_spec")
    return spec
