"""Segmentation protocols (seg-linear, seg-upernet) on tiny synthetic lesions with known masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import confusion_matrix, f1_score, jaccard_score
from torch import nn

from dermbench.models.backbone import FrozenBackbone, seeded
from dermbench.data.sample import DatasetError, Sample, TaskData
from dermbench.features import FeatureCache
from dermbench.protocols import get_protocol
from dermbench.protocols.base import RunContext
from dermbench.protocols.segmentation import build_upernet, mask_scores, train_batches
from dermbench.models.registry import BackboneMeta
from dermbench.data.splits import Split, make_split
from dermbench.data.tasks import get_card

SKIN = np.array([215.0, 170.0, 140.0])
LESION = np.array([85.0, 45.0, 30.0])
# Few, small steps would not fit 12 training images in the default 20 epochs of batch 64.
FAST = {"epochs": 20, "batch_size": 4, "lr": 1e-2}


def write_lesions(folder: Path, n: int, sizes=((32, 32),), seed: int = 0) -> list[Sample]:
    """Skin-coloured images with one dark elliptical lesion each; masks 0/255 PNG at the image size."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
        rx, ry = rng.uniform(0.2, 0.32) * w, rng.uniform(0.2, 0.32) * h
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        img = np.where(mask[..., None], LESION, SKIN) + rng.normal(0, 6, (h, w, 3))
        image, mask_path = folder / f"img{i:02d}.png", folder / f"img{i:02d}_mask.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(image)
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
        samples.append(Sample(id=f"case/{i:02d}", image=image, mask=mask_path))
    return samples


COLOUR_META = BackboneMeta(
    key="test-colour", architecture="fixed 1x1 colour projections, average-pooled", embed_dim=8, input_size=32,
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode="squash", interpolation="bilinear",
    level_indices=(0, 1, 2, 3), level_channels=(4, 8, 12, 16),
)


class ColourBackbone(FrozenBackbone):
    """Features that only see local colour, so the lesion mask is linearly separable.

    tokens: [8, 16, 16]; levels: 'pyramid' (CNN-like, strides 2/4/8/16, widths 4/8/12/16) or
    'same-grid' (ViT-like, four 16-wide maps on one 8x8 grid).
    """

    def __init__(self, levels: str = "pyramid"):
        super().__init__(COLOUR_META, weights_sha256="fixed-seed-0", variant={"levels": levels})
        with seeded(0):
            self.proj = nn.ModuleList([nn.Conv2d(3, c, 1) for c in (8, 4, 8, 12, 16)])
        self.levels = levels
        self.seg_input_size = 32
        self.freeze()

    def forward_global(self, x):
        return self.proj[0](x).mean((2, 3))

    def forward_tokens(self, x):
        return F.avg_pool2d(self.proj[0](x), 2)

    def forward_levels(self, x, indices=None):
        idx = list(indices if indices is not None else self.level_indices)
        if self.levels == "pyramid":
            return [F.avg_pool2d(self.proj[1 + i](x), 2 ** (i + 1)) for i in idx]
        return [F.avg_pool2d(self.proj[4](x), 4) * (1 + 0.5 * i) for i in idx]


def make_ctx(tmp_path: Path, protocol, backbone, samples, seed: int = 0, split: Split | None = None, **overrides):
    data = TaskData(task="ph2-seg", root=tmp_path, samples=samples, classes=[])
    split = split or make_split(data, "random", seed=0)
    artifacts = tmp_path / f"{protocol.name}-{seed}.artifacts"
    return RunContext(card=get_card("ph2-seg"), data=data, split=split, get_backbone=lambda: backbone,
                      features=FeatureCache(tmp_path / "cache"), seed=seed, device="cpu",
                      config=protocol.resolve_config(overrides), artifacts_dir=artifacts, progress=False)


