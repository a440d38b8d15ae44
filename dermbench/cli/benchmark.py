"""`dermbench list` and `dermbench run`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from dermbench.cli._app import app
from dermbench.cli.common import default_results, error_text, fail, parse_overrides, split_list


@app.command("list")
def list_cmd(
    what: str = typer.Argument(..., help="models | tasks | protocols"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List registered backbones, task cards or protocols."""
    if what == "models":
        from dermbench.models import registry

        rows = [registry.get(k).meta.to_dict() for k in registry.available()]
        errors = registry.discovery_errors()
        if as_json:
            typer.echo(json.dumps({"models": rows, "plugin_errors": errors}, indent=2))
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
            typer.echo(json.dumps([{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(c).items() if k != "path"}
                                   for c in cards.values()], indent=2, default=str))
            return
        for c in cards.values():
            classes = f"{c.num_classes} classes" if c.classes else c.group
            typer.echo(f"{c.name:<18} {c.group:<15} {classes:<15} protocols: {', '.join(c.protocols):<24} {c.source}")
    elif what == "protocols":
        from dermbench.protocols import names

        for n in names():
            typer.echo(n)
    else:
        fail(f"cannot list {what!r}; choose models, tasks or protocols")


@app.command()
def run(
    model: List[str] = typer.Option(..., "--model", "-m", help="Backbone key(s); repeat or comma-separate."),
    task: str = typer.Option("all", "--task", "-t", help="Task name(s), a group, 'classification' or 'all'."),
    protocol: Optional[List[str]] = typer.Option(None, "--protocol", "-p", help="Protocol(s); default: each task card's."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the datasets (default: $DERMBENCH_DATA_ROOT, the config file, else DermSynth)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Weights file, or 'random' for the untrained architecture."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Results folder (default results/, or results/dermsynth on DermSynth)."),
    seed: int = typer.Option(0, "--seed", help="Seed of splits, bootstrap and training."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | auto"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute results that already exist."),
    split: str = typer.Option("default", "--split", help="default (the paper's seeded splits) | official"),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap replicates."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Protocol setting, e.g. --set linear.epochs=20."),
    synth_scale: float = typer.Option(1.0, "--synth-scale", help="DermSynth size multiplier (when no data root is given)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Image-decode processes for feature extraction "
                                          "(default: one per core, at most 16; 0 decodes in the main process)."),
    precision: str = typer.Option("auto", "--precision", help="Feature extraction: auto (bf16 autocast on CUDA, "
                                  "fp32 on CPU) | fp32 | bf16 | fp16; recorded in each result and the cache key."),
    draft_decode: bool = typer.Option(False, "--draft-decode", help="Decode large JPEGs at reduced resolution "
                                      "(PIL draft mode): faster, slightly different features, cached apart."),
) -> None:
    """Run backbones on tasks with their protocols; results go to the results store."""
    from dermbench.models import registry
    from dermbench.protocols import names as protocol_names
    from dermbench.run.runner import RunSettings, run_benchmark
    from dermbench.data.tasks import select_tasks

    models = split_list(model) or []
    for m in models:
        try:
            registry.get(m)
        except KeyError as exc:
            fail(str(exc.args[0]))
    protocols = split_list(protocol)
    for p in protocols or []:
        if p not in protocol_names():
            fail(f"unknown protocol {p!r}. Valid protocols: {', '.join(protocol_names())}")
    try:
        select_tasks(task)
    except KeyError as exc:
        fail(str(exc.args[0]))
    if split not in ("default", "official"):
        fail(f"--split {split!r}: expected 'default' or 'official'")
    from dermbench.features import PRECISIONS

    if precision not in PRECISIONS:
        fail(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if workers is not None and workers < 0:
        fail(f"--workers {workers}: expected 0 or more decode processes")
    settings = RunSettings(models=models, tasks=task, protocols=protocols, data_root=data_root, weights=weights,
                           output=output, seed=seed, device=device, overwrite=overwrite, n_boot=n_boot,
                           split_mode=split, overrides=parse_overrides(set_), progress=not quiet,
                           synth_scale=synth_scale, workers=workers, precision=precision, draft_decode=draft_decode)
    from dermbench.data.sample import DatasetError

    try:
        outcomes = run_benchmark(settings, log=typer.echo)
    except (DatasetError, FileNotFoundError, ValueError, KeyError) as exc:
        fail(error_text(exc))
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)
