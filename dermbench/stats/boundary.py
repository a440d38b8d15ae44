"""Boundary metrics of a predicted lesion mask: HD95, normalised surface Dice, and ISIC 2018's thresholded Jaccard.

- ``hd95``: the 95th-percentile symmetric Hausdorff distance between the mask boundaries, in pixels
  (MONAI ``compute_hausdorff_distance(percentile=95)``: the larger of the two directed 95th percentiles).
- ``surface_dice``: normalised surface Dice at a tolerance in pixels (MONAI ``compute_surface_dice``,
  Nikolov et al. 2021): the fraction of both boundaries lying within the tolerance of the other.
- ``threshold_jaccard``: the ISIC 2018 challenge's official segmentation metric: the image's Jaccard,
  or 0 if it is below 0.65 (``isic_challenge_scoring.metrics.binary_threshold_jaccard``; the challenge
  averages it over images).

All are per image, computed by the segmentation protocols at each mask's original resolution.
Empty masks: both empty -> hd95 0, surface Dice 1 (a correct "no lesion", as Dice in
``dermbench.stats.metrics``); exactly one empty -> hd95 undefined (NaN: there is no boundary to measure
from; means skip it and results count such images), surface Dice 0.
"""
from __future__ import annotations

import warnings

import numpy as np

ISIC2018_JACCARD_THRESHOLD = 0.65
EMPTY_RULE_BOUNDARY = ("both masks empty: hd95 = 0, surface_dice = 1; one empty: hd95 = NaN (undefined, "
                       "left out of means and counted), surface_dice = 0")


def threshold_jaccard(jaccard, threshold: float = ISIC2018_JACCARD_THRESHOLD):
    """ISIC 2018: the Jaccard index where it is >= threshold, else 0 (scalar or array)."""
    j = np.asarray(jaccard, dtype=np.float64)
    out = np.where(j >= threshold, j, 0.0)
    return float(out) if out.ndim == 0 else out


def _one_hot(mask: np.ndarray):
    import torch

    m = torch.as_tensor(np.asarray(mask, dtype=bool))
    return torch.stack([~m, m]).unsqueeze(0).to(torch.float32)  # [1, 2, H, W]: background, lesion


def boundary_scores(pred: np.ndarray, truth: np.ndarray, tolerance: float) -> dict[str, float]:
    """{'hd95', 'surface_dice'} of one predicted mask against its ground truth (bool arrays, same shape)."""
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"boundary metrics need two 2-D masks of one shape, got {pred.shape} and {truth.shape}")
    if float(tolerance) < 0:
        raise ValueError(f"surface Dice tolerance must be >= 0 pixels, got {tolerance}")
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return {"hd95": 0.0, "surface_dice": 1.0}
    if not (has_pred and has_truth):
        return {"hd95": float("nan"), "surface_dice": 0.0}
    p, t = _one_hot(pred), _one_hot(truth)
    with warnings.catch_warnings():  # MONAI 1.5+ warns about an argument it passes itself
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(p, t, include_background=False, percentile=95)
        nsd = compute_surface_dice(p, t, class_thresholds=[float(tolerance)], include_background=False)
    return {"hd95": float(hd95.reshape(-1)[0]), "surface_dice": float(nsd.reshape(-1)[0])}


def jaccard_of(pred: np.ndarray, truth: np.ndarray) -> float:
    """Jaccard of the lesion class; 1 when both masks are empty (the ISIC scorer's rule too)."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    union = int(np.logical_or(pred, truth).sum())
    return 1.0 if union == 0 else float(np.logical_and(pred, truth).sum()) / union
