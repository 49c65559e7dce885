"""Training and tuning from the terminal: ``matih-lite train SPEC``, ``matih-lite tune SPEC [--register MODEL]``,
``matih-lite jobs list|show|logs|cancel``.

Embedded (no ``MATIH_URL``), a job runs on this process's local Ray: ``train`` and ``tune``
wait for it with a progress bar, and Ctrl-C cancels it. With ``MATIH_URL`` the server runs
it: the commands wait the same way (``--detach`` returns at once), and Ctrl-C only stops
watching. Exit codes: 0 the job succeeded (and its model was registered when asked), 1 it
failed or was cancelled, 2 a bad spec or a job that could never fit its quota.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from matih_lite.cli import app
from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json, table
from matih_lite.cli.tracking import duration, number, when
from matih_lite.errors import InvalidInput
from matih_lite.training.client import JobsClient

jobs_app = typer.Typer(
    help="Training and tuning jobs: list them (and why they wait), show, read logs, cancel.\n\n"
         "Examples:\n\n"
         "  matih-lite tune spec.toml --register churn\n\n"
         "  matih-lite jobs list --status QUEUED\n\n"
         "  matih-lite jobs logs 3f2a --follow",
    no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

STATUS_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "dim", "RUNNING": "cyan", "STARTING": "cyan",
                "QUEUED": "yellow"}
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
SHORT = 8


# ---- train and tune ------------------------------------------------------------------------------
DetachOption = Annotated[bool, typer.Option("--detach", "-d", help="Return once the job is queued (needs a "
                                            "server: MATIH_URL). Follow it with 'matih-lite jobs show'.")]


@app.command("train")
def train(
    spec: Annotated[Path, typer.Argument(help="Job spec (TOML): entrypoint, framework, resources, inputs, params.")],
    detach: DetachOption = False,
    json_out: JsonOption = False,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Run a training job (Ray Train: data-parallel with num_workers > 1, restarts up to max_failures)."""
    _run(spec, "train", None, detach, json_out, config, profile)


