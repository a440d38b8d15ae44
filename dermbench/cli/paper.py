"""`dermbench paper` and `dermbench reader-study`: the paper's tables and figures from a results store."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dermbench.cli._app import app
from dermbench.cli.common import DEVICE_HELP, RESULTS_HELP, default_results, device_option, error_text, fail


def _results_or_fail(results: Optional[Path]) -> Path:
    results = results or default_results()
    if not results.is_dir():
        fail(f"results folder {results} does not exist; run `dermbench run ...` first or pass --results")
    return results


@app.command()
def paper(
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    out: Path = typer.Option(..., "--out", help="Folder to write the paper's tables and figures to (index.html inside)."),
    readings: Optional[Path] = typer.Option(None, "--readings", help="Reader-study CSV; default on DermSynth: its simulated study."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model compared with the readers (default: best linear AUROC on the study tasks)."),
    embeddings: bool = typer.Option(True, "--embeddings/--no-embeddings", help="t-SNE maps (rebuilds each backbone; features come from the cache)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP + " For the t-SNE maps' features the cache lacks."),
    leaderboard: Optional[Path] = typer.Option(None, "--leaderboard", help="A folder written by `dermbench leaderboard "
                                               "--format all --out DIR` from these results: link to it instead of "
                                               "building a second copy (built anyway, with a note saying why, when "
                                               "the results or dermbench changed since)."),
) -> None:
    """Every table and figure of the paper: leaderboard, reader study, t-SNE maps, qualitative grids, summary tables."""
    from dermbench.data.sample import DatasetError
    from dermbench.report.paper import build_paper
    from dermbench.report.reader_study import ReadingsError

    results = _results_or_fail(results)
    device = device_option(device) if embeddings else "cpu"  # no backbone runs without the t-SNE maps
    try:
        built = build_paper(results, out, readings=readings, model=model, embeddings=embeddings, device=device,
                            leaderboard=leaderboard)
    except (ReadingsError, DatasetError, FileNotFoundError, KeyError) as exc:
        fail(error_text(exc))
    for note in built["notes"]:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"wrote {len(built['paths'])} files; open {Path(out) / 'index.html'}")


@app.command("reader-study")
def reader_study(
    readings: Path = typer.Option(..., "--readings", help="CSV: reader,experience,image,dataset,round,answer (round: without-ai | with-ai)."),
    results: Optional[Path] = typer.Option(None, "--results", help="Results folder holding the model's predictions on the study tasks."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model compared with the readers (default: best linear AUROC on the study tasks)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Where the ground truth is read (default: the data root the results record)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for reader_study.md, CSVs, JSON and figures 6c/6d."),
    simulate: bool = typer.Option(False, "--simulate", help="First write DermSynth's simulated study to --readings (DermSynth results only)."),
) -> None:
    """Reader study: per-reader accuracy (exact CIs), by experience, the model vs each reader (McNemar), AI assistance,
    a mixed-effects multi-reader multi-case analysis, agreement with the model, following its mistakes."""
    from dermbench.data.sample import DatasetError
    from dermbench.report import reader_study as RR

    results = _results_or_fail(results)
    try:
        if simulate:
            RR.simulate_for_results(results, readings, model=model)
            typer.echo(f"wrote the simulated reader study {readings}", err=True)
        study = RR.analyse(readings, results, model=model, data_root=data_root)
    except (RR.ReadingsError, DatasetError, KeyError) as exc:
        fail(error_text(exc))
    typer.echo(RR.to_markdown(study))
    if out is not None:
        for path in RR.write(study, out):
            typer.echo(f"wrote {path}", err=True)
