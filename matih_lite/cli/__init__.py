"""The ``matih-lite`` command line: tables for people, ``--json`` for scripts, exit codes that mean something.

Exit codes: 0 success; 1 the operation failed (a record is missing, a promote's copy differs);
2 usage or configuration errors, and any problem ``doctor`` finds; 3 and 4 ``drift check --fail-on-drift``
(drift found, window too small to judge). A user mistake prints one red line, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from matih_lite.errors import MatihError

app = typer.Typer(
    name="matih-lite",
    help="The MATIH ML platform on your laptop: tracking, registry, training, serving, drift, features.\n\n"
         "Start with 'matih-lite up', then open http://127.0.0.1:8000/schema.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

COMMAND_MODULES: tuple[str, ...] = ("platform", "tracking", "accounts", "registry", "lineage", "cards", "serving_models",
                                     "predict", "drift", "deploy", "streams", "jobs", "features",
                                     "promote")
"""Modules under matih_lite.cli that add their commands to ``app`` when imported."""

STATELESS_COMMANDS = frozenset({"", "up", "migrate", "config", "doctor", "plugins", "users", "tokens"})
"""Commands that need no state in the folder (``up`` and ``migrate`` make it, and so may the first ``users
create`` of a folder with auth); the others refuse a folder with neither matih.toml nor ``.matih`` (see
:func:`matih_lite.ownership.state_required`)."""

_loaded = False


def load_commands() -> typer.Typer:
    """Import the built-in command modules, then let plugins add theirs (once)."""
    global _loaded
    if not _loaded:
        for name in COMMAND_MODULES:
            importlib.import_module(f"matih_lite.cli.{name}")
        _loaded = True
        try:
            from matih_lite.host import get_plugin_manager

            get_plugin_manager().pm.hook.register_commands(app=app)
        except MatihError:
            pass  # a broken plugin is reported by the command that builds the host
    return app


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from matih_lite.cli.output import error_line
    from matih_lite.ownership import state_required

    load_commands()
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), "")
    try:
        if command in STATELESS_COMMANDS:
            app(args=argv, prog_name="matih-lite")
        else:
            with state_required():
                app(args=argv, prog_name="matih-lite")
    except MatihError as exc:
        error_line(exc.message)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(130)