@app.command("tune")
def tune(
    spec: Annotated[Path, typer.Argument(help="Job spec (TOML) with a \\[tune] table: metric, mode, space, "
                                              "num_samples, search, scheduler.")],
    register: Annotated[str | None, typer.Option("--register", "-r", help="Register the best trial's model "
                                                 "under this name, as a Development version.")] = None,
    detach: DetachOption = False,
    json_out: JsonOption = False,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Run a tuning job on Ray Tune: each trial a child run, the best marked on the parent, optionally registered."""
    _run(spec, "tune", register, detach, json_out, config, profile)


def _run(path: Path, kind: str, register: str | None, detach: bool, json_out: bool, config: str | None,
         profile: str | None) -> None:
    from matih_lite.training.spec import load_spec

    spec = load_spec(path, kind=kind).to_dict()
    client = JobsClient(config, profile)
    try:
        if detach and client.embedded:
            raise InvalidInput("--detach needs a running server (set MATIH_URL): an embedded job runs in this "
                               "process and stops with it")
        job = client.submit(spec, kind, register)
        if detach:
            if json_out:
                print_json(job)
            else:
                console().print(f"job [bold]{job['job_id'][:SHORT]}[/bold] ({job['name']}) {job['status'].lower()}; "
                                f"follow it with 'matih-lite jobs show {job['job_id'][:SHORT]}'")
            return
        job = _watch(client, job, quiet=json_out)
    finally:
        client.close()
    if json_out:
        print_json(job)
    else:
        _summary(job)
    failed = job["status"] != "SUCCEEDED" or (job.get("register") and "registered" not in job["result"])
    if failed:
        raise typer.Exit(1)


def _watch(client: JobsClient, job: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    """Poll the job until it ends, with a progress bar (trials for tuning, steps for training)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    job_id = job["job_id"]
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if job["kind"] == "tune":
        columns += [BarColumn(), MofNCompleteColumn(), TextColumn("trials")]
    columns.append(TimeElapsedColumn())
    progress = Progress(*columns, console=console(stderr=True), transient=True, disable=quiet)
    try:
        with progress:
            task = progress.add_task(f"{job['kind']} {job['name']}: queued", total=None)
            while job["status"] not in TERMINAL:
                time.sleep(0.5)
                job = client.get(job_id)
                p = job.get("progress") or {}
                text = f"{job['kind']} {job['name']}: {job['status'].lower()}"
                if job["status"] == "QUEUED" and job["message"]:
                    text += f" ({job['message']})"
                elif p.get("step") is not None:
                    text += f", step {p['step']}"
                progress.update(task, description=escape(text), total=p.get("trials_total"),
                                completed=p.get("trials_done", 0))
    except KeyboardInterrupt:
        if client.embedded:
            console(stderr=True).print(f"cancelling job {job_id[:SHORT]} (it runs in this process)")
            client.cancel(job_id)
            client.jobs.wait(client.principal, job_id, timeout=30)
        else:
            console(stderr=True).print(f"stopped watching; job {job_id[:SHORT]} goes on on the server "
                                       f"('matih-lite jobs cancel {job_id[:SHORT]}' stops it)")
        raise
    return job


def _summary(job: dict[str, Any]) -> None:
    out = console()
    style = STATUS_STYLE.get(job["status"], "")
    out.print(f"job [bold]{job['job_id'][:SHORT]}[/bold] ({escape(job['name'])}): [{style}]{job['status']}[/]"
              f"  {escape(job['message']) if job['status'] != 'SUCCEEDED' else ''}".rstrip())
    result = job.get("result") or {}
    if job.get("run_id"):
        out.print(f"  run            {job['run_id']}")
    if result.get("best_run_id"):
        metric = (job["spec"].get("tune") or {}).get("metric", "")
        out.print(f"  best trial     {result['best_run_id']}  {escape(metric)} = "
                  f"{number(result.get('best_value'))}  ({result.get('trials', '?')} trials)")
    if result.get("model_uri"):
        out.print(f"  model          {escape(result['model_uri'])}")
    if result.get("registered"):
        reg = result["registered"]
        out.print(f"  registered     [green]{escape(reg['name'])} version {reg['version']}[/] ({reg['stage']})")
    elif result.get("register_error"):
        out.print(f"  [red]not registered[/]: {escape(result['register_error'])}")


# ---- jobs list|show|logs|cancel ------------------------------------------------------------------
@jobs_app.command("list")
def jobs_list(
    status: Annotated[list[str] | None, typer.Option("--status", "-s", help="Only jobs in this status "
                                                     "(repeat for several): QUEUED, RUNNING, SUCCEEDED...")] = None,
    max_results: Annotated[int, typer.Option("--max", help="At most this many jobs.", min=1)] = 50,
    json_out: JsonOption = False,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Jobs, newest first; for a queued job, why it waits."""
    client = JobsClient(config, profile)
    try:
        found = client.list([s.upper() for s in status or []], max_results)
    finally:
        client.close()
    if json_out:
        print_json({"jobs": found})
        return
    rows = []
    for j in found:
        style = STATUS_STYLE.get(j["status"], "")
        note = j["message"] if j["status"] in ("QUEUED", "FAILED", "CANCELLED") else ""
        rows.append((j["job_id"][:SHORT], escape(j["name"]), j["kind"], f"[{style}]{j['status']}[/]",
                     f"{j['cpus']:g}" + (f"+{j['gpus']:g}g" if j["gpus"] else ""), when(j["created_at"]),
                     duration(j["started_at"], j["ended_at"]), escape(note)))
    table(None, ["job", "name", "kind", "status", "cpus", "created", "took", "why / message"], rows)


@jobs_app.command("show")
def jobs_show(job_id: Annotated[str, typer.Argument(help="Job id or a unique prefix.")], json_out: JsonOption = False,
              config: ConfigOption = None, profile: ProfileOption = None) -> None:
    """A job: status, why it waits or how it ended, its run, its progress and result."""
    client = JobsClient(config, profile)
    try:
        job = client.get(job_id)
    finally:
        client.close()
    if json_out:
        print_json(job)
        return
    out = console()
    style = STATUS_STYLE.get(job["status"], "")
    out.print(f"[bold]{job['job_id']}[/bold]  {escape(job['name'])}  {job['kind']}  [{style}]{job['status']}[/]")
    for label, value in (("message", job["message"]), ("entrypoint", job["spec"].get("entrypoint")),
                         ("resources", f"{job['cpus']:g} CPUs, {job['gpus']:g} GPUs"),
                         ("created", f"{when(job['created_at'])} by {job['created_by']}"),
                         ("ran", duration(job["started_at"], job["ended_at"])), ("run", job["run_id"]),
                         ("progress", ", ".join(f"{k} {v}" for k, v in (job.get("progress") or {}).items()
                                                if k != "status"))):
        if value:
            out.print(f"  {label:<11}{escape(str(value))}")
    if job["status"] in TERMINAL:
        _summary(job)


@jobs_app.command("logs")
def jobs_logs(job_id: Annotated[str, typer.Argument(help="Job id or a unique prefix.")],
              follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
              config: ConfigOption = None, profile: ProfileOption = None) -> None:
    """The job's output (driver, trials and workers)."""
    import sys

    client = JobsClient(config, profile)
    try:
        offset = 0
        while True:
            text, offset, status = client.logs(job_id, offset)
            sys.stdout.write(text)
            sys.stdout.flush()
            if not follow or status in TERMINAL:
                if follow:  # what was written between the last read and the end
                    sys.stdout.write(client.logs(job_id, offset)[0])
                break
            time.sleep(0.5)
    finally:
        client.close()


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument(help="Job id or a unique prefix.")], json_out: JsonOption = False,
                config: ConfigOption = None, profile: ProfileOption = None) -> None:
    """Cancel a job: a queued one at once, a running one as soon as its supervisor sees the request."""
    client = JobsClient(config, profile)
    try:
        job = client.cancel(job_id)
    finally:
        client.close()
    if json_out:
        print_json(job)
    else:
        console().print(f"job {job['job_id'][:SHORT]}: {job['status'].lower()} ({escape(job['message'])})")


@jobs_app.command("manifest")
def jobs_manifest(
    spec: Annotated[Path, typer.Argument(help="Job spec (TOML), as for 'matih-lite train' or 'tune'.")],
    tenant: Annotated[str, typer.Option("--tenant", help="Render for this tenant (its namespace and quota).")]
    = "default",
    json_out: JsonOption = False,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Print what the compute backend would apply for SPEC (a RayJob and its quota on kuberay), applying nothing.

    Rendered from this folder's matih.toml and profile; YAML documents (``kubectl apply -f -`` takes
    them), or JSON with --json. The job's run and token do not exist yet and show as placeholders.
    """
    from matih_lite.host import Host
    from matih_lite.identity import Principal
    from matih_lite.training.jobs import Jobs
    from matih_lite.training.spec import load_spec

    checked = load_spec(spec)
    host = Host.open(config, profile)
    try:
        documents = Jobs(host).manifest(Principal(tenant, "local", ("editor",)), checked)
    finally:
        host.close()
    if json_out:
        print_json(documents)
        return
    try:
        import yaml
    except ImportError:  # JSON is YAML too
        print_json(documents)
        return
    import sys

    sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False))
