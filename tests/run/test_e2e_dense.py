"""End to end through the CLI on DermSynth for the segmentation and captioning protocols.

The protocol tests (test_segmentation.py, test_captioning.py) check the heads and metrics on
hand-made inputs; these check that `dermbench run` wires them to real backbones, the DermSynth
layouts, the feature cache and the results store.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dermbench.cli import app
from dermbench.report.leaderboard import recompute_metrics
from dermbench.run.results import iter_results, read_predictions
from dermbench.protocols.tiny_lm import TINY_LM_ID

runner = CliRunner()
SEG_FAST = ["--set", "seg-linear.epochs=3", "--set", "seg-upernet.epochs=3", "--set", "seg-upernet.upernet_channels=16",
            "--synth-scale", "0.25", "--n-boot", "100", "--quiet"]  # a quarter of DermSynth: 4x fewer images through resnet50


@pytest.mark.slow
@pytest.mark.parametrize("model", ["random-vit", "resnet50"])
def test_segmentation_runs_from_the_cli_for_a_vit_and_a_cnn(tmp_path, model):
    res = runner.invoke(app, ["run", "--model", model, "--weights", "random", "--task", "ph2-seg",
                              "--output", str(tmp_path), *SEG_FAST])
    assert res.exit_code == 0, res.output
    records = {r["protocol"]: r for r in iter_results(tmp_path)}
    assert set(records) == {"seg-linear", "seg-upernet"}
    for protocol, record in records.items():
        preds = read_predictions(record["_path"])
        assert len(preds) == record["n_test"] > 0
        # the stored Dice is the mean of the per-image Dice of the stored pixel counts
        tp, fp, fn = (preds[c].to_numpy(float) for c in ("tp", "fp", "fn"))
        denom = 2 * tp + fp + fn
        dice = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
        assert np.allclose(dice, preds["dice"].to_numpy())
        assert record["metrics"]["dice"]["value"] == pytest.approx(dice.mean())
        assert record["metrics"]["dice"]["ci_low"] <= record["metrics"]["dice"]["ci_high"]
        # the stored numbers are exactly what a rebuild from the stored files gives
        assert recompute_metrics(tmp_path, record) == record["metrics"]


@pytest.mark.slow
def test_captioning_runs_from_the_cli_with_the_tiny_lm_on_dermsynth(tmp_path):
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "skincap", "--output", str(tmp_path),
                              "--n-boot", "50", "--quiet"])
    assert res.exit_code == 0, res.output
    (record,) = list(iter_results(tmp_path))
    # on DermSynth the runner picks the CPU-sized LM without being told
    assert record["info"]["llm"] == TINY_LM_ID
    assert record["provenance"]["config"]["protocol"]["llm"] == TINY_LM_ID
    preds = read_predictions(record["_path"])
    assert isinstance(preds, pd.DataFrame) and len(preds) == record["n_test"]
    assert preds["generated"].str.len().gt(0).all()
    for metric in ("rouge1", "rouge2", "rougeL"):
        assert 0 <= record["metrics"][metric]["value"] <= 1
    assert recompute_metrics(tmp_path, record) == record["metrics"]


def test_dermsynth_defaults_are_cpu_sized_and_real_data_keeps_the_papers(tmp_path):
    from dermbench.data.sample import TaskData
    from dermbench.protocols import get_protocol
    from dermbench.data.synth import ensure_dermsynth

    synth = TaskData(task="ph2-seg", root=ensure_dermsynth() / "PH2Dataset", classes=[], samples=[])
    real = TaskData(task="ph2-seg", root=tmp_path, classes=[], samples=[])
    upernet, caption = get_protocol("seg-upernet"), get_protocol("caption")
    assert upernet.resolve_config(upernet.data_defaults(synth))["upernet_channels"] == 64
    assert upernet.resolve_config(upernet.data_defaults(real))["upernet_channels"] == 768
    assert upernet.resolve_config(upernet.data_defaults(synth))["epochs"] == 10
    assert upernet.resolve_config(upernet.data_defaults(real))["epochs"] == 20
    assert caption.resolve_config(caption.data_defaults(synth))["llm"] == TINY_LM_ID
    assert caption.resolve_config(caption.data_defaults(real))["llm"] == "BioMistral/BioMistral-7B"
