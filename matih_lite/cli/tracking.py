"""Experiments and runs from the terminal: ``experiments``, ``runs list|show|compare``.

Every command goes through the SDK's :class:`~matih_lite.tracking.client.Client`, so it works
on this folder's store or, when ``MATIH_URL`` is set, against a running ml-service.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from matih_lite.cli import app
from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json, table
from matih_lite.errors import InvalidInput, NotFound

experiments_app = typer.Typer(
    help="Create, list, delete and restore experiments.\n\n"
         "Examples:\n\n"
         "  matih-lite experiments create churn -d 'monthly churn model' -t team=growth\n\n"
         "  matih-lite experiments list --lifecycle all\n\n"
         "  matih-lite experiments delete churn",
    no_args_is_help=True)
runs_app = typer.Typer(
    help="Find, inspect and compare runs.\n\n"
         "Examples:\n\n"
         "  matih-lite runs list -e churn -f \"metrics.auc > 0.8\" -o \"metrics.auc DESC\"\n\n"
         "  matih-lite runs show 3f2a9c1e\n\n"
         "  matih-lite runs compare 3f2a9c1e 77b0d2aa",
    no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
app.add_typer(runs_app, name="runs")

STATUS_STYLE = {"FINISHED": "green", "RUNNING": "cyan", "SCHEDULED": "cyan", "FAILED": "red", "KILLED": "magenta"}
SYSTEM_TAG = re.compile(r"^(mlflow|matih)\.")
SHORT_ID = 8


def _client(config: str | None, profile: str | None):
    from matih_lite.tracking.client import Client

    return Client(config=config, profile=profile)


# ---- formatting --------------------------------------------------------------------------------
def when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else ""


def duration(start: int | None, end: int | None) -> str:
    if not start:
        return ""
    seconds = max(0.0, ((end or time.time() * 1000) - start) / 1000)
    if seconds < 60:
        text = f"{seconds:.1f}s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)}m {int(seconds % 60)}s"
    else:
        text = f"{int(seconds // 3600)}h {int(seconds % 3600 // 60)}m"
    return text if end else f"{text}…"


def number(value: float | None) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def status_text(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def json_float(value: float | None) -> float | str | None:
    if value is None or not (math.isnan(value) or math.isinf(value)):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def run_json(run: Any) -> dict[str, Any]:
    """A run as the REST API shows it (NaN and infinities as strings, so the JSON is strict)."""
    return {"run_id": run.run_id, "experiment_id": run.experiment_id, "name": run.name, "status": run.status,
            "start_time": run.start_time, "end_time": run.end_time, "lifecycle_stage": run.lifecycle_stage,
            "parent_run_id": run.parent_run_id, "artifact_uri": run.artifact_uri, "user_id": run.user_id,
            "params": dict(run.params), "tags": dict(run.tags),
            "metrics": {k: {"key": m.key, "value": json_float(m.value), "timestamp": m.timestamp, "step": m.step}
                        for k, m in run.metrics.items()}}


def experiment_json(exp: Any) -> dict[str, Any]:
    return {"experiment_id": exp.experiment_id, "name": exp.name, "description": exp.description,
            "artifact_location": exp.artifact_location, "lifecycle_stage": exp.lifecycle_stage,
            "creation_time": exp.creation_time, "last_update_time": exp.last_update_time, "tags": dict(exp.tags)}


# ---- resolving names and short ids -------------------------------------------------------------
def resolve_experiment(client: Any, ref: str) -> Any:
    """An experiment by name, or by id when no experiment has that name."""
    try:
        return client.get_experiment_by_name(ref)
    except NotFound:
        if ref.isdigit():
            return client.get_experiment(ref)
        raise


def resolve_run(client: Any, ref: str) -> Any:
    """A run by id, or by a unique prefix of its id (as ``runs list`` shows them)."""
    ref = ref.strip()
    try:
        return client.get_run(ref)
    except NotFound:
        if not re.fullmatch(r"[0-9a-f]{4,31}", ref):
            raise
    experiments = client.search_experiments(lifecycle="all", max_results=50_000).items
    found = client.search_runs([e.experiment_id for e in experiments], filter=f"attributes.run_id LIKE '{ref}%'",
                               lifecycle="all", max_results=5, columns=[]).items if experiments else []
    if not found:
        raise NotFound(f"no run has the id {ref!r}, nor an id starting with it")
    if len(found) > 1:
        raise InvalidInput(f"run id prefix {ref!r} is ambiguous ({', '.join(r.run_id for r in found[:3])}...); "
                           "give more characters")
    return client.get_run(found[0].run_id)


def parse_tags(items: Sequence[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--tag takes KEY=VALUE, got {item!r}")
        tags[key.strip()] = value
    return tags


# ---- experiments -------------------------------------------------------------------------------
@experiments_app.command("list")
def experiments_list(
    lifecycle: Annotated[str, typer.Option(help="active, deleted or all.")] = "active",
    name_like: Annotated[str | None, typer.Option("--name-like", help="SQL LIKE pattern, e.g. 'churn%'.")] = None,
    max_results: Annotated[int, typer.Option("--max-results", "-n", help="At most this many.", min=1)] = 1000,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """List experiments, newest first.

    Example: matih-lite experiments list --lifecycle all --name-like 'churn%'
    """
    with _client(config, profile) as client:
        page = client.search_experiments(lifecycle=lifecycle, name_like=name_like, max_results=max_results)
    if json_out:
        print_json({"experiments": [experiment_json(e) for e in page.items], "next_page_token": page.next_token})
        return
    table(f"experiments ({lifecycle})", ["id", "name", "lifecycle", "created", "description"],
          [(e.experiment_id, escape(e.name),
            e.lifecycle_stage if e.lifecycle_stage == "active" else f"[dim]{e.lifecycle_stage}[/dim]",
            when(e.creation_time), escape(e.description)) for e in page.items])
    if page.next_token:
        console().print(f"[dim]more experiments: raise --max-results (now {max_results})[/dim]")


@experiments_app.command("create")
def experiments_create(
    name: Annotated[str, typer.Argument(help="Name of the new experiment.")],
    description: Annotated[str, typer.Option("--description", "-d", help="What it is for.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE; repeat for more.")] = None,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Create an experiment. Fails (exit 1) if the name is taken, deleted experiments included.

    Example: matih-lite experiments create churn -d "monthly churn" -t team=growth
    """
    with _client(config, profile) as client:
        exp = client.create_experiment(name, description=description, tags=parse_tags(tag or []))
    if json_out:
        print_json(experiment_json(exp))
    else:
        console().print(f"created experiment [bold]{escape(exp.name)}[/bold] (id {exp.experiment_id})")


