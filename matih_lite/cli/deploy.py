"""Deployments from the terminal: ``matih-lite deploy``, ``matih-lite deployments list|show|history|delete``
and ``matih-lite predict request``.

Through :class:`~matih_lite.serving.client.DeploymentClient`: the service at ``MATIH_URL`` or the
``matih-lite up`` serving this folder, else this folder's store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from matih_lite.cli import app
from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json, table
from matih_lite.contracts.deployments import Deployment, DeploymentChange
from matih_lite.errors import InvalidInput
from matih_lite.serving.client import DeploymentClient

deployments_app = typer.Typer(
    help="List, show and delete deployments, and read every change made to them.\n\n"
         "Examples:\n\n"
         "  matih-lite deployments list\n\n"
         "  matih-lite deployments show churn-api\n\n"
         "  matih-lite deployments history churn-api",
    no_args_is_help=True)
app.add_typer(deployments_app, name="deployments")


def _split_text(d: Deployment) -> str:
    return ", ".join(f"v{r.version} {r.weight:g}%" for r in d.routes) or "none yet"


def _serves(d: Deployment) -> str:
    if d.target == "stage":
        return f"stage {d.follows}"
    if d.target == "alias":
        return f"alias @{d.follows}"
    return "fixed versions"


def _canary_text(d: Deployment) -> str:
    c = d.canary
    if c is None:
        return "on (no canary yet)" if d.use_canary else ""
    colour = {"running": "yellow", "promoted": "green", "rolled_back": "red", "cancelled": "dim"}.get(c.status, "")
    text = f"v{c.candidate} {c.percent:g}% {c.status}" if c.status == "running" else f"v{c.candidate} {c.status}"
    return f"[{colour}]{escape(text)}[/{colour}]" if colour else escape(text)


def _policy(items: list[str] | None) -> dict[str, Any] | None:
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--policy takes KEY=VALUE (e.g. step_percent=25), got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


# ---- commands ------------------------------------------------------------------------------------------
@app.command("deploy")
def deploy(
    name: Annotated[str, typer.Argument(help="Deployment name (also its Open Inference Protocol model name).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Registered model (needed to create).")] = None,
    version: Annotated[int | None, typer.Option("--version", "-v", help="Serve this version.", min=1)] = None,
    stage: Annotated[str | None, typer.Option("--stage", help="Follow the version in this stage (Production).")]
    = None,
    alias: Annotated[str | None, typer.Option("--alias", help="Follow the version behind this alias (champion).")]
    = None,
    split: Annotated[str | None, typer.Option("--split", help="A/B split by version: 3=90,4=10 (percent).")] = None,
    shadow: Annotated[list[int] | None, typer.Option("--shadow", help="Version that gets a copy of each request; "
                                                     "repeat for more.", min=1)] = None,
    canary: Annotated[bool | None, typer.Option("--canary/--no-canary", help="New versions enter through a canary "
                                                "(a promotion followed, a deploy of another version).")] = None,
    policy: Annotated[list[str] | None, typer.Option("--policy", help="Canary policy KEY=VALUE for this deployment "
                                                     "(initial_percent, step_percent, interval_seconds, "
                                                     "max_error_rate_delta, max_p99_ratio, min_requests); repeat.")]
    = None,
    description: Annotated[str | None, typer.Option("--description", "-d", help="What this deployment is for.")]
    = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")] = "",
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Create a deployment, or change what an existing one serves.

    Examples:

      matih-lite deploy churn-api --model churn --version 3

      matih-lite deploy churn-api --split 3=90,4=10

      matih-lite deploy churn-api --model churn --stage Production --canary --shadow 5

      matih-lite deploy churn-api --version 4 --reason 'retrained on June'   (a canary, with --canary on)
    """
    with DeploymentClient(config, profile) as client:
        d = client.deploy(name, model, version=version, split=split, stage=stage, alias=alias,
                          shadows=shadow if shadow else None, canary=canary, policy=_policy(policy),
                          description=description, reason=reason)
    if json_out:
        print_json(msgspec.to_builtins(d))
        return
    out = console()
    out.print(f"deployed [bold]{escape(d.name)}[/bold] (model {escape(d.model)}, {escape(_serves(d))}): "
              f"{escape(_split_text(d))}")
    if d.shadows:
        out.print(f"  shadows: {', '.join(f'v{v}' for v in d.shadows)}")
    if d.canary is not None and d.canary.status == "running":
        out.print(f"  canary: v{d.canary.candidate} at {d.canary.percent:g}% against v{d.canary.primary}; it steps "
                  f"every {d.canary.policy.get('interval_seconds', '?')} s while 'matih-lite up' runs")
    if d.status == "waiting":
        out.print(f"  [yellow]waiting[/yellow]: no version is in {escape(str(d.follows))} yet; it is served as "
                  "soon as the registry puts one there")


