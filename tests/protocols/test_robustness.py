"""Robustness protocol on a tiny colour backbone with a real feature cache: the clean block is the linear
result, corrupted features are cached per (corruption, severity, seed), paired deltas and relative drops."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from dermbench.data.sample import Sample, TaskData
from dermbench.data.splits import make_split
from dermbench.data.tasks import get_card
from dermbench.features import FeatureCache
from dermbench.models.backbone import FrozenBackbone, seeded
from dermbench.models.registry import BackboneMeta
from dermbench.protocols import get_protocol
from dermbench.protocols.base import RunContext
from dermbench.protocols.robustness import corrupting_transform, evaluate_robustness
from dermbench.stats.bootstrap import bootstrap_indices

META = BackboneMeta(key="test-rgb", architecture="channel means and stds", embed_dim=6, input_size=32,
                    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode="squash", interpolation="bilinear")


class RGBStats(FrozenBackbone):
    """Global feature = per-channel mean and std of the normalised image (a corruption moves it)."""

    def __init__(self):
        super().__init__(META, weights_sha256="none")
        with seeded(0):
            self.dummy = nn.Linear(1, 1)
        self.freeze()

    def forward_global(self, x):
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1)

    def forward_tokens(self, x):
        raise TypeError("global features only")

    def forward_levels(self, x, indices=None):
        raise TypeError("global features only")


def write_images(folder: Path, n: int = 24) -> list[Sample]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        label = i % 2
        base = np.array([200, 150, 120]) if label == 0 else np.array([120, 70, 50])
        arr = np.clip(base + rng.normal(0, 25, (40, 48, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img{i:02d}.png"
        Image.fromarray(arr).save(path)
        samples.append(Sample(id=f"s{i:02d}", image=path, label=label))
    return samples


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("robustness-images"))


def make_ctx(tmp_path, protocol, samples, cache=None, **overrides):
    card = get_card("mednode")
    data = TaskData(task=card.name, root=tmp_path, samples=samples, classes=list(card.classes))
    backbone = RGBStats()
    return RunContext(card=card, data=data, split=make_split(data, "stratified", seed=0), get_backbone=lambda: backbone,
                      features=cache or FeatureCache(tmp_path / "cache"), seed=0, device="cpu",
                      config=protocol.resolve_config(overrides), artifacts_dir=tmp_path / "artifacts", progress=False)


def test_severity_zero_transform_gives_the_clean_tensor(samples):
    backbone = RGBStats()
    image = Image.open(samples[0].image).convert("RGB")
    clean = backbone.transform()(image)
    torch.testing.assert_close(corrupting_transform(backbone, "hair", 0, seed=0)(image), clean, rtol=0, atol=0)
    assert not torch.equal(corrupting_transform(backbone, "hair", 5, seed=0)(image), clean)


def test_clean_block_is_the_linear_result_and_corrupted_features_are_cached(tmp_path, samples):
    protocol = get_protocol("robustness")
    settings = dict(corruptions="gaussian_noise,black_corner", severities="1,5", epochs=20)
    cache = FeatureCache(tmp_path / "cache")
    ctx = make_ctx(tmp_path, protocol, samples, cache, **settings)
    out = protocol.run(ctx)
    pred = out.predictions
    assert list(pred.columns[:3]) == ["corruption", "severity", "sample_id"]
    assert pred.groupby(["corruption", "severity"], sort=False).size().to_dict() == {
        ("clean", 0): 12, ("gaussian_noise", 1): 12, ("gaussian_noise", 5): 12, ("black_corner", 1): 12,
        ("black_corner", 5): 12}

    linear = get_protocol("linear")
    lin = linear.run(make_ctx(tmp_path, linear, samples, cache, epochs=20)).predictions
    clean = pred[pred["corruption"] == "clean"].drop(columns=["corruption", "severity"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(clean, lin)  # same head, same clean features: the linear result exactly

    computed = cache.stats["computed"]
    again = protocol.run(make_ctx(tmp_path, protocol, samples, cache, **settings))
    assert cache.stats["computed"] == computed  # every corrupted feature came from the cache
    pd.testing.assert_frame_equal(again.predictions, pred)
    views = sorted(p.name for p in (tmp_path / "cache" / "features").glob("*/*"))
    assert views == ["global-eval", "global-eval~black_corner~s1~seed0~v1", "global-eval~black_corner~s5~seed0~v1",
                     "global-eval~gaussian_noise~s1~seed0~v1", "global-eval~gaussian_noise~s5~seed0~v1"]
    assert out.info["severities"] == [1, 5] and set(out.info["corruptions"]) == {"gaussian_noise", "black_corner"}

    strong = pred[(pred["corruption"] == "black_corner") & (pred["severity"] == 5)]
    assert not np.allclose(strong["score_1"].to_numpy(), clean["score_1"].to_numpy())  # corrupted features differ

    boot = bootstrap_indices(12, 100, seed=1, strata=protocol.bootstrap_strata(pred))
    m = protocol.evaluate(pred, boot)
    for c in ("gaussian_noise", "black_corner"):
        for s in (1, 5):
            assert m[f"auroc_delta@{c}@{s}"]["value"] == pytest.approx(m[f"auroc@{c}@{s}"]["value"] - m["auroc"]["value"])
        rel = np.mean([(m["auroc"]["value"] - m[f"auroc@{c}@{s}"]["value"]) / m["auroc"]["value"] for s in (1, 5)])
        assert m[f"auroc_rel_drop@{c}"]["value"] == pytest.approx(rel)
    assert m["auroc_rel_drop"]["value"] == pytest.approx(np.mean([m[f"auroc_rel_drop@{c}"]["value"]
                                                                   for c in ("gaussian_noise", "black_corner")]))


def test_identical_blocks_have_zero_delta_and_drop():
    rng = np.random.default_rng(0)
    base = pd.DataFrame({"sample_id": [f"s{i}" for i in range(20)], "label": np.arange(20) % 2})
    base["score_1"] = np.clip(base["label"] * 0.4 + rng.uniform(0, 0.6, 20), 0, 1)
    base["score_0"] = 1 - base["score_1"]
    base["pred"] = (base["score_1"] > 0.5).astype(int)
    base = base[["sample_id", "label", "pred", "score_0", "score_1"]]
    blocks = [base.assign(corruption=c, severity=s) for c, s in [("clean", 0), ("hair", 1), ("hair", 2)]]
    table = pd.concat(blocks, ignore_index=True)[["corruption", "severity", *base.columns]]
    m = evaluate_robustness(table, bootstrap_indices(20, 50, 0, base["label"].to_numpy()))
    assert m["auroc_delta@hair@2"]["value"] == 0 and m["auroc_delta@hair@2"]["ci_high"] == 0
    assert m["auroc_rel_drop"]["value"] == 0 and m["auroc@hair@1"] == m["auroc"]


def test_settings_are_checked_and_dermsynth_runs_a_recorded_subset(tmp_path):
    protocol = get_protocol("robustness")
    (tmp_path / "DERMSYNTH.json").write_text("{}")
    (tmp_path / "PH2Dataset").mkdir()
    synth = TaskData(task="ph2-cls", root=tmp_path / "PH2Dataset", samples=[], classes=["nevus", "melanoma"])
    cfg = protocol.resolve_config(protocol.data_defaults(synth))
    assert cfg["corruptions"] == ["gaussian_noise", "defocus_blur", "black_corner", "hair"] and cfg["severities"] == [1, 3, 5]
    real = TaskData(task="ph2-cls", root=tmp_path.parent, samples=[], classes=["nevus", "melanoma"])
    assert protocol.data_defaults(real) == {}
    assert protocol.accepts(get_card("mednode")) and not protocol.accepts(get_card("ph2-seg"))
    with pytest.raises(ValueError, match="unknown corruption 'snow'"):
        protocol.resolve_config({"corruptions": "snow"})
    with pytest.raises(ValueError, match="1..5"):
        protocol.resolve_config({"severities": "0,1"})
    cfg = protocol.resolve_config({"corruptions": "dermatology"})
    assert "hair" in cfg["corruptions"] and "gaussian_noise" not in cfg["corruptions"] and cfg["severities"] == [1, 2, 3, 4, 5]
    assert len(protocol.resolve_config({})["corruptions"]) == 18
