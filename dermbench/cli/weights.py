"""`dermbench weights check|where`: check a release file before a long run; where dermbench looks for each."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dermbench.cli._app import app
from dermbench.cli.common import JSON_HELP, echo_json, error_text, fail, split_list

weights_app = typer.Typer(help="Backbone weights: check a file against a model, list where release files are looked for.",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("check")
def weights_check(
    path: Path = typer.Argument(..., help="The weights file (any suffix: the format is read from its content)."),
    model: str = typer.Option(..., "--model", "-m", help="Backbone key (dermbench list models)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " One item: the report."),
) -> None:
    """Format, keys mapped / missing / unexpected, shapes, architecture settings (position grid, registers,
    layer scale) against the built model, and the sha256. Exit status 1 when the file does not load."""
    from dermbench.models import registry
    from dermbench.models.weights import WeightsError
    from dermbench.models.weights_check import check_weights

    if model not in registry.available():
        fail(f"--model {model!r}: unknown model. Valid models: {', '.join(registry.available())}")
    if not path.is_file():
        fail(f"{path}: no such file (pass the downloaded weights file)")
    try:
        report = check_weights(model, path)
    except (WeightsError, KeyError, ValueError) as exc:
        fail(error_text(exc))
    if as_json:
        echo_json("weights check", [report.to_dict()])
    else:
        typer.echo(report.to_text())
    if not report.ok:
        raise typer.Exit(1)


@weights_app.command("where")
def weights_where(
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Only these models (default: every model with a release file)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " One item per model."),
) -> None:
    """Per model: the release's file names, its sources, where dermbench looks, and what it finds on this machine."""
    from dermbench.models import registry
    from dermbench.models.weights_check import where_weights

    keys = split_list(model)
    for key in keys or []:
        if key not in registry.available():
            fail(f"--model {key!r}: unknown model. Valid models: {', '.join(registry.available())}")
    rows = where_weights(keys)
    if as_json:
        echo_json("weights where", rows)
        return
    for row in rows:
        status = f"FOUND {row['found']} ({row['found_via']})" if row["found"] else (
            f"PROBLEM {row['problem']}" if row["problem"] else "not found")
        typer.echo(f"{row['model']}\n  files   {', '.join(row['files'])}\n  source  {row['source']}")
        if row["hub"]:
            typer.echo(f"  hub     {', '.join(row['hub'])} (local Hugging Face cache)")
        typer.echo(f"  put in  {row['folder']}/  or  --weights PATH  or  {row['env']}=PATH\n  status  {status}")
