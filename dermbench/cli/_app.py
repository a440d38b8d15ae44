"""The root Typer application; the command modules of :mod:`dermbench.cli` register on it.

Errors a user can fix (a dataset that does not match its layout, a folder that cannot be written)
are turned into one ``error: ...`` line and exit code 2 here, for every command, instead of a
traceback.
"""
from __future__ import annotations

from typing import Optional

import typer
from typer.core import TyperArgument, TyperGroup


def _keep_argument_help() -> None:
    """typer (0.20) stores an argument's ``help`` and then calls click's ``Argument.__init__``, which in
    recent click releases (8.5 here) takes ``help`` itself and resets it to None: every positional argument lost its help text
    in ``-h``. Hand the text to click as well, only when this typer/click pair drops it."""
    try:
        if TyperArgument(param_decls=["probe"], help="probe").help == "probe":
            return
    except TypeError:  # another typer whose TyperArgument takes other arguments: it keeps its own help
        return
    original = TyperArgument.__init__

    def __init__(self, *args, help: Optional[str] = None, **kwargs):  # noqa: A002 (click's name)
        original(self, *args, help=help, **kwargs)
        self.help = help

    TyperArgument.__init__ = __init__


_keep_argument_help()


class _UserErrorsAsMessages(TyperGroup):
    def invoke(self, ctx):
        from dermbench.data.sample import DatasetError
        from dermbench.io import WriteError

        try:
            return super().invoke(ctx)
        except (DatasetError, WriteError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None


app = typer.Typer(help="Benchmark dermatology vision foundation models (DermINO protocol).", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, cls=_UserErrorsAsMessages,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        from dermbench import __version__

        typer.echo(f"dermbench {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                 help="Print the dermbench version and exit.")) -> None:
    """Benchmark dermatology vision foundation models (DermINO protocol)."""
