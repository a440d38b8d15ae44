"""The `dermbench` command line. Every command calls the same Python API users can import.

Import cost matters here: nothing at module level imports torch or a model, so
`dermbench --help` and `dermbench list` stay instant (tested).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="Benchmark dermatology vision foundation models (DermINO protocol).", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Datasets: write DermSynth, check a data root.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _error_text(exc: BaseException) -> str:
    # KeyError's str() wraps its message in quotes; the message itself is args[0]
    return str(exc.args[0]) if exc.args else str(exc)


def _split_list(values: Optional[List[str]]) -> Optional[list[str]]:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@app.command("list")
def list_cmd(
    what: str = typer.Argument(..., help="models | tasks | protocols"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List registered backbones, task cards or protocols."""
    if what == "models":
        from dermbench import registry

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
        from dermbench.tasks import load_cards

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
        _fail(f"cannot list {what!r}; choose models, tasks or protocols")


def _parse_overrides(values: Optional[List[str]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in values or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            _fail(f"--set {item!r}: expected PROTOCOL.SETTING=VALUE, e.g. --set linear.epochs=20")
        key, value = item.split("=", 1)
        protocol, setting = key.split(".", 1)
        out.setdefault(protocol, {})[setting] = value
    return out


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
) -> None:
    """Run backbones on tasks with their protocols; results go to the results store."""
    from dermbench import registry
    from dermbench.protocols import names as protocol_names
    from dermbench.runner import RunSettings, run_benchmark
    from dermbench.tasks import select_tasks

    models = _split_list(model) or []
    for m in models:
        try:
            registry.get(m)
        except KeyError as exc:
            _fail(str(exc.args[0]))
    protocols = _split_list(protocol)
    for p in protocols or []:
        if p not in protocol_names():
            _fail(f"unknown protocol {p!r}. Valid protocols: {', '.join(protocol_names())}")
    try:
        select_tasks(task)
    except KeyError as exc:
        _fail(str(exc.args[0]))
    if split not in ("default", "official"):
        _fail(f"--split {split!r}: expected 'default' or 'official'")
    settings = RunSettings(models=models, tasks=task, protocols=protocols, data_root=data_root, weights=weights,
                           output=output, seed=seed, device=device, overwrite=overwrite, n_boot=n_boot,
                           split_mode=split, overrides=_parse_overrides(set_), progress=not quiet,
                           synth_scale=synth_scale)
    from dermbench.data.sample import DatasetError

    try:
        outcomes = run_benchmark(settings, log=typer.echo)
    except (DatasetError, FileNotFoundError, ValueError, KeyError) as exc:
        _fail(_error_text(exc))
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


@app.command()
def leaderboard(
    results: Optional[Path] = typer.Option(None, "--results", help="Results folder (default: results/dermsynth if no data root is configured, else results/)."),
    fmt: str = typer.Option("md", "--format", help="md | csv | latex | html | all"),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write the tables and figures to."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Recompute every metric from the stored predictions."),
) -> None:
    """Build leaderboard tables (and figures) from the results store; prints the markdown tables."""
    from dermbench.leaderboard import build_leaderboard

    results = results or _default_results()
    if not results.is_dir():
        _fail(f"results folder {results} does not exist; run `dermbench run ...` first or pass --results")
    formats = ("md", "csv", "latex", "html") if fmt == "all" else (fmt,)
    built = build_leaderboard(results, out, formats=formats, rebuild=rebuild)
    typer.echo(built["markdown"])
    for path in built.get("paths", []):
        typer.echo(f"wrote {path}", err=True)


