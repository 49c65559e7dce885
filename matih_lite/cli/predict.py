"""``matih-lite predict batch``: score a Parquet or CSV file with a deployment or a registered version.

Runs in this process, on this folder's registry and artifacts (see :mod:`matih_lite.serving.batch`):
it reads the registry (SQLite, shared safely with a running service) and the artifacts, never the
events store, so it may run beside ``matih-lite up`` in the same folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from matih_lite.cli import app
from matih_lite.cli.output import (
    ConfigOption,
    JsonOption,
    ProfileOption,
    console,
    escape,
    print_json,
)
from matih_lite.errors import InvalidInput

predict_app = typer.Typer(
    help="Score data with a deployed or registered model.\n\n"
         "Examples:\n\n"
         "  matih-lite predict batch --deployment churn --input data.parquet --output scored.parquet\n\n"
         "  matih-lite predict batch --model churn --version 3 --input data.csv --output scored.parquet",
    no_args_is_help=True)
app.add_typer(predict_app, name="predict")


@predict_app.command("batch")
def batch(
    input: Annotated[Path, typer.Option("--input", "-i", help="Parquet or CSV file (or a folder of Parquet files).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write: the input's columns plus "
                                         "prediction (and probability columns when the model gives them).")],
    deployment: Annotated[str | None, typer.Option("--deployment", "-d", help="Deployment whose primary version "
                                                   "scores the data.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Registered model (instead of --deployment).")]
    = None,
    version: Annotated[str | None, typer.Option("--version", help="Version number or alias of --model.")]
    = None,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", help="Rows scored at a time: memory stays flat "
                                            "whatever the input's size.", min=1)] = 50_000,
    columns: Annotated[str | None, typer.Option("--columns", help="Comma-separated input columns the model takes, "
                                                "in its order (default: its signature's).")] = None,
    prediction_column: Annotated[str, typer.Option("--prediction-column", help="Name of the added column.")]
    = "prediction",
    memory_limit: Annotated[str, typer.Option("--memory-limit", help="DuckDB's memory limit while reading.")]
    = "1GB",
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Score a file in chunks through DuckDB and Arrow into Parquet, with a progress bar."""
    from matih_lite.host import Host
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.serving.batch import load_scorer, score_batch

    if bool(deployment) == bool(model):
        raise InvalidInput("name either --deployment, or --model with --version")
    if model and not version:
        raise InvalidInput("--model needs --version (a number or an alias)")
    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    if os.environ.get("MATIH_URL"):
        # A remote service: the registry's artifacts are there, so each chunk goes through its predict route.
        if not deployment:
            raise InvalidInput("with MATIH_URL, score through a deployment (--deployment); --model --version scores "
                               "where the registry's artifacts are (unset MATIH_URL and run it in that folder)")
        from matih_lite.remote import ServiceHttp
        from matih_lite.serving.batch import ServiceScorer

        with ServiceHttp.from_env(config, user_agent="matih-lite-cli", timeout=300.0) as http:
            scorer = ServiceScorer(http, deployment, wanted)
            result = score_batch(scorer, input, output, chunk_rows, prediction_column=prediction_column,
                                 memory_limit=memory_limit) if json_out else \
                _with_progress(scorer, input, output, chunk_rows, prediction_column, memory_limit)
    else:  # this folder (a running up beside it is fine: scoring reads the registry and writes only the output)
        host = Host.open(config, profile)
        try:
            scorer = load_scorer(host, LOCAL_ADMIN, deployment=deployment, model=model, version=version,
                                 columns=wanted)
            if json_out:
                result = score_batch(scorer, input, output, chunk_rows, prediction_column=prediction_column,
                                     memory_limit=memory_limit)
            else:
                result = _with_progress(scorer, input, output, chunk_rows, prediction_column, memory_limit)
        finally:
            host.close()
    if json_out:
        import msgspec

        print_json({**msgspec.to_builtins(result), "model": scorer.description})
        return
    rate = result.rows / result.seconds if result.seconds else 0
    console().print(f"scored [bold]{result.rows:,}[/bold] rows with {escape(scorer.description)} in "
                    f"{result.seconds:.1f} s ({rate:,.0f} rows/s) -> {escape(result.output)} "
                    f"(added: {escape(', '.join(result.columns))})")


def _with_progress(scorer, input: Path, output: Path, chunk_rows: int, prediction_column: str,
                   memory_limit: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from matih_lite.serving.batch import score_batch

    with Progress(TextColumn("scoring {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console(stderr=True), transient=False) as bar:
        task = bar.add_task(escape(input.name), total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return score_batch(scorer, input, output, chunk_rows, progress=advance, prediction_column=prediction_column,
                           memory_limit=memory_limit)