@experiments_app.command("delete")
def experiments_delete(
    experiment: Annotated[str, typer.Argument(help="Name or id.")],
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Delete an experiment with its runs; 'experiments restore' brings it back.

    Example: matih-lite experiments delete churn
    """
    with _client(config, profile) as client:
        exp = client.delete_experiment(resolve_experiment(client, experiment).experiment_id)
    if json_out:
        print_json(experiment_json(exp))
    else:
        console().print(f"deleted experiment [bold]{escape(exp.name)}[/bold] (id {exp.experiment_id}); "
                        f"undo with: matih-lite experiments restore {exp.experiment_id}")


@experiments_app.command("restore")
def experiments_restore(
    experiment: Annotated[str, typer.Argument(help="Name or id.")],
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Restore a deleted experiment and its runs.

    Example: matih-lite experiments restore churn
    """
    with _client(config, profile) as client:
        exp = client.restore_experiment(resolve_experiment(client, experiment).experiment_id)
    if json_out:
        print_json(experiment_json(exp))
    else:
        console().print(f"restored experiment [bold]{escape(exp.name)}[/bold] (id {exp.experiment_id})")


# ---- runs --------------------------------------------------------------------------------------
def _common_keys(dicts: Sequence[dict[str, Any]], limit: int) -> list[str]:
    counts = Counter(k for d in dicts for k in d)
    return [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


@runs_app.command("list")
def runs_list(
    experiment: Annotated[list[str] | None, typer.Option(
        "--experiment", "-e", help="Experiment name (or id); repeat for several. Default: every active one.")] = None,
    filter: Annotated[str | None, typer.Option(
        "--filter", "-f", help="MLflow filter, e.g. \"metrics.auc > 0.8 and params.model = 'xgb'\".")] = None,
    order_by: Annotated[list[str] | None, typer.Option(
        "--order-by", "-o", help="e.g. 'metrics.auc DESC'; repeat for ties. Default: newest first.")] = None,
    max_results: Annotated[int, typer.Option("--max-results", "-n", help="At most this many runs.", min=1)] = 50,
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", "-m", help="Metric column to show; repeat. Default: the 4 most common.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-P", help="Param column to show; repeat. Default: the 3 most common.")] = None,
    lifecycle: Annotated[str, typer.Option(help="active, deleted or all runs.")] = "active",
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """List runs with their status and main metrics and params.

    Examples:

      matih-lite runs list -e churn

      matih-lite runs list -e churn -f "metrics.auc > 0.85 and attributes.status = 'FINISHED'" -o "metrics.auc DESC"

      matih-lite runs list -e churn -m auc -m loss -P max_depth --json

    A filter that does not parse exits 2 and points at the mistake.
    """
    with _client(config, profile) as client:
        if experiment:
            exps = [resolve_experiment(client, e) for e in experiment]
        else:
            exps = client.search_experiments(max_results=50_000).items
        page = client.search_runs([e.experiment_id for e in exps], filter=filter, order_by=order_by or None,
                                  lifecycle=lifecycle, max_results=max_results) if exps else None
    runs = page.items if page else []
    if json_out:
        print_json({"runs": [run_json(r) for r in runs], "next_page_token": page.next_token if page else None})
        return
    metric_keys = metric or _common_keys([r.metrics for r in runs], 4)
    param_keys = param or _common_keys([r.params for r in runs], 3)
    names = {e.experiment_id: e.name for e in exps}
    columns = ["run", "name"] + (["experiment"] if len(exps) > 1 else []) + ["status", "start", "duration"]
    columns += metric_keys + [f"{k} (param)" if k in metric_keys else k for k in param_keys]
    rows = []
    for r in runs:
        row: list[Any] = [r.run_id[:SHORT_ID], escape(r.name)]
        if len(exps) > 1:
            row.append(escape(names.get(r.experiment_id, r.experiment_id)))
        row += [status_text(r.status), when(r.start_time), duration(r.start_time, r.end_time)]
        row += [number(r.metrics[k].value) if k in r.metrics else "" for k in metric_keys]
        row += [escape(r.params.get(k, "")) for k in param_keys]
        rows.append(row)
    title = "runs of " + ", ".join(escape(e.name) for e in exps) if experiment else "runs"
    table(title, columns, rows)
    if page and page.next_token:
        console().print(f"[dim]more runs match: raise --max-results (now {max_results})[/dim]")


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="Run id, or a unique prefix of it.")],
    all_tags: Annotated[bool, typer.Option("--all-tags", help="Show mlflow.* and matih.* tags too.")] = False,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Everything about one run: status, params, latest metrics, tags and artifacts.

    Example: matih-lite runs show 3f2a9c1e   (exit 1 if no run has that id)
    """
    with _client(config, profile) as client:
        run = resolve_run(client, run_id)
        exp = client.get_experiment(run.experiment_id)
        artifacts = client.list_artifacts(run.run_id)
    if json_out:
        print_json({**run_json(run), "experiment_name": exp.name,
                    "artifacts": [{"path": a.path, "is_dir": a.is_dir, "size": None if a.is_dir else a.size}
                                  for a in artifacts]})
        return
    out = console()
    out.print(f"[bold]{escape(run.name)}[/bold]  {run.run_id}")
    facts = [("experiment", f"{escape(exp.name)} (id {exp.experiment_id})"), ("status", status_text(run.status)),
             ("started", when(run.start_time)), ("ended", when(run.end_time)),
             ("duration", duration(run.start_time, run.end_time)), ("user", escape(run.user_id)),
             ("parent", run.parent_run_id or ""), ("artifacts", escape(run.artifact_uri))]
    if run.lifecycle_stage != "active":
        facts.append(("lifecycle", f"[red]{run.lifecycle_stage}[/red]"))
    for label, value in facts:
        if value:
            out.print(f"  {label:<11}{value}")
    if run.params:
        table("params", ["key", "value"], [(escape(k), escape(v)) for k, v in sorted(run.params.items())])
    if run.metrics:
        table("metrics (latest)", ["key", "value", "step", "time"],
              [(escape(k), number(m.value), m.step, when(m.timestamp)) for k, m in sorted(run.metrics.items())])
    tags = sorted((k, v) for k, v in run.tags.items() if all_tags or not SYSTEM_TAG.match(k))
    if tags:
        table("tags", ["key", "value"], [(escape(k), escape(v)) for k, v in tags])
    hidden = sum(1 for k in run.tags if SYSTEM_TAG.match(k)) if not all_tags else 0
    if artifacts:
        table("artifacts", ["path", "size"],
              [(escape(a.path) + ("/" if a.is_dir else ""), "" if a.is_dir else a.size) for a in artifacts])
    if hidden:
        out.print(f"[dim]{hidden} system tags (mlflow.*, matih.*) hidden; --all-tags shows them[/dim]")


@runs_app.command("compare")
def runs_compare(
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids (or unique prefixes).")],
    diff_only: Annotated[bool, typer.Option("--diff-only", help="Only the params and metrics that differ.")] = False,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Params and metrics side by side, one column per run.

    Values that differ between runs are yellow; the best value of each metric is bold green
    with a ★ (highest wins, lowest for keys like loss, error, rmse, mae, latency).

    Example: matih-lite runs compare 3f2a9c1e 77b0d2aa c0ffee12
    """
    with _client(config, profile) as client:
        ids = [resolve_run(client, r).run_id for r in run_ids]
        result = client.compare_runs(ids)
    if json_out:
        for entry in result["metrics"].values():
            entry["values"] = [json_float(v) for v in entry["values"]]
        print_json(result)
        return
    runs = result["runs"]
    columns = ["", *[f"{escape(r['name'])}\n[dim]{r['run_id'][:SHORT_ID]}[/dim]" for r in runs]]
    rows: list[list[str]] = [["status", *[status_text(r["status"]) for r in runs]]]
    params = [(k, v) for k, v in result["params"].items() if v["differs"] or not diff_only]
    if params:
        rows.append(["[bold]params[/bold]", *[""] * len(runs)])
        for key, entry in params:
            style = "yellow" if entry["differs"] else None
            rows.append([f"  {escape(key)}", *[_cell(escape(v) if v is not None else "", style)
                                                for v in entry["values"]]])
    metrics = [(k, v) for k, v in result["metrics"].items() if v["differs"] or not diff_only]
    if metrics:
        rows.append(["[bold]metrics[/bold]", *[""] * len(runs)])
        for key, entry in metrics:
            arrow = "↓" if entry["goal"] == "min" else "↑"
            cells = []
            for run, value in zip(runs, entry["values"], strict=True):
                text = number(value)
                if entry["best"] == run["run_id"] and len(runs) > 1:
                    cells.append(f"[bold green]★ {text}[/bold green]")
                else:
                    cells.append(_cell(text, "yellow" if entry["differs"] else None))
            rows.append([f"  {escape(key)} {arrow}", *cells])
    table(f"comparing {len(runs)} runs (yellow: differs, ★: best)", columns, rows)


def _cell(text: str, style: str | None) -> str:
    return f"[{style}]{text}[/{style}]" if style and text else text
