"""iBOT block masking (DINOv2's MaskingGenerator and collate rule), made rank-independent.

DINOv2 masks ``int(B * p)`` of the B global crops of a batch, with mask ratios spread over
[ratio_min, ratio_max] by stratified draws (one draw per bin of a linspace), then shuffles the
masks over the crops. Here the rule is applied to the *global* batch of each iteration, and every
crop's mask is drawn from a seed derived from (seed, iteration, slot): any process can compute
the mask of any crop, so 1 process and N processes see the same masks.
"""
from __future__ import annotations

import hashlib
import math
import random
from functools import lru_cache

import numpy as np


def derive_seed(*key) -> int:
    """A 63-bit seed from any tuple of plain values (stable across machines and processes)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class BlockMaskGenerator:
    """Rectangular blocks of random aspect ratio until the requested patch count is reached."""

    def __init__(self, grid: tuple[int, int], max_block_patches: float, min_block_patches: int = 4,
                 min_aspect: float = 0.3):
        self.height, self.width = grid
        self.max_block_patches = max_block_patches
        self.min_block_patches = min_block_patches
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    @property
    def num_patches(self) -> int:
        return self.height * self.width

    def _add_block(self, mask: np.ndarray, max_patches: float, rng: random.Random) -> int:
        delta = 0
        for _ in range(10):
            target_area = rng.uniform(self.min_block_patches, max_patches)
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if w < self.width and h < self.height:
                top = rng.randint(0, self.height - h)
                left = rng.randint(0, self.width - w)
                already = int(mask[top:top + h, left:left + w].sum())
                if 0 < h * w - already <= max_patches:
                    delta = h * w - already
                    mask[top:top + h, left:left + w] = True
                if delta > 0:
                    break
        return delta

    def __call__(self, num_masked: int, rng: random.Random) -> np.ndarray:
        """A boolean [height, width] mask with about ``num_masked`` patches set (never more)."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < num_masked:
            max_patches = min(num_masked - count, self.max_block_patches)
            delta = self._add_block(mask, max_patches, rng)
            if delta == 0:
                break
            count += delta
        return mask


@lru_cache(maxsize=8)
def mask_plan(seed: int, iteration: int, n_crops: int, probability: float, ratio_min: float,
              ratio_max: float) -> tuple[float, ...]:
    """The mask ratio of every global-crop slot of one iteration's global batch (0 = unmasked)."""
    rng = np.random.default_rng(derive_seed("mask-plan", seed, iteration))
    n_masked = int(n_crops * probability)
    bounds = np.linspace(ratio_min, ratio_max, n_masked + 1)
    ratios = [float(rng.uniform(bounds[i], bounds[i + 1])) for i in range(n_masked)]
    ratios += [0.0] * (n_crops - n_masked)
    order = rng.permutation(n_crops)
    return tuple(ratios[order[slot]] for slot in range(n_crops))


def crop_mask(generator: BlockMaskGenerator, seed: int, iteration: int, slot: int, n_crops: int,
              probability: float, ratio_min: float, ratio_max: float) -> np.ndarray:
    """The flattened boolean mask of global-crop ``slot`` in iteration ``iteration``."""
    ratio = mask_plan(seed, iteration, n_crops, probability, ratio_min, ratio_max)[slot]
    rng = random.Random(derive_seed("mask", seed, iteration, slot))
    return generator(int(generator.num_patches * ratio), rng).reshape(-1)
