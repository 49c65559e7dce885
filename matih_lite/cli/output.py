"""How the CLI talks: rich tables and colours for people, plain JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer

ConfigOption = Annotated[str | None, typer.Option("--config", "-c", help="Path to matih.toml "
                                                  "(default: $MATIH_CONFIG, then ./matih.toml).",
                                                  envvar="MATIH_CONFIG", show_envvar=False)]
ProfileOption = Annotated[str | None, typer.Option("--profile", "-p", help="Profile of matih.toml to use "
                                                   "(default: $MATIH_PROFILE, default_profile, then 'lite').")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def error_line(message: str) -> None:
    """One red line per message line on stderr."""
    out = console(stderr=True)
    for line in str(message).splitlines() or [""]:
        out.print(f"[red]error:[/red] {escape(line)}")


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_default, allow_nan=True) + "\n")


def _default(value: Any) -> Any:
    import msgspec

    try:
        return msgspec.to_builtins(value)
    except TypeError:
        return str(value)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
          styles: Sequence[str | None] | None = None) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for i, col in enumerate(columns):
        t.add_column(col, style=(styles[i] if styles else None))
    for row in rows:
        t.add_row(*[cell if not isinstance(cell, str) else cell for cell in
                    ("" if c is None else c if hasattr(c, "__rich__") or hasattr(c, "__rich_console__")
                     else str(c) for c in row)])
    console().print(t)
