"""`dermbench calibration`, `dermbench skin-tone`, and `dermbench fairness --threshold` (operating point)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dermbench.cli._app import app
from dermbench.cli.common import RESULTS_HELP, default_results, error_text, fail, reading_the_store, split_list


def _results(results: Optional[Path]) -> Path:
    results = results or default_results()
    if not results.is_dir():
        fail(f"results folder {results} does not exist; run `dermbench run ...` first or pass --results")
    return results


def _tasks(task: Optional[str]) -> Optional[list[str]]:
    if task is None:
        return None
    from dermbench.data.tasks import select_tasks

    out = []
    for part in split_list([task]) or []:
        try:
            out += [c.name for c in select_tasks(part)]
        except KeyError:
            out.append(part)
    return out


@app.command()
def calibration(
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Result label(s); default: all."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task(s) or group; default: all classification tasks."),
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="Only this protocol (e.g. linear); default: all."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the long table as CSV here."),
) -> None:
    """ECE (equal-width, equal-mass), classwise ECE, Brier, NLL with bootstrap CIs; temperature scaling before/after."""
    from dermbench.io import atomic_write_text
    from dermbench.report.calibration import calibration_table, format_calibration
    from dermbench.run.results import describe_store, iter_results

    results = _results(results)
    models, tasks, protocols = split_list(model), _tasks(task), split_list([protocol] if protocol else None)
    records = [r for r in iter_results(results) if (not models or r["model"] in models)
               and (not tasks or r["task"] in tasks) and (not protocols or r["protocol"] in protocols)]
    with reading_the_store():
        table, _ = calibration_table(results, records)
    if table.empty:  # never an empty report with exit 0: say why and what the folder holds
        if not records:
            fail(f"calibration: no stored result matches --model/--task/--protocol; {results} holds "
                 f"{describe_store(list(iter_results(results)))}")
        fail(f"calibration: none of the {len(records)} matching results is a classification result with one "
             f"prediction per test image ({describe_store(records)}); calibration reads the classification "
             "results of the retrieval and linear protocols")
    typer.echo(format_calibration(table))
    if csv is not None:
        atomic_write_text(csv, table.to_csv(index=False))
        typer.echo(f"wrote {csv}", err=True)


def operating_point_command(results, model, task, protocol, attribute, min_samples, csv, threshold, intersectional) -> None:
    """`dermbench fairness --threshold ...`: fairness at an operating point (dermbench.report.operating_point)."""
    from dermbench.io import atomic_write_text
    from dermbench.report.operating_point import DEFAULT_ATTRIBUTES, format_operating_point, operating_point_table
    from dermbench.stats.operating_point import parse_rule

    results = _results(results)
    try:
        parse_rule(threshold)
    except ValueError as exc:
        fail(f"--threshold: {exc}")
    attributes = split_list([attribute]) if attribute else list(DEFAULT_ATTRIBUTES)
    with reading_the_store():
        table = operating_point_table(results, rule=threshold, attributes=attributes, intersectional=intersectional,
                                      min_samples=min_samples, models=split_list(model), tasks=_tasks(task),
                                      protocols=split_list([protocol] if protocol else None))
    if table.empty:  # never an empty report with exit 0: say why and what the folder holds
        from dermbench.run.results import describe_store, iter_results

        fail("fairness --threshold: no matching result has both held-out training scores (the "
             "<protocol>.calibration.csv that linear and retrieval store; rerun older results with --overwrite) and "
             f"subgroup columns for {', '.join(attributes)} (--attribute); {results} holds "
             f"{describe_store(list(iter_results(results)))}")
    typer.echo(format_operating_point(table))
    if csv is not None:
        atomic_write_text(csv, table.to_csv(index=False))
        typer.echo(f"wrote {csv}", err=True)


@app.command("skin-tone")
def skin_tone(
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task(s); default: every classification task stored."),
    include_labelled: bool = typer.Option(False, "--include-labelled", help="Also tasks that have Fitzpatrick labels."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute existing estimates."),
) -> None:
    """Estimate skin tone (ITA from CIELAB of non-lesion skin) of the test images; stored as group_ita_estimated."""
    from dermbench.run.skin_tone import estimate_store

    results = _results(results)
    try:
        written = estimate_store(results, _tasks(task), include_labelled, overwrite, log=lambda m: typer.echo(m, err=True))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        fail(error_text(exc))
    for path in written:
        typer.echo(f"wrote {path}", err=True)