@app.command()
def compare(
    model: List[str] = typer.Option(..., "--model", "-m", help="Exactly two result labels (e.g. dermino-tiny random-vit)."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task(s) or group; default: all tasks both models have."),
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p"),
    metric: str = typer.Option("auroc", "--metric"),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level (Holm-adjusted across the table's rows)."),
    results: Optional[Path] = typer.Option(None, "--results"),
) -> None:
    """Paired comparison of two models: paired bootstrap, DeLong, McNemar, the paper's t-test; Holm across tasks."""
    from dermbench.compare import ComparisonError, compare_models, format_comparison
    from dermbench.tasks import select_tasks

    models = _split_list(model) or []
    if len(models) != 2:
        _fail(f"compare needs exactly two --model values, got {models}")
    if not 0 < alpha < 1:
        _fail(f"--alpha must lie between 0 and 1, got {alpha}")
    try:
        tasks = [c.name for c in select_tasks(task)] if task else None
        table = compare_models(results or _default_results(), models[0], models[1], tasks=tasks, metric=metric,
                               protocol=protocol, alpha=alpha)
    except (ComparisonError, KeyError, ValueError) as exc:
        _fail(_error_text(exc))
    typer.echo(format_comparison(table))


@app.command()
def fairness(
    results: Optional[Path] = typer.Option(None, "--results", help="Results folder (default as for `leaderboard`)."),
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Result label(s); default: all."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task(s) or group; default: all with subgroups."),
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p"),
    attribute: Optional[str] = typer.Option(None, "--attribute", "-a", help="skin_type, sex, ... (default: all present)."),
    metric: str = typer.Option("auroc", "--metric"),
    min_samples: int = typer.Option(10, "--min-samples", help="Subgroups with fewer test samples are reported, not scored."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the table as CSV here."),
) -> None:
    """Per-subgroup metrics (Fitzpatrick skin type, sex, ...) with bootstrap CIs and the largest gap."""
    from dermbench.fairness import fairness_table, format_fairness
    from dermbench.io import atomic_write_text

    results = results or _default_results()
    if not results.is_dir():
        _fail(f"results folder {results} does not exist; run `dermbench run ...` first or pass --results")
    try:
        table = fairness_table(results, model=_split_list(model), task=task, metric=metric, protocol=protocol,
                               attribute=attribute, min_samples=min_samples)
    except (KeyError, ValueError) as exc:
        _fail(_error_text(exc))
    typer.echo(format_fairness(table))
    if csv is not None:
        atomic_write_text(csv, table.to_csv(index=False))
        typer.echo(f"wrote {csv}", err=True)


def _default_results() -> Path:
    from dermbench.config import resolve_data_root
    from dermbench.runner import default_results_dir

    root, source = resolve_data_root(None)
    return default_results_dir(root)


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write DermSynth to (official layouts of all 20 tasks)."),
    scale: float = typer.Option(1.0, "--scale", help="Size multiplier."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write the synthetic benchmark DermSynth in the official dataset layouts."""
    from dermbench.synth import generate

    path = generate(out, scale=scale, seed=seed)
    typer.echo(f"DermSynth written to {path}")


@data_app.command("check")
def data_check(
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the datasets (default: as for run)."),
    task: str = typer.Option("all", "--task", "-t"),
) -> None:
    """Check each task's files against the expected layout, counts and splits."""
    from dermbench.config import resolve_data_root
    from dermbench.data.check import check_data, format_report
    from dermbench.tasks import select_tasks

    root, source = resolve_data_root(data_root)
    if root is None:
        from dermbench.synth import ensure_dermsynth

        root = ensure_dermsynth()
        typer.echo(f"No --data-root given: checking the embedded DermSynth at {root}")
    reports = check_data(root, select_tasks(task))
    typer.echo(format_report(reports))


fl_app = typer.Typer(help="A real multi-site federation: each site exports its client file; the coordinator writes the Flower App.",
                     no_args_is_help=True)
app.add_typer(fl_app, name="federated")


@fl_app.command("export-client")
def federated_export_client(
    model: str = typer.Option(..., "--model", "-m", help="Backbone key (the same at every site)."),
    task: str = typer.Option(..., "--task", "-t", help="This site's task: an official layout or a manifest task."),
    out: Path = typer.Option(..., "--out", help="Client file to write (.npz); its provenance goes beside it (.json)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="This site's data root (default: as for run)."),
    name: Optional[str] = typer.Option(None, "--name", help="Client name (default: the task name)."),
    weights: Optional[str] = typer.Option(None, "--weights"),
    seed: int = typer.Option(0, "--seed"),
    split: str = typer.Option("default", "--split", help="default | official"),
    device: str = typer.Option("cpu", "--device"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Frozen features of this site's own train/test split, as the client file its SuperNode reads."""
    from dermbench.config import resolve_data_root
    from dermbench.data.sample import DatasetError
    from dermbench.federated.sites import export_client
    from dermbench.runner import resolve_device

    root, _ = resolve_data_root(data_root)
    if root is None:  # as `run` does: try it out on DermSynth; a hospital passes its own --data-root
        from dermbench.synth import ensure_dermsynth

        root = ensure_dermsynth()
        typer.echo(f"No --data-root given: exporting from the embedded DermSynth at {root}")
    if split not in ("default", "official"):
        _fail(f"--split {split!r}: expected 'default' or 'official'")
    try:
        info = export_client(model, task, root, out, name=name, weights=weights, seed=seed, split_mode=split,
                             device=resolve_device(device), progress=not quiet)
    except (DatasetError, FileNotFoundError, ValueError, KeyError) as exc:
        _fail(_error_text(exc))
    typer.echo(f"wrote {out} ({info['client']}: {info['n_train']} train, {info['n_test']} test, "
               f"{info['feature_dim']}-d features of {model}) and {out.with_suffix('.json')}")
    typer.echo(f"its SuperNode: flower-supernode --superlink <coordinator>:<port> ... "
               f"--node-config 'data-path=\"{out.resolve()}\"'")


@fl_app.command("app")
def federated_app(
    out: Path = typer.Option(..., "--out", help="Flower App folder to write (submitted with `flwr run`)."),
    client: List[Path] = typer.Option(..., "--client", help="Each site's client sidecar (.json from export-client); checked for one backbone and class order."),
    result_path: Path = typer.Option(..., "--result-path", help="Where the ServerApp writes the aggregated head (coordinator's machine)."),
    rounds: int = typer.Option(2, "--rounds"),
    local_epochs: int = typer.Option(2, "--local-epochs"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The coordinator's Flower App (ServerApp + ClientApp of dermbench), configured for the sites' files."""
    from dermbench.federated.deployment import write_flower_app
    from dermbench.federated.sites import check_sites

    try:
        shared = check_sites(client)
    except (FileNotFoundError, ValueError) as exc:
        _fail(_error_text(exc))
    config = {"num-clients": shared["num-clients"], "feature-dim": shared["feature-dim"],
              "num-classes": shared["num-classes"], "num-server-rounds": rounds, "local-epochs": local_epochs,
              "seed": seed, "result-path": str(result_path.resolve())}
    write_flower_app(out, config)
    typer.echo(f"wrote the Flower App {out} for {shared['num-clients']} sites, classes {shared['classes']}; "
               f"submit it with: flwr run {out} <federation>")


def _mount_pretrain() -> None:
    """`dermbench pretrain` is DermINO's pretraining command (dermino.pretrain), when present."""
    try:
        from dermino.pretrain.cli import pretrain
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("dermino"):
            return  # a checkout without the pretraining module: nothing to mount
        raise
    app.command("pretrain", help="DermINO hybrid pretraining (also: torchrun ... -m dermino.pretrain).")(pretrain)


_mount_pretrain()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
