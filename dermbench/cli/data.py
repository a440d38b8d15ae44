"""`dermbench data synth|check`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dermbench.cli._app import app
from dermbench.cli.common import default_results, error_text, fail, parse_overrides, split_list

data_app = typer.Typer(help="Datasets: write DermSynth, check a data root.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write DermSynth to (official layouts of all 20 tasks)."),
    scale: float = typer.Option(1.0, "--scale", help="Size multiplier."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generator: the same seed and scale give the same files."),
    image_size: str = typer.Option("128", "--image-size",
                                   help="N: square images of about N px (the default, 128); WxH: every image exactly "
                                        "W by H px, e.g. 1024x768 (ISIC-like) or 3000x2000, for decode benchmarks."),
    datasets: Optional[List[str]] = typer.Option(None, "--dataset",
                                                 help="Write only these datasets (repeat or comma-separate); default all."),
) -> None:
    """Write the synthetic benchmark DermSynth in the official dataset layouts."""
    from dermbench.data.synth import generate
    from dermbench.data.synth.layouts import WRITERS

    size = _parse_image_size(image_size)
    names = split_list(datasets)
    unknown = [n for n in names or [] if n not in WRITERS]
    if unknown:
        fail(f"--dataset {', '.join(unknown)}: unknown DermSynth dataset; choose from {', '.join(WRITERS)}")
    path = generate(out, scale=scale, seed=seed, datasets=names, image_size=size)
    typer.echo(f"DermSynth written to {path}")


def _parse_image_size(text: str) -> "int | tuple[int, int]":
    """'128' -> 128 (square, jittered); '1024x768' -> (1024, 768) (exact)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or any(v < 16 or v > 8192 for v in values):
        fail(f"--image-size {text!r}: expected N or WxH with sides of 16-8192 px, e.g. --image-size 1024x768")
    return values[0] if len(values) == 1 else (values[0], values[1])


@data_app.command("check")
def data_check(
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the datasets (default: as for run)."),
    task: str = typer.Option("all", "--task", "-t", help="Task name(s), a group, 'classification' or 'all'."),
) -> None:
    """Check each task's files against the expected layout, counts and splits."""
    from dermbench.config import resolve_data_root
    from dermbench.data.check import check_data, format_report
    from dermbench.data.tasks import select_tasks

    root, source = resolve_data_root(data_root)
    if root is None:
        from dermbench.data.synth import ensure_dermsynth

        root = ensure_dermsynth()
        typer.echo(f"No --data-root given: checking the embedded DermSynth at {root}")
    try:
        cards = select_tasks(task)
    except KeyError as exc:
        fail(error_text(exc))
    reports = check_data(root, cards)
    typer.echo(format_report(reports))
    if any(r.problems for r in reports):
        raise typer.Exit(1)