def independent_scores(ctx: RunContext, size) -> pd.DataFrame:
    """Per-image scores recomputed with scikit-learn from the saved PNG masks and the raw mask files."""
    index = pd.read_csv(ctx.artifacts_dir / "masks" / "index.csv")
    assert index["sample_id"].tolist() == [s.id for s in ctx.test]
    rows = []
    for sample, file in zip(ctx.test, index["file"]):
        pred = np.asarray(Image.open(ctx.artifacts_dir / "masks" / file)) > 127
        truth_img = Image.open(sample.mask).convert("L")
        if size is not None:
            truth_img = truth_img.resize((size, size), Image.NEAREST)
        truth = np.asarray(truth_img) > 0
        assert pred.shape == truth.shape
        t, p = truth.ravel().astype(int), pred.ravel().astype(int)
        tn, fp, fn, tp = confusion_matrix(t, p, labels=[0, 1]).ravel()
        rows.append({"sample_id": sample.id, "dice": f1_score(t, p, zero_division=1.0),
                     "jaccard": jaccard_score(t, p, zero_division=1.0), "tp": tp, "fp": fp, "fn": fn, "tn": tn})
    return pd.DataFrame(rows)


def check_against_saved_masks(ctx, out, size):
    ref = independent_scores(ctx, size)
    pred = out.predictions
    assert pred["sample_id"].tolist() == ref["sample_id"].tolist()
    np.testing.assert_allclose(pred["dice"].to_numpy(float), ref["dice"].to_numpy(float), rtol=0, atol=1e-12)
    np.testing.assert_allclose(pred["jaccard"].to_numpy(float), ref["jaccard"].to_numpy(float), rtol=0, atol=1e-12)
    for c in ("tp", "fp", "fn", "tn"):
        np.testing.assert_array_equal(pred[c].to_numpy(np.int64), ref[c].to_numpy(np.int64))


@pytest.fixture(autouse=True)
def one_thread():
    # The heads here are tiny: on a shared CPU, intra-op threads cost far more in contention than they save.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    return write_lesions(tmp_path_factory.mktemp("lesions"), 24)


# --- pure functions ------------------------------------------------------------------------

def test_mask_scores_known_answers_and_empty_rule():
    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True  # 4 lesion pixels
    pred = np.zeros((4, 4), bool)
    pred[:2, :3] = True  # 6 predicted: 4 hits, 2 false positives
    s = mask_scores(pred, truth)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (4, 2, 0, 10)
    assert s["dice"] == pytest.approx(8 / 10) and s["jaccard"] == pytest.approx(4 / 6)
    empty = np.zeros((4, 4), bool)
    assert mask_scores(empty, empty)["dice"] == 1.0 and mask_scores(empty, empty)["jaccard"] == 1.0
    assert mask_scores(empty, truth)["dice"] == 0.0 and mask_scores(pred, empty)["jaccard"] == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        mask_scores(empty, np.zeros((3, 4), bool))


@pytest.mark.parametrize("n,bs,expected", [(9, 4, [4, 5]), (8, 4, [4, 4]), (5, 4, [5]), (1, 4, [1]), (13, 64, [13])])
def test_train_batches_cover_every_sample_and_avoid_a_last_batch_of_one(n, bs, expected):
    chunks = train_batches(n, bs, np.random.default_rng(0))
    assert [len(c) for c in chunks] == expected
    assert sorted(np.concatenate(chunks).tolist()) == list(range(n))


@pytest.mark.parametrize("grid,strides", [(16, [64, 32, 16, 8]), (14, [56, 28, 14, 7])])
def test_vit_neck_rescales_one_grid_to_strides_4_8_16_32(grid, strides):
    # ViT-B/14 and ViT-B/16 at 224 px: the neck must give the 1/4, 1/8, 1/16, 1/32 maps UperNet expects
    model = build_upernet([(6, grid, grid)] * 4, channels=8, pool_scales=[1, 2, 3, 6])
    levels = [torch.randn(2, 6, grid, grid) for _ in range(4)]
    assert [f(x).shape[-1] for f, x in zip(model.neck, levels)] == strides
    assert model(levels).shape == (2, 2, strides[0], strides[0])


def test_pyramid_levels_go_to_upernet_unchanged():
    shapes = [(4, 56, 56), (8, 28, 28), (12, 14, 14), (16, 7, 7)]  # a ResNet's stages 1-4, narrowed
    model = build_upernet(shapes, channels=8, pool_scales=[1, 2, 3, 6])
    assert all(isinstance(f, nn.Identity) for f in model.neck)
    assert model([torch.randn(2, *s) for s in shapes]).shape == (2, 2, 56, 56)
    with pytest.raises(ValueError, match="4 maps of equal width"):
        build_upernet([(6, 8, 8)] * 3, channels=8, pool_scales=[1, 2, 3, 6])


