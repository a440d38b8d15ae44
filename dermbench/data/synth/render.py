"""Synthetic dermatology images: skin of Fitzpatrick type I–VI with class-dependent lesions.

A lesion class is described by a :class:`LesionStyle` (colours, border irregularity, asymmetry,
colour variegation, size, count, texture, scale). Every image draws its own jitter around the
style, so classes overlap enough that the tasks are learnable but not trivial.
Pure numpy + PIL, vectorised: a 128-px image takes about a millisecond.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
from PIL import Image, ImageFilter

# Mean skin colours (sRGB) for Fitzpatrick types I..VI.
SKIN_PALETTE = np.array([
    [244, 208, 186], [231, 188, 160], [210, 160, 125], [170, 118, 82], [120, 80, 52], [72, 48, 34],
], dtype=np.float32)


@dataclass(frozen=True)
class LesionStyle:
    color: tuple[int, int, int]
    color2: tuple[int, int, int] = (0, 0, 0)
    variegation: float = 0.0  # 0: uniform colour, 1: strongly mixed with color2
    irregularity: float = 0.05  # border noise amplitude (fraction of the radius)
    asymmetry: float = 0.0  # elongation and off-centre lobes
    radius: tuple[float, float] = (0.15, 0.25)  # fraction of the image side
    count: tuple[int, int] = (1, 1)
    texture: float = 0.05  # fine-grain texture inside the lesion
    scale: float = 0.0  # whitish scale flecks (psoriasis)
    edge_softness: float = 1.5  # blur of the lesion edge in pixels
    opacity: float = 0.9


def jitter_style(style: LesionStyle, rng: np.random.Generator, amount: float = 0.25) -> LesionStyle:
    """Per-image variation around the class style."""
    def j(v: float) -> float:
        return float(np.clip(v * (1 + amount * rng.normal()) + 0.03 * amount * rng.normal(), 0.0, 1.5))

    col = tuple(int(np.clip(c + 25 * amount * rng.normal(), 0, 255)) for c in style.color)
    return replace(style, color=col, variegation=j(style.variegation), irregularity=j(style.irregularity),
                   asymmetry=j(style.asymmetry), texture=j(style.texture), scale=j(style.scale))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bicubically."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    up = Image.fromarray(grid).resize((size, size), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32) / 255.0


def skin(rng: np.random.Generator, size: int, skin_type: int) -> np.ndarray:
    base = SKIN_PALETTE[skin_type - 1] + rng.normal(0, 6, 3)
    tone = _smooth_noise(rng, size, 4)[..., None] - 0.5
    grain = rng.normal(0, 3.0, (size, size, 1))
    yy, xx = np.mgrid[0:size, 0:size] / size
    light = 1.0 + 0.12 * ((xx - rng.random()) * rng.normal() + (yy - rng.random()) * rng.normal())
    return np.clip((base + 18 * tone + grain) * light[..., None], 0, 255)


def lesion_mask(rng: np.random.Generator, size: int, style: LesionStyle, centre: tuple[float, float],
                radius: float) -> np.ndarray:
    """Soft mask [0, 1] of one lesion: a star-shaped blob with a noisy, possibly asymmetric border."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - centre[0], yy - centre[1]
    angle = rng.uniform(0, np.pi)
    stretch = 1.0 + 0.8 * style.asymmetry * rng.random()
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = (dx * ca + dy * sa) / stretch, (-dx * sa + dy * ca)
    theta = np.arctan2(v, u)
    r = np.hypot(u, v)
    boundary = np.ones_like(theta)
    for k in range(2, 9):  # border harmonics: irregular borders get energy at higher frequencies
        amp = 0.6 * style.irregularity * rng.normal() / (1 + 0.5 * k)
        boundary += amp * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if style.asymmetry > 0:
        boundary += 0.25 * style.asymmetry * np.cos(theta - rng.uniform(0, 2 * np.pi))  # one-sided lobe
    edge = max(style.edge_softness, 0.5)
    return np.clip((radius * np.maximum(boundary, 0.3) - r) / edge + 0.5, 0.0, 1.0)


def render(rng: np.random.Generator, size: int, style: LesionStyle, skin_type: int,
           hair: Optional[bool] = None) -> tuple[Image.Image, np.ndarray]:
    """One image and its binary lesion mask (True = lesion)."""
    img = skin(rng, size, skin_type)
    alpha = np.zeros((size, size), dtype=np.float32)
    n = int(rng.integers(style.count[0], style.count[1] + 1))
    single = n == 1
    for _ in range(n):
        radius = size * rng.uniform(*style.radius)
        margin = radius * 1.1 if single else radius
        centre = (rng.uniform(margin, size - margin) if single else rng.uniform(0, size),
                  rng.uniform(margin, size - margin) if single else rng.uniform(0, size))
        if single:  # centred-ish, as dermoscopy and most clinical photos are
            centre = (0.5 * size + 0.15 * size * rng.normal(), 0.5 * size + 0.15 * size * rng.normal())
        alpha = np.maximum(alpha, lesion_mask(rng, size, style, centre, radius))
    mix = _smooth_noise(rng, size, 6) * style.variegation
    colour = (1 - mix[..., None]) * np.array(style.color, np.float32) + mix[..., None] * np.array(style.color2, np.float32)
    colour = colour + style.texture * 120 * (rng.random((size, size, 1)) - 0.5)
    if style.scale > 0:
        flecks = (rng.random((size, size)) < 0.08 * style.scale)[..., None]
        colour = np.where(flecks, np.array([235, 232, 225], np.float32), colour)
    a = (alpha * style.opacity)[..., None]
    out = img * (1 - a) + colour * a
    if hair if hair is not None else rng.random() < 0.15:
        out = _hair(rng, out, size)
    pil = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    return pil, alpha > 0.5


def _hair(rng: np.random.Generator, img: np.ndarray, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = rng.uniform(0, size, 2)
        ang = rng.uniform(0, np.pi)
        curve = rng.normal(0, 0.0015)
        d = np.abs((xx - x0) * np.sin(ang) - (yy - y0) * np.cos(ang) + curve * (xx - x0) ** 2)
        img = np.where((d < 0.7)[..., None], img * 0.35, img)
    return img
