"""The vectorised replicate metrics equal scikit-learn on every materialised bootstrap replicate."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from dermbench.stats import metrics as M


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_replicate_metrics_equal_sklearn_with_ties_and_repeated_samples(n_classes):
    rng = np.random.default_rng(n_classes)
    for _ in range(10):
        n = int(rng.integers(12, 60))
        y = rng.integers(0, n_classes, n)
        y[:n_classes] = np.arange(n_classes)
        scores = rng.random((n, n_classes)).round(1) + 0.01  # rounded: many tied scores
        scores /= scores.sum(axis=1, keepdims=True)
        pred = rng.integers(0, n_classes, n)
        idx = rng.integers(0, n, (25, n))  # unstratified: some replicates miss a class
        got = M.classification_replicates(y, pred, scores, idx)
        for k in range(idx.shape[0]):
            yy, ss, pp = y[idx[k]], scores[idx[k]], pred[idx[k]]
            assert got["f1"][k] == pytest.approx(f1_score(yy, pp, average="macro"))
            assert got["accuracy"][k] == pytest.approx(accuracy_score(yy, pp))
            assert got["balanced_accuracy"][k] == pytest.approx(balanced_accuracy_score(yy, pp))
            if len(set(yy)) < n_classes:
                assert np.isnan(got["auroc"][k])  # undefined, as sklearn refuses it
                continue
            ref = (roc_auc_score(yy, ss[:, 1]) if n_classes == 2
                   else roc_auc_score(yy, ss, multi_class="ovr", labels=list(range(n_classes))))
            assert got["auroc"][k] == pytest.approx(ref)


def test_resample_counts_are_the_multiplicities():
    idx = np.array([[0, 0, 2], [1, 2, 2]])
    assert M.resample_counts(idx, 3).tolist() == [[2, 0, 1], [0, 1, 2]]
