"""Non-finite features never reach a head: the extraction pass names the backbone and the image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dermbench.features.extract import NonFiniteFeatures, forward


class _Backbone:
    """Just what :func:`forward` calls: a name and the forwards, returning a fixed batch."""

    name = "fake-vit"

    def __init__(self, out: torch.Tensor):
        self.out = out

    def forward_global(self, batch):
        return self.out

    def forward_tokens(self, batch):
        return self.out

    def forward_levels(self, batch, level_indices):
        return [self.out, self.out]


PATHS = [Path("/data/a.png"), Path("/data/b.png"), Path("/data/c.png")]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("kind", ["global", "tokens", "levels"])
def test_a_non_finite_feature_names_the_backbone_and_its_image(kind, bad):
    out = torch.zeros(3, 4, 2, 2) if kind != "global" else torch.zeros(3, 8)
    out[2].view(-1)[1] = bad  # the third image of the batch
    with pytest.raises(NonFiniteFeatures) as caught:
        forward(_Backbone(out), kind, None, [0, 1], PATHS)
    message = str(caught.value)
    assert "fake-vit" in message and "/data/c.png" in message and "/data/a.png" not in message
    assert caught.value.path == PATHS[2] and caught.value.kind == kind


def test_token_features_beyond_float16_are_refused_as_they_would_be_stored_as_inf():
    out = torch.zeros(3, 4, 2, 2)
    out[1, 0, 0, 0] = 1e6  # finite in float32, inf once stored as float16
    with pytest.raises(NonFiniteFeatures, match="float16 range.*b.png"):
        forward(_Backbone(out), "tokens", None, [0], PATHS)
    # global features are stored as float32: the same value is fine there
    got = forward(_Backbone(torch.full((3, 8), 1e6)), "global", None, [0], PATHS)
    assert got[0].dtype == np.float32 and np.isfinite(got[0]).all()


def test_finite_features_pass_unchanged():
    out = torch.randn(3, 8)
    got = forward(_Backbone(out), "global", None, [0], PATHS)
    assert np.array_equal(got[0], out.numpy())
