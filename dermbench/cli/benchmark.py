"""`dermbench list` and `dermbench run`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dermbench.cli._app import app
from dermbench.cli.common import (DEVICE_HELP, JSON_HELP, OLD_RESULTS_HELP, default_results, device_option, echo_json,
                                  error_text, fail, parse_overrides, results_option, split_list)


LISTABLE = {  # what `dermbench list` can list, with the sentence shown when no argument is given
    "models": "registered backbones (DermINO, the baselines, the test models and plugins)",
    "tasks": "task cards: dataset, group, classes, protocols, source",
    "protocols": "evaluation protocols (--protocol of run)",
}


@app.command("list")
def list_cmd(
    what: Optional[str] = typer.Argument(None, help="What to list: models | tasks | protocols (none: these choices)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List registered backbones, task cards or protocols; with no argument, what can be listed."""
    if what is None:
        counts = _listable_counts()
        if as_json:
            echo_json("list", [{"name": k, "count": counts[k], "description": v} for k, v in LISTABLE.items()])
            return
        typer.echo("dermbench list WHAT, where WHAT is one of:")
        for k, v in LISTABLE.items():
            typer.echo(f"  {k:<10} {counts[k]:>3} {v}")
        return
    if what == "models":
        from dermbench.models import registry

        rows = [registry.get(k).meta.to_dict() for k in registry.available()]
        errors = registry.discovery_errors()
        if as_json:
            echo_json("list models", rows, [f"plugin {name!r} failed to load: {err}" for name, err in errors.items()])
            return
        for r in rows:
            grid = f"grid {r['grid'][0]}x{r['grid'][1]}" if r["grid"] else "CNN"
            typer.echo(f"{r['key']:<18} {r['architecture'][:44]:<44} dim {r['embed_dim']:<5} {r['input_size']}px {grid:<10} "
                       f"licence: {r['licence'][:30]}")
        for name, err in errors.items():
            typer.secho(f"plugin {name!r} failed to load: {err}", fg=typer.colors.YELLOW, err=True)
    elif what == "tasks":
        from dermbench.data.tasks import load_cards

        cards = load_cards()
        if as_json:
            echo_json("list tasks", [{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(c).items() if k != "path"}
                                     for c in cards.values()])
            return
        for c in cards.values():
            classes = f"{c.num_classes} classes" if c.classes else c.group
            typer.echo(f"{c.name:<18} {c.group:<15} {classes:<15} protocols: {', '.join(c.protocols):<24} {c.source}")
    elif what == "protocols":
        from dermbench.protocols import is_available, names

        if as_json:
            echo_json("list protocols", [{"name": n, "available": is_available(n)} for n in names()])
            return
        for n in names():
            typer.echo(n if is_available(n) else f"{n}  (not installed here)")
    else:
        fail(f"cannot list {what!r}; choose {', '.join(LISTABLE)} (or `dermbench list` to see them)")


def _listable_counts() -> dict[str, int]:
    from dermbench.data.tasks import load_cards
    from dermbench.models import registry
    from dermbench.protocols import names

    return {"models": len(registry.available()), "tasks": len(load_cards()), "protocols": len(names())}


