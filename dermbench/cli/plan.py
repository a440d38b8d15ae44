"""`dermbench plan` (the jobs a run would execute, and which are done) and `dermbench status` (per job of
the runs recorded in a results folder: done / running / failed / missing, with the log of each failure)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from dermbench.cli._app import app
from dermbench.cli.benchmark import settings_from_options
from dermbench.cli.common import default_results, error_text, fail


def _describe(job) -> str:
    if job.stage == "features":
        return "extract " + ", ".join(f"{n.describe()} (batch {n.batch_size})" for n in job.features)
    reads = ", ".join(n.describe() for n in job.features)
    return f"run {job.protocol} on {reads}" if reads else f"run {job.protocol}"


def _print_states(states, as_json: bool, header: str) -> None:
    if as_json:
        typer.echo(json.dumps([{**s.job.to_dict(), "state": s.state, "detail": s.detail, "log": s.log} for s in states],
                              indent=2))
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
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Results folder (as for `run`)."),
    seed: str = typer.Option("0", "--seed", help="Seed(s) of the trained heads (as for `run`): one job per seed."),
    split_seed: int = typer.Option(0, "--split-seed"),
    split: str = typer.Option("default", "--split", help="default | official"),
    n_boot: int = typer.Option(1000, "--n-boot"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Protocol setting, e.g. --set linear.epochs=20."),
    synth_scale: float = typer.Option(1.0, "--synth-scale"),
    shard: Optional[str] = typer.Option(None, "--shard", help="Only the jobs of shard K/N."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable: one record per job with its state."),
) -> None:
    """List the jobs `dermbench run` would execute with these options (features, then protocols) and their state."""
    from dermbench.run.executors import parse_shard, select_shard
    from dermbench.run.plan import job_states, plan, results_dir_of

    settings = settings_from_options(model, task, protocol, data_root, weights, output, seed, split_seed, "cpu", False,
                                     split, n_boot, set_, synth_scale, True)
    try:
        jobs = plan(settings, log=lambda line: typer.echo(line, err=True))
        if shard:
            jobs = select_shard(jobs, parse_shard(shard))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        fail(error_text(exc))
    results = results_dir_of(settings)
    _print_states(job_states(results, jobs), as_json, f"{len(jobs)} job(s); results: {results}")


@app.command()
def status(
    results: Optional[Path] = typer.Option(None, "--results", help="Results folder (default as for `leaderboard`)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Per job of the runs recorded in a results folder: done / running / failed / missing (and failures' logs)."""
    from dermbench.run.plan import job_states, jobs_dir, saved_jobs

    results = results or default_results()
    if not results.is_dir():
        fail(f"results folder {results} does not exist; run `dermbench run ...` first or pass --results")
    jobs = saved_jobs(results)
    if not jobs:
        fail(f"no run plan recorded in {jobs_dir(results) / 'plans'}; `dermbench run` records one when it starts")
    _print_states(job_states(results, jobs), as_json, f"{len(jobs)} job(s) in {results}")
