"""The root Typer application; the command modules of :mod:`dermbench.cli` register on it."""
from __future__ import annotations

import typer

app = typer.Typer(help="Benchmark dermatology vision foundation models (DermINO protocol).", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
