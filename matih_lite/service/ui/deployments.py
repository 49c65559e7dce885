"""Deployments (routes, variant stats, shadows, canary, history, recent requests) and their drift.

Records come from :class:`~matih_lite.serving.deployments.Deployments`, live numbers from the
host's traffic manager (what this process measured), recent requests from the inference log,
drift from :class:`~matih_lite.monitoring.service.Monitoring`: its stored reports (the checked
windows), the feature table of one (drifting features first), baseline-vs-window histograms
from the window's aggregates, and each feature's statistic over the stored windows.
"""

from __future__ import annotations

import math
import time
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery

from matih_lite.errors import MatihError, NotFound
from matih_lite.service.ui.pages import Pages
from matih_lite.service.ui.render import fragment, page, seg, who
from matih_lite.service.ui.session import checked_form, redirect

STATS_WINDOW_MS = 60_000
RECENT_REQUESTS = 25
RECENT_SPAN_MS = 24 * 3_600_000
HISTORY_REPORTS = 100


def deployments_of(request: Request) -> Any:
    from matih_lite.serving.deployments import Deployments

    return Deployments(request.app.state["host"])


def variant_stats(host: Any, tenant: str, name: str) -> dict[str, Any]:
    """Per-variant requests per second (over the last minute), error rate and p50/p99, and shadows' agreement."""
    from matih_lite.serving.traffic import attach_traffic

    now = int(time.time() * 1000)
    stats = attach_traffic(host).stats(tenant, name, since_ms=now - STATS_WINDOW_MS)
    for v in stats["variants"].values():
        v["rps"] = v["requests"] / (STATS_WINDOW_MS / 1000)
    return stats


def recent_requests(host: Any, tenant: str, name: str, limit: int = RECENT_REQUESTS) -> dict[str, Any]:
    """The newest requests of the inference log (within a day): time, id, variant, latency, prediction, features."""
    from matih_lite.monitoring.service import Monitoring

    now = int(time.time() * 1000)
    try:
        window = Monitoring(host).read_window(tenant, name, now - RECENT_SPAN_MS, now + 1)
    except MatihError as exc:
        return {"rows": [], "features": [], "note": exc.message}
    table = window.table
    n = table.num_rows
    tail = table.slice(max(0, n - limit), limit)
    features = window.feature_names[:8]
    rows = []
    for row in reversed(tail.to_pylist()):
        rows.append({"timestamp": row.get("timestamp"), "request_id": row.get("request_id"),
                     "variant": row.get("variant"), "version": row.get("version"),
                     "latency_ms": row.get("latency_ms"), "prediction": row.get("prediction"),
                     "label": row.get("label"), "features": [row.get(f"features.{f}") for f in features]})
    return {"rows": rows, "features": features, "total": n, "note": None}


def sparkline(points: list[tuple[int, float | None, bool]], width: int = 140, height: int = 28) -> str:
    """A feature's statistic over the checked windows as a tiny inline SVG (drifting windows as red dots)."""
    values = [(t, v, d) for t, v, d in points if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return ""
    values.sort(key=lambda p: p[0])
    t0, t1 = values[0][0], values[-1][0]
    lo = min(v for _, v, _ in values)
    hi = max(v for _, v, _ in values)
    span_t = max(t1 - t0, 1)
    span_v = (hi - lo) or 1.0

    def xy(t: int, v: float) -> tuple[float, float]:
        return 2 + (width - 4) * (t - t0) / span_t, height - 3 - (height - 6) * (v - lo) / span_v

    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(t, v) for t, v, _ in values))
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" class="spark-drift"/>'
                   for (x, y), (_, _, d) in zip((xy(t, v) for t, v, _ in values), values) if d)
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="statistic over {len(values)} windows, from {lo:.3g} to {hi:.3g}">'
            f'<polyline points="{path}" class="spark-line"/>{dots}</svg>')


