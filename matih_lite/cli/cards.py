"""``matih-lite models card``, ``card-edit`` and ``evaluate``: model cards from the terminal.

The ``models`` group belongs to the registry's commands (:mod:`matih_lite.cli.registry`); these
commands join it. Everything goes through :class:`~matih_lite.registry.cards.CardClient`: this
folder's store, or the ml-service at ``MATIH_URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json, table
from matih_lite.cli.registry import models_app
from matih_lite.errors import InvalidInput, NotFound




def _client(config: str | None, profile: str | None):
    from matih_lite.registry.cards import CardClient

    return CardClient(config=config, profile=profile)


@models_app.command("card")
def card(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Version number.", min=1)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="md, json or html.")] = "md",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")] = None,
    config: ConfigOption = None, profile: ProfileOption = None,
) -> None:
    """Print a version's model card: use, training data, metrics with confidence intervals, fairness, history.

    Example: matih-lite models card churn 3 --format html -o churn-v3.html
    """
    with _client(config, profile) as client:
        text = client.card(name, version, fmt)
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
    else:
        output.write_text(text, encoding="utf-8")
        console(stderr=True).print(f"wrote the card of {escape(name)} v{version} to {escape(str(output))}")


@models_app.command("card-edit")
def card_edit(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Version number.", min=1)],
    description: Annotated[str | None, typer.Option(help="What the model does.")] = None,
    intended_use: Annotated[str | None, typer.Option("--intended-use", help="Who should use it, for what.")] = None,
    limitations: Annotated[str | None, typer.Option(help="Where it should not be trusted.")] = None,
    ethical_considerations: Annotated[str | None, typer.Option("--ethical-considerations",
                                                               help="Risks, affected groups, mitigations.")] = None,
    from_file: Annotated[list[str] | None, typer.Option("--from-file", help="FIELD=PATH: read a field from a "
                                                                           "(Markdown) file; repeatable.")] = None,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Edit a card's free text; fields not given stay as they are, "" clears one.

    Example: matih-lite models card-edit churn 3 --intended-use "Rank accounts for retention calls"
    """
    fields: dict[str, Any] = {"description": description, "intended_use": intended_use,
                              "limitations": limitations, "ethical_considerations": ethical_considerations}
    for item in from_file or []:
        key, sep, path = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise InvalidInput(f"--from-file takes FIELD=PATH with FIELD one of {', '.join(fields)}; got {item!r}")
        try:
            fields[key] = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"no file {path} to read {key} from") from None
    if all(v is None for v in fields.values()):
        raise InvalidInput("nothing to edit: give --description, --intended-use, --limitations, "
                           "--ethical-considerations or --from-file")
    with _client(config, profile) as client:
        updated = client.edit(name, version, **fields)
    if json_out:
        print_json(updated)
    else:
        changed = ", ".join(k.replace("_", " ") for k, v in fields.items() if v is not None)
        console().print(f"updated the card of [bold]{escape(name)}[/bold] v{version}: {escape(changed)}")


@models_app.command("evaluate")
def evaluate(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Version number.", min=1)],
    data: Annotated[Path, typer.Option("--data", "-d", help="Labelled evaluation set (.csv or .parquet).",
                                       exists=True, dir_okay=False)],
    target: Annotated[str, typer.Option("--target", "-y", help="Column holding the true labels.")],
    protected: Annotated[list[str] | None, typer.Option("--protected", "-P", help="Column of a protected "
                                                        "attribute to measure fairness across; repeatable.")] = None,
    keep_protected: Annotated[bool, typer.Option("--keep-protected", help="The model also takes the protected "
                                                 "columns as features.")] = False,
    drop: Annotated[list[str] | None, typer.Option("--drop", help="Column that is not a feature; repeatable.")] = None,
    positive_label: Annotated[str | None, typer.Option("--positive-label", help="Positive class (binary).")] = None,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples.", min=1, max=20_000)] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Evaluate a version on labelled data: metrics with bootstrap CIs and fairness by group, kept for its card.

    Example: matih-lite models evaluate churn 3 --data holdout.csv --target churned --protected sex
    """
    from matih_lite.registry.cards import read_table

    frame = read_table(data.read_bytes(), data.name)
    protected = list(protected or [])
    missing = [c for c in [target, *protected, *(drop or [])] if c not in frame.columns]
    if missing:
        columns = ", ".join(map(str, frame.columns))
        raise InvalidInput(f"{data.name} has no column {missing[0]!r}; its columns: {columns}")
    not_features = {target, *(drop or []), *([] if keep_protected else protected)}
    X = frame[[c for c in frame.columns if c not in not_features]]
    groups = {c: frame[c].astype(str).tolist() for c in protected}
    label: Any = positive_label
    if label is not None and frame[target].dtype.kind in "iu" and label.lstrip("-").isdigit():
        label = int(label)
    with _client(config, profile) as client:
        ev = client.evaluate(name, version, X, frame[target], protected=groups or None, positive_label=label,
                             n_resamples=resamples, seed=seed, dataset={"name": data.name})
    if json_out:
        print_json(ev)
        return
    pct = f"{100 * ev['bootstrap']['confidence']:g}% CI"
    table(f"{name} v{version} on {data.name} ({ev['n_samples']} rows)", ["metric", "value", pct],
          [(k, _num(m["value"]), f"[{_num(m['ci_low'])}, {_num(m['ci_high'])}]") for k, m in ev["metrics"].items()])
    for attr, f in ev["fairness"].items():
        rows = [(k.replace("_", " "), _num(f[k]["value"]), f"[{_num(f[k]['ci_low'])}, {_num(f[k]['ci_high'])}]")
                for k in ("demographic_parity_difference", "equalized_odds_difference") if k in f]
        for g, e in f["groups"].items():
            headline = "accuracy" if "accuracy" in e["metrics"] else "r2"
            m = e["metrics"][headline]
            rows.append((f"group {g} (n={e['count']}) {headline}", _num(m["value"]),
                         f"[{_num(m['ci_low'])}, {_num(m['ci_high'])}]"))
        table(f"fairness across {attr}", ["measure", "value", pct], rows)


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4f}"

