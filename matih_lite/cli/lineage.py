"""Lineage from the terminal: ``lineage show NODE`` and ``lineage export``.

Works on this folder's store, or against the ml-service at ``MATIH_URL``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from matih_lite.cli import app
from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json
from matih_lite.errors import InvalidInput

lineage_app = typer.Typer(
    help="What data and runs a model came from, and what was built from a dataset.\n\n"
         "Node keys: dataset:URI[@VERSION], run:RUN_ID, model:NAME/VERSION, deployment:NAME, table:NAME, "
         "feature_view:NAME, feature_service:NAME.\n\n"
         "Examples:\n\n"
         "  matih-lite lineage show model:churn/3 --upstream\n\n"
         "  matih-lite lineage show dataset:s3://bucket/train.parquet@v3 --downstream --depth 2\n\n"
         "  matih-lite lineage export --output lineage.json",
    no_args_is_help=True)
app.add_typer(lineage_app, name="lineage")

KIND_STYLE = {"dataset": "cyan", "table": "cyan", "feature_view": "cyan", "feature_service": "cyan", "run": "yellow",
              "model_version": "green", "deployment": "magenta"}


def _client(config: str | None, profile: str | None):
    from matih_lite.lineage.client import LineageClient

    return LineageClient(config=config, profile=profile)


def _label(node: dict[str, Any]) -> str:
    style = KIND_STYLE.get(node["kind"], "")
    text = f"[{style}]{escape(node['key'])}[/]" if style else escape(node["key"])
    extra = [node["name"]] if node.get("name") and node["name"] not in node["key"] else []
    props = node.get("properties") or {}
    extra += [f"{k}={props[k]}" for k in ("digest", "stage", "status") if props.get(k)]
    return text + (f" [dim]({escape(', '.join(str(e) for e in extra))})[/dim]" if extra else "")


def _tree(graph: dict[str, Any]) -> Any:
    """The walk as a tree from the root; a node reached twice is shown once, then marked."""
    from rich.tree import Tree

    nodes = {n["key"]: n for n in graph["nodes"]}
    upstream = graph["direction"] == "upstream"
    children: dict[str, list[tuple[str, str]]] = {}
    for e in graph["edges"]:
        parent, child = (e["target"], e["source"]) if upstream else (e["source"], e["target"])
        children.setdefault(parent, []).append((child, e["kind"]))
    arrow = "←" if upstream else "→"
    root = Tree(f"{_label(nodes[graph['root']])}  [dim]{graph['direction']}[/dim]")
    shown = {graph["root"]}

    def grow(branch: Any, key: str) -> None:
        for child, kind in children.get(key, []):
            if child not in nodes:
                continue
            sub = branch.add(f"[dim]{arrow} {kind}[/dim] {_label(nodes[child])}"
                             + (" [dim](see above)[/dim]" if child in shown else ""))
            if child not in shown:
                shown.add(child)
                grow(sub, child)

    grow(root, graph["root"])
    if graph.get("truncated"):
        root.add(f"[dim]… more beyond depth {graph['depth']} (raise --depth)[/dim]")
    return root


@lineage_app.command("show")
def show(
    node: Annotated[str, typer.Argument(help="Node key, e.g. model:churn/3 or run:<run_id>.")],
    upstream: Annotated[bool, typer.Option("--upstream", help="Only what it was built from.")] = False,
    downstream: Annotated[bool, typer.Option("--downstream", help="Only what was built from it.")] = False,
    depth: Annotated[int, typer.Option("--depth", "-d", help="Hops to follow.", min=0, max=100)] = 5,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Show a node and what lies upstream and downstream of it (both unless one is asked for).

    Example: matih-lite lineage show model:churn/3 --upstream --depth 3
    """
    if upstream and downstream:
        raise InvalidInput("give --upstream or --downstream, not both (neither shows both)")
    directions = ["upstream"] if upstream else ["downstream"] if downstream else ["upstream", "downstream"]
    with _client(config, profile) as client:
        graphs = {d: (client.upstream if d == "upstream" else client.downstream)(node, depth) for d in directions}
    if json_out:
        print_json(graphs[directions[0]] if len(directions) == 1 else graphs)
        return
    out = console()
    for d in directions:
        out.print(_tree(graphs[d]))


@lineage_app.command("export")
def export(
    node: Annotated[str | None, typer.Argument(help="Only the runs and deployments around this node.")] = None,
    depth: Annotated[int, typer.Option("--depth", "-d", help="Hops around NODE.", min=0, max=100)] = 5,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")] = None,
    lines: Annotated[bool, typer.Option("--lines", help="One event per line (NDJSON), as OpenLineage "
                                                        "consumers ingest them.")] = False,
    config: ConfigOption = None, profile: ProfileOption = None,
) -> None:
    """Export lineage as OpenLineage COMPLETE run events (JSON), one per run and per deployment.

    Example: matih-lite lineage export --lines -o lineage.ndjson
    """
    with _client(config, profile) as client:
        events = client.export(node, depth)
    text = "".join(json.dumps(e) + "\n" for e in events) if lines else json.dumps(events, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        console(stderr=True).print(f"wrote {len(events)} OpenLineage events to {escape(str(output))}")
