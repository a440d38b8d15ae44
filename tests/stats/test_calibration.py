"""Calibration metrics against independent implementations (torchmetrics, scikit-learn, numpy loops)."""
import numpy as np
import pytest

from dermbench.stats import calibration as C
from dermbench.stats.bootstrap import bootstrap_indices
from dermbench.stats.metrics import resample_counts

torch = pytest.importorskip("torch")
tmf = pytest.importorskip("torchmetrics.functional.classification")


def _data(n=400, k=3, seed=0, sharp=2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + sharp * np.eye(k)[y] * rng.random((n, 1))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p


def test_ece_equal_width_matches_torchmetrics():
    for k in (2, 3, 5):
        y, p = _data(k=k, seed=k)
        conf, correct = C.top_label(p, y)
        ours = C.ece_equal_width(conf, correct, np.ones((1, len(y))), 15)[0]
        ref = tmf.multiclass_calibration_error(torch.tensor(p, dtype=torch.float64), torch.tensor(y), num_classes=k,
                                               n_bins=15, norm="l1").item()
        assert ours == pytest.approx(ref, abs=1e-6)
        assert ours > 0.01  # the data are miscalibrated: a test that could fail


def test_classwise_ece_is_mean_of_torchmetrics_binary_ece():
    y, p = _data(k=4, seed=3)
    ours = C.classwise_ece(y, p, np.ones((1, len(y))))[0]
    ref = np.mean([tmf.binary_calibration_error(torch.tensor(p[:, c], dtype=torch.float64),
                                                torch.tensor((y == c).astype(int)), n_bins=15, norm="l1").item()
                   for c in range(4)])
    assert ours == pytest.approx(ref, abs=1e-6)


def test_brier_and_nll_match_sklearn():
    from sklearn.metrics import brier_score_loss, log_loss

    y, p = _data(k=2, seed=5)
    ones = np.ones((1, len(y)))
    assert C.brier(y, p, ones)[0] == pytest.approx(2 * brier_score_loss(y, p[:, 1]), abs=1e-12)
    y3, p3 = _data(k=3, seed=6)
    assert C.nll(y3, p3, np.ones((1, len(y3))))[0] == pytest.approx(log_loss(y3, p3, labels=[0, 1, 2]), abs=1e-9)


def _ece_mass_loop(conf, correct, n_bins):
    order = np.argsort(conf, kind="mergesort")
    parts = np.array_split(order, n_bins)
    return sum(abs((correct[b] - conf[b]).sum()) for b in parts) / len(conf)


def test_equal_mass_ece_point_and_replicates_equal_materialised_resamples():
    y, p = _data(n=203, k=3, seed=7)
    conf, correct = C.top_label(p, y)
    assert C.ece_equal_mass(conf, correct, np.ones((1, len(y))), 15)[0] == pytest.approx(_ece_mass_loop(conf, correct, 15))
    idx = bootstrap_indices(len(y), 20, seed=1, strata=y)
    counts = resample_counts(idx, len(y))
    reps_mass = C.ece_equal_mass(conf, correct, counts, 15)
    reps_width = C.ece_equal_width(conf, correct, counts, 15)
    for b in range(20):
        c, k = conf[idx[b]], correct[idx[b]]
        # each copy of a sample is its own item; sorting copies of one sample keeps them adjacent
        order = np.argsort(c, kind="mergesort")
        parts = np.array_split(order, 15)
        assert reps_mass[b] == pytest.approx(sum(abs((k[q] - c[q]).sum()) for q in parts) / len(c), abs=1e-12)
        ref = tmf.multiclass_calibration_error(torch.tensor(p[idx[b]], dtype=torch.float64), torch.tensor(y[idx[b]]),
                                               num_classes=3, n_bins=15, norm="l1").item()
        assert reps_width[b] == pytest.approx(ref, abs=1e-6)


def test_evaluate_calibration_summaries_and_paired_difference():
    y, p = _data(n=300, k=3, seed=8)
    idx = bootstrap_indices(len(y), 100, seed=2, strata=y)
    a = C.evaluate_calibration(y, p.argmax(1), p, idx)
    flat = np.full_like(p, 1 / 3)
    b = C.evaluate_calibration(y, flat.argmax(1), flat, idx)
    assert set(a) == set(C.CALIBRATION_METRICS)
    assert a["ece"]["ci_low"] <= a["ece"]["value"] <= a["ece"]["ci_high"]
    d = C.paired_difference(a["brier"]["replicates"], b["brier"]["replicates"], a["brier"]["value"], b["brier"]["value"])
    assert d["diff"] == pytest.approx(a["brier"]["value"] - b["brier"]["value"])
    assert d["ci_low"] <= d["diff"] <= d["ci_high"]


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    n, k = 4000, 4
    true_logits = rng.normal(0, 2, (n, k))
    true_p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in true_p])
    overconfident = C.apply_temperature(true_p, 0.5)  # logits doubled: T = 2 undoes it
    t = C.fit_temperature(y, overconfident)
    assert t == pytest.approx(2.0, rel=0.1)
    ones = np.ones((1, n))
    before, after = C.nll(y, overconfident, ones)[0], C.nll(y, C.apply_temperature(overconfident, t), ones)[0]
    assert after < before
    with pytest.raises(ValueError, match="at least one"):
        C.fit_temperature(np.zeros(0, int), np.zeros((0, k)))


def test_reliability_bins_count_every_sample():
    y, p = _data(n=150, k=2, seed=9)
    conf, correct = C.top_label(p, y)
    bins = C.reliability_bins(conf, correct, 10)
    assert bins["n"].sum() == 150 and len(bins) == 10
