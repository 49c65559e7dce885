"""``matih-lite promote --to cluster``: copy this folder's state into another profile's backends, verified."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from matih_lite.cli import app
from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json, table


@app.command()
def promote(
    to: Annotated[str, typer.Option("--to", help="The profile to copy into, e.g. cluster.")],
    profile: ProfileOption = None,
    config: ConfigOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check both sides and say what would be copied.")] = False,
    merge: Annotated[bool, typer.Option("--merge", help="Add to a target that holds data already; ids held there "
                                                        "must match.")] = False,
    only: Annotated[str | None, typer.Option("--only", help="Slots to copy, comma-separated: metadata,artifacts,"
                                                      "events,features (default: every slot the profiles fill "
                                                      "differently).")
                    ] = None,
    manifests: Annotated[str | None, typer.Option("--manifests", help="Also write the Kubernetes objects that run "
                                                                      "the target profile into this folder.")] = None,
    namespace: Annotated[str, typer.Option("--namespace", help="Namespace of the rendered objects.")] = "ml",
    image: Annotated[str, typer.Option("--image", help="Container image of the ml-service.")] = "matih-lite:latest",
    flink_image: Annotated[str, typer.Option("--flink-image", help="Container image of the Flink drift job (Flink "
                                                                   "2.3 with PyFlink, matih-lite and matih-flink).")
                           ] = "matih-flink:latest",
    apply: Annotated[bool, typer.Option("--apply", help="Create or replace the objects through the Kubernetes API "
                                                        "(kubeconfig, or in-cluster).")] = False,
    json_out: JsonOption = False,
) -> None:
    """Copy this profile's state into another's backends, then verify: metadata, artifacts, events, features.

    Metadata table by table for every tenant, artifacts with their sha256, event streams with their offsets
    and consumer-group commits, the online feature store. Verification always runs: per table row counts
    and an order-independent checksum on both sides, the same queries answered by both, every artifact's
    sha256, every stream's length and last offset. Exits 1 naming any difference, 2 on bad input
    (an unreachable backend, a target holding other data without --merge). Killed half-way, run it again:
    it continues, and the result is that of one run.

    Example: matih-lite promote --to cluster
    """
    from matih_lite.host import Host
    from matih_lite.promote.promotion import NOT_YET
    from matih_lite.promote.promotion import promote as run_promote

    slots = [s.strip() for s in only.split(",") if s.strip()] if only else None
    _refuse_a_running_service(config, dry_run)
    source = Host.open(config, profile)
    target = Host.open(config, to)
    written: list[str] = []
    applied: list[tuple[str, str]] = []
    try:
        if manifests is not None or apply:
            written, applied = _manifests(source, target, manifests, namespace=namespace, image=image,
                                          flink_image=flink_image, apply=apply)
        with _Bars(enabled=not json_out) as bars:
            outcome = run_promote(source, target, only=slots, merge=merge, dry_run=dry_run, progress=bars.advance)
    finally:
        source.close()
        target.close()
    if json_out:
        import msgspec

        print_json({**msgspec.to_builtins(outcome), "ok": outcome.ok,
                    "not_copied": {} if slots else NOT_YET, "manifests": written,
                    "applied": [{"path": p, "action": a} for p, a in applied]})
    else:
        _print(outcome, NOT_YET if not slots else {})
        if written:
            console().print(f"{len(written)} manifests in {escape(manifests or '')}: "
                            + escape(", ".join(written)))
        for path, action in applied:
            console().print(f"{action}: {escape(path)}")
    if not outcome.ok:
        raise typer.Exit(1)


def _refuse_a_running_service(config: str | None, dry_run: bool) -> None:
    """A copy is of a state nothing changes meanwhile: refuse while ``matih-lite up`` serves this folder."""
    from matih_lite.config import load_config
    from matih_lite.ownership import running_service
    from matih_lite.promote.checks import PromoteRefused

    found = running_service(load_config(config).home)
    if found is not None and not dry_run:
        raise PromoteRefused(f"matih-lite up serves this folder ({found.url}, pid {found.pid}); stop it first, so "
                             "that nothing changes the state while promote copies it")


def _manifests(source: Any, target: Any, folder: str | None, *, namespace: str, image: str, flink_image: str,
               apply: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """Render the target profile's objects (a ResourceQuota per tenant the source holds, a flink drift job
    watching the deployments the source holds); write them into ``folder`` and, with ``apply``, create or
    replace them through the Kubernetes API."""
    from matih_lite.errors import ConfigError
    from matih_lite.promote import manifests
    from matih_lite.promote.promotion import tenants_of

    if not target.config.data.get("profiles", {}).get(target.profile):
        raise ConfigError(f"no [profiles.{target.profile}] in matih.toml to render manifests for", key="--to")
    drift = target.config.data["profiles"][target.profile].get("drift") or {}
    targets: list[dict[str, Any]] = []
    if isinstance(drift, dict) and drift.get("backend") == "flink":
        from matih_lite.monitoring.schedule import DriftSchedule

        targets = DriftSchedule(source).targets()
    objects = manifests.render(target.config.data, target.profile, namespace=namespace, image=image,
                               tenants=tenants_of(source.metadata), flink_image=flink_image, drift_targets=targets)
    written = manifests.write(objects, folder) if folder is not None else []
    applied: list[tuple[str, str]] = []
    if apply:
        applied = manifests.apply(objects, _kubernetes_client())
    return written, applied


def _kubernetes_client() -> Any:
    """An ApiClient from the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``), or the pod's service account."""
    import os

    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    from matih_lite.errors import ConfigError

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            return client.ApiClient()
        return config.new_client_from_config()
    except (ConfigException, OSError) as exc:
        raise ConfigError(f"--apply: no Kubernetes credentials ({exc}); set KUBECONFIG or run inside the cluster",
                          key="--apply") from None


