"""Classification metrics vectorised over bootstrap replicates, and per-image segmentation scores.

Every function takes the full-test-set arrays plus an index matrix ``idx`` [B, n] and
returns one value per replicate; ``idx = arange(n)[None]`` gives the point estimate.
Definitions follow scikit-learn (tested equal): macro one-vs-rest AUROC (binary: AUROC
of the positive-class score), macro F1 over the labels present in y_true ∪ y_pred,
accuracy, balanced accuracy (mean recall over the classes present in y_true).
"""
from __future__ import annotations

from typing import Any

import numpy as np

CLASSIFICATION_METRICS = ("auroc", "f1", "accuracy", "balanced_accuracy")


def full_index(n: int) -> np.ndarray:
    return np.arange(n)[None, :]


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """[B, n] how many times each test sample appears in each replicate of ``idx`` [B, m].

    Every metric below is a function of these multiplicities, so the replicates never have to
    be materialised, re-sorted or compared element by element: one sort of the full test set and
    a few [B, n] matrix products serve all 1,000 replicates.
    """
    idx = np.asarray(idx)
    b = idx.shape[0]
    flat = (idx + (np.arange(b) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _auroc_weighted(scores: np.ndarray, positive: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC of each replicate, ties counted 1/2. NaN where a replicate lacks a class.

    scores, positive: [n] over the full test set; counts: [B, n] multiplicities. With the samples
    sorted by score and grouped into tie blocks, a positive in block g beats the negatives of all
    lower blocks and ties with those of block g.
    """
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    # [n, B] layout: the block sums and the running sum then walk contiguous rows
    w = np.ascontiguousarray(counts.T[order])
    pos = positive[order].astype(np.float64)[:, None]
    pos_w, all_w = w * pos, w
    if len(starts) < len(order):  # ties: sum each tie block
        pos_w, all_w = np.add.reduceat(pos_w, starts, axis=0), np.add.reduceat(w, starts, axis=0)
    neg_w = all_w - pos_w
    neg_below = np.cumsum(neg_w, axis=0) - neg_w
    n_pos, n_neg = pos_w.sum(axis=0), neg_w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_w * (neg_below + 0.5 * neg_w)).sum(axis=0) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def auroc(y: np.ndarray, scores: np.ndarray, idx: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=np.float64)
    w = resample_counts(idx, len(y)) if counts is None else counts
    n_classes = scores.shape[1]
    if n_classes == 2:
        return _auroc_weighted(scores[:, 1], y == 1, w)
    per_class = np.stack([_auroc_weighted(scores[:, c], y == c, w) for c in range(n_classes)], axis=1)
    # sklearn's macro OvR averages over the classes of y_true: classes absent from a
    # replicate (possible only in unstratified resamples) make the replicate undefined.
    present = (w @ _one_hot(y, n_classes)) > 0
    out = np.where(present.all(axis=1), np.nanmean(np.where(present, per_class, np.nan), axis=1), np.nan)
    return out


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return (np.asarray(labels)[:, None] == np.arange(n_classes)[None, :]).astype(np.float64)


def _counts(y, pred, counts, n_classes):
    """Per-replicate, per-class true positives, false positives and false negatives: [B, C] each."""
    y_hot, p_hot = _one_hot(y, n_classes), _one_hot(pred, n_classes)
    tp = counts @ (y_hot * p_hot)
    fp = counts @ ((1 - y_hot) * p_hot)
    fn = counts @ (y_hot * (1 - p_hot))
    return tp, fp, fn


def f1_macro(y, pred, idx, n_classes: int, counts: np.ndarray | None = None) -> np.ndarray:
    w = resample_counts(idx, len(y)) if counts is None else counts
    tp, fp, fn = _counts(y, pred, w, n_classes)
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)  # NaN = label absent from y and pred
    return np.nanmean(f1, axis=1)


def accuracy(y, pred, idx, counts: np.ndarray | None = None) -> np.ndarray:
    w = resample_counts(idx, len(y)) if counts is None else counts
    correct = (np.asarray(y) == np.asarray(pred)).astype(np.float64)
    return (w @ correct) / w.sum(axis=1)


def balanced_accuracy(y, pred, idx, n_classes: int, counts: np.ndarray | None = None) -> np.ndarray:
    w = resample_counts(idx, len(y)) if counts is None else counts
    tp, _, fn = _counts(y, pred, w, n_classes)
    support = tp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
    return np.nanmean(recall, axis=1)


def classification_replicates(y, pred, scores, idx) -> dict[str, np.ndarray]:
    n_classes = np.asarray(scores).shape[1]
    counts = resample_counts(idx, len(y))  # shared by the four metrics
    return {
        "auroc": auroc(y, scores, idx, counts),
        "f1": f1_macro(y, pred, idx, n_classes, counts),
        "accuracy": accuracy(y, pred, idx, counts),
        "balanced_accuracy": balanced_accuracy(y, pred, idx, n_classes, counts),
    }


# Segmentation: one image's mask against its ground truth
EMPTY_RULE = "Dice = Jaccard = 1 when the prediction and the ground truth are both empty"


def mask_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Dice, Jaccard and pixel counts of the lesion class for one image (see EMPTY_RULE)."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in size")
    pred, truth = pred.astype(bool), truth.astype(bool)
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    tn = int(pred.size) - tp - fp - fn
    union = tp + fp + fn
    dice = 1.0 if union == 0 else 2.0 * tp / (2 * tp + fp + fn)
    jaccard = 1.0 if union == 0 else tp / union
    return {"dice": dice, "jaccard": jaccard, "tp": tp, "fp": fp, "fn": fn, "tn": tn}
