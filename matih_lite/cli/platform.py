"""Running and inspecting the platform: ``up``, ``doctor``, ``config``, ``plugins``."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from typing import Annotated, Any

import typer

from matih_lite.cli import app
from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json, table
from matih_lite.errors import ConfigError

config_app = typer.Typer(help="Show and check matih.toml.", no_args_is_help=True)
plugins_app = typer.Typer(help="See which plugins and backends are installed.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(plugins_app, name="plugins")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configure_logging(level: str = "INFO") -> None:
    """matih_lite's loggers to stderr; third-party chatter stays at WARNING."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("matih_lite")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def auth_enabled(host: Any) -> bool:
    """Whether bearer-token auth is on: ``[auth] enabled = true``, or any profile but lite."""
    from matih_lite.auth import auth_enabled as configured

    return configured(host)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Address to bind. Anything but loopback requires auth.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    profile: ProfileOption = None,
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Start the ml-service: REST API, MLflow-compatible API, and /ready, /metrics, /schema.

    State lives in ./.matih (or $MATIH_HOME) unless matih.toml says otherwise.
    Stop it with Ctrl-C (or SIGTERM); it shuts down cleanly.
    """
    import uvicorn

    from matih_lite.host import Host
    from matih_lite.service import create_app

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    h = Host.open(config, profile)
    problems = h.section_problems()
    if problems:
        raise ConfigError("\n".join(f"{key}: {message}" for key, message in problems))
    if not is_loopback(host) and not auth_enabled(h):
        raise ConfigError(
            f"refusing to listen on {host}: binding beyond loopback requires bearer-token auth "
            "([auth] enabled = true in matih.toml, with tokens from 'matih-lite tokens create')",
            key="--host",
        )
    from matih_lite.ownership import claim

    _check_port_free(host, port)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    with claim(h.config.home) as folder:  # one service per state folder; refused (exit 2) when one runs
        configure_logging(log_level)
        asgi = create_app(h)
        console().print(f"matih-lite ml-service on [bold]{url}[/bold]  (profile {h.profile}, "
                        f"state in {escape(str(h.config.home))})  docs: {url}/schema")
        server = _Server(uvicorn.Config(asgi, host=host, port=port, log_level="warning", access_log=False,
                                        lifespan="on", server_header=False),
                         on_started=lambda: folder.announce(_announced_url(host, port), h.profile))
        server.run()
    if server.started is False:
        raise typer.Exit(1)
    console().print("matih-lite ml-service stopped")


def _announced_url(host: str, port: int) -> str:
    """Where commands in this folder reach the service: loopback when it listens on every interface."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}"


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but a SIGINT/SIGTERM ends in a clean shutdown and exit code 0, and
        ``on_started`` runs once it listens (``up`` then says where, in ``service.json``).

        (uvicorn re-raises the signal after shutting down, so the process would die by it.)
        """

        on_started: Any = None

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.on_started is not None:
                self.on_started()

        def handle_exit(self, sig, frame) -> None:
            logging.getLogger("matih_lite.service").info("shutting down (signal %s)", sig)
            if self.should_exit and sig == 2:
                self.force_exit = True
            self.should_exit = True

    return Server


def _Server(config, on_started=None):  # noqa: N802 - reads like the class it builds
    server = _server_class()(config)
    server.on_started = on_started
    return server


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another with --port",
                              key="--port") from None


@app.command()
def doctor(profile: ProfileOption = None, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Check every slot of a profile: backend installed, settings valid, service reachable, schema version.

    Exits 2 if anything is wrong: a backend not installed (with the ``pip install`` line), settings
    that do not validate (with their key path), a backend that does not answer, a metadata schema
    this version cannot use. Doctor only looks: it reports the schema version it finds ("empty" before
    the first ``up`` or ``migrate``) and never creates or migrates it. While a ``matih-lite up`` serves
    this folder (or ``MATIH_URL`` names a service) with that profile, the slots' health is the service's
    own (``/ready``): it owns the files a second opener would wait on.

    Example: matih-lite doctor --profile cluster --json
    """
    from matih_lite.host import Host, install_hint, load_config

    h = Host(load_config(config), profile, strict=False, migrate=False)  # doctor only looks
    problems = dict(h.config_problems)
    served = _service_health(config, h.profile)
    health = served or h.health()
    rows = []
    failed = False
    for slot in h.backends:
        entry = h.selection().get(slot, {"backend": "?"})
        key = f"profiles.{h.profile}.{slot}"
        spec = h.active(slot)
        result = health.get(slot)
        if key in problems or any(k.startswith(key + ".") for k in problems):
            status, detail = "config", "; ".join(v for k, v in problems.items() if k == key or k.startswith(key + "."))
            failed = True
        elif result is None:
            status, detail = "empty", ("no backend: optional, unused until the profile names one" if
                                       entry["backend"] == "none" else
                                       f"'{entry['backend']}' is not installed; this slot is unused"
                                       f"{install_hint(entry['backend'])}")
        elif result.ok:
            status, detail = "ok", result.detail
        else:
            status, detail = "failed", result.detail
            failed = True
        schema = None
        if status == "ok" and slot == "metadata" and served is None:
            schema, trouble = _schema_version(h)
            if trouble:
                status, detail, failed = "schema", trouble, True
        rows.append({"slot": slot, "backend": entry["backend"], "status": status, "detail": detail,
                     "distribution": spec.distribution if spec else None, "schema": schema})
    if json_out:
        print_json({"profile": h.profile, "ok": not failed, "slots": rows,
                    "problems": [{"key": k, "message": v} for k, v in h.config_problems]})
    else:
        colour = {"ok": "green", "failed": "red", "config": "red", "schema": "red", "empty": "dim"}
        table(f"doctor: profile {h.profile}", ["slot", "backend", "status", "detail"],
              [(r["slot"], r["backend"], f"[{colour[r['status']]}]{r['status']}[/]", escape(r["detail"]))
               for r in rows])
        for k, v in h.config_problems:
            if not k.startswith(f"profiles.{h.profile}."):
                console().print(f"[red]config:[/red] {escape(k)}: {escape(v)}")
    if any(not k.startswith(f"profiles.{h.profile}.") for k, _ in h.config_problems) or any(
            r["status"] == "config" for r in rows):
        raise typer.Exit(2)
    if failed:
        raise typer.Exit(2)


