"""``matih-lite features ...``: definitions, training data, materialization and lookups from the terminal.

Everything goes through :class:`~matih_lite.features.client.FeatureClient`: this folder's platform, or
the ml-service at ``MATIH_URL``. Exit codes: 0 done; 1 a backend failed; 2 a mistake to fix (a
definition, an unknown view, feature or service, a missing column, bad arguments), one red line each.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from matih_lite.cli import app
from matih_lite.cli.output import (
    ConfigOption,
    JsonOption,
    ProfileOption,
    console,
    error_line,
    escape,
    print_json,
    table,
)
from matih_lite.errors import InvalidInput, NotFound

features_app = typer.Typer(
    help="The feature store: definitions in features/*.toml, point-in-time training data, online lookups.\n\n"
         "Examples:\n\n"
         "  matih-lite features plan\n\n"
         "  matih-lite features apply\n\n"
         "  matih-lite features historical --entities labels.parquet --service churn_v1 --output train.parquet\n\n"
         "  matih-lite features materialize --start 2025-01-01 --end 2025-02-01\n\n"
         "  matih-lite features online --entity customer_id=5 --features customer_stats:conv_rate",
    no_args_is_help=True)
app.add_typer(features_app, name="features")

ACTION_STYLE = {"added": "green", "changed": "yellow", "removed": "red"}
STATUS_STYLE = {"PRESENT": "green", "NOT_FOUND": "dim", "OUTSIDE_MAX_AGE": "yellow"}

FeaturesOption = Annotated[str | None, typer.Option("--features", "-f", help="Feature references, comma separated: "
                                                    "customer_stats:conv_rate,customer_stats:trips.")]
ServiceOption = Annotated[str | None, typer.Option("--service", "-s", help="A feature service instead of --features.")]


class _Client:
    """Opens the client; a NotFound about something typed here is a usage mistake (exit 2), not a failure."""

    def __init__(self, config: str | None, profile: str | None) -> None:
        from matih_lite.features.client import FeatureClient

        self.client = FeatureClient(config=config, profile=profile)

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        self.client.close()
        if isinstance(exc, NotFound):
            error_line(exc.message)
            raise typer.Exit(2)
        return False


def _refs(features: str | None, service: str | None) -> list[str] | None:
    if (features is None) == (service is None):
        raise InvalidInput("give --features view:feature,... or --service NAME (one of them)")
    if features is None:
        return None
    refs = [r.strip() for r in features.split(",") if r.strip()]
    if not refs:
        raise InvalidInput("--features is empty; give view:feature references, comma separated")
    return refs


def _time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    if text == "now":
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise InvalidInput(f"{option} takes an ISO 8601 time (2025-01-31 or 2025-01-31T12:00:00Z) or 'now', "
                           f"not {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(micros: int | None) -> str:
    if not micros:
        return "-"
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _print_changes(changes: list[dict[str, Any]]) -> None:
    rows = []
    for c in changes:
        style = ACTION_STYLE[c["action"]]
        detail = "; ".join(f"{k}: {json.dumps(old)} -> {json.dumps(new)}" for k, (old, new) in c["diff"].items())
        rows.append((f"[{style}]{c['action']}[/{style}]", c["what"], escape(c["name"]), escape(detail)))
    table(None, ["", "kind", "name", "what changes"], rows)


# ---- definitions ------------------------------------------------------------------------------------------
@features_app.command("plan")
def plan(config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False) -> None:
    """Show what 'features apply' would change: each object added, changed (with the diff) or removed."""
    with _Client(config, profile) as client:
        result = client.plan()
    if json_out:
        print_json(result)
        return
    if not result["changes"]:
        console().print(f"no changes: the definitions match version {result['base_version']}")
        return
    _print_changes(result["changes"])
    counts = result["counts"]
    console().print(f"{counts['added']} to add, {counts['changed']} to change, {counts['removed']} to remove "
                    f"(applied now: version {result['base_version'] or 'none'})")


@features_app.command("apply")
def apply(config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False) -> None:
    """Record the definitions as the next version (all or nothing; each change an audit entry)."""
    with _Client(config, profile) as client:
        result = client.apply()
    if json_out:
        print_json(result)
        return
    if not result["applied"]:
        console().print(f"no changes: version {result['version']} stays applied")
        return
    _print_changes(result["changes"])
    console().print(f"[green]applied version {result['version']}[/green] ({len(result['changes'])} changes)")


@features_app.command("list")
def list_(config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False) -> None:
    """List the applied entities, sources, feature views, on-demand views and feature services."""
    with _Client(config, profile) as client:
        doc = client.overview()
    if json_out:
        print_json(doc)
        return
    out = console()
    out.print(f"version {doc['version']} applied by {escape(doc['applied_by'] or '-')} "
              f"({_when(doc['applied_at'] * 1000)})")
    table("feature views", ["name", "entities", "source", "ttl", "features", "online", "owner"],
          [(v["name"], ", ".join(v["entities"]), v["push_source"] or v["source"], v["ttl"],
            ", ".join(f"{f['name']}:{f['dtype']}" for f in v["features"]), "yes" if v["online"] else "no",
            v["owner"]) for v in doc["feature_views"]])
    if doc["on_demand_views"]:
        table("on-demand views", ["name", "function", "sources", "features"],
              [(o["name"], o["function"], ", ".join(o["sources"]), ", ".join(f["name"] for f in o["features"]))
               for o in doc["on_demand_views"]])
    if doc["services"]:
        table("feature services", ["name", "features", "owner"],
              [(s["name"], ", ".join(s["features"]), s["owner"]) for s in doc["services"]])
    table("entities", ["name", "join keys"],
          [(e["name"], ", ".join(f"{k}:{e['dtypes'].get(k, '?')}" for k in e["join_keys"])) for e in doc["entities"]])
    table("sources", ["name", "format", "path or query", "timestamp", "created"],
          [(s["name"], s["format"], s["path"] or s["query"], s["timestamp_field"], s["created_timestamp_field"] or "-")
           for s in doc["sources"]])


@features_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="A feature view, on-demand view, service, entity or source.")],
    monitor: Annotated[bool, typer.Option("--monitor/--no-monitor", help="Check a view's freshness, nulls and "
                                                                         "drift (and alert).")] = True,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Show one object; for a feature view also its health: freshness, null rate, range, drift, quality score."""
    with _Client(config, profile) as client:
        doc = client.show(name, monitor=monitor)
    if json_out:
        print_json(doc)
        return
    out = console()
    out.print(f"[bold]{escape(doc['what'])} {escape(name)}[/bold]  [dim]{escape(doc['file'])}[/dim]")
    definition = doc["definition"]
    for key, value in definition.items():
        if key in ("name", "features", "ttl_seconds") or value in ("", {}, [], None):
            continue
        out.print(f"  {key}: {escape(json.dumps(value) if not isinstance(value, str) else value)}")
    report = doc.get("monitoring")
    if doc["kind"] == "feature_views" and report:
        fresh = report["freshness"]
        state = "[red]stale[/red]" if fresh["stale"] else "[green]fresh[/green]"
        out.print(f"  newest row: {_when(fresh['newest'])} ({_age(fresh['age_seconds'])} old, ttl "
                  f"{definition['ttl']}) {state}; rows: {report['rows']}; quality score: "
                  f"[bold]{report['quality_score']}[/bold]/100")
        table(f"features, last {report['window']} against the {report['reference']} before",
              ["feature", "dtype", "null rate", "min", "max", "mean", "drift test", "statistic", "drift"],
              [(f["feature"], f["dtype"], _num(f["null_rate"]), _num(f["min"]), _num(f["max"]), _num(f["mean"]),
                (f["drift"] or {}).get("test") or "-", _num((f["drift"] or {}).get("statistic")),
                "[red]yes[/red]" if (f["drift"] or {}).get("drifted") else "no") for f in report["features"]])
        for alert in report.get("alerts", []):
            out.print(f"  [yellow]alert sent:[/yellow] {alert['type']}")
    elif "features" in definition:
        table("features", ["name", "dtype"], [(f["name"], f["dtype"]) for f in definition["features"]])
    if doc.get("materializations"):
        table("materializations", ["start", "end", "rows"],
              [(_when(m["start"]), _when(m["end"]), m["rows"]) for m in doc["materializations"]])


