"""Calibration of classification scores, vectorised over bootstrap replicates, and temperature scaling.

Like :mod:`dermbench.stats.metrics`, every metric takes the full-test-set arrays and the resample
multiplicities ``counts`` [B, n] (:func:`dermbench.stats.metrics.resample_counts` of the task's stored
shared resamples) and returns one value per replicate; ``counts = ones((1, n))`` is the point estimate.
So every model of a task is resampled identically and differences between models are paired.

Definitions (``p``: the stored class scores, each row renormalised to sum to 1; ``pred``: the model's
prediction; confidence = ``p[pred]``; lower is better for all five):

- ``ece``: expected calibration error with ``N_BINS`` = 15 equal-width confidence bins,
  ``sum_b (n_b / n) |acc_b - conf_b|``. Bin b holds confidences in [b/M, (b+1)/M) (the last bin closed at
  1), located with ``searchsorted(linspace(0, 1, M + 1), conf, 'right') - 1`` as torchmetrics'
  ``multiclass_calibration_error(norm='l1')`` does (tested equal).
- ``ece_mass``: the same with equal-mass bins: samples sorted by confidence (stable) and cut into M
  groups of equal count as ``numpy.array_split`` would (the first ``n mod M`` bins one larger). In a
  replicate a sample drawn k times counts as k consecutive items, and a bin edge may fall between them.
- ``classwise_ece``: Kull et al. (2019): for each class c the equal-width ECE of ``p[:, c]`` against
  ``y == c``, averaged over the classes.
- ``brier``: ``mean_i sum_c (p_ic - [y_i = c])^2`` (the multi-class Brier score; for two classes twice
  the binary ``brier_score_loss``).
- ``nll``: ``mean_i -log max(p_i,y, 1e-12)`` (k-NN vote fractions can be exactly 0).

Binned ECE is biased upwards under resampling (a replicate's bins hold duplicated images, and |·| of a
noisy bin mean is positive), so with small test sets the percentile interval can lie just above the point
estimate; Brier and NLL are means of per-image terms and have no such bias.

Temperature scaling (Guo et al. 2017): logits ``log max(p, 1e-12)`` divided by T, softmax; T minimises the
NLL on held-out *training* scores (the protocols' ``calibration`` table: never the test set), searched on
log T in [log 0.05, log 20] (scipy's bounded Brent). For softmax outputs ``log p`` equals the logits up
to a per-row constant, so this is exactly temperature scaling of the head.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from dermbench.stats.metrics import resample_counts

N_BINS = 15
EPS = 1e-12
CALIBRATION_METRICS = ("ece", "ece_mass", "classwise_ece", "brier", "nll")
TEMPERATURE_BOUNDS = (0.05, 20.0)


def normalised(scores: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 (stored scores carry 10 significant digits); an all-zero row becomes uniform."""
    s = np.clip(np.asarray(scores, np.float64), 0.0, None)
    total = s.sum(axis=1, keepdims=True)
    return np.where(total > 0, s / np.where(total > 0, total, 1.0), 1.0 / s.shape[1])