@deployments_app.command("list")
def list_deployments(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only deployments of this model.")] = None,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Deployments with what they serve, their split, shadows and canary."""
    with DeploymentClient(config, profile) as client:
        found = client.list(model)
    if json_out:
        print_json({"deployments": [msgspec.to_builtins(d) for d in found]})
        return
    from matih_lite.cli.tracking import when

    table("deployments", ["name", "model", "serves", "split", "shadows", "canary", "status", "updated"],
          [(escape(d.name), escape(d.model), escape(_serves(d)), escape(_split_text(d)),
            ", ".join(f"v{v}" for v in d.shadows), _canary_text(d), d.status, when(d.updated_at)) for d in found])


@deployments_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Everything about one deployment (and, from a running service, its traffic per variant)."""
    with DeploymentClient(config, profile) as client:
        d = client.get(name)
        stats = client.stats(name)
    if json_out:
        print_json({**msgspec.to_builtins(d), "stats": stats})
        return
    from matih_lite.cli.tracking import when

    out = console()
    out.print(f"[bold]{escape(d.name)}[/bold]  model {escape(d.model)}, {escape(_serves(d))}, {d.status}, "
              f"revision {d.revision}")
    if d.description:
        out.print(escape(d.description))
    out.print(f"created {when(d.created_at)} by {escape(d.created_by)}; updated {when(d.updated_at)}")
    variants = (stats or {}).get("variants", {})
    table("routes", ["variant", "version", "weight", "requests", "errors", "p99 ms"],
          [(r.variant, r.version, f"{r.weight:g}%", variants.get(r.variant, {}).get("requests", ""),
            variants.get(r.variant, {}).get("errors", ""),
            f"{variants[r.variant]['p99_ms']:.1f}" if r.variant in variants else "") for r in d.routes])
    if d.shadows:
        shadows = (stats or {}).get("shadows", {})
        table("shadows", ["version", "requests", "agreement", "p99 ms", "primary p99 ms"],
              [(v, shadows.get(f"v{v}", {}).get("requests", ""),
                _percent(shadows.get(f"v{v}", {}).get("agreement_rate")),
                _ms(shadows.get(f"v{v}", {}).get("latency_p99_ms")),
                _ms(shadows.get(f"v{v}", {}).get("primary_latency_p99_ms"))) for v in d.shadows])
    c = d.canary
    if c is not None:
        out.print(f"canary: {_canary_text(d)}; v{c.candidate} against v{c.primary}, {c.steps} step(s) since "
                  f"{when(c.started_at)}" + (f"; {escape(c.reason)}" if c.reason else ""))
    elif d.use_canary:
        out.print("canary: on; the next version enters through one")


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


@deployments_app.command("history")
def history(
    name: Annotated[str, typer.Argument(help="Deployment name (its history outlives it).")],
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Every change to a deployment, oldest first: who, when, what, why."""
    with DeploymentClient(config, profile) as client:
        changes = client.history(name)
    if json_out:
        print_json({"changes": [msgspec.to_builtins(c) for c in changes]})
        return
    from matih_lite.cli.tracking import when

    table(f"history of {escape(name)}", ["when", "action", "by", "what", "why"],
          [(when(c.timestamp), c.action, escape(c.actor), escape(_what(c)), escape(c.reason)) for c in changes])


def _what(c: DeploymentChange) -> str:
    detail = c.detail
    routes = detail.get("routes")
    if isinstance(routes, dict) and "after" in routes:
        return " ".join(f"v{r['version']} {r['weight']:g}%" for r in routes["after"]) or "no routes"
    if isinstance(routes, list):
        return " ".join(f"v{r['version']} {r['weight']:g}%" for r in routes)
    if "shadows" in detail and isinstance(detail["shadows"], dict):
        return "shadows " + (", ".join(f"v{v}" for v in detail["shadows"].get("after", [])) or "none")
    if "outcome" in detail:
        return str(detail["outcome"])
    return ", ".join(sorted(detail))[:80]


@deployments_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None, profile: ProfileOption = None,
) -> None:
    """Stop serving a deployment. Its history stays."""
    if not yes and sys.stdin.isatty() and not typer.confirm(f"delete deployment {name}?"):
        raise typer.Exit(1)
    with DeploymentClient(config, profile) as client:
        client.delete(name, reason)
    console().print(f"deleted deployment [bold]{escape(name)}[/bold]")


def _predict_group() -> typer.Typer:
    """The ``predict`` group (``predict batch`` lives in :mod:`matih_lite.cli.predict`); made here if absent."""
    try:
        from matih_lite.cli.predict import predict_app

        return predict_app
    except ImportError:
        group = typer.Typer(help="Score data with a deployed or registered model.", no_args_is_help=True)
        app.add_typer(group, name="predict")
        return group


@_predict_group().command("request")
def predict_request(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    body: Annotated[str | None, typer.Option("--json", help="The request, in a shape 'mlflow models serve' takes: "
                                             "'{\"inputs\": [[1, 2]]}', dataframe_split, dataframe_records...")]
    = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the request from a file ('-': stdin).")]
    = None,
    key: Annotated[str | None, typer.Option("--key", "-k", help="Request key for a sticky variant (a user id).")]
    = None,
    version: Annotated[int | None, typer.Option("--version", help="Embedded only: answer with this version the "
                                                "deployment serves.", min=1)] = None,
    config: ConfigOption = None, profile: ProfileOption = None,
) -> None:
    """Send one prediction request through a deployment; prints the predictions as JSON.

    Examples:

      matih-lite predict request churn-api --json '{"dataframe_records": [{"age": 31, "plan": 2}]}'

      matih-lite predict request churn-api --file request.json --key user-42
    """
    if (body is None) == (file is None):
        raise InvalidInput("give the request with --json '{...}' or --file PATH")
    if file is not None:
        text = sys.stdin.read() if str(file) == "-" else _read(file)
    else:
        text = body or ""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"the request is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the request must be a JSON object such as {\"inputs\": [[1, 2]]}")
    with DeploymentClient(config, profile) as client:
        answer = client.predict(name, doc, key, version)
    print_json(answer)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
