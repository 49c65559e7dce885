"""``matih-lite drift check|report|history|tests|jobs`` and ``matih-lite models baseline``: drift from the terminal.

Everything goes through :class:`~matih_lite.monitoring.service.DriftClient`: this folder's store,
or the ml-service at ``MATIH_URL`` (needed while ``matih-lite up`` runs: the service owns the
events file the inference log lives in).

Exit codes of ``drift check``: 0 checked (drift or not, unless ``--fail-on-drift``); 1 the check failed
(unknown deployment, a backend down); 2 usage or configuration; with ``--fail-on-drift``, 3 drift
found and 4 not judged (no requests, too few rows for ``[drift] min_rows``, or no baseline), so a CI
script never reads "not judged" as "no drift".
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

from matih_lite.cli import app
from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json, table
from matih_lite.cli.registry import models_app
from matih_lite.errors import InvalidInput

drift_app = typer.Typer(
    help="Drift of deployed models: check a window, write an HTML report, see past checks.\n\n"
         "Examples:\n\n"
         "  matih-lite models baseline churn 3 --data train.parquet --target churned\n\n"
         "  matih-lite drift check --deployment churn --window 1h\n\n"
         "  matih-lite drift report --deployment churn --output report.html",
    no_args_is_help=True)
app.add_typer(drift_app, name="drift")

STATUS_STYLE = {"healthy": "green", "warning": "yellow", "drifting": "red", "degraded": "magenta", "unknown": "dim"}
EXIT_DRIFT = 3
EXIT_NOT_JUDGED = 4


def _client(config: str | None, profile: str | None):
    from matih_lite.monitoring.client import DriftClient

    return DriftClient(config=config, profile=profile)


def _end(text: str | None) -> int | None:
    """``--end``: ISO 8601 (UTC when no zone is given) or milliseconds since the epoch."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--end takes an ISO time (2026-11-28T10:00Z) or epoch milliseconds, not {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3e}" if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5) else f"{x:.4g}"
    return str(x)


