"""Helpers shared by the command modules: one error style, list options, results-folder defaults, and
the conventions every command follows (README "Conventions"):

- ``--results DIR``: the results store a command reads or writes (old names ``--output``/``-o`` of
  ``run`` and ``plan`` still accepted, hidden: :func:`results_option`);
- ``--out PATH``: exported files (tables, figures, checkpoints, client files, app folders);
- ``--device``: ``auto`` (the default: CUDA when present, else the CPU) | cpu | cuda | cuda:N | mps
  (:func:`device_option`, through :func:`dermbench.models.devices.resolve_device`);
- ``--json``: one shape for every command, ``{"dermbench": VERSION, "command": "...", "items": [...],
  "warnings": [...]}`` (:func:`echo_json`).
"""
from __future__ import annotations

import contextlib

import json
from pathlib import Path
from typing import Any, List, Optional, Sequence, TypeVar

import typer

T = TypeVar("T")

RESULTS_HELP = "Results folder (default: results/dermsynth when no data root is configured, else results/)."
OLD_RESULTS_HELP = "Old name of --results (still accepted; hidden)."
DEVICE_HELP = ("Where models run: auto (CUDA when present, else the CPU) | cpu | cuda | cuda:N | mps.")
JSON_HELP = 'Machine-readable output: {"dermbench", "command", "items": [...], "warnings": [...]}.'


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code`` (2: bad input)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def error_text(exc: BaseException) -> str:
    # KeyError's str() wraps its message in quotes; the message itself is args[0]
    return str(exc.args[0]) if exc.args else str(exc)


def split_list(values: Optional[List[str]]) -> Optional[list[str]]:
    """Repeated and comma-separated option values as one list (None when none were given)."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def parse_overrides(values: Optional[List[str]]) -> dict[str, dict[str, str]]:
    """``--set PROTOCOL.SETTING=VALUE`` items as {protocol: {setting: value}}."""
    out: dict[str, dict[str, str]] = {}
    for item in values or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            fail(f"--set {item!r}: expected PROTOCOL.SETTING=VALUE, e.g. --set linear.epochs=20")
        key, value = item.split("=", 1)
        protocol, setting = key.split(".", 1)
        out.setdefault(protocol, {})[setting] = value
    return out


def default_results() -> Path:
    """The results folder when none is given: results/dermsynth without a data root, else results/."""
    from dermbench.config import resolve_data_root
    from dermbench.run.runner import default_results_dir

    root, source = resolve_data_root(None)
    return default_results_dir(root)


def merge_alias(value: Optional[T], old_value: Optional[T], name: str, old_name: str) -> Optional[T]:
    """One value from an option and its hidden old name (both default None): either may be given, not
    both, since two values for one setting leave it unclear which was meant."""
    if value is not None and old_value is not None:
        fail(f"{name} and {old_name} were both given; {old_name} is the old name of {name}: give only {name}")
    return value if value is not None else old_value


def results_option(results: Optional[Path], old: Optional[Path], old_name: str = "--output") -> Optional[Path]:
    """``--results`` merged with its hidden old name (``--output``/``-o`` of ``run`` and ``plan``)."""
    return merge_alias(results, old, "--results", old_name)


def device_option(choice: str, on_this_machine: bool = True) -> str:
    """``--device`` checked before any work: the device to run on (``auto`` resolved) when the models run
    here; only the form of the name when they run elsewhere (Slurm nodes). A clear error otherwise."""
    from dermbench.models.devices import DeviceError, check_device_name, resolve_device

    try:
        return resolve_device(choice) if on_this_machine else check_device_name(choice)
    except DeviceError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")  # fail() exits


def json_document(command: str, items: Sequence[Any], warnings: Sequence[str] = ()) -> dict:
    """The one ``--json`` shape of every command: the dermbench version, the command, a list of items
    (one per listed thing, job, report, ...) and a list of warnings (empty when there are none)."""
    from dermbench import __version__

    return {"dermbench": __version__, "command": command, "items": list(items), "warnings": list(warnings)}


def echo_json(command: str, items: Sequence[Any], warnings: Sequence[str] = ()) -> None:
    """Print :func:`json_document` (indented; paths and other objects as strings)."""
    typer.echo(json.dumps(json_document(command, items, warnings), indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    # sets (e.g. the key sets of a weights report) as lists; paths and anything else as their text
    return sorted(value, key=str) if isinstance(value, (set, frozenset)) else str(value)


def missing_file_exit(exc: BaseException, allow_option: bool = False) -> None:
    """A stored result's predictions or bootstrap file is missing: exit 1 (the store, not the input, is
    incomplete) with the message naming the file and the `dermbench run` line that makes it again."""
    hint = " (or pass --allow-missing-bootstrap to show those cells with °, no paired test)" if allow_option else ""
    fail(error_text(exc) + hint, code=1)


@contextlib.contextmanager
def reading_the_store(errors: tuple = (KeyError, ValueError), allow_missing_option: bool = False):
    """Around a report command's reading of the results store: a missing or edited predictions or
    bootstrap file (the store is incomplete) exits 1 with the `dermbench run` line that makes it again
    (:func:`missing_file_exit`); any of ``errors`` (bad input) is one error line, exit 2."""
    from dermbench.run.results import MissingResultFile, ModifiedResultFile

    try:
        yield
    except (MissingResultFile, ModifiedResultFile) as exc:
        missing_file_exit(exc, allow_option=allow_missing_option)
    except errors as exc:
        fail(error_text(exc))
