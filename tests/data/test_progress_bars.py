"""Progress bars of DermSynth generation and `data check` (forced with DERMBENCH_PROGRESS=1, as in a log)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dermbench.data.synth import generate
from dermbench.progress import ENV_VAR


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _last_lines(err: str) -> list[str]:
    """What a log file shows of the bars: the last state of each (carriage returns start redraws)."""
    return [line.split("\r")[-1] for line in err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth"), scale=0.25, datasets=["mednode"], image_size=32, progress=False)


def test_dermsynth_generation_shows_a_bar_and_writes_the_same_bytes(tmp_path, tiny_root, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, "1")
    generate(tmp_path / "with-bar", scale=0.25, datasets=["mednode"], image_size=32)
    lines = _last_lines(capsys.readouterr().err)
    assert any(line.startswith("DermSynth · generate: 100%") and "1/1 [" in line and "images" in line
               for line in lines), lines
    assert _tree_hash(tmp_path / "with-bar") == _tree_hash(tiny_root)  # the bar changes no byte


def test_data_check_shows_tasks_and_images_decoded(tiny_root, monkeypatch):
    from typer.testing import CliRunner

    from dermbench.cli import app

    monkeypatch.setenv(ENV_VAR, "1")
    res = CliRunner().invoke(app, ["data", "check", "--data-root", str(tiny_root), "--task", "mednode"])
    assert res.exit_code == 0, res.output
    lines = _last_lines(res.stderr)
    n_images = sum(1 for p in (tiny_root / "complete_mednode_dataset").rglob("*") if p.is_file())
    assert any(line.startswith("data check · mednode · decode: 100%") and f"{n_images}/{n_images} [" in line
               for line in lines), lines
    assert any(line.startswith("data check: 100%") and "1/1 [" in line for line in lines), lines
    assert "1 of 1 task(s) found" in res.stdout and "data check" not in res.stdout  # bars never on stdout


def test_data_check_draws_nothing_in_a_log_by_default(tiny_root, monkeypatch, capsys):
    from dermbench.data.check import check_data
    from dermbench.data.tasks import get_card

    monkeypatch.delenv(ENV_VAR, raising=False)
    check_data(tiny_root, [get_card("mednode")])
    assert capsys.readouterr().err == ""
