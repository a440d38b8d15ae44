"""Retrieval and linear probe on tiny fixed features with known answers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dermbench.data.sample import Sample, TaskData
from dermbench.protocols import get_protocol
from dermbench.protocols.base import RunContext
from dermbench.protocols.linear_probe import LINEAR_DEFAULTS, predict_proba, train_linear_head
from dermbench.protocols.retrieval import knn_vote
from dermbench.data.splits import make_split
from dermbench.data.tasks import get_card


def test_knn_vote_known_answer():
    # train points on the unit circle; class 0 near angle 0, class 1 near angle pi/2
    angles = np.array([0.0, 0.1, -0.1, 0.2, np.pi / 2, np.pi / 2 + 0.1, np.pi / 2 - 0.1])
    train = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.array([[1], [3], [2], [1], [1], [5], [1]])
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    test = np.array([[1.0, 0.05], [0.0, 2.0], [1.0, 1.0]])
    frac, pred, nn = knn_vote(train, y, test, n_classes=2, k=5)
    # first test point: its 5 nearest by cosine are the four class-0 points and one class-1 point
    np.testing.assert_allclose(frac[0], [0.8, 0.2])
    np.testing.assert_allclose(frac[1], [0.4, 0.6])
    assert pred.tolist()[:2] == [0, 1]
    # magnitude must not matter (cosine): scaling the test vector gives the same neighbours
    frac2, _, nn2 = knn_vote(train, y, test * 7.0, n_classes=2, k=5)
    np.testing.assert_array_equal(nn, nn2)


def test_knn_tie_goes_to_nearest_neighbour_class():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    y = np.array([0, 1, 0, 1])
    test = np.array([[0.2, 1.0]])  # nearest is class 1
    frac, pred, _ = knn_vote(train, y, test, n_classes=2, k=4)
    np.testing.assert_allclose(frac[0], [0.5, 0.5])
    assert pred[0] == 1


def test_knn_k_larger_than_train_is_an_error():
    with pytest.raises(ValueError, match="only 2"):
        knn_vote(np.eye(2), np.array([0, 1]), np.eye(2), 2, k=5)


def test_linear_head_learns_separable_data_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (40, 8)), rng.normal(2, 1, (40, 8)), rng.normal(0, 1, (40, 8)) + np.array([6.0] + [0.0] * 7)])
    y = np.repeat([0, 1, 2], 40)
    cfg = dict(LINEAR_DEFAULTS)
    head = train_linear_head(x, y, 3, cfg, seed=1)
    proba = predict_proba(head, x)
    assert (proba.argmax(1) == y).mean() > 0.95
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    head2 = train_linear_head(x, y, 3, cfg, seed=1)
    np.testing.assert_array_equal(predict_proba(head2, x), proba)


class _FixedFeatures:
    """A feature cache stand-in returning known vectors per sample id."""

    def __init__(self, table):
        self.table = table

    def get(self, backbone, samples, **kw):
        return np.stack([self.table[s.id] for s in samples])


@pytest.mark.parametrize("name", ["retrieval", "linear"])
def test_protocol_on_fixed_features(tmp_path, name):
    card = get_card("mednode")
    rng = np.random.default_rng(3)
    samples, table = [], {}
    for i in range(40):
        label = i % 2
        sid = f"s{i:02d}"
        samples.append(Sample(id=sid, image=Path(f"/nonexistent/{sid}.jpg"), label=label))
        table[sid] = rng.normal(0, 0.3, 4) + (np.array([3, 0, 0, 0]) if label else np.array([0, 3, 0, 0]))
    data = TaskData(task=card.name, root=tmp_path, samples=samples, classes=list(card.classes))
    split = make_split(data, "stratified", seed=0)
    protocol = get_protocol(name)
    ctx = RunContext(card=card, data=data, split=split, get_backbone=lambda: None, features=_FixedFeatures(table),
                     seed=0, device="cpu", config=protocol.resolve_config(), artifacts_dir=tmp_path / "a", progress=False)
    out = protocol.run(ctx)
    assert out.n_train == 20 and out.n_test == 20
    assert list(out.predictions["sample_id"]) == split.test
    assert (out.predictions["pred"] == out.predictions["label"]).all()


def test_protocol_settings_are_validated():
    with pytest.raises(KeyError, match="no setting 'epoch'"):
        get_protocol("linear").resolve_config({"epoch": "3"})
    assert get_protocol("linear").resolve_config({"epochs": "3"})["epochs"] == 3
