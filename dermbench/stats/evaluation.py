"""Metrics with bootstrap intervals, computed from stored per-sample predictions only.

The same function serves a fresh run and ``leaderboard --rebuild``: given a predictions
table (see dermbench.protocols.base for the columns of each kind) and the shared bootstrap
indices, it returns ``{metric: {value, ci_low, ci_high, std, boot_mean, paper_low, paper_high, n_boot_valid}}``.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from dermbench.stats import metrics as M
from dermbench.stats.bootstrap import summarise

MAIN_METRICS = {
    "classification": ("auroc", "f1", "accuracy", "balanced_accuracy"),
    "segmentation": ("dice", "jaccard", "pixel_accuracy", "miou"),
}


def score_columns(predictions: pd.DataFrame) -> list[str]:
    cols = [c for c in predictions.columns if c.startswith("score_")]
    return sorted(cols, key=lambda c: int(c.split("_", 1)[1]))


def classification_arrays(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = predictions["label"].to_numpy(dtype=np.int64)
    pred = predictions["pred"].to_numpy(dtype=np.int64)
    scores = predictions[score_columns(predictions)].to_numpy(dtype=np.float64)
    return y, pred, scores


def replicates(kind: str, predictions: pd.DataFrame, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Metric values on each row of ``idx`` (an [B, n] index matrix into the predictions)."""
    if kind == "classification":
        y, pred, scores = classification_arrays(predictions)
        return M.classification_replicates(y, pred, scores, idx)
    if kind == "segmentation":
        return _segmentation_replicates(predictions, idx)
    raise ValueError(f"no replicate metrics for kind {kind!r}")


def _segmentation_replicates(predictions: pd.DataFrame, idx: np.ndarray) -> dict[str, np.ndarray]:
    # Dice / Jaccard: mean of per-image scores (the official code's convention);
    # pixel accuracy and mean IoU (lesion + background): from counts pooled over images.
    dice = predictions["dice"].to_numpy(np.float64)[idx].mean(axis=1)
    jac = predictions["jaccard"].to_numpy(np.float64)[idx].mean(axis=1)
    tp, fp, fn, tn = (predictions[c].to_numpy(np.float64)[idx].sum(axis=1) for c in ("tp", "fp", "fn", "tn"))
    total = tp + fp + fn + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        pixel_acc = (tp + tn) / total
        iou_lesion = tp / (tp + fp + fn)
        iou_background = tn / (tn + fn + fp)
    out = {"dice": dice, "jaccard": jac, "pixel_accuracy": pixel_acc, "miou": (iou_lesion + iou_background) / 2}
    out.update(_boundary_replicates(predictions, idx))
    return out


def _boundary_replicates(predictions: pd.DataFrame, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Means over images of the per-image boundary columns (dermbench.stats.boundary), where stored.
    hd95 is undefined (NaN) when exactly one of the masks is empty: its mean is over the images where
    it is defined (the protocol's info counts the others)."""
    out = {}
    if "hd95" in predictions.columns:
        with warnings.catch_warnings():  # a replicate drawing only undefined images is NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            out["hd95"] = np.nanmean(predictions["hd95"].to_numpy(np.float64)[idx], axis=1)
    for col in ("surface_dice", "threshold_jaccard"):
        if col in predictions.columns:
            out[col] = predictions[col].to_numpy(np.float64)[idx].mean(axis=1)
    return out


def evaluate(kind: str, predictions: pd.DataFrame, boot_idx: np.ndarray) -> dict[str, dict]:
    """Point estimates on the full test set and bootstrap summaries for every metric of ``kind``."""
    if kind == "caption":
        from dermbench.stats.caption_metrics import evaluate_captions

        scored = evaluate_captions(predictions, boot_idx)
        return {name: summarise(r["value"], r["replicates"]) for name, r in scored.items()}
    n = len(predictions)
    if boot_idx.shape[1] != n:
        raise ValueError(f"bootstrap indices are for {boot_idx.shape[1]} test samples, predictions have {n}")
    point = replicates(kind, predictions, M.full_index(n))
    reps = replicates(kind, predictions, boot_idx)
    return {name: summarise(float(point[name][0]), reps[name]) for name in point}


def evaluate_result(protocol, kind: str, predictions: pd.DataFrame, boot_idx: np.ndarray) -> dict[str, dict]:
    """Metrics of one result: the protocol's own ``evaluate`` hook where it has one (label efficiency,
    federated: several prediction blocks per test sample), else the metrics of its output kind.
    The runner and ``leaderboard --rebuild`` both go through here, so a rebuild reproduces a run."""
    hook = getattr(protocol, "evaluate", None)
    return hook(predictions, boot_idx) if hook is not None else evaluate(kind, predictions, boot_idx)