def top_label(scores: np.ndarray, y: np.ndarray, pred: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """(confidence [n], correct [n] as 0/1) of the prediction (``pred``, default the argmax)."""
    p = normalised(scores)
    pred = p.argmax(axis=1) if pred is None else np.asarray(pred, np.int64)
    return p[np.arange(len(p)), pred], (pred == np.asarray(y)).astype(np.float64)


def equal_width_bins(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)


def _binned_gap(bins: np.ndarray, gap: np.ndarray, counts: np.ndarray, n_bins: int) -> np.ndarray:
    """sum_b |sum_{i in b} w_i gap_i| / sum_i w_i per replicate; gap = correct - confidence."""
    onehot = (bins[:, None] == np.arange(n_bins)[None, :]).astype(np.float64)  # [n, M]
    per_bin = counts @ (onehot * gap[:, None])  # [B, M]
    return np.abs(per_bin).sum(axis=1) / counts.sum(axis=1)


def ece_equal_width(confidence, correct, counts: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    conf = np.asarray(confidence, np.float64)
    return _binned_gap(equal_width_bins(conf, n_bins), np.asarray(correct, np.float64) - conf, counts, n_bins)


def ece_equal_mass(confidence, correct, counts: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    conf = np.asarray(confidence, np.float64)
    order = np.argsort(conf, kind="mergesort")
    gap = (np.asarray(correct, np.float64) - conf)[order]
    w = counts[:, order]
    end = np.cumsum(w, axis=1)  # each sample's copies occupy positions [end - w, end)
    start = end - w
    total = w.sum(axis=1, keepdims=True)  # [B, 1]
    q, r = np.floor_divide(total, n_bins), np.mod(total, n_bins)
    out = np.zeros(len(w))
    for k in range(n_bins):
        lo = k * q + np.minimum(k, r)
        hi = (k + 1) * q + np.minimum(k + 1, r)
        overlap = np.clip(np.minimum(end, hi) - np.maximum(start, lo), 0.0, None)
        out += np.abs((overlap * gap).sum(axis=1))
    return out / total[:, 0]


def classwise_ece(y, scores, counts: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    p = normalised(scores)
    y = np.asarray(y)
    per_class = [ece_equal_width(p[:, c], (y == c).astype(np.float64), counts, n_bins) for c in range(p.shape[1])]
    return np.mean(np.stack(per_class, axis=1), axis=1)


def brier(y, scores, counts: np.ndarray) -> np.ndarray:
    p = normalised(scores)
    onehot = (np.asarray(y)[:, None] == np.arange(p.shape[1])[None, :]).astype(np.float64)
    return (counts @ ((p - onehot) ** 2).sum(axis=1)) / counts.sum(axis=1)


def nll(y, scores, counts: np.ndarray) -> np.ndarray:
    p = normalised(scores)
    per_sample = -np.log(np.maximum(p[np.arange(len(p)), np.asarray(y, np.int64)], EPS))
    return (counts @ per_sample) / counts.sum(axis=1)


def calibration_replicates(y, pred, scores, counts: np.ndarray, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """The five metrics on each row of ``counts`` [B, n]."""
    conf, correct = top_label(scores, y, pred)
    return {
        "ece": ece_equal_width(conf, correct, counts, n_bins),
        "ece_mass": ece_equal_mass(conf, correct, counts, n_bins),
        "classwise_ece": classwise_ece(y, scores, counts, n_bins),
        "brier": brier(y, scores, counts),
        "nll": nll(y, scores, counts),
    }


def evaluate_calibration(y, pred, scores, shared_idx: np.ndarray, n_bins: int = N_BINS) -> dict[str, dict]:
    """{metric: summary (value, percentile CI, ...) and its replicates} on the shared resamples [B, n]."""
    from dermbench.stats.bootstrap import summarise

    n = len(y)
    if shared_idx.shape[1] != n:
        raise ValueError(f"bootstrap indices are for {shared_idx.shape[1]} test samples, predictions have {n}")
    point = calibration_replicates(y, pred, scores, np.ones((1, n)), n_bins)
    reps = calibration_replicates(y, pred, scores, resample_counts(shared_idx, n), n_bins)
    return {m: {**summarise(float(point[m][0]), reps[m]), "replicates": reps[m]} for m in CALIBRATION_METRICS}


def reliability_bins(confidence, correct, n_bins: int = N_BINS) -> pd.DataFrame:
    """The reliability diagram's equal-width bins: low, high, n, mean confidence, accuracy (NaN when empty)."""
    conf, correct = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    bins = equal_width_bins(conf, n_bins)
    rows = []
    for b in range(n_bins):
        inside = bins == b
        k = int(inside.sum())
        rows.append({"bin": b, "low": b / n_bins, "high": (b + 1) / n_bins, "n": k,
                     "confidence": float(conf[inside].mean()) if k else math.nan,
                     "accuracy": float(correct[inside].mean()) if k else math.nan})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Temperature scaling
# ---------------------------------------------------------------------------------------------
def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.maximum(normalised(scores), EPS)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(y, scores) -> float:
    """The temperature minimising the mean NLL of ``apply_temperature(scores, T)`` on (y, scores)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, np.int64)
    if len(y) == 0:
        raise ValueError("temperature scaling needs at least one held-out sample")
    logp = np.log(np.maximum(normalised(scores), EPS))
    rows = np.arange(len(y))

    def loss(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, y]))

    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


def paired_difference(reps_a: np.ndarray, reps_b: np.ndarray, point_a: float, point_b: float) -> dict:
    """A − B on the same shared resamples: the paired bootstrap CI and two-sided p (stats.paired)."""
    from dermbench.stats.paired import paired_bootstrap_test

    return paired_bootstrap_test(np.asarray(reps_a, np.float64), np.asarray(reps_b, np.float64), point_a - point_b)