# --- heads learn separable masks; scores match the saved masks ----------------------------------

def test_linear_head_learns_lesion_and_scores_match_saved_masks(tmp_path, lesions):
    protocol = get_protocol("seg-linear")
    assert protocol.kind == "segmentation" and protocol.defaults["dropout"] == 0.1
    ctx = make_ctx(tmp_path, protocol, ColourBackbone(), lesions, save_masks=True, **FAST)
    out = protocol.run(ctx)
    assert list(out.predictions.columns) == ["sample_id", "dice", "jaccard", "tp", "fp", "fn", "tn",
                                             "hd95", "surface_dice", "threshold_jaccard"]  # boundary: test_boundary.py
    assert out.predictions["sample_id"].tolist() == [s.id for s in ctx.test]
    assert (out.n_train, out.n_test, out.kind) == (12, 12, "segmentation")
    assert out.predictions["dice"].mean() > 0.9
    assert (out.predictions[["tp", "fp", "fn", "tn"]].sum(axis=1) == 32 * 32).all()
    check_against_saved_masks(ctx, out, 32)
    info = out.info
    assert info["score_at"] == "224" and info["settings"]["lr"] == 1e-2 and info["feature_shapes"] == [[8, 16, 16]]
    assert len(info["train_loss"]) == 20 and info["train_loss"][-1] < info["train_loss"][0]
    assert f"{ctx.artifacts_dir.name}/contours.png" in out.artifacts
    assert (ctx.artifacts_dir / "contours.png").stat().st_size > 1000
    assert not (tmp_path / "masks").exists()  # everything under the artifacts folder


@pytest.mark.parametrize("levels", ["pyramid", "same-grid"])
def test_upernet_learns_lesion_on_cnn_and_vit_levels(tmp_path, lesions, levels):
    protocol = get_protocol("seg-upernet")
    ctx = make_ctx(tmp_path, protocol, ColourBackbone(levels), lesions, save_masks=True, upernet_channels=16,
                   num_figure_images=0, **FAST)
    out = protocol.run(ctx)
    assert out.predictions["dice"].mean() > 0.9
    check_against_saved_masks(ctx, out, 32)
    assert ("ViT neck" in out.info["head"]) == (levels == "same-grid")
    expected = [[4, 16, 16], [8, 8, 8], [12, 4, 4], [16, 2, 2]] if levels == "pyramid" else [[16, 8, 8]] * 4
    assert out.info["feature_shapes"] == expected
    assert out.artifacts == [f"{ctx.artifacts_dir.name}/masks/index.csv"]


def test_score_at_original_scores_each_mask_at_its_own_size(tmp_path):
    sizes = ((40, 48), (56, 36))  # (width, height), neither square nor the 32-px input
    samples = write_lesions(tmp_path / "odd", 16, sizes=sizes, seed=3)
    protocol = get_protocol("seg-linear")
    ctx = make_ctx(tmp_path, protocol, ColourBackbone(), samples, save_masks=True, score_at="original", **FAST)
    out = protocol.run(ctx)
    totals = out.predictions[["tp", "fp", "fn", "tn"]].sum(axis=1).to_numpy()
    areas = [Image.open(s.mask).size[0] * Image.open(s.mask).size[1] for s in ctx.test]
    np.testing.assert_array_equal(totals, areas)
    assert out.info["score_at"] == "original"
    assert out.predictions["dice"].mean() > 0.85
    check_against_saved_masks(ctx, out, None)


def test_seeded_runs_are_identical(tmp_path, lesions):
    protocol = get_protocol("seg-upernet")
    settings = dict(upernet_channels=8, num_figure_images=0, epochs=3, batch_size=4, lr=1e-2)
    a = protocol.run(make_ctx(tmp_path, protocol, ColourBackbone(), lesions, seed=5, **settings))
    b = protocol.run(make_ctx(tmp_path, protocol, ColourBackbone(), lesions, seed=5, **settings))
    c = protocol.run(make_ctx(tmp_path, protocol, ColourBackbone(), lesions, seed=6, **settings))
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    assert a.info["train_loss"] == b.info["train_loss"]
    assert a.info["train_loss"] != c.info["train_loss"]


