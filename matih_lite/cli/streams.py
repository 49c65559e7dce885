"""``matih-lite predict stream``: deployments answering a topic of requests into a topic of predictions.

``start``, ``list`` and ``stop`` drive the consumers of the service (``MATIH_URL``, or the ``up`` that owns
this folder): they run inside it and start again with it. With no service running they work on this
folder's record of consumers, which the service starts when it does, with the same output (a recorded
consumer is listed as not running). ``run`` consumes in this process instead, on this folder's stores,
for a folder no service is using (until Ctrl-C, or until nothing waits with ``--until-idle``).
``send`` and ``read`` put request records on a topic and read a topic back, through the service or
on this folder. See :mod:`matih_lite.serving.streams` for the records.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json, table
from matih_lite.errors import InvalidInput
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.remote import ServiceHttp

stream_app = typer.Typer(
    help="Answer a topic of requests through a deployment, into a topic of predictions.\n\n"
         "Examples:\n\n"
         "  matih-lite predict stream send --topic requests --file requests.jsonl\n\n"
         "  matih-lite predict stream start churn --source requests --sink predictions\n\n"
         "  matih-lite predict stream run churn --source requests --sink predictions --until-idle\n\n"
         "  matih-lite predict stream read --topic predictions --json",
    no_args_is_help=True)


def _attach() -> None:
    from matih_lite.cli.deploy import _predict_group

    _predict_group().add_typer(stream_app, name="stream")


_attach()

SourceOption = Annotated[str, typer.Option("--source", "-s", help="Topic the request records are read from.")]
SinkOption = Annotated[str, typer.Option("--sink", "-o", help="Topic the predictions are written to.")]
GroupOption = Annotated[str | None, typer.Option("--group", "-g", help="Consumer group (default: the deployment's "
                                                 "name); its committed offset survives restarts.")]
BatchOption = Annotated[int, typer.Option("--batch-size", help="Requests read per round.", min=1, max=5000)]
EngineOption = Annotated[str, typer.Option("--engine", "-e", help="inprocess: the service consumes; flink: a Flink "
                                           "job with the models embedded (needs drift = { backend = \"flink\" } "
                                           "and events = { backend = \"kafka\" }).")]


def _service(config: str | None = None) -> ServiceHttp | None:
    """The service this command talks to (``MATIH_URL``, or the ``up`` owning this folder); None when none runs."""
    return ServiceHttp.from_env(config, user_agent="matih-lite-cli", timeout=60.0, hint="")


class _Consumers:
    """The deployment consumers of the running service over HTTP, or this folder's recorded ones when none runs
    (:class:`~matih_lite.serving.streams.RecordedStreams`); the answers have the same shape."""

    def __init__(self, config: str | None, profile: str | None) -> None:
        self.http = _service(config)
        self.host: Any = None
        if self.http is None:
            from matih_lite.host import Host

            self.host = Host.open(config, profile)

    def _recorded(self) -> Any:
        from matih_lite.serving.streams import RecordedStreams

        return RecordedStreams(self.host)

    def start(self, deployment: str, source: str, sink: str, group: str | None, batch_size: int,
              engine: str = "inprocess") -> dict[str, Any]:
        if self.http is None:
            return _as_answered(self._recorded().start(LOCAL_ADMIN, deployment, source, sink, group=group,
                                                       batch_size=batch_size, engine=engine))
        return self.http.call("POST", f"/api/v1/deployments/{quote(deployment, safe='')}/streams",
                              json={"source": source, "sink": sink, "group": group, "batch_size": batch_size,
                                    "engine": engine})

    def list(self, deployment: str) -> list[dict[str, Any]]:
        if self.http is None:
            return [_as_answered(c) for c in self._recorded().list(LOCAL_ADMIN, deployment)]
        return self.http.call("GET", f"/api/v1/deployments/{quote(deployment, safe='')}/streams")

    def stop(self, deployment: str, group: str) -> None:
        if self.http is None:
            self._recorded().stop(LOCAL_ADMIN, deployment, group)
            return
        self.http.call("DELETE", f"/api/v1/deployments/{quote(deployment, safe='')}/streams/{quote(group, safe='')}")

    def __enter__(self) -> _Consumers:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.http is not None:
            self.http.close()
        if self.host is not None:
            self.host.close()


ANSWER_FIELDS = ("deployment", "source", "sink", "group", "batch_size", "started_by", "started_at", "running", "lag",
                 "consumed", "predicted", "failed", "duplicates", "last_error", "engine")
"""What the service answers for a consumer (its ``StreamOut``), in that order."""


def _as_answered(consumer: dict[str, Any]) -> dict[str, Any]:
    """A recorded consumer as the service's JSON answer has it: the same keys, in the same order."""
    return {key: consumer[key] for key in ANSWER_FIELDS}


