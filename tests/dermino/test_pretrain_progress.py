"""The pretraining bar: iterations done of those to run, with the time left, written beside the log lines."""
from __future__ import annotations

from pathlib import Path

import pytest

from dermbench.progress import ENV_VAR
from dermino.pretrain.cli import build_config
from dermino.pretrain.train import train
from tests.dermino.test_pretrain_train import options


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from dermbench.data.synth.layouts import generate

    return generate(tmp_path_factory.mktemp("synth"), scale=0.25, datasets=["mednode"], image_size=48, progress=False)


def test_two_pretraining_steps_show_a_bar_on_rank_0(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, "1")
    logged: list[str] = []
    cfg = build_config("tiny", **options(data_root, labelled_tasks="", unlabelled_tasks="mednode", epochs=1,
                                             batch_size=4))
    summary = train(cfg, tmp_path / "run", log=logged.append)
    assert summary["iteration"] == 2 and summary["finished"]
    lines = [line.split("\r")[-1] for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert any(l.startswith("pretrain · tiny · iteration: 100%") and "2/2 [" in l and ("it/s" in l or "s/it" in l) and "loss " in l
               for l in lines), lines
    assert sum(l.startswith("iteration ") for l in logged) == 2  # log_every=1: the log lines still all arrive