def _schema_version(h: Any) -> tuple[dict[str, int] | None, str]:
    """The metadata schema's version (applied, and the newest this code knows), and what is wrong with it."""
    from matih_lite.contracts.transfer import TableTransfer

    store = h.backend("metadata")
    if not isinstance(store, TableTransfer):
        return None, ""
    version = store.schema_version()
    found = {"applied": version.applied, "current": version.current}
    if version.applied == 0:  # empty: `up` (or `migrate`) creates it; the health detail says so
        return found, ""
    if version.applied > version.current:
        return found, (f"schema version {version.applied} is newer than this matih-lite knows ({version.current}); "
                       "upgrade matih-lite (pip install -U matih-lite)")
    if version.applied < version.current:
        return found, (f"schema version {version.applied}, this matih-lite needs {version.current}; run "
                       f"'matih-lite migrate --profile {h.profile}'")
    return found, ""


def _service_health(config: str | None, profile: str) -> dict[str, Any] | None:
    """Each slot's health as the service serving this folder reports it, or None when none serves this profile."""
    from matih_lite.contracts import Health
    from matih_lite.ownership import service_target
    from matih_lite.remote import ServiceHttp

    target = service_target(config)
    if target is None:
        return None
    import httpx

    try:
        with ServiceHttp(target[0], target[1], timeout=10.0, user_agent="matih-lite-cli") as http:
            resp = http.http.get("/ready")
    except httpx.TransportError:
        return None  # it does not answer: look at the backends from here
    body = resp.json() if resp.status_code in (200, 503) and resp.content else None
    if not isinstance(body, dict) or body.get("profile") != profile:
        return None
    return {slot: None if h is None else Health(bool(h.get("ok")), str(h.get("detail", "")))
            for slot, h in (body.get("slots") or {}).items()}


