"""Boundary metrics: HD95 and surface Dice on shapes with known distances; ISIC 2018's thresholded Jaccard
against the challenge's own scoring package; the per-image columns through the segmentation protocol."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion

from dermbench.stats.boundary import boundary_scores, jaccard_of, threshold_jaccard
from dermbench.stats.evaluation import evaluate
from dermbench.stats.metrics import full_index


def square(size=64, top=16, left=16, side=24) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[top : top + side, left : left + side] = True
    return m


def brute_force_surface_dice(a: np.ndarray, b: np.ndarray, tol: float) -> float:
    """Nikolov et al.'s definition, by hand: boundary pixels (mask minus its erosion, as MONAI's edges),
    each boundary's pixels within ``tol`` of the other boundary, over both boundaries' sizes."""
    ea = np.argwhere(a & ~binary_erosion(a))
    eb = np.argwhere(b & ~binary_erosion(b))
    d = np.sqrt(((ea[:, None, :] - eb[None, :, :]) ** 2).sum(-1))
    return ((d.min(1) <= tol).sum() + (d.min(0) <= tol).sum()) / (len(ea) + len(eb))


@pytest.mark.parametrize("shift", [1, 3, 6])
def test_hd95_of_a_shifted_square_is_the_shift(shift):
    # Every boundary point is at most `shift` from the other boundary; a whole edge (25% of the boundary) is
    # exactly `shift` away, so the 95th percentile is the shift itself.
    a, b = square(), square(left=16 + shift)
    assert boundary_scores(b, a, tolerance=shift)["hd95"] == pytest.approx(shift)
    assert boundary_scores(a, b, tolerance=shift)["hd95"] == pytest.approx(shift)  # symmetric


@pytest.mark.parametrize("shift,tol", [(3, 3), (3, 5), (3, 2), (3, 1), (6, 2), (2, 0)])
def test_surface_dice_is_one_within_tolerance_and_matches_the_definition_otherwise(shift, tol):
    a, b = square(), square(left=16 + shift)
    nsd = boundary_scores(b, a, tolerance=tol)["surface_dice"]
    if tol >= shift:
        assert nsd == pytest.approx(1.0)
    else:
        assert 0 < nsd < 1
    assert nsd == pytest.approx(brute_force_surface_dice(a, b, tol))


def test_concentric_discs_hd95_is_the_radius_difference():
    yy, xx = np.mgrid[0:96, 0:96]
    r = np.hypot(yy - 47.5, xx - 47.5)
    inner, outer = r <= 20, r <= 28
    scores = boundary_scores(inner, outer, tolerance=4)
    assert scores["hd95"] == pytest.approx(8.0, abs=1.0)  # pixel discretisation of the circles
    assert scores["surface_dice"] < 0.05  # nothing of either boundary lies within 4 px of the other
    assert boundary_scores(outer, outer, tolerance=0) == {"hd95": 0.0, "surface_dice": 1.0}


def test_empty_masks_rules():
    empty, a = np.zeros((16, 16), bool), square(16, 4, 4, 6)
    assert boundary_scores(empty, empty, 2) == {"hd95": 0.0, "surface_dice": 1.0}
    one = boundary_scores(empty, a, 2)
    assert np.isnan(one["hd95"]) and one["surface_dice"] == 0.0
    with pytest.raises(ValueError, match="one shape"):
        boundary_scores(a, np.zeros((8, 8), bool), 2)


def test_threshold_jaccard_matches_the_isic_challenge_scorer():
    from isic_challenge_scoring.confusion import create_binary_confusion_matrix
    from isic_challenge_scoring.metrics import binary_jaccard, binary_threshold_jaccard

    rng = np.random.default_rng(0)
    ours, theirs = [], []
    for i in range(60):
        truth = square(32, *rng.integers(2, 12, size=2), side=int(rng.integers(0, 18)))
        pred = square(32, *rng.integers(2, 12, size=2), side=int(rng.integers(0, 18)))
        cm = create_binary_confusion_matrix(truth_binary_values=truth, prediction_binary_values=pred, name=str(i))
        assert jaccard_of(pred, truth) == pytest.approx(binary_jaccard(cm))
        ours.append(threshold_jaccard(jaccard_of(pred, truth)))
        theirs.append(binary_threshold_jaccard(cm, threshold=0.65))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert 0 < np.count_nonzero(ours) < len(ours)  # both sides of the threshold were exercised
    assert threshold_jaccard(0.65) == 0.65 and threshold_jaccard(0.6499) == 0.0


def test_evaluation_means_of_the_boundary_columns():
    table = pd.DataFrame({"sample_id": ["a", "b", "c"], "dice": [1.0, 0.5, 0.0], "jaccard": [1.0, 1 / 3, 0.0],
                          "tp": [4, 2, 0], "fp": [0, 2, 0], "fn": [0, 2, 4], "tn": [12, 10, 12],
                          "hd95": [0.0, 3.0, np.nan], "surface_dice": [1.0, 0.5, 0.0],
                          "threshold_jaccard": [1.0, 0.0, 0.0]})
    boot = np.array([[0, 1, 2], [2, 2, 2], [1, 1, 0]])
    m = evaluate("segmentation", table, boot)
    assert m["hd95"]["value"] == pytest.approx(1.5)  # mean where defined
    assert m["surface_dice"]["value"] == pytest.approx(0.5)
    assert m["threshold_jaccard"]["value"] == pytest.approx(1 / 3)
    assert m["hd95"]["n_boot_valid"] == 2  # the replicate of only undefined images is not a number
    assert evaluate("segmentation", table, full_index(3))["hd95"]["ci_low"] == pytest.approx(1.5)


def test_segmentation_protocol_stores_boundary_columns_at_the_original_resolution(tmp_path):
    import torch

    from dermbench.protocols import get_protocol
    from tests.protocols.test_segmentation import FAST, ColourBackbone, make_ctx, write_lesions

    torch.set_num_threads(1)
    samples = write_lesions(tmp_path / "odd", 12, sizes=((40, 48), (56, 36)), seed=5)
    protocol = get_protocol("seg-linear")
    ctx = make_ctx(tmp_path, protocol, ColourBackbone(), samples, save_masks=True, score_at="original",
                   surface_dice_tolerance=2.0, **FAST)
    out = protocol.run(ctx)
    index = pd.read_csv(ctx.artifacts_dir / "masks" / "index.csv")
    for row, file, sample in zip(out.predictions.itertuples(), index["file"], ctx.test):
        pred = np.asarray(Image.open(ctx.artifacts_dir / "masks" / file)) > 127
        truth = np.asarray(Image.open(sample.mask).convert("L")) > 0
        expected = boundary_scores(pred, truth, 2.0)
        np.testing.assert_allclose([row.hd95, row.surface_dice], [expected["hd95"], expected["surface_dice"]])
        assert row.threshold_jaccard == pytest.approx(threshold_jaccard(jaccard_of(pred, truth)))
    info = out.info["boundary_metrics"]
    assert info["surface_dice_tolerance_px"] == 2.0 and info["resolution"] == "each mask's original size"
    m = evaluate("segmentation", out.predictions, full_index(len(out.predictions)))
    assert m["threshold_jaccard"]["value"] == pytest.approx(out.predictions["threshold_jaccard"].mean())