def _rows(consumers: list[dict[str, Any]]) -> list[list[Any]]:
    def n(value: Any) -> Any:
        return "?" if value is None else value

    return [[c["deployment"], c["group"], c.get("engine", "inprocess"), c["source"], c["sink"],
             "yes" if c["running"] else "no", n(c["consumed"]), n(c["predicted"]), n(c["failed"]), n(c["lag"]),
             c.get("last_error") or ""] for c in consumers]


COLUMNS = ["deployment", "group", "engine", "source", "sink", "running", "consumed", "predicted", "failed", "lag",
           "last error"]


@stream_app.command("start")
def start(
    deployment: Annotated[str, typer.Argument(help="Deployment whose routes answer the requests.")],
    source: SourceOption, sink: SinkOption, group: GroupOption = None, batch_size: BatchOption = 500,
    engine: EngineOption = "inprocess",
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Start a consumer in the service; it starts again when the service does (with none running, it is
    recorded on this folder and starts with 'matih-lite up').

    With --engine flink the consumer is a Flink job with the deployment's models embedded; it follows the
    deployment's routes as they change (no shadows: those run through the service only).
    """
    with _Consumers(config, profile) as consumers:
        doc = consumers.start(deployment, source, sink, group, batch_size, engine)
    if json_out:
        print_json(doc)
        return
    how = "" if engine == "inprocess" else f"; a {escape(engine)} job"
    console().print(f"deployment [bold]{escape(deployment)}[/bold] consumes [bold]{escape(source)}[/bold] into "
                    f"[bold]{escape(sink)}[/bold] (group {escape(doc['group'])}; lag {doc['lag']}{how})")


@stream_app.command("list")
def list_(
    deployment: Annotated[str, typer.Argument(help="Deployment.")],
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """The deployment's consumers in the service (or recorded on this folder): counts, lag, last error."""
    with _Consumers(config, profile) as consumers:
        found = consumers.list(deployment)
    if json_out:
        print_json(found)
        return
    if not found:
        console().print(f"deployment {escape(deployment)} consumes no stream")
        return
    table(f"stream consumers of {deployment}", COLUMNS, _rows(found))


@stream_app.command("stop")
def stop(
    deployment: Annotated[str, typer.Argument(help="Deployment.")],
    group: Annotated[str | None, typer.Option("--group", "-g", help="Consumer group (default: the deployment's "
                                              "name).")] = None,
    config: ConfigOption = None, profile: ProfileOption = None,
) -> None:
    """Stop a consumer of the service (or its record on this folder); its committed offset stays for a later
    start."""
    group = group or deployment
    with _Consumers(config, profile) as consumers:
        consumers.stop(deployment, group)
    console().print(f"stopped group {escape(group)} of deployment [bold]{escape(deployment)}[/bold]")


@stream_app.command("run")
def run(
    deployment: Annotated[str, typer.Argument(help="Deployment whose routes answer the requests.")],
    source: SourceOption, sink: SinkOption, group: GroupOption = None, batch_size: BatchOption = 500,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="Stop once no request waits.")] = False,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Consume in this process, on this folder's stores (no service may be using the folder).

    Runs until Ctrl-C (or until nothing waits, with --until-idle); each round is committed, so a
    later run, or the service, goes on from there.
    """
    import asyncio

    from matih_lite.host import Host
    from matih_lite.serving.streams import DeploymentStreams
    from matih_lite.serving.traffic import attach_traffic, detach_traffic

    host = Host.open(config, profile)
    consumer: Any = None

    async def main() -> None:
        nonlocal consumer
        manager = attach_traffic(host)
        manager.start()
        streams = DeploymentStreams(host, manager, asyncio.get_running_loop())
        spec = await asyncio.to_thread(streams.spec, LOCAL_ADMIN, deployment, source, sink, group=group,
                                       batch_size=batch_size)
        consumer = streams.consumer(spec)
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        quiet = json_out or not sys.stderr.isatty()
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console(stderr=True), disable=quiet, transient=True) as progress:
            task = progress.add_task("waiting for requests")
            while True:
                consumed = await asyncio.to_thread(consumer.run_once)
                stats = consumer.stats
                progress.update(task, description=f"{stats['consumed']:,} consumed, {stats['predicted']:,} "
                                                  f"predicted, {stats['failed']:,} failed")
                if consumed == 0:
                    if until_idle:
                        break
                    await asyncio.sleep(0.2)
        await manager.stop()

    started = time.monotonic()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        detach_traffic(host)
        host.close()
    stats = dict(consumer.stats) if consumer is not None else {}
    if json_out:
        print_json({"deployment": deployment, "source": source, "sink": sink, **stats,
                    "seconds": round(time.monotonic() - started, 3)})
    elif consumer is not None:
        console().print(f"{stats['consumed']:,} requests consumed from {escape(source)}: {stats['predicted']:,} "
                        f"predicted into {escape(sink)}, {stats['failed']:,} failed, {stats['duplicates']:,} "
                        "replays skipped")


@stream_app.command("send")
def send(
    topic: Annotated[str, typer.Option("--topic", "-t", help="Topic to append to.")],
    file: Annotated[Path, typer.Option("--file", "-f", help="JSON lines (one request record per line; '-': stdin), "
                                       "or a JSON array.")],
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Append request records to a topic (over MATIH_URL, or on this folder's events store)."""
    records = _records(file)
    for start in range(0, len(records), 10_000):
        chunk = records[start:start + 10_000]
        first = _append(topic, chunk, config, profile)
        if start == 0:
            first_offset = first
    if json_out:
        print_json({"topic": topic, "first_offset": first_offset, "count": len(records)})
    else:
        console().print(f"appended {len(records):,} records to {escape(topic)} from offset {first_offset}")