@app.command("migrate")
def migrate(profile: ProfileOption = None, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Bring the profile's metadata schema up to this version of matih-lite (creating the state folder for lite).

    Example: matih-lite migrate --profile cluster
    """
    from matih_lite.host import Host

    h = Host.open(config, profile)
    try:
        store = h.metadata
        health = store.health()
        version = getattr(store, "schema_version", lambda: None)()
    finally:
        h.close()
    if json_out:
        print_json({"profile": h.profile, "schema_version": version, "detail": health.detail})
        return
    console().print(f"metadata of profile {escape(h.profile)}: {escape(health.detail)}")


@config_app.command("show")
def config_show(profile: ProfileOption = None, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Print the resolved configuration of a profile, with ${VARS} filled in and secrets masked."""
    from matih_lite.config import SECTIONS, load_config, mask_secrets

    cfg = load_config(config)
    name = profile or cfg.default_profile()
    resolved: dict[str, Any] = {
        "config_file": str(cfg.path) if cfg.path else None,
        "home": str(cfg.home),
        "profile": name,
        "slots": mask_secrets(cfg.profile(name)),
    }
    for section in SECTIONS:
        if section not in ("profiles", "default_profile") and section in cfg.data:
            resolved[section] = mask_secrets(cfg.section(section))
    if json_out:
        print_json(resolved)
        return
    out = console()
    out.print(f"# {escape(resolved['config_file'] or 'no matih.toml: built-in lite defaults')}")
    out.print(f"# state folder: {escape(resolved['home'])}")
    for slot, entry in resolved["slots"].items():
        header = escape(f"[profiles.{name}.{slot}]")
        out.print(f"\n[bold]{header}[/bold]" + ("  [dim]# default[/dim]" if entry.get("default") else ""))
        for key, value in entry.items():
            if key != "default":
                out.print(f"{key} = {escape(json.dumps(value))}")
    for section, body in resolved.items():
        if section in ("config_file", "home", "profile", "slots"):
            continue
        out.print(f"\n[bold]{escape(f'[{section}]')}[/bold]")
        out.print(escape(json.dumps(body, indent=2)))


@config_app.command("validate")
def config_validate(profile: ProfileOption = None, config: ConfigOption = None,
                    json_out: JsonOption = False) -> None:
    """Check matih.toml: every problem with its key path and what was expected. Exit 2 on any."""
    from matih_lite.host import Host, load_config

    cfg = load_config(config)
    names = [profile] if profile else cfg.profile_names()
    problems: list[tuple[str, str]] = []
    plugins = None
    for name in names:
        try:
            h = Host(cfg, name, plugins, strict=False)
            plugins = h.plugins
            problems.extend(p for p in h.config_problems if p not in problems)
            problems.extend(p for p in h.section_problems() if p not in problems)
        except ConfigError as exc:
            problems.append((exc.key or "", exc.reason))
    if json_out:
        print_json({"ok": not problems, "profiles": names,
                    "problems": [{"key": k, "message": m} for k, m in problems]})
    else:
        out = console(stderr=bool(problems))
        for key, message in problems:
            out.print(f"[red]{escape(key)}[/red]: {escape(message)}")
        if not problems:
            where = cfg.path or "built-in defaults"
            console().print(f"[green]ok[/green]: {escape(str(where))} (profiles: {', '.join(names)})")
    if problems:
        raise typer.Exit(2)


@plugins_app.command("list")
def plugins_list(profile: ProfileOption = None, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Every slot with its installed backends (the active one marked), and who implements each hook."""
    from matih_lite.host import Host, load_config

    h = Host(load_config(config), profile, strict=False)
    slots: dict[str, Any] = {}
    for slot, backends in h.backends.items():
        active = h.selection().get(slot, {}).get("backend")
        slots[slot] = {
            "active": active if active in backends else None,
            "configured": active,
            "backends": [{"name": s.name, "plugin": s.plugin, "distribution": s.distribution, "summary": s.summary,
                          "active": s.name == active} for s in sorted(backends.values(), key=lambda s: s.name)],
        }
    hooks = {name: h.plugins.implementers(name) for name in (
        "register_backends", "register_notifiers", "register_flavors", "register_drift_tests",
        "register_autologgers", "register_routes", "register_commands", "startup", "shutdown", "on_event")}
    plugins = [{"name": name, "distribution": dist} for name, dist in h.plugins.origins.items()]
    if json_out:
        print_json({"profile": h.profile, "slots": slots, "hooks": hooks, "plugins": plugins})
        return
    rows = []
    for slot, info in slots.items():
        if not info["backends"]:
            rows.append((slot, f"[dim]none installed ({info['configured']} comes later)[/dim]", "", ""))
        for b in info["backends"]:
            name = f"[bold green]{b['name']} *[/]" if b["active"] else b["name"]
            rows.append((slot, name, escape(b["distribution"] or ""), escape(b["summary"])))
    table(f"backends (profile {h.profile}; * = active)", ["slot", "backend", "distribution", "summary"], rows)
    table("extension hooks", ["hook", "implemented by"],
          [(hook, ", ".join(impls) or "[dim]-[/dim]") for hook, impls in hooks.items()])
