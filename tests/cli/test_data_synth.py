"""`dermbench data synth --image-size WxH --dataset NAME`: camera-sized JPEGs for decode benchmarks."""
from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from dermbench.cli import app

runner = CliRunner()


def test_synth_writes_exact_image_size(tmp_path):
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "s"), "--image-size", "96x72",
                              "--dataset", "isic2018", "--scale", "0.05"])
    assert res.exit_code == 0, res.output
    images = [p for p in (tmp_path / "s").rglob("*.jpg")]
    masks = [p for p in (tmp_path / "s").rglob("*_segmentation.png")]
    assert images and masks
    assert {Image.open(p).size for p in images} == {(96, 72)}
    assert {Image.open(p).size for p in masks} == {(96, 72)}
    meta = json.loads((tmp_path / "s" / "DERMSYNTH.json").read_text())
    assert meta["image_size"] == [96, 72] and list(meta["counts"]) == ["isic2018"]


def test_synth_bad_options_are_one_line_errors(tmp_path):
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "s"), "--image-size", "big"])
    assert res.exit_code == 2 and "--image-size 'big': expected N or WxH" in res.output
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "s"), "--dataset", "isic2099"])
    assert res.exit_code == 2 and "unknown DermSynth dataset" in res.output
    assert not (tmp_path / "s").exists()
