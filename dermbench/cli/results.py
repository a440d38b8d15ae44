"""`dermbench results list|migrate`: what a results folder holds, and converting the layout before keys."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dermbench.cli._app import app
from dermbench.cli.common import JSON_HELP, RESULTS_HELP, default_results, echo_json, fail

results_app = typer.Typer(help="The results store: list what it holds, migrate the layout before result keys.",
                          no_args_is_help=True)
app.add_typer(results_app, name="results")


def _folder(results: Optional[Path]) -> Path:
    results = results or default_results()
    if not results.is_dir():
        fail(f"results folder {results} does not exist; run `dermbench run ...` first or pass --results")
    return results


@results_app.command("list")
def results_list(
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " One item per stored result."),
) -> None:
    """One line per stored result: model · task · protocol, its key, the main metric, and the settings
    in which the results of the same (model, task, protocol) differ."""
    if as_json:  # the one --json shape; an empty store is an empty list
        return echo_json("results list", _json_items(_folder(results)))
    from dermbench.run.identity import describe, differing_settings, key_of
    from dermbench.run.results import forget_warnings, iter_results, warn_skipped

    forget_warnings()
    folder = _folder(results)
    skipped: list = []
    records = list(iter_results(folder, skipped))
    for s in skipped:  # named on stderr, one line each: unreadable or not a result
        warn_skipped(s)
    skipped_text = f"; {len(skipped)} JSON file(s) skipped (see the warnings)" if skipped else ""
    if not records:
        typer.echo(f"no results under {folder}{skipped_text}")
        return
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((str(r["model"]), str(r["task"]), str(r["protocol"])), []).append(r)
    for cell, rows in sorted(groups.items()):
        differs = differing_settings(rows) if len(rows) > 1 else []
        for r in rows:
            main = r.get("main_metric") if r.get("main_metric") in (r.get("metrics") or {}) else next(iter(r.get("metrics") or {}), None)
            value = (r.get("metrics") or {}).get(main, {}).get("value") if main else None
            shown = f"{main} {100 * value:.2f}" if isinstance(value, (int, float)) else "no metric"
            extra = f"  [{describe(r, differs)}]" if differs else ""
            legacy = "  (layout before keys: `dermbench results migrate`)" if r.get("legacy_layout") else ""
            typer.echo(f"{' · '.join(cell)}  {key_of(r)[:12]}  {shown}{extra}{legacy}")
    typer.echo(f"{len(records)} result(s) in {folder}; {sum(len(v) > 1 for v in groups.values())} "
               f"(model, task, protocol) with several results{skipped_text}", err=True)


def _json_items(folder: Path) -> list[dict]:
    """One item per stored result, in the order of the text listing; ``differs``: the settings in which the
    results of the same (model, task, protocol) differ, as the text listing shows them."""
    from dermbench.run.identity import describe, differing_settings, key_of
    from dermbench.run.results import iter_results

    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in iter_results(folder):
        groups.setdefault((str(r["model"]), str(r["task"]), str(r["protocol"])), []).append(r)
    items = []
    for (model, task, protocol), rows in sorted(groups.items()):
        differs = differing_settings(rows) if len(rows) > 1 else []
        for r in rows:
            metrics = r.get("metrics") or {}
            main = r.get("main_metric") if r.get("main_metric") in metrics else next(iter(metrics), None)
            items.append({"model": model, "task": task, "protocol": protocol, "key": key_of(r), "main_metric": main,
                          "value": metrics.get(main, {}).get("value") if main else None,
                          "differs": describe(r, differs) if differs else "", "legacy_layout": bool(r.get("legacy_layout")),
                          "path": str(r.get("_path", ""))})
    return items


@results_app.command("migrate")
def results_migrate(
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be renamed."),
) -> None:
    """Rename results of the layout before keys (<protocol>.json) to <protocol>@<key12>.json, adding their
    reconstructed identity; nothing is recomputed."""
    from dermbench.run.results import migrate_results

    folder = _folder(results)
    try:
        moved = migrate_results(folder, dry_run=dry_run)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    for old, new in moved:
        typer.echo(f"{'would move' if dry_run else 'moved'} {old.relative_to(folder)} -> {new.relative_to(folder)}")
    typer.echo(f"{len(moved)} result(s) {'to migrate' if dry_run else 'migrated'} in {folder}", err=True)
