"""Helpers shared by the command modules: one error style, list options, results-folder defaults."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


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
