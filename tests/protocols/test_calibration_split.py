"""The held-out calibration part of the training split (linear and retrieval protocols)."""
import numpy as np

from dermbench.protocols.classification import CALIBRATION_FRACTION, calibration_split


def test_class_stratified_disjoint_and_deterministic():
    labels = np.array([0] * 50 + [1] * 20 + [2] * 7 + [3] * 1)
    fit, held = calibration_split(labels, seed=3)
    assert len(np.intersect1d(fit, held)) == 0 and len(fit) + len(held) == len(labels)
    for c, n in ((0, 50), (1, 20), (2, 7)):
        assert (labels[held] == c).sum() == max(1, round(CALIBRATION_FRACTION * n))
    assert (labels[held] == 3).sum() == 0  # a single image stays with the head
    again = calibration_split(labels, seed=3)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(calibration_split(labels, seed=4)[1], held)
    fit2, held2 = calibration_split(np.array([0, 1]), seed=0)
    assert len(held2) == 0 and list(fit2) == [0, 1]