def histograms(monitoring: Any, principal: Any, deployment: Any, report: dict[str, Any]) -> dict[int, dict[str, str]]:
    """Baseline-vs-window bars (inline SVG) per version and feature of a stored report's window."""
    from matih_lite.monitoring import stats
    from matih_lite.monitoring.report import categorical_histogram, numeric_histogram, svg_bars

    out: dict[int, dict[str, str]] = {}
    try:
        parts = monitoring.aggregate(principal, deployment, int(report["start"]), int(report["end"]))
    except MatihError:
        return out
    for version, (agg, profile) in parts.items():
        if profile is None:
            continue
        charts = {}
        for feature, ref in profile.features.items():
            cur = agg.features.get(feature)
            if isinstance(ref, stats.NumericAggregate):
                labels, base, now = numeric_histogram(ref, cur)
                charts[feature] = svg_bars(labels, base, now)
            else:
                labels, base, now = categorical_histogram(ref, cur)
                charts[feature] = svg_bars(labels, base, now, rotate=True)
        out[int(version)] = charts
    return out


class DeploymentPages(Pages):
    """Deployments, one deployment, its drift."""

    path = "/ui"

    @get("/deployments", sync_to_thread=True)
    def deployments(self, request: Request) -> Response:
        principal = who(request)
        found = deployments_of(request).list(principal, max_results=1000).items
        return page(request, "deployments.html", title="Deployments", section="deployments", deployments=found)

    @get("/deployments/{name:str}", sync_to_thread=True)
    def deployment(self, request: Request, name: FromPath[str], part: FromQuery[str] = "") -> Response:
        host = request.app.state["host"]
        principal = who(request)
        d = deployments_of(request).get(principal, name)
        stats = variant_stats(host, principal.tenant, name)
        if part == "live":
            return fragment(request, "deployment_live.html", deployment=d, stats=stats,
                            recent=recent_requests(host, principal.tenant, name))
        changes = deployments_of(request).history(principal, name, max_results=1000).items
        canary_history = [c for c in changes if c.action.startswith("canary.")]
        return page(request, "deployment.html", title=d.name, section="deployments", deployment=d, stats=stats,
                    changes=list(reversed(changes))[:200], canary_history=list(reversed(canary_history)),
                    recent=recent_requests(host, principal.tenant, name))

    @get("/deployments/{name:str}/drift", sync_to_thread=True)
    def drift(self, request: Request, name: FromPath[str], window: FromQuery[str] = "",
              end: FromQuery[int | None] = None) -> Response:
        from matih_lite.monitoring.service import Monitoring

        host = request.app.state["host"]
        principal = who(request)
        d = deployments_of(request).get(principal, name)
        monitoring = Monitoring(host)
        reports = monitoring.history(principal, name, window=window or None, max_results=HISTORY_REPORTS)
        chosen = None
        if reports:
            chosen = next((r for r in reports if end is not None and r.get("end") == end), reports[0])
        series: dict[str, list[tuple[int, float | None, bool]]] = {}
        for r in reports:
            for v in r.get("versions", []):
                for f in v.get("features", []):
                    series.setdefault(f"{v.get('version')}:{f['feature']}", []).append(
                        (int(r["end"]), f.get("statistic"), bool(f.get("drifted"))))
        sparks = {k: sparkline(v) for k, v in series.items()}
        charts = histograms(monitoring, principal, d, chosen) if chosen else {}
        windows = sorted({r.get("window") for r in reports if r.get("window")})
        return page(request, "drift.html", title=f"{d.name}: drift", section="deployments", deployment=d,
                    reports=reports, report=chosen, sparks=sparks, charts=charts, window=window, windows=windows,
                    check_windows=["1h", "1d", "30m", "7d"])

    @post("/deployments/{name:str}/drift/check", status_code=303)
    async def check(self, request: Request, name: FromPath[str]) -> Response:
        import anyio

        from matih_lite.monitoring.service import Monitoring

        form = await checked_form(request)
        principal = who(request)
        window = form.get("window") or "1h"
        monitoring = Monitoring(request.app.state["host"])
        try:
            report = await anyio.to_thread.run_sync(lambda: monitoring.check(principal, name, window, act=True))
        except NotFound:
            raise
        except MatihError as exc:
            return redirect(request, f"/ui/deployments/{seg(name)}/drift", f"check refused: {exc.message}", "error")
        drifting = sum(1 for v in report["versions"] for f in v["features"] if f.get("drifted"))
        return redirect(request, f"/ui/deployments/{seg(name)}/drift?end={report['end']}",
                        f"checked the {report['window']} window: {report['rows']:,} rows, status {report['status']}, "
                        f"{drifting} drifting feature(s)")


CONTROLLERS = [DeploymentPages]
