"""`dermbench leaderboard`, `compare` and `fairness`: reports from a results store."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from dermbench.cli._app import app
from dermbench.cli.common import RESULTS_HELP, default_results, fail, parse_overrides, reading_the_store, split_list

# Selecting one result per (model, task, protocol) when a results folder holds several (see
# dermbench.run.identity.SELECTION_RULE): the same options on leaderboard, compare and fairness.
SEED_HELP = "Head seed(s) of the results to show: 0, or 0,1,2 (the first is shown, the others give the spread over seeds)."
SPLIT_SEED_HELP = "Only results on the split (and resamples) of this split seed."
N_BOOT_HELP = "Only results with this many bootstrap replicates."
SPLIT_HELP = "Only results on this split: default | official."
SET_HELP = "Only results made with this protocol setting, e.g. --set linear.epochs=20."
KEY_HELP = "Only the result(s) whose key starts with this (see `dermbench results list`)."
ALLOW_MISSING_HELP = ("When a result's bootstrap (or predictions) file is missing, show its cells with ° (no paired "
                      "test) and list the file in the notes, instead of stopping with the `dermbench run` line that "
                      "makes it again.")


def selection_from(seed: Optional[str], split_seed: Optional[int], n_boot: Optional[int], split: Optional[str],
                   set_: Optional[List[str]], key: Optional[str]):
    """The selection options as a :class:`dermbench.run.identity.Selection` (a clear error for bad values)."""
    from dermbench.cli.benchmark import parse_seeds
    from dermbench.run.identity import Selection

    if split is not None and split not in ("default", "official"):
        fail(f"--split {split!r}: expected 'default' or 'official'")
    if n_boot is not None and n_boot < 1:
        fail(f"--n-boot {n_boot}: expected a positive number of replicates")
    return Selection(seeds=parse_seeds(seed) if seed is not None else None, split_seed=split_seed, n_boot=n_boot,
                     split=split, settings=parse_overrides(set_), key=key)


@app.command()
def leaderboard(
    results: Optional[Path] = typer.Option(None, "--results", help="Results folder (default: results/dermsynth if no data root is configured, else results/)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="md | csv | latex | html | all. Without it: compact tables "
                                      "fitted to the terminal are printed (and md files written with --out); with it, "
                                      "the full markdown tables are printed."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write the tables and figures to."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Recompute every metric from the stored predictions."),
    task: Optional[List[str]] = typer.Option(None, "--task", "-t", help="Only these tasks or task groups (comma list; also classification, all), e.g. ddi,malignancy."),
    protocol: Optional[List[str]] = typer.Option(None, "--protocol", "-p", help="Only these protocols (comma list), e.g. linear,retrieval."),
    metric: Optional[List[str]] = typer.Option(None, "--metric", help="Tables on these metrics (comma list), e.g. auroc,f1; default in the terminal: each group's main metric."),
    allow_missing_bootstrap: bool = typer.Option(False, "--allow-missing-bootstrap", help=ALLOW_MISSING_HELP),
    seed: Optional[str] = typer.Option(None, "--seed", help=SEED_HELP),
    split_seed: Optional[int] = typer.Option(None, "--split-seed", help=SPLIT_SEED_HELP),
    n_boot: Optional[int] = typer.Option(None, "--n-boot", help=N_BOOT_HELP),
    split: Optional[str] = typer.Option(None, "--split", help=SPLIT_HELP),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    key: Optional[str] = typer.Option(None, "--key", help=KEY_HELP),
) -> None:
    """Leaderboard from the results store: compact tables fitted to the terminal (one per task group and
    protocol, on the group's main metric), or with --format the full tables (and figures with --out).

    One result per (model, task, protocol): the paper's defaults unless filtered (--seed, --set, ...).
    A JSON in the results folder that is not a readable result is skipped with a warning (and noted);
    a missing bootstrap file that a paired test (†) needs stops the command (see --allow-missing-bootstrap)."""
    import shutil

    from dermbench.report.leaderboard import build_leaderboard
    from dermbench.run.results import forget_warnings

    forget_warnings()
    results = results or default_results()
    if not results.is_dir():
        fail(f"results folder {results} does not exist; run `dermbench run ...` first or pass --results")
    formats = ("md", "csv", "latex", "html") if fmt == "all" else ("md",) if fmt is None else (fmt,)
    selection = selection_from(seed, split_seed, n_boot, split, set_, key)
    metrics = split_list(metric)
    # --rebuild recomputes from every file: --allow-missing-bootstrap cannot help it, so it is not offered
    with reading_the_store((FileNotFoundError, ValueError), allow_missing_option=not rebuild):
        built = build_leaderboard(results, out, formats=formats, rebuild=rebuild, selection=selection,
                                  tasks=split_list(task), protocols=split_list(protocol), metrics=metrics,
                                  allow_missing_bootstrap=allow_missing_bootstrap)
    if fmt is None:
        from dermbench.report.terminal import compact_tables, to_terminal

        width = shutil.get_terminal_size().columns  # COLUMNS when set, else the terminal's, else 80
        typer.echo(to_terminal(compact_tables(built["tables"], built["kinds"], metrics), width, built["notes"]), nl=False)
    else:
        typer.echo(built["markdown"])
    for note in built["notes"]:
        if "--allow-missing-bootstrap" in note:  # skipped files were warned about when read
            typer.echo(f"warning: {note}", err=True)
    for path in built.get("paths", []):
        typer.echo(f"wrote {path}", err=True)


@app.command()
def compare(
    model: List[str] = typer.Option(..., "--model", "-m", help="Exactly two result labels (e.g. dermino-tiny random-vit)."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task(s) or group; default: all tasks both models have."),
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="Only this protocol (e.g. linear); default: every protocol both models have."),
    metric: str = typer.Option("auroc", "--metric", help="Metric compared (auroc, accuracy, dice, ...); rows without it are left out."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level (Holm-adjusted across the table's rows)."),
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    claim_boot: Optional[int] = typer.Option(None, "--claim-boot", help="Paired-bootstrap replicates for claim rows no analytical test covers (default: 20·rows/alpha, drawn automatically)."),
    seed: Optional[str] = typer.Option(None, "--seed", help=SEED_HELP),
    split_seed: Optional[int] = typer.Option(None, "--split-seed", help=SPLIT_SEED_HELP),
    n_boot: Optional[int] = typer.Option(None, "--n-boot", help=N_BOOT_HELP),
    split: Optional[str] = typer.Option(None, "--split", help=SPLIT_HELP),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    key: Optional[str] = typer.Option(None, "--key", help=KEY_HELP),
) -> None:
    """Paired comparison of two models: DeLong, McNemar, Wilcoxon, paired bootstrap, the paper's t-test; a
    Holm-corrected claim over the rows with tests that can reach the corrected level."""
    from dermbench.report.compare import ComparisonError, compare_models, format_comparison
    from dermbench.data.tasks import select_tasks
    from dermbench.run.results import forget_warnings

    forget_warnings()
    models = split_list(model) or []
    if len(models) != 2:
        fail(f"compare needs exactly two --model values, got {models}")
    if not 0 < alpha < 1:
        fail(f"--alpha must lie between 0 and 1, got {alpha}")
    with reading_the_store((ComparisonError, KeyError, ValueError)):
        tasks = [c.name for c in select_tasks(task)] if task else None
        table = compare_models(results or default_results(), models[0], models[1], tasks=tasks, metric=metric,
                               protocol=protocol, alpha=alpha, claim_boot=claim_boot,
                               selection=selection_from(seed, split_seed, n_boot, split, set_, key))
    typer.echo(format_comparison(table))


@app.command()
def fairness(
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Result label(s); default: all."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task(s) or group; default: all with subgroups."),
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="Only this protocol (e.g. linear); default: all."),
    attribute: Optional[str] = typer.Option(None, "--attribute", "-a", help="skin_type, sex, ... (default: all present)."),
    metric: str = typer.Option("auroc", "--metric", help="Metric per subgroup (auroc, accuracy, ...)."),
    min_samples: int = typer.Option(10, "--min-samples", help="Subgroups with fewer test samples are reported, not scored."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the table as CSV here."),
    threshold: Optional[str] = typer.Option(None, "--threshold", help="Operating point from held-out training scores: youden | sensitivity=0.9 (TPR/FPR/PPV, EOD, worst-group AUROC per subgroup)."),
    intersectional: bool = typer.Option(False, "--intersectional", help="With --threshold: also skin type × sex groups."),
    seed: Optional[str] = typer.Option(None, "--seed", help=SEED_HELP),
    split_seed: Optional[int] = typer.Option(None, "--split-seed", help=SPLIT_SEED_HELP),
    n_boot: Optional[int] = typer.Option(None, "--n-boot", help=N_BOOT_HELP),
    split: Optional[str] = typer.Option(None, "--split", help=SPLIT_HELP),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    key: Optional[str] = typer.Option(None, "--key", help=KEY_HELP),
) -> None:
    """Per-subgroup metrics (Fitzpatrick skin type, sex, ...) with bootstrap CIs and the largest gap."""
    if threshold is not None:  # fairness at an operating point: dermbench.cli.calibration
        if any(v is not None for v in (seed, split_seed, n_boot, split, set_, key)):
            fail("--threshold reads the default result of each cell; it does not take --seed, --split-seed, --n-boot, "
                 "--split, --set or --key yet: drop them, or keep only the wanted results in the folder")
        from dermbench.cli.calibration import operating_point_command

        return operating_point_command(results, model, task, protocol, attribute, min_samples, csv, threshold, intersectional)
    from dermbench.report.fairness import fairness_table, format_fairness
    from dermbench.io import atomic_write_text
    from dermbench.run.results import forget_warnings

    forget_warnings()
    results = results or default_results()
    if not results.is_dir():
        fail(f"results folder {results} does not exist; run `dermbench run ...` first or pass --results")
    with reading_the_store():
        table = fairness_table(results, model=split_list(model), task=task, metric=metric, protocol=protocol,
                               attribute=attribute, min_samples=min_samples,
                               selection=selection_from(seed, split_seed, n_boot, split, set_, key), empty_is_error=True)
    typer.echo(format_fairness(table))
    if csv is not None:
        atomic_write_text(csv, table.to_csv(index=False))
        typer.echo(f"wrote {csv}", err=True)
