"""`dermbench federated export-client|app`: a real multi-site federation."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dermbench.cli._app import app
from dermbench.cli.common import DEVICE_HELP, default_results, device_option, error_text, fail, parse_overrides, split_list

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
    weights: Optional[str] = typer.Option(None, "--weights", help="Weights file, or 'random' for the untrained architecture (default: the release's, as for run)."),
    seed: int = typer.Option(0, "--seed", help="Seed of this site's train/test split (the same at every site)."),
    split: str = typer.Option("default", "--split", help="default | official"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Frozen features of this site's own train/test split, as the client file its SuperNode reads."""
    from dermbench.config import resolve_data_root
    from dermbench.data.sample import DatasetError
    from dermbench.run.federated_sites import export_client

    device = device_option(device)  # before any work: a bad --device fails here
    root, _ = resolve_data_root(data_root)
    if root is None:  # as `run` does: try it out on DermSynth; a hospital passes its own --data-root
        from dermbench.data.synth import ensure_dermsynth

        root = ensure_dermsynth()
        typer.echo(f"No --data-root given: exporting from the embedded DermSynth at {root}")
    if split not in ("default", "official"):
        fail(f"--split {split!r}: expected 'default' or 'official'")
    try:
        info = export_client(model, task, root, out, name=name, weights=weights, seed=seed, split_mode=split,
                             device=device, progress=not quiet)
    except (DatasetError, FileNotFoundError, ValueError, KeyError) as exc:
        fail(error_text(exc))
    typer.echo(f"wrote {out} ({info['client']}: {info['n_train']} train, {info['n_test']} test, "
               f"{info['feature_dim']}-d features of {model}) and {out.with_suffix('.json')}")
    typer.echo(f"its SuperNode: flower-supernode --superlink <coordinator>:<port> ... "
               f"--node-config 'data-path=\"{out.resolve()}\"'")


@fl_app.command("app")
def federated_app(
    out: Path = typer.Option(..., "--out", help="Flower App folder to write (submitted with `flwr run`)."),
    client: List[Path] = typer.Option(..., "--client", help="Each site's client sidecar (.json from export-client); checked for one backbone and class order."),
    result_path: Path = typer.Option(..., "--result-path", help="Where the ServerApp writes the aggregated head (coordinator's machine)."),
    rounds: int = typer.Option(2, "--rounds", help="Federated rounds (FedAvg) the ServerApp runs."),
    local_epochs: int = typer.Option(2, "--local-epochs", help="Epochs of local training per site and round."),
    seed: int = typer.Option(0, "--seed", help="Seed of the head's initialisation and of the local training."),
) -> None:
    """The coordinator's Flower App (ServerApp + ClientApp of dermbench), configured for the sites' files."""
    from dermbench.federated.deployment import write_flower_app
    from dermbench.run.federated_sites import check_sites

    try:
        shared = check_sites(client)
    except (FileNotFoundError, ValueError) as exc:
        fail(error_text(exc))
    config = {"num-clients": shared["num-clients"], "feature-dim": shared["feature-dim"],
              "num-classes": shared["num-classes"], "num-server-rounds": rounds, "local-epochs": local_epochs,
              "seed": seed, "result-path": str(result_path.resolve())}
    write_flower_app(out, config)
    typer.echo(f"wrote the Flower App {out} for {shared['num-clients']} sites, classes {shared['classes']}; "
               f"submit it with: flwr run {out} <federation>")
