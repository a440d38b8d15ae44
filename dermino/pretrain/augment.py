"""DINOv2 multi-crop augmentation, seeded per sample.

Two global crops (random-resized crop + flip, colour jitter p 0.8, grayscale p 0.2; blur p 1.0 on
the first; blur p 0.1 and solarize p 0.2 on the second) and N local crops (blur p 0.5), as
DINOv2's DataAugmentationDINO.
torchvision's transforms draw from torch's global generator, so each call runs inside a forked
RNG seeded from the sample's position in the data stream: the crops of a sample do not depend on
which process or worker loads it, nor on what ran before (needed for exact resume and for
1-process == N-process runs).
"""
from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T


class RandomGaussianBlur:
    """Gaussian blur with sigma ~ U(0.1, 2.0), applied with probability p (draws from torch's RNG).

    PIL's blur, as in DINO v1: DINOv2's torchvision kernel-9 blur computes the same filter up to
    the kernel's truncation but is about 100 times slower on a CPU, where tiny runs live.
    """

    def __init__(self, p: float, sigma: tuple[float, float] = (0.1, 2.0)):
        self.p, self.sigma = p, sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.p < 1.0 and float(torch.rand(1)) >= self.p:
            return img
        sigma = float(torch.empty(1).uniform_(*self.sigma))
        return img.filter(ImageFilter.GaussianBlur(radius=sigma))


class MultiCropAugmentation:
    def __init__(self, global_size: int, global_scale: Sequence[float], local_number: int, local_size: int,
                 local_scale: Sequence[float], mean: Sequence[float], std: Sequence[float]):
        bicubic = T.InterpolationMode.BICUBIC
        self.local_number = local_number
        self.geometric_global = T.Compose([
            T.RandomResizedCrop(global_size, scale=tuple(global_scale), interpolation=bicubic),
            T.RandomHorizontalFlip(p=0.5),
        ])
        self.geometric_local = T.Compose([
            T.RandomResizedCrop(local_size, scale=tuple(local_scale), interpolation=bicubic),
            T.RandomHorizontalFlip(p=0.5),
        ])
        colour = T.Compose([
            T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
        ])
        normalise = T.Compose([T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))])
        self.global_1 = T.Compose([colour, RandomGaussianBlur(1.0), normalise])
        self.global_2 = T.Compose([colour, RandomGaussianBlur(0.1), T.RandomSolarize(threshold=128, p=0.2), normalise])
        self.local = T.Compose([colour, RandomGaussianBlur(0.5), normalise])

    def __call__(self, image: Image.Image, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(global crops [2, 3, G, G], local crops [N, 3, L, L]) for one image."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            g1 = self.global_1(self.geometric_global(image))
            g2 = self.global_2(self.geometric_global(image))
            locals_ = [self.local(self.geometric_local(image)) for _ in range(self.local_number)]
        local = torch.stack(locals_) if locals_ else torch.empty(0, *g1.shape[:1], 0, 0)
        return torch.stack([g1, g2]), local
