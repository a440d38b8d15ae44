"""`dermbench pretrain`: DermINO's pretraining command (:mod:`dermino.pretrain`), when present."""
from __future__ import annotations

from dermbench.cli._app import app


def mount_pretrain() -> None:
    """`dermbench pretrain` is DermINO's pretraining command (dermino.pretrain), when present."""
    try:
        from dermino.pretrain.cli import pretrain
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("dermino"):
            return  # a checkout without the pretraining module: nothing to mount
        raise
    app.command("pretrain", help="DermINO hybrid pretraining (also: torchrun ... -m dermino.pretrain).")(pretrain)


mount_pretrain()
