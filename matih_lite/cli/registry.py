"""The model registry from the terminal: ``matih-lite models register|list|show|promote|approve|reject|
rollback|alias|audit|approvals``.

Every command goes through :class:`~matih_lite.registry.client.RegistryClient`: embedded on this
folder's store (as the local admin, or ``--as USER`` to try approvals on a laptop), or, when
``MATIH_URL`` is set, against a running ml-service that knows the caller from ``MATIH_TOKEN``.
A governance refusal exits 1 and lists each unmet threshold.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
import typer

from matih_lite.cli import app
from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json, table
from matih_lite.cli.tracking import number, parse_tags, when
from matih_lite.contracts.registry import Approval
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.identity import DEFAULT_TENANT, ROLES, Principal

models_app = typer.Typer(
    help="Register models, promote versions through governed stages, approve, roll back.\n\n"
         "Examples:\n\n"
         "  matih-lite models register churn --run 3f2a9c1e --path model --flavor sklearn\n\n"
         "  matih-lite models promote churn 3 --to Staging --reason 'beats v2 on June data'\n\n"
         "  matih-lite models promote churn 3 --to Production   (then an approver:)\n\n"
         "  matih-lite models approve 5e1f0c2a --comment 'numbers check out'\n\n"
         "  matih-lite models rollback churn",
    no_args_is_help=True)
app.add_typer(models_app, name="models")

AsOption = Annotated[str | None, typer.Option(
    "--as", help="Embedded only: act as USER (or USER:ROLE,ROLE; default role admin), e.g. to approve a "
                 "request on a laptop without auth. Over MATIH_URL the token names you.")]
STAGE_STYLE = {"Production": "green", "Staging": "yellow", "Development": "cyan", "Archived": "dim"}


def _principal(as_user: str | None) -> Principal | None:
    if not as_user:
        return None
    user, _, roles = as_user.partition(":")
    wanted = tuple(r.strip() for r in roles.split(",") if r.strip()) or ("admin",)
    unknown = [r for r in wanted if r not in ROLES]
    if not user.strip() or unknown:
        raise InvalidInput(f"--as takes USER or USER:ROLE,ROLE with roles among {', '.join(ROLES)}, "
                           f"got {as_user!r}")
    return Principal(DEFAULT_TENANT, user.strip(), wanted)


def _client(config: str | None, profile: str | None, as_user: str | None = None):
    from matih_lite.registry.client import RegistryClient

    return RegistryClient(config=config, profile=profile, principal=_principal(as_user))


def _builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def stage_text(stage: str) -> str:
    style = STAGE_STYLE.get(stage)
    return f"[{style}]{stage}[/{style}]" if style else stage


def _resolve_run(models: Any, ref: str) -> str:
    """A full run id from an id or a unique prefix, through the tracking client of the same transport."""
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        return ref
    from matih_lite.cli.tracking import resolve_run
    from matih_lite.tracking.client import Client

    with Client(url=models.http.url if models.http else None, host=models.host) as tracking:
        return resolve_run(tracking, ref).run_id


def _resolve_approval(models: Any, ref: str) -> str:
    """An approval id from the id or a unique prefix of it (as ``models approvals`` shows them)."""
    ref = ref.strip()
    try:
        return models.get_approval(ref).approval_id
    except NotFound:
        if not re.fullmatch(r"[0-9a-f]{4,31}", ref):
            raise
    found = [a for a in models.list_approvals(max_results=50_000).items if a.approval_id.startswith(ref)]
    if not found:
        raise NotFound(f"no approval has the id {ref!r}, nor an id starting with it; see 'matih-lite models "
                       "approvals'")
    if len(found) > 1:
        raise InvalidInput(f"approval id prefix {ref!r} is ambiguous; give more characters")
    return found[0].approval_id


def _actual(value: Any) -> str:
    return number(value) if isinstance(value, float) else str(value)


def _approvers(models: Any, name: str) -> str:
    policy = models.policy(name)
    model = models.get_model(name)
    parts = [f"owner ({model.owner})" if a == "owner" else a for a in policy["production_approvers"]]
    return ", ".join(parts + ["admin"])


# ---- commands ------------------------------------------------------------------------------------
@models_app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="Registered model name (created if missing, owned by you).")],
    run: Annotated[str | None, typer.Option("--run", "-r",
                                            help="Run id (or a unique prefix) that logged the model.")] = None,
    path: Annotated[str, typer.Option("--path", help="Artifact path of the model in the run.")] = "model",
    source: Annotated[str | None, typer.Option("--source", help="Any model URI instead of --run: runs:/ID/PATH, "
                                               "models:/m-..., s3://...")] = None,
    flavor: Annotated[str | None, typer.Option("--flavor", help="sklearn, xgboost, onnx, pyfunc... (default: "
                                               "read from the model's MLmodel file).")] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="What this version is.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE; repeat for more.")] = None,
    as_user: AsOption = None, config: ConfigOption = None, profile: ProfileOption = None,
    json_out: JsonOption = False,
) -> None:
    """Register the next version of a model from a run's artifacts (or any model URI).

    Example: matih-lite models register churn --run 3f2a9c1e --path model --flavor sklearn
    """
    if not run and not source:
        raise InvalidInput("give --run RUN_ID (with --path) or --source URI")
    with _client(config, profile, as_user) as models:
        run_id = _resolve_run(models, run) if run else None
        mv = models.register_version(name, source, run_id=run_id, path=path if run_id else None, flavor=flavor,
                                     description=description, tags=parse_tags(tag or []))
    if json_out:
        print_json(_builtins(mv))
        return
    console().print(f"registered [bold]{escape(name)}[/bold] version [bold]{mv.version}[/bold] "
                    f"({escape(mv.flavor or 'flavor unknown')}, {stage_text(mv.stage)}) from {escape(mv.source)}")


@models_app.command("list")
def list_models(
    name_like: Annotated[str | None, typer.Option("--name-like", help="SQL LIKE pattern, e.g. 'churn%'.")] = None,
    max_results: Annotated[int, typer.Option("--max-results", "-n", help="At most this many.", min=1)] = 1000,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """List registered models with their latest version, what is in Production and Staging, and aliases.

    Example: matih-lite models list --name-like 'churn%'
    """
    with _client(config, profile) as models:
        page = models.list_models(name_like=name_like, max_results=max_results)
        staged = {m.name: {s: [v.version for v in models.list_versions(m.name, stages=[s]).items]
                           for s in ("Production", "Staging")} for m in page.items}
    if json_out:
        print_json({"models": [{**_builtins(m), "production": staged[m.name]["Production"],
                                "staging": staged[m.name]["Staging"]} for m in page.items],
                    "next_page_token": page.next_token})
        return
    table("registered models", ["name", "owner", "latest", "production", "staging", "aliases", "updated",
                                "description"],
          [(escape(m.name), escape(m.owner), m.latest_version or "",
            ", ".join(f"v{v}" for v in staged[m.name]["Production"]),
            ", ".join(f"v{v}" for v in staged[m.name]["Staging"]),
            ", ".join(f"{escape(a)}→v{v}" for a, v in sorted(m.aliases.items())), when(m.last_update_time),
            escape(m.description)) for m in page.items])
    if page.next_token:
        console().print(f"[dim]more models: raise --max-results (now {max_results})[/dim]")


@models_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str | None, typer.Argument(
        help="A version number (or an alias); all versions if left out.")] = None,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """A model and its versions, or everything about one version (source, run, signature, data).

    Examples:

      matih-lite models show churn

      matih-lite models show churn 3

      matih-lite models show churn champion
    """
    with _client(config, profile) as models:
        model = models.get_model(name)
        if version is None:
            versions = models.list_versions(name, max_results=50_000).items
            policy = models.policy(name)
            mv = None
        else:
            mv = models.get_version(name, version) if version.isdigit() else models.get_alias(name, version)
    if version is None:
        if json_out:
            print_json({"model": _builtins(model), "versions": [_builtins(v) for v in versions], "policy": policy})
            return
        out = console()
        out.print(f"[bold]{escape(model.name)}[/bold]  owner {escape(model.owner)}  "
                  f"created {when(model.creation_time)}")
        if model.description:
            out.print(f"  {escape(model.description)}")
        rules = ", ".join(policy["staging_requires"]) or "none"
        approvers = ", ".join(policy["production_approvers"]) or "none (no approval needed)"
        out.print(f"  [dim]Staging requires: {escape(rules)}; Production approvers: {escape(approvers)}[/dim]")
        table("versions", ["version", "stage", "aliases", "flavor", "run", "created", "by", "description"],
              [(v.version, stage_text(v.stage), ", ".join(v.aliases), escape(v.flavor), (v.run_id or "")[:8],
                when(v.creation_time), escape(v.created_by), escape(v.description)) for v in versions])
        return
    assert mv is not None
    if json_out:
        print_json(_builtins(mv))
        return
    out = console()
    out.print(f"[bold]{escape(mv.name)}[/bold] version [bold]{mv.version}[/bold]  {stage_text(mv.stage)}  "
              f"{mv.status}")
    facts = [("source", mv.source), ("location", mv.storage_location), ("run", mv.run_id or ""),
             ("flavor", mv.flavor), ("aliases", ", ".join(mv.aliases)), ("created", when(mv.creation_time)),
             ("by", mv.created_by), ("description", mv.description), ("logged model", mv.logged_model_id or "")]
    for label, value in facts:
        if value:
            out.print(f"  {label:<13}{escape(str(value))}")
    if mv.signature:
        for part in ("inputs", "outputs"):
            cols = mv.signature.get(part) or []
            if cols:
                table(f"signature {part}", ["name", "type"],
                      [(escape(str(c.get("name", ""))), escape(str(c.get("type", "")))) for c in cols])
    if mv.training_data:
        table("training data", ["name", "uri", "more"],
              [(escape(str(d.get("name", ""))), escape(str(d.get("uri", ""))),
                escape(", ".join(f"{k}={v}" for k, v in d.items() if k not in ("name", "uri"))))
               for d in mv.training_data])
    if mv.tags:
        table("tags", ["key", "value"], [(escape(k), escape(v)) for k, v in sorted(mv.tags.items())])


@models_app.command("promote")
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version number.")],
    to: Annotated[str, typer.Option("--to", help="Development, Staging, Production or Archived.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the audit log.")] = "",
    archive_existing: Annotated[bool, typer.Option(
        "--archive-existing", help="Entering Staging: archive the other Staging versions.")] = False,
    as_user: AsOption = None, config: ConfigOption = None, profile: ProfileOption = None,
    json_out: JsonOption = False,
) -> None:
    """Move a version to a stage under the model's policy.

    Staging needs the run's metrics to meet every threshold (a refusal lists each unmet one and
    exits 1). Production takes a version from Staging and, when the policy names approvers,
    creates a pending approval instead of moving it.

    Example: matih-lite models promote churn 3 --to Staging --reason "auc 0.91 on June"
    """
    with _client(config, profile, as_user) as models:
        result = models.promote(name, version, to, reason=reason, archive_existing=archive_existing)
        approvers = _approvers(models, name) if isinstance(result, Approval) else ""
    if json_out:
        key = "approval" if isinstance(result, Approval) else "transition"
        print_json({key: _builtins(result)})
        return
    out = console()
    if isinstance(result, Approval):
        out.print(f"{escape(name)} v{result.version}: {result.to_stage} needs an approval; request "
                  f"[bold]{result.approval_id[:8]}[/bold] is pending (approvers: {escape(approvers)}; not you).")
        out.print(f"  an approver runs: matih-lite models approve {result.approval_id[:8]} --comment '...'")
        return
    archived = f"; archived {', '.join(f'v{v}' for v in result.archived)}" if result.archived else ""
    out.print(f"{escape(name)} v{result.version}: {stage_text(result.from_stage)} → {stage_text(result.to_stage)}"
              f"{archived}")


@models_app.command("approvals")
def approvals(
    name: Annotated[str | None, typer.Argument(help="Only this model's requests.")] = None,
    status: Annotated[str, typer.Option(help="pending, approved, rejected or all.")] = "pending",
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """List promotion requests (pending ones by default), newest first.

    Example: matih-lite models approvals --status all
    """
    with _client(config, profile) as models:
        page = models.list_approvals(name=name, status=None if status == "all" else status, max_results=50_000)
    if json_out:
        print_json({"approvals": [_builtins(a) for a in page.items]})
        return
    table(f"approvals ({status})", ["id", "model", "version", "to", "status", "requested by", "requested",
                                    "reason", "decided by", "comment"],
          [(a.approval_id[:8], escape(a.name), a.version, a.to_stage, a.status, escape(a.requested_by),
            when(a.requested_at), escape(a.reason), escape(a.decided_by or ""), escape(a.comment))
           for a in page.items])


@models_app.command("approve")
def approve(
    approval_id: Annotated[str, typer.Argument(help="Approval id, or a unique prefix of it.")],
    comment: Annotated[str, typer.Option("--comment", help="Kept with the decision and in the audit log.")] = "",
    as_user: AsOption = None, config: ConfigOption = None, profile: ProfileOption = None,
    json_out: JsonOption = False,
) -> None:
    """Approve a pending request: the version enters Production and its predecessor is Archived.

    Only the model owner, a lead or an admin may (as the policy says), and never the requester.

    Example: matih-lite models approve 5e1f0c2a --comment "checked the June backtest"
    """
    with _client(config, profile, as_user) as models:
        done = models.approve(_resolve_approval(models, approval_id), comment=comment)
    if json_out:
        print_json(_builtins(done))
        return
    console().print(f"approved {done.approval_id[:8]}: {escape(done.name)} v{done.version} is now in "
                    f"{stage_text(done.to_stage)}")


@models_app.command("reject")
def reject(
    approval_id: Annotated[str, typer.Argument(help="Approval id, or a unique prefix of it.")],
    comment: Annotated[str, typer.Option("--comment", help="Why (required).")],
    as_user: AsOption = None, config: ConfigOption = None, profile: ProfileOption = None,
    json_out: JsonOption = False,
) -> None:
    """Reject a pending request with a comment; the version stays where it is.

    Example: matih-lite models reject 5e1f0c2a --comment "drift on the June data"
    """
    with _client(config, profile, as_user) as models:
        done = models.reject(_resolve_approval(models, approval_id), comment=comment)
    if json_out:
        print_json(_builtins(done))
        return
    console().print(f"rejected {done.approval_id[:8]}: {escape(done.name)} v{done.version} stays where it was")


@models_app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the audit log.")] = "",
    as_user: AsOption = None, config: ConfigOption = None, profile: ProfileOption = None,
    json_out: JsonOption = False,
) -> None:
    """Put back the version most recently archived out of Production; archive the current one.

    Example: matih-lite models rollback churn --reason "v4 mislabels new customers"
    """
    with _client(config, profile, as_user) as models:
        t = models.rollback(name, reason=reason)
    if json_out:
        print_json(_builtins(t))
        return
    archived = ", ".join(f"v{v}" for v in t.archived) or "nothing"
    console().print(f"rolled back {escape(name)}: v{t.version} is in {stage_text('Production')} again; "
                    f"archived {archived}")


@models_app.command("alias")
def alias(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="champion, challenger, any name.")],
    version: Annotated[str | None, typer.Argument(help="Version to point at; leave out to show the alias.")] = None,
    remove: Annotated[bool, typer.Option("--delete", help="Delete the alias.")] = False,
    as_user: AsOption = None, config: ConfigOption = None, profile: ProfileOption = None,
    json_out: JsonOption = False,
) -> None:
    """Point an alias at a version, show where it points, or delete it.

    Examples: matih-lite models alias churn champion 3      matih-lite models alias churn champion --delete
    """
    if remove and version is not None:
        raise InvalidInput("give a VERSION or --delete, not both")
    with _client(config, profile, as_user) as models:
        if remove:
            models.delete_alias(name, alias_name)
            mv = None
        elif version is None:
            mv = models.get_alias(name, alias_name)
        else:
            mv = models.set_alias(name, alias_name, version)
    if json_out:
        print_json({"name": name, "alias": alias_name, "version": mv.version if mv else None})
        return
    if mv is None:
        console().print(f"deleted alias {escape(alias_name)} of {escape(name)}")
    else:
        console().print(f"{escape(name)}@{escape(alias_name)} → v{mv.version} ({stage_text(mv.stage)})")


@models_app.command("audit")
def audit(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    max_results: Annotated[int, typer.Option("--max-results", "-n", help="At most this many entries.", min=1)] = 1000,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Every change to a model, oldest first: who, when, from which stage to which, and why.

    Example: matih-lite models audit churn
    """
    with _client(config, profile) as models:
        page = models.audit_log(name, max_results=max_results)
    if json_out:
        print_json({"entries": [_builtins(e) for e in page.items], "next_page_token": page.next_token})
        return
    rows = []
    for e in page.items:
        move = f"{e.from_stage or ''} → {e.to_stage}" if e.to_stage else ""
        extra = ""
        if e.detail.get("unmet"):
            extra = "; ".join(f"{u['rule']} (actual {_actual(u['actual'])})" for u in e.detail["unmet"])
        elif e.detail.get("alias"):
            extra = f"alias {e.detail['alias']}"
        elif e.approval_id:
            extra = f"approval {e.approval_id[:8]}"
        rows.append((when(e.timestamp), escape(e.action), escape(e.actor), e.version or "", escape(move),
                     escape(e.reason), escape(extra)))
    table(f"audit log of {escape(name)}", ["when", "action", "who", "version", "stage", "reason", "detail"], rows)
