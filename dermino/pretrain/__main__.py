"""``python -m dermino.pretrain`` and ``torchrun --nproc_per_node N -m dermino.pretrain``."""
import typer

from dermino.pretrain.cli import pretrain

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command(help="DermINO hybrid pretraining (DINO + iBOT + KoLeo + knowledge-guided prototypes).")(pretrain)

if __name__ == "__main__":
    app()
