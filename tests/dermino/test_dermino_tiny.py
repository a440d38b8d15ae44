"""The shipped dermino-tiny: registered, loads strictly, flags what it saw, matches the tiny preset."""
from __future__ import annotations

import json

import torch

from dermbench.models import registry
from dermino.backbone import TINY_CONFIG, TINY_WEIGHTS
from dermino.pretrain.config import preset_config


def test_dermino_tiny_is_registered_and_loads_the_shipped_file():
    entry = registry.get("dermino-tiny")
    backbone = entry.build()
    size = entry.meta.input_size
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        g = backbone.forward_global(x)
        tokens = backbone.forward_tokens(x)
    assert g.shape == (2, entry.meta.embed_dim)
    assert tokens.shape[-2:] == entry.meta.grid
    # the weights hash recorded in results is the hash of the shipped tensors, not 'random'
    assert not backbone.weights_sha256.startswith("random")


def test_dermino_tiny_flags_every_task_whose_training_images_it_saw():
    seen = set(registry.get("dermino-tiny").meta.seen_tasks)
    assert {"ddi", "mednode", "ph2-cls", "acne04"} <= seen  # labelled sources
    assert {"isic2018", "skincap"} <= seen  # unlabelled sources


def test_shipped_weights_come_from_the_documented_tiny_preset():
    record = json.loads(TINY_CONFIG.read_text())
    cfg = preset_config("tiny")
    training = record["training"]
    assert training["preset"] == "tiny"
    assert training["iterations"] == cfg.schedule.epochs * cfg.schedule.epoch_length
    assert training["batch_size"] == cfg.schedule.batch_size
    kw = record["timm_kwargs"]
    assert (kw["embed_dim"], kw["depth"], kw["img_size"], kw["patch_size"]) == (
        cfg.model.embed_dim, cfg.model.depth, cfg.model.img_size, cfg.model.patch_size)
    assert TINY_WEIGHTS.stat().st_size < 5_000_000  # a few MB, fit to ship in the package
