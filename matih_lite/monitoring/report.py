"""The drift report as one self-contained HTML page: no scripts, no external files, inline SVG.

For every version in the window: its status, data, concept and performance drift, the
statistics table (drifting features first), and for every feature a histogram of the
baseline against the window -- numeric features on bins of equal baseline mass (so the
baseline's bars are flat and drift shows as the window's bars leaving them), categorical
features by category.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping
from typing import Any

import numpy as np

from matih_lite.monitoring import stats

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2328;
padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
.sub{color:#59636e}table{border-collapse:collapse;margin:.6rem 0;width:100%}
th,td{border-bottom:1px solid #d8dee4;padding:.25rem .5rem;text-align:left;font-variant-numeric:tabular-nums}
th{background:#f6f8fa}.badge{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-weight:600;color:#fff}
.healthy{background:#1a7f37}.warning{background:#9a6700}.drifting{background:#cf222e}.degraded{background:#8250df}
.unknown{background:#6e7781}.yes{color:#cf222e;font-weight:600}.no{color:#1a7f37}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:1rem}
.card{border:1px solid #d0d7de;border-radius:6px;padding:.5rem .7rem}.card h3{font-size:.95rem;margin:.1rem 0}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
footer{margin-top:2rem;color:#59636e;font-size:.85rem}
"""
_BASE = "#8c959f"
_CURRENT = "#0969da"


def _h(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and (x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5)):
        return f"{x:.3e}"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def numeric_histogram(ref: stats.NumericAggregate, cur: stats.NumericAggregate | None,
                      groups: int = 20) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(labels, baseline shares, window shares) on about ``groups`` bins of equal baseline mass,
    with a bin below the baseline's minimum and one above its maximum when the window has values there."""
    inner = ref.counts[1:-1].astype(np.float64)
    if ref.n == 0 or inner.size == 0:
        return [], np.zeros(0), np.zeros(0)
    cum = np.cumsum(inner) / max(inner.sum(), 1)
    cuts = np.unique(np.searchsorted(cum, np.arange(1, groups) / groups, side="right"))
    cuts = cuts[(cuts > 0) & (cuts < inner.size)]
    starts = np.concatenate([[0], cuts]).astype(np.int64)
    base = np.add.reduceat(inner, starts)
    cur_counts = cur.counts.astype(np.float64) if cur is not None and cur.n else np.zeros_like(ref.counts, np.float64)
    now = np.add.reduceat(cur_counts[1:-1], starts)
    labels = [_num(float(ref.edges[s])) for s in starts]
    under, over = cur_counts[0], cur_counts[-1]
    if under:
        labels.insert(0, f"< {_num(float(ref.edges[0]))}")
        base = np.concatenate([[0.0], base])
        now = np.concatenate([[under], now])
    if over:
        labels.append(f"> {_num(float(ref.edges[-1]))}")
        base = np.concatenate([base, [float(ref.counts[-1])]])
        now = np.concatenate([now, [over]])
    total_cur = cur_counts.sum()
    return labels, base / max(ref.counts.sum(), 1), now / total_cur if total_cur else now


