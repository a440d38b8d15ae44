"""The `dermbench` command line. Every command calls the same Python API users can import.

One module per command group registers its commands on the root app (:mod:`dermbench.cli._app`):
:mod:`~dermbench.cli.benchmark` (``list``, ``run``), :mod:`~dermbench.cli.reports`
(``leaderboard``, ``compare``, ``fairness``), :mod:`~dermbench.cli.data` (``data ...``),
:mod:`~dermbench.cli.federated` (``federated ...``), :mod:`~dermbench.cli.pretrain` (``pretrain``).

Import cost matters here: nothing at module level imports torch or a model, so
`dermbench --help` and `dermbench list` stay instant (tested).

Layer 7 (the top): may import every package of dermbench, and :mod:`dermino.pretrain.cli`.
"""
from __future__ import annotations

import sys

# each command module registers its commands on the root app when imported
from dermbench.cli import benchmark  # noqa: F401
from dermbench.cli import calibration  # noqa: F401
from dermbench.cli import data  # noqa: F401
from dermbench.cli import federated  # noqa: F401
from dermbench.cli import paper  # noqa: F401
from dermbench.cli import plan  # noqa: F401
from dermbench.cli import pretrain  # noqa: F401
from dermbench.cli import reports  # noqa: F401
from dermbench.cli import results  # noqa: F401
from dermbench.cli import weights  # noqa: F401
from dermbench.cli._app import app


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
