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

import os
import sys

# Idle OpenMP threads sleep instead of spinning (README, "Speed on a small CPU machine"): spinning
# threads took the cores from the work on small CPU machines, and the arithmetic is the same either
# way. It must be set before torch loads its OpenMP runtime, so here, before any command module; a
# value in the user's environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