def _status(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{escape(status)}[/{style}]" if style else escape(status)


def print_report(report: dict[str, Any]) -> None:
    """A report as tables for people: one per version, drifting features first."""
    out = console()
    out.print(f"[bold]{escape(report['deployment'])}[/bold] ({escape(report['model'])}): {report['window']} window "
              f"{_when(report['start'])} -> {_when(report['end'])}, {report['rows']:,} rows, "
              f"status {_status(report['status'])}")
    if not report["versions"]:
        out.print(escape(report.get("note") or "no requests in this window"))
    for v in report["versions"]:
        dd = v.get("data_drift") or {}
        head = f"version {v['version']}: {v['rows']:,} rows, {_status(v['status'])}"
        if dd:
            head += (f"; data drift {'[red]yes[/red]' if dd['detected'] else 'no'} ({dd['drifted']} of "
                     f"{dd['tested']} features, {dd['share']:.0%} vs {dd['threshold']:.0%})")
        out.print(head)
        for note in v.get("notes", []):
            out.print(f"  [dim]{escape(note)}[/dim]")
        rows = []
        for r in v["features"]:
            verdict = "[red]drift[/red]" if r["drifted"] else ("ok" if r["statistic"] is not None else
                                                                f"[dim]{escape(r.get('note') or '-')}[/dim]")
            rows.append((escape(r["feature"]), r.get("kind", ""), r["test"], _num(r["statistic"]),
                         _num(r.get("p_value")), _num(r["threshold"]), verdict))
        cd = v.get("concept_drift")
        if cd:
            rows.append(("(prediction)", cd.get("kind", ""), cd["test"], _num(cd["statistic"]), _num(cd.get("p_value")),
                         _num(cd["threshold"]), "[red]drift[/red]" if cd["drifted"] else "ok"))
        if rows:
            table(None, ["feature", "kind", "test", "statistic", "p-value", "threshold", "verdict"], rows)
        perf = v.get("performance")
        if perf:
            metrics = ", ".join(f"{k} {_num(x)}" for k, x in (perf.get("metrics") or {}).items()) or "none"
            base = ", ".join(f"{k} {_num(x)}" for k, x in (perf.get("baseline") or {}).items()) or "none"
            line = f"performance on {perf.get('labelled', 0):,} labelled rows: {metrics} (baseline {base})"
            if perf.get("change") is not None:
                line += f", {perf['metric']} {perf['change']:+.1%}"
            line += ": [red]drift[/red]" if perf.get("detected") else ""
            out.print(escape(line) if not perf.get("detected") else line)
            if perf.get("note"):
                out.print(f"  [dim]{escape(perf['note'])}[/dim]")
    for a in report.get("actions", []):
        what = {k: v for k, v in a.items() if k != "action"}
        out.print(f"action {escape(a['action'])}: " + escape(", ".join(f"{k}={v}" for k, v in what.items())))


@drift_app.command("check")
def check(
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="Deployment to check.")],
    window: Annotated[str, typer.Option("--window", "-w", help="Window length: 30m, 1h, 1d.")] = "1h",
    end: Annotated[str | None, typer.Option("--end", help="Window end (ISO time or epoch ms); default now.")] = None,
    act: Annotated[bool, typer.Option("--act/--no-act", help="Take the configured actions (alerts, health, "
                                      "retraining, rollback).")] = True,
    fail_on_drift: Annotated[bool, typer.Option("--fail-on-drift", help=f"Exit {EXIT_DRIFT} when any drift is "
                                                f"found, {EXIT_NOT_JUDGED} when the window could not be judged (too "
                                                "few rows, no baseline), 0 only when judged healthy.")] = False,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Check the last WINDOW of a deployment's traffic against each version's baseline.

    Example: matih-lite drift check --deployment churn --window 1h --json
    """
    with _client(config, profile) as client:
        report = client.check(deployment, window, end=_end(end), act=act)
    if json_out:
        print_json(report)
    else:
        print_report(report)
    if report["status"] in ("warning", "drifting", "degraded"):
        if fail_on_drift:
            raise typer.Exit(EXIT_DRIFT)
        return
    if report["status"] == "unknown":
        console(stderr=True).print(f"[yellow]not judged[/yellow]: {escape(not_judged_reason(report))}")
        if fail_on_drift:
            raise typer.Exit(EXIT_NOT_JUDGED)


def not_judged_reason(report: dict[str, Any]) -> str:
    """Why a window's check decided nothing, in one line (the versions' own notes)."""
    if not report.get("versions"):
        return report.get("note") or "no requests in this window"
    notes = []
    for v in report["versions"]:
        note = "; ".join(v.get("notes") or []) or "not judged"
        would = (v.get("data_drift") or {}).get("drifted")
        tested = (v.get("data_drift") or {}).get("tested")
        if would and tested:
            note += f" ({would} of {tested} features would drift)"
        notes.append(f"version {v['version']}: {note}")
    return "; ".join(notes)


@drift_app.command("report")
def report(
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="Deployment to report on.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("drift-report.html"),
    window: Annotated[str, typer.Option("--window", "-w", help="Window length: 30m, 1h, 1d.")] = "1h",
    end: Annotated[str | None, typer.Option("--end", help="Window end (ISO time or epoch ms); default now.")] = None,
    config: ConfigOption = None, profile: ProfileOption = None,
) -> None:
    """Write a self-contained HTML report: baseline-vs-window histograms per feature and the statistics.

    Example: matih-lite drift report --deployment churn --output report.html
    """
    with _client(config, profile) as client:
        text = client.report_html(deployment, window, end=_end(end))
    output.write_text(text, encoding="utf-8")
    console(stderr=True).print(f"wrote the drift report of {escape(deployment)} ({window}) to {escape(str(output))}")


@drift_app.command("history")
def history(
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="Deployment.")],
    window: Annotated[str | None, typer.Option("--window", "-w", help="Only this window size.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="How many.")] = 20,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """List past checks of a deployment, newest first."""
    with _client(config, profile) as client:
        reports = client.history(deployment, window, limit)
    if json_out:
        print_json(reports)
        return
    rows = []
    for r in reports:
        drifted = sorted({f for v in r["versions"] for f in (v.get("data_drift") or {}).get("drifted_features", [])})
        rows.append((_when(r["end"]), r["window"], f"{r['rows']:,}", _status(r["status"]),
                     escape(", ".join(drifted[:6]) + (" ..." if len(drifted) > 6 else "")),
                     escape(", ".join(a["action"] for a in r.get("actions", []) if a.get("sent") or a.get("done")
                                      or a.get("submitted")))))
    table(f"drift checks of {deployment}", ["window end", "window", "rows", "status", "drifting", "actions"], rows)


@drift_app.command("tests")
def tests(config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False) -> None:
    """List the installed drift tests with their default thresholds."""
    with _client(config, profile) as client:
        found = client.tests()
    if json_out:
        print_json(found)
        return
    table("drift tests", ["test", "threshold", "drift when", "features", "description"],
          [(t["name"], _num(t["threshold"]), "p < threshold" if t["kind"] == "p_value" else "statistic >= threshold",
            ", ".join(t["applies_to"]), t["description"]) for t in found])


@drift_app.command("jobs")
def jobs(config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False) -> None:
    """List the drift runner's jobs (a Flink runner's: state, last checkpoint, lag per topic, last window).

    The jobs run inside the ml-service: set MATIH_URL (or run it beside 'matih-lite up') to see them.
    Exits 1 when a job has failed.
    """
    with _client(config, profile) as client:
        found = client.jobs()
    if json_out:
        print_json(found)
    elif not found["jobs"]:
        where = (" (this process runs none: the jobs run inside 'matih-lite up'; set MATIH_URL to ask it)"
                 if found.get("embedded") and found.get("backend") not in (None, "inprocess") else "")
        console().print(f"no drift jobs: the drift slot is {escape(str(found.get('backend') or 'empty'))}{where}")
    else:
        rows = []
        for j in found["jobs"]:
            cp = j.get("last_checkpoint") or {}
            lag = j.get("lag") or {}
            lag_text = escape(lag["error"]) if "error" in lag else ", ".join(
                f"{escape(t)}: {'-' if n is None else f'{n:,}'}" for t, n in sorted(lag.items()))
            window = j.get("last_window") or {}
            last = (f"{escape(str(window.get('deployment')))} {window.get('window')} to {_when(window['end'])} "
                    f"{_status(str(window.get('status')))}") if window.get("end") else "-"
            rows.append((escape(j["name"]), escape(str(j.get("state"))),
                         f"{cp.get('id')} at {_when(cp['at'])}" if cp.get("at") else "-", lag_text or "-", last,
                         str(j.get("restarts", 0)), escape(str(j.get("last_error") or ""))[:200]))
        table(f"drift jobs ({found.get('backend')})",
              ["job", "state", "last checkpoint", "lag", "last window", "restarts", "last error"], rows)
    if any(str(j.get("state")).upper() == "FAILED" or j.get("phase") == "failed" for j in found["jobs"]):
        raise typer.Exit(1)


# ---- models baseline -------------------------------------------------------------------------------------


@models_app.command("baseline")
def baseline(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Version number.", min=1)],
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Training data (.parquet or .csv); default: the "
                                              "version's training-data reference, when it is a local file.",
                                              exists=True, dir_okay=False)] = None,
    target: Annotated[str | None, typer.Option("--target", "-y", help="Column with the true labels.")] = None,
    prediction: Annotated[str | None, typer.Option("--prediction", help="Column with the model's predictions "
                                                   "(else the model is loaded and run).")] = None,
    drop: Annotated[list[str] | None, typer.Option("--drop", help="Column that is not a feature; repeatable.")] = None,
    no_predict: Annotated[bool, typer.Option("--no-predict", help="Do not run the model for predictions.")] = False,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Build a version's drift baseline from its training data: quantiles, histograms, categories, metrics.

    Example: matih-lite models baseline churn 3 --data train.parquet --target churned
    """
    columns: Any = None
    features = None
    if data is not None:
        from matih_lite.monitoring.profile import read_table

        columns = read_table(data)
        missing = [c for c in [target, prediction, *(drop or [])] if c and c not in columns]
        if missing:
            raise InvalidInput(f"{data.name} has no column {missing[0]!r}; its columns: {', '.join(columns)}")
        if drop:
            features = [c for c in columns if c not in {*drop, target, prediction}]
    source = {"name": data.name, "uri": str(data.resolve())} if data is not None else None
    with _client(config, profile) as client:
        options = {"target": target, "prediction": prediction, "features": features, "predict": not no_predict}
        if client.http is None:
            options["source"] = source
        summary = client.build_baseline(name, version, columns, **options)
    if json_out:
        print_json(summary)
        return
    out = console()
    out.print(f"baseline of [bold]{escape(name)}[/bold] v{version}: {summary['rows']:,} rows, "
              f"{len(summary['features'])} features"
              + (f", metrics {escape(', '.join(f'{k} {_num(v)}' for k, v in summary['metrics'].items()))}"
                 if summary.get("metrics") else ""))
    rows = []
    for fname, f in summary["features"].items():
        if f["kind"] == "numeric":
            shape = (f"mean {_num(f.get('mean'))}, std {_num(f.get('std'))}, "
                     f"[{_num(f.get('min'))}, {_num(f.get('max'))}]")
        else:
            top = ", ".join(f"{k} {v:.0%}" for k, v in list((f.get("top") or {}).items())[:4])
            shape = f"{f.get('categories')} categories: {top}"
        rows.append((escape(fname), f["kind"], f"{f['null_rate']:.1%}", escape(shape)))
    table(None, ["feature", "kind", "nulls", "distribution"], rows)
    for note in summary.get("notes", []):
        out.print(f"[dim]{escape(note)}[/dim]")