def categorical_histogram(ref: stats.CategoricalAggregate, cur: stats.CategoricalAggregate | None,
                          top: int = 15) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(categories, baseline shares, window shares): the ``top`` categories by larger share, then the rest."""
    if cur is None:
        cur = ref.like(counts={})
    keys, a, b = stats.aligned_counts(ref, cur)
    pa = a / a.sum() if a.sum() else a
    pb = b / b.sum() if b.sum() else b
    order = np.argsort(-np.maximum(pa, pb), kind="stable")
    keep = order[:top]
    labels = [keys[i] for i in keep]
    base, now = pa[keep], pb[keep]
    if len(order) > top:
        rest = order[top:]
        labels.append(f"{len(rest)} others")
        base = np.concatenate([base, [pa[rest].sum()]])
        now = np.concatenate([now, [pb[rest].sum()]])
    return labels, base, now


def svg_bars(labels: list[str], base: np.ndarray, now: np.ndarray, *, width: int = 320, height: int = 150,
             rotate: bool = False) -> str:
    """Paired bars (baseline grey, window blue) as an inline SVG."""
    if not labels:
        return '<p class="sub">no values</p>'
    pad_l, pad_b, pad_t = 34, 42 if rotate else 18, 6
    plot_w, plot_h = width - pad_l - 4, height - pad_b - pad_t
    top = float(max(base.max(initial=0), now.max(initial=0), 1e-12))
    n = len(labels)
    slot = plot_w / n
    bar = max(slot * 0.42, 0.8)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">',
             f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 4}" y2="{pad_t + plot_h}" stroke="#8c959f"/>',
             f'<text x="{pad_l - 3}" y="{pad_t + 8}" font-size="9" text-anchor="end" fill="#59636e">'
             f'{top:.0%}</text>',
             f'<text x="{pad_l - 3}" y="{pad_t + plot_h}" font-size="9" text-anchor="end" fill="#59636e">0</text>']
    for i, (label, b, c) in enumerate(zip(labels, base, now)):
        x = pad_l + i * slot + (slot - 2 * bar) / 2
        hb, hc = plot_h * b / top, plot_h * c / top
        parts.append(f'<rect x="{x:.1f}" y="{pad_t + plot_h - hb:.1f}" width="{bar:.1f}" height="{hb:.1f}" '
                     f'fill="{_BASE}"><title>{_h(label)}: baseline {b:.2%}</title></rect>')
        parts.append(f'<rect x="{x + bar:.1f}" y="{pad_t + plot_h - hc:.1f}" width="{bar:.1f}" height="{hc:.1f}" '
                     f'fill="{_CURRENT}"><title>{_h(label)}: window {c:.2%}</title></rect>')
        every = max(1, n // 5) if not rotate else 1
        if i % every == 0 or i == n - 1:
            tx = pad_l + i * slot + slot / 2
            text = _h(label if len(label) <= 14 else label[:13] + "…")
            if rotate:
                parts.append(f'<text x="{tx:.1f}" y="{pad_t + plot_h + 8}" font-size="8" fill="#59636e" '
                             f'transform="rotate(40 {tx:.1f} {pad_t + plot_h + 8})">{text}</text>')
            else:
                parts.append(f'<text x="{tx:.1f}" y="{pad_t + plot_h + 12}" font-size="8" text-anchor="middle" '
                             f'fill="#59636e">{text}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _feature_card(name: str, result: Mapping[str, Any] | None, ref: Any, cur: Any) -> str:
    if isinstance(ref, stats.NumericAggregate):
        labels, base, now = numeric_histogram(ref, cur)
        chart = svg_bars(labels, base, now)
    else:
        labels, base, now = categorical_histogram(ref, cur)
        chart = svg_bars(labels, base, now, rotate=True)
    verdict = ""
    if result is not None and result.get("statistic") is not None:
        cls = "yes" if result["drifted"] else "no"
        verdict = (f'<span class="{cls}">{"drift" if result["drifted"] else "no drift"}</span> · '
                   f'{_h(result["test"])} {_num(result["statistic"])}')
    return f'<div class="card"><h3>{_h(name)}</h3><div class="sub">{verdict}</div>{chart}</div>'


def _table(results: list[Mapping[str, Any]]) -> str:
    rows = ["<table><tr><th>feature</th><th>kind</th><th>test</th><th>statistic</th><th>p-value</th>"
            "<th>threshold</th><th>drift</th><th>method</th><th>nulls (baseline → window)</th></tr>"]
    for r in results:
        nulls = r.get("null_rate") or {}
        drift = ('<span class="yes">yes</span>' if r["drifted"] else '<span class="no">no</span>') \
            if r.get("statistic") is not None else f'<span class="sub">{_h(r.get("note") or "-")}</span>'
        bound = f" (bound {_num(r['bound'])})" if r.get("bound") is not None else ""
        rows.append(f"<tr><td>{_h(r.get('feature', 'prediction'))}</td><td>{_h(r.get('kind', ''))}</td>"
                    f"<td>{_h(r['test'])}</td><td>{_num(r.get('statistic'))}{_h(bound)}</td>"
                    f"<td>{_num(r.get('p_value'))}</td><td>{_num(r.get('threshold'))}</td><td>{drift}</td>"
                    f"<td>{_h(r.get('method') or '-')}</td>"
                    f"<td>{_pct(nulls.get('baseline'))} → {_pct(nulls.get('current'))}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _yes_no(flag: Any) -> str:
    return '<span class="yes">yes</span>' if flag else '<span class="no">no</span>'


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x:.1%}"


def render_report(report: Mapping[str, Any], parts: Mapping[int, tuple[Any, Any]]) -> str:
    """The HTML page of a drift report (from :meth:`Monitoring.check`) and its window aggregates."""
    title = f"Drift report: {report['deployment']} ({report['model']})"
    out = [f"<h1>{_h(title)}</h1>",
           f'<p class="sub">window {_h(report["window"])}: {_h(_when(report["start"]))} → '
           f'{_h(_when(report["end"]))} · {report["rows"]:,} rows · status '
           f'<span class="badge {_h(report["status"])}">{_h(report["status"])}</span></p>',
           '<p class="legend sub"><span style="background:#8c959f"></span>baseline (training data)'
           '<span style="background:#0969da"></span>this window</p>']
    if not report["versions"]:
        out.append(f'<p>{_h(report.get("note") or "no requests in this window")}</p>')
    for v in report["versions"]:
        agg, profile = parts.get(v["version"], (None, None))
        status = _h(v["status"])
        out.append(f'<h2>Version {_h(v["version"])} <span class="badge {status}">{status}</span></h2>')
        out.append(f'<p>{v["rows"]:,} rows in the window')
        if v.get("baseline"):
            out.append(f' · baseline of {v["baseline"]["rows"]:,} rows built {_h(_when(v["baseline"]["created_at"]))}')
        out.append("</p>")
        for note in v.get("notes", []):
            out.append(f'<p class="sub">{_h(note)}</p>')
        dd = v.get("data_drift")
        if dd:
            out.append(f'<p><b>Data drift</b>: {dd["drifted"]} of {dd["tested"]} features drift '
                       f'({dd["share"]:.0%}; detected at {dd["threshold"]:.0%}): '
                       f'{_yes_no(dd["detected"])}</p>')
        cd = v.get("concept_drift")
        if cd:
            out.append(f'<p><b>Concept drift</b> (prediction distribution, {_h(cd["test"])}): '
                       f'{_num(cd.get("statistic"))} against {_num(cd.get("threshold"))}: '
                       f'<span class="{"yes" if cd.get("drifted") else "no"}">{"yes" if cd.get("drifted") else "no"}'
                       f'</span></p>')
        perf = v.get("performance")
        if perf:
            metrics = ", ".join(f"{_h(k)} {_num(x)}" for k, x in (perf.get("metrics") or {}).items()) or "none"
            base = ", ".join(f"{_h(k)} {_num(x)}" for k, x in (perf.get("baseline") or {}).items()) or "none"
            detected = perf.get("detected")
            out.append(f'<p><b>Performance</b> on {perf.get("labelled", 0):,} labelled rows: {metrics} '
                       f'(baseline: {base})' + (f'; change {perf["change"]:+.1%}' if perf.get("change") is not None
                                               else "") +
                       f': <span class="{"yes" if detected else "no"}">{"drift" if detected else "no drift"}</span>'
                       + (f' <span class="sub">{_h(perf["note"])}</span>' if perf.get("note") else "") + "</p>")
        if v["features"]:
            out.append(_table(list(v["features"]) + ([{**cd, "feature": "(prediction)"}] if cd else [])))
        if profile is not None and agg is not None:
            out.append('<div class="grid">')
            by_name = {r["feature"]: r for r in v["features"]}
            for name in [r["feature"] for r in v["features"]]:
                out.append(_feature_card(name, by_name.get(name), profile.features.get(name), agg.features.get(name)))
            if profile.prediction is not None:
                out.append(_feature_card("prediction", cd, profile.prediction, agg.prediction))
            out.append("</div>")
    out.append(f"<footer>Generated {_h(_when(report['checked_at']))} by matih-lite "
               f"({_h(report['schema'])}).</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")
