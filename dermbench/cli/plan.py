"""`dermbench plan` (the jobs a run would execute, and which are done) and `dermbench status` (per job of
the runs recorded in a results folder: done / running / failed / missing, with the log of each failure)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dermbench.cli._app import app
from dermbench.cli.benchmark import settings_from_options
from dermbench.cli.common import (JSON_HELP, OLD_RESULTS_HELP, RESULTS_HELP, default_results, echo_json, error_text, fail,
                                  results_option)


def _describe(job) -> str:
    if job.stage == "features":
        return "extract " + ", ".join(f"{n.describe()} (batch {n.batch_size})" for n in job.features)
    reads = ", ".join(n.describe() for n in job.features)
    return f"run {job.protocol} on {reads}" if reads else f"run {job.protocol}"


def _print_states(states, as_json: bool, header: str, command: str) -> None:
    if as_json:
        echo_json(command, [{**s.job.to_dict(), "state": s.state, "detail": s.detail, "log": s.log} for s in states])
        return
    typer.echo(header)
    width = max((len(s.job.id) for s in states), default=10)
    for s in states:
        line = f"{s.state:<8} {s.job.stage:<9} {s.job.id:<{width}}  {_describe(s.job)}"
        if s.detail:
            line += f"  [{s.detail}]"
        typer.echo(line)
        if s.log:
            typer.echo(f"{'':<8} log: {s.log}")
    counts = {k: sum(s.state == k for s in states) for k in ("done", "running", "failed", "missing")}
    typer.echo(", ".join(f"{v} {k}" for k, v in counts.items()))


@app.command("plan")
def plan_cmd(
    model: List[str] = typer.Option(..., "--model", "-m", help="Backbone key(s); repeat or comma-separate."),
    task: str = typer.Option("all", "--task", "-t", help="Task name(s), a group, 'classification' or 'all'."),
    protocol: Optional[List[str]] = typer.Option(None, "--protocol", "-p", help="Protocol(s); default: each task card's."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the datasets (as for `run`)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Weights file, or 'random'."),
    results: Optional[Path] = typer.Option(None, "--results", help="Results folder whose jobs are checked (as for `run`)."),
    old_output: Optional[Path] = typer.Option(None, "--output", "-o", hidden=True, help=OLD_RESULTS_HELP),
    seed: str = typer.Option("0", "--seed", help="Seed(s) of the trained heads (as for `run`): one job per seed."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the train/test split and resamples (as for `run`)."),
    split: str = typer.Option("default", "--split", help="default | official"),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap replicates (as for `run`; part of each result's key)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Protocol setting, e.g. --set linear.epochs=20."),
    synth_scale: float = typer.Option(1.0, "--synth-scale", help="DermSynth size multiplier (as for `run`)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="Only the jobs of shard K/N."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " One item per job, with its state."),
) -> None:
    """List the jobs `dermbench run` would execute with these options (features, then protocols) and their state."""
    from dermbench.run.executors import parse_shard, select_shard
    from dermbench.run.plan import job_states, plan, results_dir_of

    output = results_option(results, old_output)
    settings = settings_from_options(model, task, protocol, data_root, weights, output, seed, split_seed, "cpu", False,
                                     split, n_boot, set_, synth_scale, True)
    try:
        jobs = plan(settings, log=lambda line: typer.echo(line, err=True))
        if shard:
            jobs = select_shard(jobs, parse_shard(shard))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        fail(error_text(exc))
    results = results_dir_of(settings)
    _print_states(job_states(results, jobs), as_json, f"{len(jobs)} job(s); results: {results}", "plan")


@app.command()
def status(
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " One item per job, with its state."),
) -> None:
    """Per job of the runs recorded in a results folder: done / running / failed / missing (and failures' logs)."""
    from dermbench.run.plan import job_states, jobs_dir, saved_jobs

    results = results or default_results()
    if not results.is_dir():
        fail(f"results folder {results} does not exist; run `dermbench run ...` first or pass --results")
    jobs = saved_jobs(results)
    if not jobs:
        fail(f"no run plan recorded in {jobs_dir(results) / 'plans'}; `dermbench run` records one when it starts")
    _print_states(job_states(results, jobs), as_json, f"{len(jobs)} job(s) in {results}", "status")