@features_app.command("monitor")
def monitor_(
    view: Annotated[str | None, typer.Argument(help="One feature view (default: every one).")] = None,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Check every feature view's freshness, nulls and drift, sending alerts once per (view, feature, window)."""
    with _Client(config, profile) as client:
        reports = client.monitor(view)
    if json_out:
        print_json(reports)
        return
    table(None, ["view", "rows", "newest", "stale", "drifting", "quality", "alerts"],
          [(r["view"], r.get("rows", "-"), _when((r.get("freshness") or {}).get("newest")),
            "yes" if (r.get("freshness") or {}).get("stale") else "no", ", ".join(r.get("drifting", [])) or "-",
            r.get("quality_score", "-"), len(r.get("alerts", []))) if "error" not in r else
           (r["view"], "-", "-", "-", "-", "-", escape(r["error"])) for r in reports])


@features_app.command("audit")
def audit(
    name: Annotated[str | None, typer.Argument(help="Only changes of this object.")] = None,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Every recorded change to the definitions, newest first."""
    with _Client(config, profile) as client:
        entries = client.audit(name)
    if json_out:
        print_json(entries)
        return
    table(None, ["version", "when", "who", "", "kind", "name"],
          [(e["version"], _when(e["timestamp"] * 1000), e["actor"], e["change"]["action"], e["change"]["kind"],
            e["change"]["name"]) for e in entries])


# ---- retrieval ---------------------------------------------------------------------------------------------
@features_app.command("historical")
def historical(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the joined rows (.parquet or .csv).")],
    entities: Annotated[Path | None, typer.Option("--entities", "-e", help="Entity rows: a .parquet or .csv file "
                                                  "with the join keys and a timestamp column.")] = None,
    features: FeaturesOption = None, service: ServiceOption = None,
    timestamp_column: Annotated[str, typer.Option("--timestamp-column", help="The entity rows' time column.")] =
    "event_timestamp",
    start: Annotated[str | None, typer.Option("--start", help="Without --entities: every entity with rows from "
                                              "this time ...")] = None,
    end: Annotated[str | None, typer.Option("--end", help="... to this one, joined as of it.")] = None,
    full_feature_names: Annotated[bool, typer.Option("--full-feature-names", help="Name columns view__feature.")]
    = False,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Point-in-time correct training data: each entity row joined with the feature values of its time.

    Example: matih-lite features historical --entities labels.parquet --service churn_v1 -o train.parquet
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    refs = _refs(features, service)
    if entities is None and (start is None or end is None):
        raise InvalidInput("give --entities FILE, or --start and --end for every entity's values over a range")
    if entities is not None and not entities.is_file():
        raise InvalidInput(f"--entities {entities}: no such file")
    total = _rows_in(entities) if entities is not None else None
    with _Client(config, profile) as client, Progress(TextColumn("joining"), BarColumn(), MofNCompleteColumn(),
                                                      TimeElapsedColumn(), console=console(stderr=True),
                                                      transient=True, disable=json_out) as bar:
        task = bar.add_task("rows", total=total)
        rows = client.historical_to_file(output, entity_path=entities, features=refs, feature_service=service,
                                         timestamp_column=timestamp_column, start=_time(start, "--start"),
                                         end=_time(end, "--end"), full_feature_names=full_feature_names,
                                         progress=lambda n: bar.update(task, completed=n))
    if json_out:
        print_json({"rows": rows, "output": str(output)})
        return
    console().print(f"wrote {rows} rows to {escape(str(output))}")


def _rows_in(path: Path) -> int | None:
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        except Exception:
            return None
    return None


@features_app.command("online")
def online(
    entity: Annotated[list[str], typer.Option("--entity", "-e", help="KEY=VALUE[,VALUE...]; repeat for each join "
                                              "key (composite entities) or give several values for several "
                                              "entities.")],
    features: FeaturesOption = None, service: ServiceOption = None,
    full_feature_names: Annotated[bool, typer.Option("--full-feature-names", help="Name columns view__feature.")]
    = False,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Look up the online values of one entity or a few.

    Example: matih-lite features online --entity customer_id=5,6 --features customer_stats:conv_rate
    """
    refs = _refs(features, service)
    columns: dict[str, list[str]] = {}
    for item in entity:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--entity takes KEY=VALUE, not {item!r}")
        columns[key.strip()] = [v.strip() for v in values.split(",")]
    with _Client(config, profile) as client:
        answer = client.online(columns, refs, service, full_feature_names=full_feature_names)
    if json_out:
        print_json(answer.to_feast())
        return
    n = len(next(iter(answer.values.values()), []))
    rows = []
    for i in range(n):
        for name in answer.feature_names:
            status = answer.statuses[name][i]
            style = STATUS_STYLE.get(status, "")
            key = ", ".join(f"{k}={answer.values[k][i]}" for k in answer.join_keys)
            rows.append((escape(key), escape(name), escape(_num(answer.values[name][i])),
                         f"[{style}]{status}[/{style}]", _when(answer.event_ts[name][i])))
    table(None, ["entity", "feature", "value", "status", "event time"], rows)


# ---- writes -------------------------------------------------------------------------------------------------
@features_app.command("materialize")
def materialize(
    start: Annotated[str, typer.Option("--start", help="Copy rows with event time from this (ISO 8601) ...")],
    end: Annotated[str, typer.Option("--end", help="... up to this one (or 'now').")],
    views: Annotated[str | None, typer.Option("--views", help="Only these feature views, comma separated.")] = None,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Copy each entity's latest values in the window into the online store (idempotent)."""
    _materialize(lambda client, progress: client.materialize(_time(start, "--start"), _time(end, "--end"),
                                                             _views(views), progress), config, profile, json_out)


@features_app.command("materialize-incremental")
def materialize_incremental(
    end: Annotated[str, typer.Option("--end", help="Up to this time (ISO 8601, or 'now').")] = "now",
    views: Annotated[str | None, typer.Option("--views", help="Only these feature views, comma separated.")] = None,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Materialize each view from where its last materialization ended (the first time: end - ttl)."""
    _materialize(lambda client, progress: client.materialize_incremental(_time(end, "--end"), _views(views),
                                                                         progress), config, profile, json_out)


def _views(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def _materialize(run: Any, config: str | None, profile: str | None, json_out: bool) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with _Client(config, profile) as client, Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                                      TimeElapsedColumn(), console=console(stderr=True),
                                                      transient=True, disable=json_out) as bar:
        task = bar.add_task("materializing", total=None)

        def progress(view: str, rows: int) -> None:
            bar.update(task, description=f"materialized {view} ({rows} rows)")

        result = run(client, progress)
    if json_out:
        print_json(result)
        return
    incremental = any(isinstance(v, dict) for v in result.values())
    if incremental:
        table(None, ["feature view", "from", "to", "rows"],
              [(view, _when(v["start"]), _when(v["end"]), v["rows"]) for view, v in result.items()])
        total = sum(v["rows"] for v in result.values())
    else:
        table(None, ["feature view", "rows"], list(result.items()))
        total = sum(result.values())
    console().print(f"{total} rows written to the online store")


@features_app.command("push")
def push(
    push_source: Annotated[str, typer.Argument(help="The push source to write through.")],
    file: Annotated[Path, typer.Option("--file", help="Rows: .parquet, .csv, or .json (a list of objects).")],
    to: Annotated[str, typer.Option("--to", help="online, offline or online_and_offline.")] = "online",
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Write fresh rows through a push source (join keys, the timestamp field, the features)."""
    rows = _read_rows(file)
    with _Client(config, profile) as client:
        n = client.push(push_source, rows, to)
    if json_out:
        print_json({"rows": n, "push_source": push_source, "to": to})
        return
    console().print(f"pushed {n} rows to {escape(push_source)} ({to})")


def _read_rows(path: Path) -> Any:
    if not path.is_file():
        raise InvalidInput(f"--file {path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if suffix in (".csv", ".tsv"):
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    if suffix in (".json", ".jsonl"):
        text = path.read_text()
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()] if suffix == ".jsonl" \
                else json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"--file {path}: not valid JSON: {exc}") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InvalidInput(f"--file {path}: expected a list of objects, one per row")
        from matih_lite.features.retrieval import columnar

        return columnar(rows)[0]
    raise InvalidInput(f"--file {path}: expected .parquet, .csv, .json or .jsonl")
