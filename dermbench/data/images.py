"""Decoding images and lesion masks the same way for every dataset, whatever their pixel format.

PIL's ``convert("RGB")`` is right for 8-bit images but wrong for others: a 16-bit grayscale PNG
(mode ``I;16``/``I``) is clipped to 255, so every pixel becomes white. Here every mode maps to
8-bit RGB by its own rule:

- ``RGB``: unchanged (so features of ordinary JPEGs/PNGs are bit-identical to a plain convert);
- ``L``, ``1``, ``P`` without transparency, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: PIL's conversion;
- ``I;16*``, ``I``, ``F`` (16/32-bit integers, floats): scaled to 0–255 by the range of the type
  (16-bit: ÷ 257; 32-bit integers: by their maximum bit depth in use; floats: [0, 1] if they lie
  there, else min–max), then replicated to three channels;
- modes with alpha (``RGBA``, ``LA``, ``PA``, ``P`` with transparency): composited over black —
  transparent corners then look like a dermoscope's dark border rather than random colours.

Masks: a lesion mask is documented as single-channel 0/255 (ISIC, Waterloo, PH2 BMP) or 0/1 (1-bit).
:func:`load_mask_array` accepts both exactly; any other value set (0/128/255, background 1–3 after
a lossy export, an RGB mask) is thresholded at the midpoint of the 0/255 encoding (value ≥ 128 is
lesion) and reported as *odd*, so the run can say how many masks were not binary.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from dermbench.data.sample import DatasetError

MASK_THRESHOLD = 128  # the midpoint of the documented 0/255 encoding


def to_rgb(im):
    """An 8-bit RGB copy of a decoded PIL image of any mode (rules in the module docstring)."""
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im)
        arr = arr.astype(np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        elif mode == "I":
            top = float(arr.max()) if arr.size else 0.0
            bits = 8 if top <= 255 else 16 if top <= 65535 else 32
            arr = arr * (255.0 / (2 ** bits - 1))
        else:  # float images
            lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
            if lo >= 0.0 and hi <= 1.0:
                arr = arr * 255.0
            elif hi > lo:
                arr = (arr - lo) * (255.0 / (hi - lo))
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def load_rgb(path: Path, draft_size: Optional[int] = None):
    """Open ``path`` as 8-bit RGB; a clear error names the file if it cannot be decoded.

    draft_size: for JPEGs, let libjpeg decode at 1/2, 1/4 or 1/8 scale while both sides stay at least
    this many pixels (PIL's draft mode: several times faster on large photos; the features change a
    little, so it is opt-in and part of the feature cache's key).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            if draft_size and im.format == "JPEG":
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            return to_rgb(im)
    except FileNotFoundError as exc:
        raise DatasetError(f"image {path} does not exist; re-download the dataset or fix its metadata file") from exc
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"image {path} cannot be read ({type(exc).__name__}: {exc}); "
                           "replace the file or remove it from the dataset") from exc


@dataclass
class MaskInfo:
    """What :func:`load_mask_array` found in a mask file."""
    encoding: str            # '0/255', '0/1', 'empty' (all background) or 'odd' (thresholded at 128)
    values: tuple[int, ...]  # distinct values, at most the first 8


def _gray_levels(im) -> np.ndarray:
    """A mask file's pixel values as one 2-D integer array (8-bit scale)."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.uint8)  # 0/1
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if top <= 1:
            return arr.astype(np.uint8)
        scale = 255.0 / 65535.0 if top > 255 else 1.0
        return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    if mode == "L":
        return np.asarray(im)
    return np.asarray(im.convert("L"))


def load_mask_array(path: Path, size: Optional[int] = None, owner: str = "") -> tuple[np.ndarray, MaskInfo]:
    """The lesion mask in ``path`` as a bool array, and how it was encoded.

    ``size``: resize (nearest neighbour) to ``size`` × ``size`` after the encoding is decided on the
    full-resolution values. ``owner``: who the mask belongs to, for error messages (e.g. "sample 'x'").
    """
    from PIL import Image

    of = f" of {owner}" if owner else ""
    try:
        with Image.open(path) as im:
            im.load()
            levels = _gray_levels(im)
    except FileNotFoundError as exc:
        raise DatasetError(f"mask {path}{of} does not exist; restore the ground-truth file") from exc
    except OSError as exc:
        raise DatasetError(f"mask {path}{of} cannot be read ({type(exc).__name__}: {exc}); "
                           "replace it with a single-channel 0/255 PNG/BMP") from exc
    values = np.unique(levels)
    present = set(values.tolist())
    if present <= {0}:
        mask, encoding = levels > 0, "empty"
    elif present <= {0, 255}:
        mask, encoding = levels == 255, "0/255"
    elif present <= {0, 1}:
        mask, encoding = levels == 1, "0/1"
    else:
        mask, encoding = levels >= MASK_THRESHOLD, "odd"
    if size is not None:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 0
    return mask, MaskInfo(encoding=encoding, values=tuple(int(v) for v in values[:8]))
