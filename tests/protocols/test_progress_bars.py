"""Progress bars of the segmentation heads (training steps, prediction), and that bars change no number."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from dermbench.progress import ENV_VAR
from dermbench.protocols import get_protocol
# one_thread: that module's autouse fixture (tiny heads, one intra-op thread), used here too by importing it
from tests.protocols.test_segmentation import ColourBackbone, make_ctx, one_thread, write_lesions  # noqa: F401


def _last_lines(err: str) -> list[str]:
    return [line.split("\r")[-1] for line in err.splitlines() if line.strip()]


def test_seg_linear_epoch_shows_training_and_prediction_bars_and_the_same_numbers(tmp_path, monkeypatch, capsys):
    lesions = write_lesions(tmp_path / "lesions", 12)
    protocol = get_protocol("seg-linear")
    settings = dict(epochs=2, batch_size=4, num_figure_images=0, boundary_metrics=False)

    monkeypatch.delenv(ENV_VAR, raising=False)
    quiet = protocol.run(make_ctx(tmp_path / "quiet", protocol, ColourBackbone(), lesions, seed=3, **settings))
    assert capsys.readouterr().err == ""

    monkeypatch.setenv(ENV_VAR, "1")
    ctx = replace(make_ctx(tmp_path / "bars", protocol, ColourBackbone(), lesions, seed=3, **settings), progress=True)
    shown = protocol.run(ctx)
    lines = _last_lines(capsys.readouterr().err)
    n_train, n_test = len(ctx.train), len(ctx.test)
    steps = 2 * -(-n_train // 4)
    assert any(l.startswith("ph2-seg · seg-linear · train: 100%") and f"{steps}/{steps} [" in l and "epoch 2/2" in l
               for l in lines), lines
    assert any(l.startswith("ph2-seg · seg-linear · predict: 100%") and f"{n_test}/{n_test} [" in l for l in lines), lines
    assert any(l.startswith("ph2-seg train · test-colour · features (tokens): 100%") for l in lines), lines

    # the bars only count: the same predictions and losses as the run without them
    pd.testing.assert_frame_equal(quiet.predictions, shown.predictions)
    assert quiet.info["train_loss"] == shown.info["train_loss"]
