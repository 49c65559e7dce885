"""The CLI's --help teaches: every command documented, no short flag taken twice, markup never eats text."""

from __future__ import annotations

import click
import pytest
import typer
from typer.testing import CliRunner

from matih_lite.cli import load_commands


def commands(group: click.Command, path: tuple[str, ...] = ()):
    """Every (path, command) of the CLI, groups included."""
    yield path, group
    if isinstance(group, click.Group):
        for name, sub in group.commands.items():
            yield from commands(sub, (*path, name))


@pytest.fixture(scope="module")
def cli() -> click.Command:
    return typer.main.get_command(load_commands())


def test_no_command_gives_one_short_flag_two_meanings(cli):
    clashes = []
    for path, command in commands(cli):
        seen: dict[str, str] = {}
        for param in command.params:
            for flag in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
                if flag.startswith("-") and not flag.startswith("--"):
                    if flag in seen and seen[flag] != param.name:
                        clashes.append(f"{' '.join(path)}: {flag} is --{seen[flag]} and --{param.name}")
                    seen[flag] = param.name
    assert not clashes, clashes


def test_every_command_says_what_it_does(cli):
    missing = [" ".join(path) for path, command in commands(cli) if path and not (command.help or "").strip()]
    assert not missing, missing


def test_bracketed_words_survive_rich_markup_in_help():
    result = CliRunner().invoke(load_commands(), ["tune", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "with a [tune] table" in result.output
