"""Shared pieces of the classification protocols: cached global features, the predictions table, and the
held-out calibration part of the training split."""
from __future__ import annotations

import numpy as np
import pandas as pd

from dermbench.protocols.base import RunContext


def global_features(ctx: RunContext, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(features [n, D] float32, labels [n]) of the train or test part, from the feature cache."""
    samples = ctx.train if part == "train" else ctx.test
    feats = ctx.features.get(
        ctx.get_backbone(), samples, kind="global", view="eval",
        batch_size=int(ctx.config.get("batch_size_features", 32)), device=ctx.device,
        progress=ctx.progress, desc=f"{ctx.card.name} {part}",
    )
    return np.asarray(feats, dtype=np.float32), np.array([s.label for s in samples], dtype=np.int64)


def predictions_table(ctx: RunContext, scores: np.ndarray, pred: np.ndarray, samples=None) -> pd.DataFrame:
    """sample_id, label, pred, score_0..score_{C-1}, in the split's test order (or of ``samples``)."""
    test = ctx.test if samples is None else samples
    table = pd.DataFrame({
        "sample_id": [s.id for s in test],
        "label": [s.label for s in test],
        "pred": pred.astype(np.int64),
    })
    for c in range(scores.shape[1]):
        table[f"score_{c}"] = scores[:, c].astype(np.float64)
    return table


# Temperature scaling and operating-point thresholds need scores on training images the head has not
# fit on. The protocols keep their head trained on the FULL training split for the test predictions
# (so the reported metrics do not change) and fit a second head on the remaining 80% whose scores on the
# held-out 20% are stored as <protocol>.calibration.csv.
CALIBRATION_FRACTION = 0.2
CALIBRATION_RULE = ("class-stratified 20% of the training split (numpy default_rng(run seed), per class "
                    "round(0.2 n_c), at least 1 when n_c >= 2, none when n_c < 2); a separate head is fit on the rest")


def calibration_split(labels: np.ndarray, seed: int, fraction: float = CALIBRATION_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices) into ``labels``, both sorted; see CALIBRATION_RULE."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        k = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        held.append(rng.permutation(members)[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    fit_idx = np.setdiff1d(np.arange(len(labels)), held_idx)
    return fit_idx, held_idx


def calibration_info(seed: int, n_fit: int, n_held: int) -> dict:
    return {"table": "calibration", "rule": CALIBRATION_RULE, "fraction": CALIBRATION_FRACTION, "seed": seed,
            "n_fit": int(n_fit), "n_held_out": int(n_held)}
