"""k-NN retrieval ("zero-shot"): L2-normalised global features, cosine similarity, majority vote.

Class scores for AUROC are the vote fractions. Ties between classes with the same number of
votes go to the class of the nearest neighbour among them (deterministic).
"""
from __future__ import annotations

import numpy as np

from dermbench.protocols.base import Protocol, ProtocolOutput, RunContext
from dermbench.protocols.classification import calibration_info, calibration_split, global_features, predictions_table


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def knn_vote(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int, k: int = 5,
             chunk: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (vote fractions [n_test, C], predictions [n_test], neighbour indices [n_test, k])."""
    if k > len(train_x):
        raise ValueError(f"k = {k} neighbours requested but the training split has only {len(train_x)} images")
    train_n = l2_normalise(train_x.astype(np.float64))
    test_n = l2_normalise(test_x.astype(np.float64))
    neighbours = np.empty((len(test_x), k), dtype=np.int64)
    for start in range(0, len(test_x), chunk):
        sim = test_n[start : start + chunk] @ train_n.T
        # stable sort on -sim: equal similarities keep training order, so results are reproducible
        neighbours[start : start + chunk] = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    votes = train_y[neighbours]  # [n_test, k], nearest first
    counts = np.stack([(votes == c).sum(axis=1) for c in range(n_classes)], axis=1)
    fractions = counts / k
    best = counts.max(axis=1, keepdims=True)
    tied = counts == best
    # first neighbour (nearest) whose class is among the tied winners
    first_tied = np.argmax(tied[np.arange(len(votes))[:, None], votes], axis=1)
    pred = votes[np.arange(len(votes)), first_tied]
    return fractions, pred, neighbours


class Retrieval(Protocol):
    name = "retrieval"
    kind = "classification"
    defaults = {"k": 5, "batch_size_features": 32}

    def run(self, ctx: RunContext) -> ProtocolOutput:
        x_train, y_train = global_features(ctx, "train")
        x_test, _ = global_features(ctx, "test")
        k = int(ctx.config["k"])
        fractions, pred, _ = knn_vote(x_train, y_train, x_test, ctx.card.num_classes, k=k)
        # held-out calibration scores: the held-out images vote among the remaining training images only
        fit, held = calibration_split(y_train, ctx.seed)
        tables = {}
        if len(held) and len(fit) >= k:
            cal, cal_pred, _ = knn_vote(x_train[fit], y_train[fit], x_train[held], ctx.card.num_classes, k=k)
            train = ctx.train
            tables["calibration"] = predictions_table(ctx, cal, cal_pred, [train[i] for i in held])
        return ProtocolOutput(
            predictions=predictions_table(ctx, fractions, pred),
            kind=self.kind, n_train=len(x_train), n_test=len(x_test),
            info={"similarity": "cosine", "scores": "vote fractions", "tie_break": "nearest neighbour among tied classes",
                  "calibration": calibration_info(ctx.seed, len(fit), len(held))},
            tables=tables,
        )
