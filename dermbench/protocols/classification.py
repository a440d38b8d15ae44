"""Shared pieces of the classification protocols: cached global features and the predictions table."""
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


def predictions_table(ctx: RunContext, scores: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """sample_id, label, pred, score_0..score_{C-1}, in the split's test order."""
    test = ctx.test
    table = pd.DataFrame({
        "sample_id": [s.id for s in test],
        "label": [s.label for s in test],
        "pred": pred.astype(np.int64),
    })
    for c in range(scores.shape[1]):
        table[f"score_{c}"] = scores[:, c].astype(np.float64)
    return table