def _print(outcome: Any, not_copied: dict[str, str]) -> None:
    out = console()
    if outcome.dry_run:
        if outcome.resumed:
            out.print("promote has written to this target before: running it again continues (or re-checks) that copy")
        rows = [(slot, escape(item), str(n)) for slot, counts in outcome.held.items() for item, n in counts.items()]
        table(f"promote {outcome.source_profile} -> {outcome.target_profile} (dry run: nothing copied)",
              ["slot", "holds", "count"], rows)
        return
    if outcome.resumed:
        out.print("continued an earlier promote to this target")
    for done in outcome.copied:
        out.print(f"{done.slot}: {done.items} copied, {done.skipped} already there"
                  + (f", {done.bytes} bytes" if done.bytes else ""))
    table(f"verified {outcome.source_profile} -> {outcome.target_profile}", ["slot", "checked", "source", "target",
                                                                             "result"],
          [(c.slot, escape(c.item), escape(c.source), escape(c.target),
            "[green]equal[/]" if c.ok else f"[red]differs[/] {escape(c.detail)}") for c in outcome.checks])
    for slot, why in not_copied.items():
        out.print(f"[dim]{slot}: {escape(why)}[/dim]")
    bad = [c for c in outcome.checks if not c.ok]
    if bad:
        console(stderr=True).print("[red]promote: the copy differs:[/red] " + "; ".join(
            escape(f"{c.slot} {c.item}: {c.detail}") for c in bad))


class _Bars:
    """A progress bar per table or slot, with counts and bytes, on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tasks: dict[str, Any] = {}
        self.progress: Any = None

    def __enter__(self) -> _Bars:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[size]}"), TimeRemainingColumn(),
                                     console=console(stderr=True), transient=True)
            self.progress.start()
        return self

    def advance(self, item: str, advanced: int, total: int, size: int) -> None:
        if self.progress is None:
            return
        task = self.tasks.get(item)
        if task is None:
            task = self.tasks[item] = self.progress.add_task(item, total=total, size="", bytes=0)
        done = self.progress.tasks[[t.id for t in self.progress.tasks].index(task)]
        total_bytes = done.fields.get("bytes", 0) + size
        self.progress.update(task, advance=advanced, bytes=total_bytes,
                             size=f"{total_bytes / 1e6:.1f} MB" if total_bytes else "")

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