@stream_app.command("read")
def read(
    topic: Annotated[str, typer.Option("--topic", "-t", help="Topic to read.")],
    from_offset: Annotated[int, typer.Option("--from", help="First offset to read.", min=0)] = 0,
    max_results: Annotated[int, typer.Option("--max", help="Records to read at most.", min=1, max=10_000)] = 100,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Read a topic's records from an offset (JSON lines with --json)."""
    http = _service(config)
    if http is not None:
        with http:
            page = http.call("GET", f"/api/v1/streams/{quote(topic, safe='')}/records",
                             params={"from_offset": from_offset, "max_results": max_results})
        records = page["records"]
    else:
        from matih_lite.host import Host
        from matih_lite.serving.streams import tenant_stream

        host = Host.open(config, profile)
        try:
            found = host.backend("events").read_from(tenant_stream(LOCAL_ADMIN.tenant, topic), from_offset,
                                                     max_results)
        finally:
            host.close()
        records = [{"offset": r.offset, "timestamp": r.timestamp, "data": r.data} for r in found]
    if json_out:
        for r in records:
            sys.stdout.write(json.dumps(r, separators=(",", ":")) + "\n")
        return
    if not records:
        console().print(f"no records in {escape(topic)} from offset {from_offset}")
        return
    console().print(table(f"{topic} from offset {from_offset}", ["offset", "timestamp", "record"],
                          [[r["offset"], r["timestamp"], json.dumps(r["data"])[:160]] for r in records]))


def _records(file: Path) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc.strerror}") from None
    stripped = text.strip()
    try:
        if stripped.startswith("["):
            records = json.loads(stripped)
        else:
            records = [json.loads(line) for line in stripped.splitlines() if line.strip()]
    except ValueError as exc:
        raise InvalidInput(f"{file} is not JSON lines or a JSON array: {exc}") from None
    if not records:
        raise InvalidInput(f"{file} holds no records")
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise InvalidInput(f"record {bad + 1} of {file} is not a JSON object")
    return records


def _append(topic: str, records: list[dict[str, Any]], config: str | None, profile: str | None) -> int:
    http = _service(config)
    if http is not None:
        with http:
            return http.call("POST", f"/api/v1/streams/{quote(topic, safe='')}/records",
                             json={"records": records})["first_offset"]
    from matih_lite.host import Host
    from matih_lite.serving.streams import tenant_stream

    now = int(time.time() * 1000)
    host = Host.open(config, profile)
    try:
        return host.backend("events").append(tenant_stream(LOCAL_ADMIN.tenant, topic),
                                              [r if "timestamp" in r else {"timestamp": now, **r} for r in records])
    finally:
        host.close()
