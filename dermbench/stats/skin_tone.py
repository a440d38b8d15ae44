"""Skin tone where no Fitzpatrick label exists: the individual typology angle (ITA), an ESTIMATED attribute.

``ITA = arctan((L* − 50) / b*) · 180/π`` (Chardon et al. 1991) from CIELAB (D65, sRGB input,
``skimage.color.rgb2lab``) of *non-lesion skin* pixels, binned into the standard categories (Del Bino
& Bernerd 2013): very light > 55°, light 41–55°, intermediate 28–41°, tan 10–28°, brown −30–10°,
dark ≤ −30° (each bin closed at its upper edge).

Which pixels count as skin:

- **with a lesion mask** (segmentation datasets): every pixel outside the mask dilated by a margin of
  5% of the shorter image side (the lesion's rim is often erythematous or pigmented);
- **without a mask**: a border frame, the outer 10% of the shorter side on each of the four edges
  (lesions are photographed centred);

then pixels with L* < 15 (hair, dermoscopic vignette, shadow) or L* > 95 (specular highlights,
rulers), or with b* ≤ 0 (not skin-coloured), are dropped. The image's ITA is the median of the
per-pixel ITA over what is left; fewer than ``MIN_PIXELS`` pixels left gives NaN and 'unknown'.

This is an **estimate** from image colour (lighting, camera and dermoscope change it); it is stored
as its own attribute ``ita_estimated`` (column ``group_ita_estimated``), labelled as estimated in
every table, and never merged with or substituted for dermatologist-assigned Fitzpatrick types
(``group_skin_type``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

ATTRIBUTE = "ita_estimated"
COLUMN = f"group_{ATTRIBUTE}"
CATEGORIES = ((55.0, math.inf, "very light"), (41.0, 55.0, "light"), (28.0, 41.0, "intermediate"),
              (10.0, 28.0, "tan"), (-30.0, 10.0, "brown"), (-math.inf, -30.0, "dark"))
ORDER = tuple(name for _, _, name in CATEGORIES)
BORDER_FRACTION = 0.10
MASK_MARGIN_FRACTION = 0.05
L_RANGE = (15.0, 95.0)
MIN_PIXELS = 50
REGION_MASK = "outside the lesion mask dilated by 5% of the shorter side"
REGION_BORDER = "border frame: outer 10% of the shorter side on each edge"


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8 0–255 or float 0–1) [..., 3] to CIELAB (D65) with scikit-image."""
    from skimage.color import rgb2lab

    arr = np.asarray(rgb)
    arr = arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)
    return rgb2lab(arr)


def ita_degrees(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel ITA in degrees; NaN where b* ≤ 0."""
    L, b = np.asarray(L, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, np.degrees(np.arctan((L - 50.0) / np.where(b > 0, b, 1.0))), np.nan)


def ita_category(ita: float) -> str:
    if ita is None or not math.isfinite(ita):
        return "unknown"
    return next(name for low, high, name in CATEGORIES if low < ita <= high)


def skin_region(shape: tuple[int, int], lesion_mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, str]:
    """Boolean [H, W] of the pixels taken as skin, and the rule's name (see the module docstring)."""
    h, w = shape
    side = min(h, w)
    if lesion_mask is not None:
        from scipy.ndimage import binary_dilation

        lesion = np.asarray(lesion_mask).astype(bool)
        if lesion.shape != (h, w):
            raise ValueError(f"lesion mask {lesion.shape} and image {(h, w)} differ in size")
        margin = max(1, int(round(MASK_MARGIN_FRACTION * side)))
        return ~binary_dilation(lesion, iterations=margin), REGION_MASK
    k = max(1, int(round(BORDER_FRACTION * side)))
    region = np.zeros((h, w), bool)
    region[:k, :] = region[-k:, :] = True
    region[:, :k] = region[:, -k:] = True
    return region, REGION_BORDER


def image_ita(rgb: np.ndarray, lesion_mask: Optional[np.ndarray] = None) -> dict:
    """{ita (degrees, NaN if too few skin pixels), category, region, n_pixels} of one RGB image [H, W, 3]."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
    region, rule = skin_region(rgb.shape[:2], lesion_mask)
    lab = rgb_to_lab(rgb[..., :3])
    L, b = lab[..., 0][region], lab[..., 2][region]
    keep = (L >= L_RANGE[0]) & (L <= L_RANGE[1]) & (b > 0)
    n = int(keep.sum())
    ita = float(np.median(ita_degrees(L[keep], b[keep]))) if n >= MIN_PIXELS else math.nan
    return {"ita": ita, "category": ita_category(ita), "region": rule, "n_pixels": n}


def estimate_samples(samples: Sequence, max_side: int = 256) -> pd.DataFrame:
    """ITA of every sample's image (its mask outside the lesion when it has one), one row per sample:
    sample_id, ita_estimated_degrees, group_ita_estimated, region, n_pixels. Images are reduced to at most
    ``max_side`` pixels on the longer side first (colour statistics do not need the full resolution)."""
    from PIL import Image

    rows = []
    for s in samples:
        with Image.open(Path(s.image)) as im:
            im = im.convert("RGB")
            scale = max_side / max(im.size)
            size = im.size if scale >= 1 else (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
            rgb = np.asarray(im.resize(size, Image.BILINEAR) if size != im.size else im)
        mask = None
        if getattr(s, "mask", None) is not None:
            with Image.open(Path(s.mask)) as m:
                mask = np.asarray(m.convert("L").resize((rgb.shape[1], rgb.shape[0]), Image.NEAREST)) > 0
        r = image_ita(rgb, mask)
        rows.append({"sample_id": s.id, "ita_estimated_degrees": r["ita"], COLUMN: r["category"],
                     "region": r["region"], "n_pixels": r["n_pixels"]})
    return pd.DataFrame(rows, columns=["sample_id", "ita_estimated_degrees", COLUMN, "region", "n_pixels"])
