"""Classification metrics, vectorised over bootstrap replicates.

Every function takes the full-test-set arrays plus an index matrix ``idx`` [B, n] and
returns one value per replicate; ``idx = arange(n)[None]`` gives the point estimate.
Definitions follow scikit-learn (tested equal): macro one-vs-rest AUROC (binary: AUROC
of the positive-class score), macro F1 over the labels present in y_true ∪ y_pred,
accuracy, balanced accuracy (mean recall over the classes present in y_true).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

CLASSIFICATION_METRICS = ("auroc", "f1", "accuracy", "balanced_accuracy")


def full_index(n: int) -> np.ndarray:
    return np.arange(n)[None, :]


def _auroc_rows(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC per row. scores, positive: [B, n]. NaN where a row lacks a class."""
    ranks = rankdata(scores, axis=1, method="average")
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    rank_sum = (ranks * positive).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def auroc(y: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=np.float64)
    yb = y[idx]
    n_classes = scores.shape[1]
    if n_classes == 2:
        return _auroc_rows(scores[:, 1][idx], yb == 1)
    per_class = np.stack([_auroc_rows(scores[:, c][idx], yb == c) for c in range(n_classes)], axis=1)
    # sklearn's macro OvR averages over the classes of y_true: classes absent from a
    # replicate (possible only in unstratified resamples) make the replicate undefined.
    present = np.stack([(yb == c).any(axis=1) for c in range(n_classes)], axis=1)
    out = np.where(present.all(axis=1), np.nanmean(np.where(present, per_class, np.nan), axis=1), np.nan)
    return out


def _counts(y, pred, idx, n_classes):
    yb = np.asarray(y)[idx]
    pb = np.asarray(pred)[idx]
    tp = np.stack([((yb == c) & (pb == c)).sum(1) for c in range(n_classes)], axis=1)
    fp = np.stack([((yb != c) & (pb == c)).sum(1) for c in range(n_classes)], axis=1)
    fn = np.stack([((yb == c) & (pb != c)).sum(1) for c in range(n_classes)], axis=1)
    return yb, pb, tp, fp, fn


def f1_macro(y, pred, idx, n_classes: int) -> np.ndarray:
    _, _, tp, fp, fn = _counts(y, pred, idx, n_classes)
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)  # NaN = label absent from y and pred
    return np.nanmean(f1, axis=1)


def accuracy(y, pred, idx) -> np.ndarray:
    return (np.asarray(y)[idx] == np.asarray(pred)[idx]).mean(axis=1)


def balanced_accuracy(y, pred, idx, n_classes: int) -> np.ndarray:
    _, _, tp, _, fn = _counts(y, pred, idx, n_classes)
    support = tp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
    return np.nanmean(recall, axis=1)


def classification_replicates(y, pred, scores, idx) -> dict[str, np.ndarray]:
    n_classes = np.asarray(scores).shape[1]
    return {
        "auroc": auroc(y, scores, idx),
        "f1": f1_macro(y, pred, idx, n_classes),
        "accuracy": accuracy(y, pred, idx),
        "balanced_accuracy": balanced_accuracy(y, pred, idx, n_classes),
    }