def parse_seeds(text: str) -> list[int]:
    """``--seed`` as a list: ``3``, ``0,1,2``, a range ``0-4`` (inclusive), or a mix ``0,5-7``."""
    seeds: list[int] = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        try:
            if "-" in part and not part.startswith("-"):
                low, high = (int(x) for x in part.split("-", 1))
                if high < low:
                    raise ValueError
                seeds += list(range(low, high + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            fail(f"--seed {text!r}: expected a seed (0), a list (0,1,2) or a range (0-4) of non-negative integers")
    if not seeds or any(s < 0 for s in seeds):
        fail(f"--seed {text!r}: expected a seed (0), a list (0,1,2) or a range (0-4) of non-negative integers")
    return list(dict.fromkeys(seeds))


def settings_from_options(model, task, protocol, data_root, weights, output, seed, split_seed, device, overwrite, split,
                          n_boot, set_, synth_scale, quiet, workers=None, precision="auto", draft_decode=False):
    """RunSettings from the options `run` and `plan` share; a bad value exits with its one-line error."""
    from dermbench.data.tasks import select_tasks
    from dermbench.models import registry
    from dermbench.protocols import check_name as check_protocol_name
    from dermbench.run.runner import RunSettings

    models = split_list(model) or []
    for m in models:
        try:
            registry.get(m)
        except KeyError as exc:
            fail(str(exc.args[0]))
    protocols = split_list(protocol)
    for p in protocols or []:
        try:
            check_protocol_name(p)
        except KeyError as exc:
            fail(error_text(exc))
    try:
        select_tasks(task)
    except KeyError as exc:
        fail(str(exc.args[0]))
    seeds = parse_seeds(seed)
    if split not in ("default", "official"):
        fail(f"--split {split!r}: expected 'default' or 'official'")
    if n_boot < 10:
        fail(f"--n-boot {n_boot}: a percentile 95% CI needs at least 10 bootstrap replicates (default 1000; "
             "the paper's numbers use 1000)")
    if synth_scale <= 0:
        fail(f"--synth-scale {synth_scale}: expected a positive size multiplier for DermSynth (default 1.0)")
    from dermbench.features import PRECISIONS
    from dermbench.protocols import validate_overrides

    if precision not in PRECISIONS:
        fail(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if workers is not None and workers < 0:
        fail(f"--workers {workers}: expected 0 or more decode processes")
    overrides = parse_overrides(set_)
    try:
        validate_overrides(overrides)  # names, types and ranges of every --set, before any work
    except (KeyError, ValueError) as exc:
        fail(error_text(exc))
    return RunSettings(models=models, tasks=task, protocols=protocols, data_root=data_root, weights=weights,
                       output=output, seed=seeds[0], seeds=seeds, split_seed=split_seed, device=device,
                       overwrite=overwrite, n_boot=n_boot,
                       split_mode=split, overrides=overrides, progress=not quiet,
                       synth_scale=synth_scale, workers=workers, precision=precision, draft_decode=draft_decode)


def jobs_option(jobs: str, device: str) -> int:
    """``--jobs N|auto`` as a number of local worker processes (auto: :func:`executors.auto_jobs`)."""
    from dermbench.run.executors import auto_jobs

    if jobs == "auto":
        return auto_jobs(device)
    try:
        n = int(jobs)
    except ValueError:
        n = 0
    if n < 1:
        fail(f"--jobs {jobs!r}: expected a number of worker processes >= 1 (1: this process only), or 'auto'")
    return n


def executor_from_options(executor, shard, slurm_partition, slurm_gpus, slurm_time, slurm_mem,
                          slurm_array_parallelism, slurm_setting, wait, slurm_group_by="task", jobs=1):
    """None (run here), a ParallelExecutor, a ShardExecutor or a SlurmExecutor; a bad value exits with its
    one-line error."""
    from dermbench.run import executors as ex

    if executor not in ("local", "slurm"):
        fail(f"--executor {executor!r}: expected 'local' or 'slurm'")
    if jobs > 1 and (shard or executor == "slurm"):
        fail(f"--jobs {jobs} runs worker processes on this machine; with {'--shard' if shard else '--executor slurm'} "
             "the processes are the launcher's (more shards, or --slurm-array-parallelism): drop --jobs")
    if shard and executor == "slurm":
        fail("--shard splits a run over processes you launch (srun, torchrun); --executor slurm submits job arrays "
             "itself: give one or the other")
    try:
        if shard:
            return ex.ShardExecutor(ex.parse_shard(shard))
        if executor == "local":
            return ex.ParallelExecutor(jobs) if jobs > 1 else None
        import importlib.util

        if importlib.util.find_spec("submitit") is None:
            fail("--executor slurm needs submitit: pip install 'dermbench[cluster]'")
        if slurm_gpus < 0 or slurm_array_parallelism < 1:
            fail("--slurm-gpus must be >= 0 and --slurm-array-parallelism >= 1")
        if slurm_group_by not in ("task", "model"):
            fail(f"--slurm-group-by {slurm_group_by!r}: expected 'task' (one array task per model × task) or 'model'")
        return ex.SlurmExecutor(ex.SlurmOptions(
            partition=slurm_partition, gpus=slurm_gpus, time_min=ex.parse_slurm_time(slurm_time), mem=slurm_mem,
            array_parallelism=slurm_array_parallelism, settings=ex.parse_slurm_settings(slurm_setting), wait=wait,
            group_by=slurm_group_by))
    except ValueError as exc:
        fail(error_text(exc))


@app.command()
def run(
    model: List[str] = typer.Option(..., "--model", "-m", help="Backbone key(s); repeat or comma-separate."),
    task: str = typer.Option("all", "--task", "-t", help="Task name(s), a group, 'classification' or 'all'."),
    protocol: Optional[List[str]] = typer.Option(None, "--protocol", "-p", help="Protocol(s); default: each task card's."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the datasets (default: $DERMBENCH_DATA_ROOT, the config file, else DermSynth)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Weights file, or 'random' for the untrained architecture."),
    results: Optional[Path] = typer.Option(None, "--results", help="Results folder to write to (default results/, or results/dermsynth on DermSynth)."),
    old_output: Optional[Path] = typer.Option(None, "--output", "-o", hidden=True, help=OLD_RESULTS_HELP),
    seed: str = typer.Option("0", "--seed", help="Seed(s) of the trained heads: 0, 0,1,2 or a range 0-4; one result per seed, all on the same split."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the train/test split and of the shared bootstrap resamples."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute results that already exist."),
    split: str = typer.Option("default", "--split", help="default (the paper's seeded splits) | official"),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap replicates."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Protocol setting, e.g. --set linear.epochs=20."),
    synth_scale: float = typer.Option(1.0, "--synth-scale", help="DermSynth size multiplier (when no data root is given)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Image-decode processes for feature extraction "
                                          "(default: one per core, at most 16; 0 decodes in the main process)."),
    precision: str = typer.Option("auto", "--precision", help="Feature extraction: auto (bf16 autocast on CUDA, "
                                  "fp32 on CPU) | fp32 | bf16 | fp16; recorded in each result and its key."),
    draft_decode: bool = typer.Option(False, "--draft-decode", help="Decode large JPEGs at reduced resolution "
                                      "(PIL draft mode): faster, slightly different features, cached apart."),
    jobs: str = typer.Option("1", "--jobs", "-j", help="Worker processes on this machine, each running whole model × "
                             "task groups (same numbers as one process); 'auto': one per core up to 4 on CPU, 1 with a GPU."),
    executor: str = typer.Option("local", "--executor", help="local (this machine) | slurm (job arrays through submitit)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="Run only shard K/N of the plan, or 'auto' (from SLURM_PROCID/SLURM_NTASKS or RANK/WORLD_SIZE), for srun/torchrun."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", help="Slurm partition of both arrays."),
    slurm_gpus: int = typer.Option(1, "--slurm-gpus", help="GPUs per feature-extraction task (0: extract on CPUs)."),
    slurm_time: str = typer.Option("240", "--slurm-time", help="Time limit per array task: minutes or HH:MM:SS."),
    slurm_mem: Optional[str] = typer.Option(None, "--slurm-mem", help="Memory per array task, e.g. 32G."),
    slurm_array_parallelism: int = typer.Option(64, "--slurm-array-parallelism", help="Array tasks running at once."),
    slurm_setting: Optional[List[str]] = typer.Option(None, "--slurm-setting", help="Any sbatch option as KEY=VALUE, e.g. account=derm, cpus-per-task=8."),
    slurm_group_by: str = typer.Option("task", "--slurm-group-by", help="One array task per model × task ('task') or per model ('model': weights loaded once)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Slurm: wait for the arrays (printing progress), or return once submitted."),
    strict: bool = typer.Option(False, "--strict", help="Refuse, before any work, a task whose train and test sets "
                                "share an image (same content hash); without it such a task runs, with a warning "
                                "and the count stored in each result."),
) -> None:
    """Run backbones on tasks with their protocols; results go to the results store.

    Exit 0: every job computed or found stored.

    Exit 1: a job failed, the run stopped (NaN features), a model was left out for missing weights, or nothing at all was computed or stored.

    Exit 2: bad input refused before any work (an option, a named task not found, no model with weights, --strict).

    Exit 130: interrupted (Ctrl-C); the results finished until then are stored, and the same command goes on."""
    from dataclasses import replace

    from dermbench.run.runner import RunStopped, run_benchmark

    output = results_option(results, old_output)
    # the options that need no torch first (a misspelt task is refused in half a second), then the device,
    # whose check imports torch (seconds)
    settings = settings_from_options(model, task, protocol, data_root, weights, output, seed, split_seed, device,
                                     overwrite, split, n_boot, set_, synth_scale, quiet, workers, precision, draft_decode)
    device = device_option(device, on_this_machine=executor != "slurm")  # Slurm: checked on the nodes
    if executor == "slurm" and device == "auto":  # the nodes have a GPU exactly when the array asks for one
        device = "cuda" if slurm_gpus else "cpu"
    settings = replace(settings, device=device, strict=strict)
    chosen = executor_from_options(executor, shard, slurm_partition, slurm_gpus, slurm_time, slurm_mem,
                                   slurm_array_parallelism, slurm_setting, wait, slurm_group_by,
                                   jobs=jobs_option(jobs, device))
    from dermbench.data.sample import DatasetError

    try:
        outcomes = run_benchmark(settings, log=typer.echo, executor=chosen)
    except KeyboardInterrupt:  # Ctrl-C: typer alone would exit 130 without a word
        if executor == "slurm":
            hint = "the arrays already submitted go on running on the cluster; `dermbench status` shows their state"
        else:
            hint = ("every result finished so far is stored (each written whole); the same command again goes on "
                    "from there, skipping them")
        typer.secho(f"interrupted: {hint}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130)
    except RunStopped as exc:
        fail(f"the run stopped: {exc}", code=1)
    except (DatasetError, FileNotFoundError, ValueError, KeyError) as exc:
        fail(error_text(exc))
    if outcomes.nothing_done:
        why = "; ".join(dict.fromkeys(o.message for o in outcomes if o.status != "done" and o.message))
        fail("nothing was computed and no result of this run was stored earlier"
             + (f" ({why})" if why else "") + "; see the lines above for each task and model", code=1)
    if any(o.status == "failed" for o in outcomes) or outcomes.refused_models:
        raise typer.Exit(1)