# --- edge cases -----------------------------------------------------------------------------------

def test_upernet_trains_when_the_last_batch_would_hold_one_image(tmp_path, lesions):
    protocol = get_protocol("seg-upernet")
    # 5 training images with batch 4: a batch of 1 would make BatchNorm on the 1x1 pooled map fail
    ctx = make_ctx(tmp_path, protocol, ColourBackbone(), lesions[:10], upernet_channels=8, num_figure_images=0,
                   epochs=2, batch_size=4)
    assert len(ctx.train) == 5
    out = protocol.run(ctx)
    assert out.n_train == 5 and len(out.predictions) == 5


def test_upernet_with_a_single_training_image_is_a_clear_error(tmp_path, lesions):
    protocol = get_protocol("seg-upernet")
    split = Split(task="ph2-seg", rule="random", seed=0, train=[lesions[0].id], test=[s.id for s in lesions[1:4]])
    ctx = make_ctx(tmp_path, protocol, ColourBackbone(), lesions[:4], split=split, epochs=1)
    with pytest.raises(DatasetError, match="at least 2 training images"):
        protocol.run(ctx)


def test_missing_or_unreadable_masks_name_the_sample(tmp_path, lesions):
    protocol = get_protocol("seg-linear")
    broken = [Sample(id=s.id, image=s.image, mask=None) if i == 2 else s for i, s in enumerate(lesions[:6])]
    ctx = make_ctx(tmp_path, protocol, ColourBackbone(), broken, epochs=1)
    with pytest.raises(DatasetError, match=r"1 of 6 image\(s\) have no lesion mask file, e.g. 'case/02'"):
        protocol.run(ctx)
    assert ctx.features.stats["computed"] == 0  # failed before any feature extraction
    junk = tmp_path / "junk_mask.png"
    junk.write_bytes(b"not a png")
    broken = [Sample(id=s.id, image=s.image, mask=junk) for s in lesions[:6]]
    ctx = make_ctx(tmp_path, protocol, ColourBackbone(), broken, epochs=1)
    with pytest.raises(DatasetError, match="junk_mask.png .* cannot be read"):
        protocol.run(ctx)


def test_invalid_settings_are_rejected(tmp_path, lesions):
    protocol = get_protocol("seg-upernet")
    with pytest.raises(ValueError, match="score_at must be one of"):
        protocol.run(make_ctx(tmp_path, protocol, ColourBackbone(), lesions[:6], score_at="512"))
    with pytest.raises(ValueError, match="pool_scales"):
        protocol.run(make_ctx(tmp_path, protocol, ColourBackbone(), lesions[:6], pool_scales="1,x", epochs=1))
    with pytest.raises(KeyError, match="no setting 'dropout'"):
        protocol.resolve_config({"dropout": 0.2})  # the UperNet head has no dropout setting


# --- the real ViT path: random-vit through the feature cache ------------------------------------------

@pytest.mark.parametrize("name", ["seg-linear", "seg-upernet"])
def test_random_vit_runs_both_heads(tmp_path, name):
    from dermbench.models.random_vit import build_random_vit

    samples = write_lesions(tmp_path / "vit", 8, sizes=((64, 64),), seed=1)
    protocol = get_protocol(name)
    overrides = {"epochs": 2, "batch_size": 4, "num_figure_images": 2}
    if name == "seg-upernet":
        overrides["upernet_channels"] = 16
    ctx = make_ctx(tmp_path, protocol, build_random_vit(), samples, **overrides)
    out = protocol.run(ctx)
    assert len(out.predictions) == 4 and out.predictions["dice"].between(0, 1).all()
    assert (out.predictions[["tp", "fp", "fn", "tn"]].sum(axis=1) == 64 * 64).all()
    if name == "seg-upernet":
        assert out.info["feature_shapes"] == [[96, 8, 8]] * 4 and "ViT neck" in out.info["head"]
    else:
        assert out.info["feature_shapes"] == [[96, 8, 8]]
    assert (ctx.artifacts_dir / "contours.png").exists()
    # the backbone never runs during training: features are cached once per image and view
    assert ctx.features.stats["computed"] == 8
